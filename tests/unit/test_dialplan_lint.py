"""router/dialplan_lint.py: the loaded inbound context against callrouter's contract.

The items are what ``ShowDialPlan`` lists (``ListDialplan``); the shipped
snippet, read from examples/asterisk/extensions.conf the way Asterisk numbers
its steps, must pass, and each way of breaking it must be named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.dialplan_lint import (
    Finding,
    extension_matches,
    lint_dial,
    lint_inbound,
    lint_record,
)
from router.testing.asterisk import dialplan_steps

SNIPPET = Path(__file__).parents[2] / "examples" / "asterisk" / "extensions.conf"


def shipped() -> list[dict[str, str]]:
    return dialplan_steps(SNIPPET.read_text(encoding="utf-8"), "callrouter-inbound")


def levels(findings: list[Finding]) -> list[str]:
    return [f.level for f in findings]


def test_the_shipped_snippet_keeps_the_contract() -> None:
    items = shipped()
    assert items[9]["ExtensionLabel"] == "default"  # same => n(default),...
    assert [i["Application"] for i in items][6:9] == ["Ringing", "UserEvent", "Wait"]
    (finding,) = lint_inbound(items)
    assert finding == Finding(
        "ok",
        "[callrouter-inbound] '_X.' priority 8: the request, then Wait, then the default route",
    )


def test_application_names_are_read_in_any_case_as_asterisk_does() -> None:
    items = shipped()
    for item in items:
        if item["Application"] == "Wait":
            item["Application"] = "wait"
    assert levels(lint_inbound(items)) == ["ok"]


def with_playback_before_wait() -> list[dict[str, str]]:
    """The shipped snippet with a ``Playback(beep)`` pasted between the request and ``Wait``."""
    items = shipped()
    for item in items:
        if int(item["Priority"]) >= 9:
            item["Priority"] = str(int(item["Priority"]) + 1)
    items.append({**items[0], "Priority": "9", "Application": "Playback", "AppData": "beep"})
    return items


def test_a_step_between_the_request_and_wait_fails() -> None:
    (finding,) = lint_inbound(with_playback_before_wait())
    assert finding.level == "fail"
    assert "the step after the request is 'Playback', not a wait" in finding.text
    assert '"A Redirect Asterisk can lose"' in finding.text


@pytest.mark.parametrize("wait", ["MusicOnHold", "WaitExten"])
def test_music_on_hold_and_waitexten_are_waits_too(wait: str) -> None:
    items = shipped()
    for item in items:
        if item["Application"] == "Wait":
            item["Application"] = wait
    assert levels(lint_inbound(items)) == ["ok"]


def test_a_wait_that_ends_the_extension_fails_it_hangs_up_instead_of_failing_open() -> None:
    items = [i for i in shipped() if int(i["Priority"]) <= 9]
    (finding,) = lint_inbound(items)
    assert finding.level == "fail"
    assert "nothing follows Wait: a call callrouter does not route in time hangs up" in finding.text


def test_a_default_route_that_lost_its_goto_fails_the_call_would_run_off_the_end() -> None:
    """The snippet with its last line left out when pasting: steps follow the
    wait, but the extension ends in the recording's ``GotoIf``, false for a call
    nobody recorded, and Asterisk hangs it up (``check --asterisk`` said OK)."""
    items = shipped()
    last = max(int(i["Priority"]) for i in items)
    assert items[-1]["Application"] == "Goto"
    items = [i for i in items if int(i["Priority"]) < last]
    (finding,) = lint_inbound(items)
    assert finding.level == "fail"
    assert "the extension ends with 'GotoIf' at priority 11" in finding.text
    assert "Goto(${CALLROUTER_DEFAULT},${CALLROUTER_DID},1)" in finding.text
    for application, data in (("Set", "CALLROUTER_FELL=${EPOCH}"), ("NoOp", "")):
        items[-1] = {**items[-1], "Application": application, "AppData": data}
        assert levels(lint_inbound(items)) == ["fail"]


@pytest.mark.parametrize(
    ("application", "data"),
    [
        ("GotoIf", '$["${X}" : "1"]?sales,s,1:support,s,1'),  # both branches; a ':' in the test
        ("Queue", "sales,t,,,60"),
        ("Dial", "PJSIP/101,20"),
        ("Hangup", ""),
        ("Goto", "ivr,s,1"),
    ],
)
def test_a_default_route_that_ends_in_a_call_step_or_a_jump_passes(
    application: str, data: str
) -> None:
    items = shipped()
    items[-1] = {**items[-1], "Application": application, "AppData": data}
    assert levels(lint_inbound(items)) == ["ok"]


def test_a_request_that_ends_the_extension_fails() -> None:
    items = [i for i in shipped() if int(i["Priority"]) <= 8]
    assert levels(lint_inbound(items)) == ["fail"]
    assert "nothing follows the request" in lint_inbound(items)[0].text


def test_no_context_and_a_renamed_request_fail() -> None:
    (missing,) = lint_inbound([])
    assert missing.level == "fail"
    assert "[callrouter-inbound] has no steps in Asterisk's dialplan" in missing.text
    items = shipped()
    for item in items:
        item["AppData"] = item["AppData"].replace("CallRouterRequest", "CallRouterAsk")
    (renamed,) = lint_inbound(items)
    assert renamed.level == "fail"
    assert "sends no UserEvent(CallRouterRequest,...)" in renamed.text


def test_missing_deadline_and_wait_key_are_advice_not_failures() -> None:
    items = [i for i in shipped() if not i["AppData"].startswith("CALLROUTER_DEADLINE=")]
    for item in items:
        item["AppData"] = item["AppData"].replace(",Wait: ${CALLROUTER_WAIT}", "")
    found = lint_inbound(items)
    assert levels(found) == ["ok", "advice", "advice"]
    assert "no Set(CALLROUTER_DEADLINE=...) before the request" in found[1].text
    assert "the request does not say its Wait: callrouter assumes 4 s" in found[2].text


def test_each_extension_is_judged_and_other_contexts_and_hints_are_ignored() -> None:
    items = shipped()
    items += [{**i, "Extension": "s"} for i in shipped()]
    items.append({**items[0], "Context": "elsewhere", "Application": "Hangup"})
    items.append({**items[0], "Extension": "100", "Priority": "hint", "Application": "PJSIP/100"})
    found = lint_inbound(items)
    assert [f.text.split(":")[0] for f in found] == [
        "[callrouter-inbound] '_X.' priority 8",
        "[callrouter-inbound] 's' priority 8",
    ]
    assert levels(found) == ["ok", "ok"]


def test_names_from_asterisk_are_shown_escaped() -> None:
    items = shipped()
    for item in items:
        item["Extension"] = "_X.\x1b[2J"
    (finding,) = lint_inbound(items)
    assert "\x1b" not in finding.text
    assert "'_X.\\x1b[2J'" in finding.text


@pytest.mark.parametrize(
    ("pattern", "exten", "matches"),
    [
        ("sales", "sales", True),
        ("sales", "Sales", False),
        ("555-1234", "5551234", True),
        ("_X.", "101", True),
        ("_X.", "1", False),  # "." is one or more after the X
        ("_X!", "1", True),
        ("_1XX", "101", True),
        ("_1XX", "1001", False),
        ("_x.", "74951234567", True),  # Asterisk reads x, z, n in any case
        ("_NXX", "199", False),
        ("_NXX", "299", True),
        ("_ZX", "09", False),
        ("_[a-z0-9].", "d17", True),
        ("_[a-z0-9].", "D17", False),
        ("_[13-5]X", "42", True),
        ("_[13-5]X", "22", False),
        ("_[-a]X", "-1", False),  # Asterisk drops the dialled "-" first
        ("_[-a]X", "a1", True),
        ("_[5-1]X", "31", False),  # a reversed range matches nothing, and raises nothing
        ("_1 X", "1 5", True),  # a space is a character
        ("1 5", "15", False),
        ("555 1234", "555 1234", True),
        ("_[", "[", False),  # not a pattern this reads: ask Asterisk
        ("_v.", "vip", True),
        ("_+7X.", "+7495", True),
    ],
)
def test_extension_matches_as_asterisk_does(pattern: str, exten: str, matches: bool) -> None:
    assert extension_matches(pattern, exten) is matches


def shipped_record() -> list[dict[str, str]]:
    return dialplan_steps(SNIPPET.read_text(encoding="utf-8"), "callrouter-record")


def test_the_shipped_record_context_stores_its_mixmonitors_id() -> None:
    (finding,) = lint_record(shipped_record())
    assert finding == Finding(
        "ok", "[callrouter-record]: MixMonitor stores its id in CALLROUTER_REC_ID"
    )


def test_a_record_context_copied_before_the_id_option_is_named() -> None:
    """A [callrouter-record] pasted before i(CALLROUTER_REC_ID): it records, but
    max_duration and the API's stop can never end callrouter's MixMonitor."""
    items = shipped_record()
    (mixmonitor,) = [i for i in items if i["Application"] == "MixMonitor"]
    mixmonitor["AppData"] = mixmonitor["AppData"].replace("i(CALLROUTER_REC_ID)", "")
    assert mixmonitor["AppData"] == "${CALLROUTER_REC_MIX},${CALLROUTER_REC_OPTIONS}"
    (finding,) = lint_record(items)
    assert finding.level == "advice"
    assert f"priority {mixmonitor['Priority']}: MixMonitor without i(CALLROUTER_REC_ID)" in (
        finding.text
    )
    assert "max_duration" in finding.text


def test_a_missing_record_context_fails() -> None:
    (finding,) = lint_record([])
    assert finding.level == "fail"
    assert "[callrouter-record] is not in the dialplan" in finding.text


def test_every_finding_that_is_not_ok_says_what_to_change_and_where() -> None:
    """Issue 16: a few findings said what was wrong and not what to do: a
    request that ends the extension, one renamed, no deadline, no Wait key, a
    record context without MixMonitor. Each names the snippet to copy from."""
    items = shipped()
    ended = lint_inbound([i for i in items if int(i["Priority"]) <= 6])
    renamed = lint_inbound(
        [
            {**i, "AppData": i["AppData"].replace("CallRouterRequest", "CallRouterAsk")}
            for i in items
        ]
    )
    bare = [i for i in items if not i["AppData"].startswith("CALLROUTER_DEADLINE=")]
    bare = [{**i, "AppData": i["AppData"].replace(",Wait: ${CALLROUTER_WAIT}", "")} for i in bare]
    no_mixmonitor = lint_record([i for i in shipped_record() if i["Application"] != "MixMonitor"])
    found = [*ended, *renamed, *lint_inbound(bare), *no_mixmonitor]
    flagged = [f for f in found if f.level != "ok"]
    assert len(flagged) == 5
    for finding in flagged:
        assert "examples/asterisk/extensions.conf" in finding.text, finding.text
    assert "add Wait: ${CALLROUTER_WAIT} to the UserEvent" in flagged[3].text


def dial_context_before_internal_forwards() -> str:
    """The snippet as pasted before ``[callrouter-dial]`` dialled an internal
    forward through itself: no ``CALLROUTER_FWDINT_`` test, no ``internal`` branch."""
    kept: list[str] = []
    lines = iter(SNIPPET.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if line.lstrip().startswith(";"):
            kept.append(line)
        elif "CALLROUTER_FWDINT_" in line:
            continue
        elif "n(internal)" in line:
            assert "Goto(default)" in next(lines)  # the branch's own way out
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_the_shipped_dial_context_dials_an_internal_forward_through_itself() -> None:
    items = dialplan_steps(SNIPPET.read_text(encoding="utf-8"), "callrouter-dial")
    assert lint_dial(items) == [
        Finding("ok", "[callrouter-dial] dials an internal forward through itself")
    ]


def test_a_dial_context_copied_before_internal_forwards_is_advised() -> None:
    """Issue 16: the API forwards 101 to an internal 102 with CALLROUTER_FWDINT_101
    now; a [callrouter-dial] pasted before its branch dials 102 through the trunk."""
    items = dialplan_steps(dial_context_before_internal_forwards(), "callrouter-dial")
    assert items
    assert not [i for i in items if "FWDINT" in i["AppData"]]
    assert [i["Application"] for i in items][-2:] == ["Dial", "Goto"]
    (finding,) = lint_dial(items)
    assert finding.level == "advice"
    assert finding.text.startswith("[callrouter-dial] has no CALLROUTER_FWDINT_${...} branch")
    assert "dials 102 through the outbound context, the trunk, which does not know it" in (
        finding.text
    )
    assert "examples/asterisk/extensions.conf" in finding.text
    assert finding.text.endswith("asterisk -rx 'dialplan reload'")


def test_no_dial_context_is_no_finding_of_its_own() -> None:
    """A rule redirecting to [callrouter-dial] is checked with the rules' targets."""
    assert lint_dial([]) == []
