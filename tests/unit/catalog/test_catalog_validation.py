"""ActionSpec.validate refuses what Asterisk would misread, before anything is sent."""

from __future__ import annotations

import re

import pytest

from router.ami.catalog import ActionSpec, load_catalog
from router.errors import AMIValidationError


def spec(name: str) -> ActionSpec:
    return load_catalog().action(name)


def test_missing_required_parameter() -> None:
    with pytest.raises(AMIValidationError, match="missing required parameter Channel"):
        spec("Redirect").validate({"Exten": "100", "Context": "x", "Priority": "1"})


def test_unknown_parameter_suggests_the_closest() -> None:
    with pytest.raises(AMIValidationError) as info:
        spec("Redirect").validate(
            {"Channel": "Local/1@x", "Exten": "1", "Contxt": "x", "Priority": "1"}
        )
    message = str(info.value)
    assert "unknown parameter 'Contxt' (did you mean 'Context'?)" in message
    assert "missing required parameter Context" in message  # all problems at once


def test_python_spelling_gets_a_suggestion_too() -> None:
    with pytest.raises(AMIValidationError, match=r"did you mean 'CallerID'"):
        spec("Originate").validate({"Channel": "L/1", "Application": "Wait", "caller_id": "1"})


def test_bad_enum_value_lists_the_allowed_ones() -> None:
    with pytest.raises(
        AMIValidationError,
        match=r"Tone='loud' is not one of no, Channel1, "
        r"Channel2, Both",
    ):
        spec("Bridge").validate({"Channel1": "a", "Channel2": "b", "Tone": "loud"})


def test_repeated_value_for_a_single_parameter() -> None:
    with pytest.raises(AMIValidationError, match="Channel takes one value, got 2"):
        spec("Hangup").validate({"Channel": ["a", "b"]})


def test_same_parameter_twice_in_different_case() -> None:
    with pytest.raises(AMIValidationError, match="Channel given twice"):
        spec("Hangup").validate({"Channel": "a", "channel": "b"})


def test_canonical_names_and_values() -> None:
    out = spec("Bridge").validate({"channel1": "a", "CHANNEL2": "b", "tone": "both"})
    assert out == {"Channel1": "a", "Channel2": "b", "Tone": "Both"}


def test_yes_no_enum_takes_any_ast_true_spelling() -> None:
    out = spec("QueueReload").validate({"Members": "true", "Rules": "0"})
    assert out == {"Members": "yes", "Rules": "no"}


def test_action_and_action_id_are_always_allowed() -> None:
    out = spec("Ping").validate({"Action": "Ping", "actionid": "42"})
    assert out == {"ActionID": "42"}


def test_repeatable_variable_comes_back_as_a_list() -> None:
    out = spec("Originate").validate(
        {"Channel": "Local/1@x", "Application": "Wait", "Variable": ["A=1", "B=2"]}
    )
    assert out["Variable"] == ["A=1", "B=2"]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"Channel": "L/1"}, "needs Exten+Context+Priority or Application"),
        ({"Channel": "L/1", "Exten": "1", "Context": "x"}, "missing Priority"),
        (
            {
                "Channel": "L/1",
                "Exten": "1",
                "Context": "x",
                "Priority": "1",
                "Application": "Wait",
            },
            "give only one of",
        ),
    ],
)
def test_originate_destination_alternatives(params: dict[str, str], problem: str) -> None:
    with pytest.raises(AMIValidationError, match=re.escape(problem)):
        spec("Originate").validate(params)


def test_originate_either_destination_is_fine() -> None:
    spec("Originate").validate({"Channel": "L/1", "Exten": "1", "Context": "x", "Priority": "1"})
    spec("Originate").validate({"Channel": "L/1", "Application": "Wait", "Data": "5"})


def test_open_enums_and_numbered_parameters() -> None:
    assert spec("Events").validate({"EventMask": "call,agent"}) == {"EventMask": "call,agent"}
    out = spec("UpdateConfig").validate(
        {
            "SrcFilename": "a.conf",
            "DstFilename": "a.conf",
            "action-000000": "newcat",
            "Cat-000000": "x",
        }
    )
    assert out["Action-000000"] == "NewCat"
    with pytest.raises(AMIValidationError, match="not one of"):
        spec("UpdateConfig").validate(
            {"SrcFilename": "a", "DstFilename": "a", "Action-000001": "Explode"}
        )


def test_user_event_takes_any_header() -> None:
    out = spec("UserEvent").validate({"UserEvent": "RouteRequest", "Caller": "+7495"})
    assert out == {"UserEvent": "RouteRequest", "Caller": "+7495"}


def test_empty_value_counts_as_missing() -> None:
    with pytest.raises(AMIValidationError, match="missing required parameter Channel"):
        spec("Hangup").validate({"Channel": ""})
