"""The dialplan audit advises on a request that passes the caller's values
unfiltered (router/dialplan_values.py, router/dialplan_lint.py).

Milestone 1's snippet (tests/fixtures/milestone1/extensions.conf) sent
``UserEvent(CallRouterRequest,DID: ${EXTEN},Caller: ${CALLERID(num)},...)``
then ``Ringing()`` then ``Wait``. The audit failed the step between the
request and the wait; an administrator who moved ``Ringing()`` up, as the
failure says, got an "ok" and no word on the unfiltered values, though a
caller ID of ``1,Wait: 0`` sends a ``Wait:`` key that callrouter reads before
the request's own. The audit now names the context, extension and priority,
and the lines to write; the snippet as shipped (examples/asterisk/extensions.conf
and the two pages that quote it) stays an "ok" alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.dialplan_lint import Finding, lint_inbound
from router.dialplan_values import CALLER_LINE, DID_LINE, unfiltered
from router.testing.asterisk import dialplan_steps
from tests.unit.test_check_asterisk import run, steps_answer

if TYPE_CHECKING:
    from router.testing import ReplayAsterisk

pytest_plugins = ["router.testing"]

REPO = Path(__file__).parents[2]
MILESTONE1 = REPO / "tests" / "fixtures" / "milestone1" / "extensions.conf"
PAGES = [REPO / "docs" / "asterisk.md", REPO / "docs" / "ru" / "asterisk.md"]
REQUEST = (
    "UserEvent(CallRouterRequest,DID: ${CALLROUTER_DID},Caller: ${CALLROUTER_CALLER},"
    "Wait: ${CALLROUTER_WAIT})"
)


def milestone1_with_its_wait_fixed() -> str:
    """Milestone 1's snippet with ``Ringing()`` moved before the request, as the
    audit's failure on it says to do."""
    text = MILESTONE1.read_text(encoding="utf-8")
    request = (
        " same => n,UserEvent(CallRouterRequest,DID: ${EXTEN},Caller: ${CALLERID(num)},"
        "Wait: ${CALLROUTER_WAIT})\n"
    )
    assert text.count(request + " same => n,Ringing()\n") == 1
    return text.replace(request + " same => n,Ringing()\n", " same => n,Ringing()\n" + request)


def inbound(text: str) -> list[Finding]:
    return lint_inbound(dialplan_steps(text, "callrouter-inbound"))


def advice(findings: list[Finding]) -> list[str]:
    return [f.text for f in findings if f.level == "advice"]


def code_blocks(page: Path) -> str:
    """The page's ```ini blocks, one after another: the snippet as it quotes it."""
    text = page.read_text(encoding="utf-8")
    return "\n".join(re.findall(r"^```ini\n(.*?)^```", text, re.DOTALL | re.MULTILINE))


def test_milestone1s_request_with_its_wait_fixed_is_advised_with_the_lines_to_write() -> None:
    findings = inbound(milestone1_with_its_wait_fixed())
    assert [f.level for f in findings] == ["ok", "advice"]
    (text,) = advice(findings)
    assert text.startswith(
        "[callrouter-inbound] '_X.' priority 5: the request passes 'DID: ${EXTEN}' and "
        "'Caller: ${CALLERID(num)}' unfiltered: "
    )
    assert (
        f"write `same => n,{DID_LINE}` and `same => n,{CALLER_LINE}` before the request; "
        f"write the request as `same => n,{REQUEST}`"
    ) in text
    assert "a caller ID of 1,Wait: 0 sends Wait: 0 before the request's own" in text


def test_the_lines_advised_are_the_shipped_snippets_own() -> None:
    """What the advice says to write is what the snippet and both pages write."""
    for source in [REPO / "examples" / "asterisk" / "extensions.conf", *PAGES]:
        text = source.read_text(encoding="utf-8")
        for line in (DID_LINE, CALLER_LINE, REQUEST):
            assert f" same => n,{line}\n" in text, (source, line)


@pytest.mark.parametrize(
    "source", [REPO / "examples" / "asterisk" / "extensions.conf", *PAGES], ids=lambda p: p.name
)
def test_the_shipped_snippet_is_not_advised_on(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    if source.suffix == ".md":
        text = code_blocks(source)
    findings = inbound(text)
    assert [f.level for f in findings] == ["ok"], findings


def test_a_did_variable_set_unfiltered_is_named_with_its_set_to_rewrite() -> None:
    """Milestone 1 set CALLROUTER_DID=${EXTEN} at priority 2: passing that
    variable is no better than ${EXTEN}; the Set is the line to change."""
    text = milestone1_with_its_wait_fixed().replace(
        "DID: ${EXTEN},Caller: ${CALLERID(num)}", "DID: ${CALLROUTER_DID},Caller: ${CALLERID(num)}"
    )
    (said,) = advice(inbound(text))
    assert (
        "'DID: ${CALLROUTER_DID}' (${EXTEN} through ${CALLROUTER_DID}, set unfiltered at "
        "priority 2)"
    ) in said
    assert f"write priority 2 as `{DID_LINE}`" in said
    assert f"write `same => n,{CALLER_LINE}` before the request" in said
    # The DID key keeps its variable, filtered where it is set.
    assert f"`same => n,{REQUEST}`" in said


def test_a_callers_name_is_named_and_left_out_of_the_request() -> None:
    text = milestone1_with_its_wait_fixed().replace(
        "Wait: ${CALLROUTER_WAIT})\n same => n,Wait",
        "Name: ${CALLERID(name)},Wait: ${CALLROUTER_WAIT})\n same => n,Wait",
    )
    (said,) = advice(inbound(text))
    assert "'Name: ${CALLERID(name)}'" in said
    assert f"`same => n,{REQUEST}`" in said  # the request without the name
    assert "a caller's name is left out: callrouter reads it from the channel's own snapshot" in (
        said
    )


STEPS = [(1, "Answer", ""), (2, "Set", "CALLROUTER_DEADLINE=$[${EPOCH} + 4]")]


@pytest.mark.parametrize(
    ("before", "sent", "parts"),
    [
        # Read in the request itself, in any form Asterisk reads it.
        ([], "CallRouterRequest,DID: ${EXTEN:1},Wait: 4", ["DID: ${EXTEN:1}"]),
        ([], "CallRouterRequest,Caller: ${callerid(num)}", ["Caller: ${callerid(num)}"]),
        ([], "CallRouterRequest,Caller: ${CALLERID(name)}", ["Caller: ${CALLERID(name)}"]),
        ([], "CallRouterRequest,DID: ${FILTER(0-9,${EXTEN})}", []),
        # Through variables: tainted, cleared, copied.
        ([(3, "Set", "D=${EXTEN}")], "CallRouterRequest,DID: ${D}", ["DID: ${D}"]),
        (
            [(3, "Set", "D=${EXTEN}"), (4, "Set", "D=${FILTER(0-9,${EXTEN})}")],
            "CallRouterRequest,DID: ${D}",
            [],
        ),
        (
            [(3, "Set", "A=${EXTEN}"), (4, "Set", "B=x${A}")],
            "CallRouterRequest,DID: ${B}",
            ["DID: ${B}"],
        ),
        # The caller ID itself filtered before the request.
        (
            [(3, "Set", "CALLERID(num)=${FILTER(0-9+,${CALLERID(num)})}")],
            "CallRouterRequest,Caller: ${CALLERID(num)}",
            [],
        ),
        # An inherited variable (FreePBX's Set(__FROM_DID=${EXTEN})) is read
        # without its underscores: tainted and cleared as such (hrev50b).
        (
            [(3, "Set", "__FROM_DID=${EXTEN}")],
            "CallRouterRequest,DID: ${FROM_DID}",
            ["DID: ${FROM_DID}"],
        ),
        (
            [(3, "Set", "D=${EXTEN}"), (4, "Set", "_D=${FILTER(0-9,${EXTEN})}")],
            "CallRouterRequest,DID: ${D}",
            [],
        ),
        # A variable no Set gave a value from outside is not the caller's.
        ([], "CallRouterRequest,DID: ${D},Wait: 4", []),
    ],
)
def test_what_is_unfiltered(
    before: list[tuple[int, str, str]], sent: str, parts: list[str]
) -> None:
    assert [f.part for f in unfiltered([*STEPS, *before], sent)] == parts


def test_a_copy_names_the_first_set_to_filter() -> None:
    (found,) = unfiltered(
        [(3, "Set", "A=${EXTEN}"), (4, "Set", "B=${A}")], "CallRouterRequest,DID: ${B}"
    )
    assert (found.via, found.set_at) == ("A", 3)
    assert found.fix() == "Set(A=${FILTER(0123456789*#+,${EXTEN})})"
    # The Set to rewrite keeps its name as written, inheritance and all.
    (found,) = unfiltered([(3, "Set", "__FROM_DID=${EXTEN}")], "CallRouterRequest,DID: ${FROM_DID}")
    assert found.fix() == "Set(__FROM_DID=${FILTER(0123456789*#+,${EXTEN})})"


async def test_check_asterisk_gives_the_advice_on_the_loaded_dialplan(
    ajam_replay: ReplayAsterisk,
) -> None:
    """`callrouter check --asterisk` (and the engine's audits, which share
    router/dialplan_audit.py) reads the context as ShowDialPlan lists it."""
    items = dialplan_steps(milestone1_with_its_wait_fixed(), "callrouter-inbound")
    ajam_replay.on("ShowDialPlan", lambda sent: steps_answer(sent, items))
    findings = await run(ajam_replay)
    said = [f.text for f in findings if "unfiltered" in f.text]
    assert [f.level for f in findings if f.text in said] == ["advice"]
    assert said[0].startswith("[callrouter-inbound] '_X.' priority 5: the request passes ")
    assert f"`same => n,{REQUEST}`" in said[0]


def test_the_upgrade_pages_quote_the_advice_as_given() -> None:
    (said,) = advice(inbound(milestone1_with_its_wait_fixed()))
    quote = "the request passes 'DID: ${EXTEN}' and 'Caller: ${CALLERID(num)}' unfiltered"
    assert quote in said
    for page in (REPO / "docs" / "operations.md", REPO / "docs" / "ru" / "operations.md"):
        assert quote in " ".join(page.read_text(encoding="utf-8").split()), page


def test_the_check_is_bounded_to_twenty_requests_a_context() -> None:
    """Each check reads every step before its request: a context listing
    thousands of requests (the listing came over the network) costs at most 20."""
    items = [
        {
            "Context": "callrouter-inbound",
            "Extension": f"{100 + n}",
            "Priority": str(priority),
            "Application": application,
            "AppData": data,
        }
        for n in range(25)
        for priority, application, data in (
            (1, "UserEvent", "CallRouterRequest,DID: ${EXTEN},Wait: 4"),
            (2, "Wait", "4"),
            (3, "Goto", "callrouter-default,${EXTEN},1"),
        )
    ]
    findings = lint_inbound(items)
    assert [f.level for f in findings].count("ok") == 25
    assert len([t for t in advice(findings) if " unfiltered: " in t]) == 20
