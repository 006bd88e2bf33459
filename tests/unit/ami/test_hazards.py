"""Requests that crash Asterisk are never sent (router/ami/hazards.py).

Seen on the sandbox's Asterisk 22.10 on 2026-12-04: ``Getvar`` of
``MIXMONITOR(<id>,filename)`` on a MixMonitor writing only ``r()``/``t()``
files killed Asterisk (segfault), every call on it with it.
"""

from __future__ import annotations

import pytest

from router.ami.catalog import encode_action
from router.ami.hazards import hazard
from router.ami.protocol import Action
from router.commands.ami import build_action
from router.errors import AMIValidationError

CRASHERS = [
    "MIXMONITOR(0x7fb244005470,filename)",
    "mixmonitor (0x7fb244005470,filename)",
    "EVAL(${MIXMONITOR(0x7fb244005470,filename)})",
    "LEN(${MixMonitor(${CR_ID},filename)})",
]


@pytest.mark.parametrize("variable", CRASHERS)
@pytest.mark.parametrize("validate", [True, False])
def test_a_read_of_mixmonitor_is_refused_with_the_reason_and_what_to_ask_instead(
    variable: str, validate: bool
) -> None:
    encoded = encode_action(
        "Getvar", {"Channel": "PJSIP/101-0000002a", "Variable": variable}, validate=validate
    )
    with pytest.raises(AMIValidationError) as caught:
        Action(encoded.name, encoded.params).pairs()  # what every client sends through
    message = str(caught.value)
    assert message.startswith("Getvar: Variable: reading MIXMONITOR() crashes Asterisk")
    assert "/api/v1/recordings/" in message


@pytest.mark.parametrize(
    "variables",
    ["MIXMONITOR(0x7fb244005470,filename)", *[f"CALLERID(num),{v}" for v in CRASHERS[1:]]],
)
@pytest.mark.parametrize("validate", [True, False])
def test_status_asking_for_mixmonitor_among_its_variables_is_refused(
    variables: str, validate: bool
) -> None:
    """``Status`` reads each of its ``Variables`` as ``Getvar`` does: the same crash
    (seen on the sandbox's Asterisk 22.10), one request past the ``Getvar`` guard."""
    encoded = encode_action(
        "Status", {"Channel": "PJSIP/101-0000002a", "Variables": variables}, validate=validate
    )
    with pytest.raises(AMIValidationError, match=r"^Status: Variables: reading MIXMONITOR\(\)"):
        Action(encoded.name, encoded.params).pairs()
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        build_action("status", [("variables", variables)], raw=True).pairs()


def test_past_the_catalog_any_spelling_of_the_action_and_header_is_refused() -> None:
    """``--raw``/``validate=False`` send names as given; Asterisk reads them in any case."""
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        Action.build("getvar", {"variable": CRASHERS[0]}).pairs()
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        build_action("GETVAR", [("VARIABLE", CRASHERS[0])], raw=True).pairs()


def test_what_does_not_read_mixmonitor_goes_out() -> None:
    for variable in ("CR_ID", "MIXMONITOR_FILENAME", "CHANNEL(state)"):
        pairs = Action.build("Getvar", {"Channel": "PJSIP/101-1", "Variable": variable}).pairs()
        assert ("Variable", variable) in pairs
    # The same text elsewhere is no read of the function.
    Action.build(
        "Setvar", {"Channel": "PJSIP/101-1", "Variable": "NOTE", "Value": CRASHERS[0]}
    ).pairs()
    assert hazard("Command", {"Command": "core show function MIXMONITOR"}) is None
    status = Action.build("Status", {"Variables": "CR_ID,CHANNEL(state)"}).pairs()
    assert ("Variables", "CR_ID,CHANNEL(state)") in status


INDIRECT = [
    "EVAL(${EVAL(${CR_NOTE})})",
    "eval (${LEN(${Eval(${CR_NOTE})})})",
    "EVAL_EXTEN(callrouter-notes,s,1)",
]


@pytest.mark.parametrize("read", INDIRECT)
@pytest.mark.parametrize(("action", "header"), [("Getvar", "Variable"), ("Status", "Variables")])
def test_a_read_that_evaluates_a_variables_text_is_refused(
    read: str, action: str, header: str
) -> None:
    """A variable set to ``${MIXMONITOR(<id>,filename)}`` (a Setvar, a caller's name)
    read through EVAL inside EVAL calls the function: it killed the sandbox's Asterisk
    22.10 with no MIXMONITOR in the request."""
    with pytest.raises(AMIValidationError, match=f"^{action}: {header}: an EVAL inside EVAL"):
        Action.build(action, {"Channel": "PJSIP/101-1", header: read}).pairs()


def test_one_eval_of_a_variable_goes_out() -> None:
    """``EVAL(${X})`` gives X's text and calls nothing in it (seen on the sandbox)."""
    pairs = Action.build("Getvar", {"Channel": "PJSIP/101-1", "Variable": "EVAL(${X})"}).pairs()
    assert ("Variable", "EVAL(${X})") in pairs
