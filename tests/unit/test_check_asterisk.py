"""``callrouter check --asterisk`` (router/commands/preflight.py) on the replaying fake.

The fake answers as Asterisk 22 does: a ``Redirect`` of a channel that does not
exist is an error only after the class check, a ``UserEvent`` comes back to a
session that reads ``user``, ``ShowDialPlan`` lists what a handler gives.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.commands.preflight import PROBE_EVENT, check_asterisk
from router.dialplan_lint import lint_inbound
from router.liveguard import Claim, LiveGuard
from router.testing.replay import SentAction
from tests.unit.test_dialplan_lint import shipped

if TYPE_CHECKING:
    from router.dialplan_lint import Finding
    from router.testing import ReplayAsterisk

pytest_plugins = ["router.testing"]

REPO = Path(__file__).parents[2]
#: What Debian's package says (the sandbox's, in the page's example).
VERSION = "22.10.1+dfsg+~cs6.17.60671434-1"


def dialplan_answer(sent: SentAction) -> bytes:
    """``ShowDialPlan`` for the shipped inbound context, as Asterisk 22 writes it."""
    aid = sent.action_id or ""
    blocks = [
        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
        "Message: DialPlan list will follow\r\n"
    ]
    items = shipped()
    for item in items:
        fields = {**item, "ActionID": aid}
        blocks.append("".join(f"{k}: {v}\r\n" for k, v in fields.items()))
    blocks.append(
        f"Event: ShowDialPlanComplete\r\nEventList: Complete\r\nListItems: {len(items)}\r\n"
        f"ListExtensions: 1\r\nListPriorities: {len(items)}\r\nListContexts: 1\r\n"
        f"ActionID: {aid}\r\n"
    )
    return ("\r\n".join(blocks) + "\r\n").encode()


async def run(replay: ReplayAsterisk) -> list[Finding]:
    client = replay.client()
    try:
        return await check_asterisk(client, listen=1.0)
    finally:
        await client.aclose()


async def test_a_sound_setup_passes_every_check(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    found = await run(ajam_replay)
    assert [f.level for f in found] == ["ok"] * 5, found
    texts = [f.text for f in found]
    assert texts[0] == f"logged in to {ajam_replay.url} as 'router'"
    assert texts[1] == "Redirect allowed (write = call)"
    assert texts[2].startswith("[callrouter-inbound] '_X.' priority 6: the request, then Wait")
    assert texts[3].startswith("UserEvents reach this user (its own came back in ")
    assert texts[4] == "no callrouter is live on this Asterisk now"
    # Nothing was moved: the Redirect named a channel no driver makes.
    (redirect,) = ajam_replay.sent("Redirect")
    assert redirect.get("Channel") == "callrouter-check/no-such-channel"
    assert [u.get("UserEvent") for u in ajam_replay.sent("UserEvent")] == [PROBE_EVENT]


async def test_no_user_events_fail_with_the_causes_to_check(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.read = frozenset({"call", "dialplan", "system"})
    found = await run(ajam_replay)
    (fail,) = [f for f in found if f.level == "fail"]
    assert fail.text.startswith("Asterisk sends this user no UserEvent (its own did not come")
    for cause in ("read = user", "eventfilter", "disabledevents"):
        assert cause in fail.text


async def test_a_live_router_is_named(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    other = LiveGuard(Claim("3f2a9c1d", 1_795_000_000.417, "pbx", 812))
    ajam_replay.queue_event({"Event": "UserEvent", "Privilege": "user,all", **other.beat()})
    found = await run(ajam_replay)
    assert found[-1].text == (
        "a callrouter is live on this Asterisk: instance 3f2a9c1d on host pbx, pid 812, "
        "live since 2026-11-18 11:06:40.417 UTC"
    )


async def test_refused_actions_and_a_missing_context_fail(ajam_replay: ReplayAsterisk) -> None:
    def denied(sent: SentAction) -> list[tuple[str, str]]:
        return [("Response", "Error"), ("Message", "Permission denied")]

    ajam_replay.on("Redirect", denied)
    ajam_replay.on("UserEvent", denied)
    found = await run(ajam_replay)  # ShowDialPlan unknown to the fake: no such context
    assert [f.level for f in found] == ["ok", "fail", "fail", "fail"]
    assert found[1].text.startswith("Asterisk refuses this user Redirect: give it write = call")
    assert found[2].text.startswith("[callrouter-inbound] has no steps in Asterisk's dialplan")
    assert found[3].text.startswith("Asterisk refuses this user UserEvent: give it write = user")


async def test_a_refused_login_is_one_failure(ajam_replay: ReplayAsterisk) -> None:
    client = ajam_replay.client(secret="wrong")
    try:
        (found,) = await check_asterisk(client, listen=1.0)
    finally:
        await client.aclose()
    assert found.level == "fail"
    assert found.text.startswith(f"cannot log in to {ajam_replay.url} as 'router': ")
    assert "Authentication failed" in found.text


DOCS = REPO / "docs"
PAGES = {"asterisk.md": "## Checking the setup", "ru/asterisk.md": "## Проверка настройки"}


def section(page: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(PAGES[page])
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_shows_what_the_command_prints(
    page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/asterisk.md (+ru) "Checking the setup": the command parses as shown,
    the rules line is what it prints in examples/, and each ``asterisk:`` line is
    what the checks print for the shipped snippet (the fake stands in for
    Asterisk 22.10.1 at the example's url; only the echo's milliseconds vary)."""
    from router.cli import build_parser
    from router.commands.check import _LEVELS
    from router.commands.check import run as run_check
    from router.testing import ReplayAsterisk

    (console,) = re.findall(r"```console\n(.*?)```", section(page), re.S)
    command, rules_line, blank, *shown = console.rstrip("\n").split("\n")
    args = build_parser().parse_args(shlex.split(command.removeprefix("$ "))[1:])
    assert args.asterisk
    assert str(args.config) == "router.toml"
    args.asterisk = False  # the rules alone here; Asterisk's side from the fake below
    monkeypatch.chdir(REPO / "examples")
    assert run_check(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == rules_line
    assert blank == ""

    async def fake() -> list[Finding]:
        replay = ReplayAsterisk(url="http://127.0.0.1:8088/asterisk")
        replay.on("ShowDialPlan", dialplan_answer)
        replay.on("CoreSettings", lambda sent: {"AsteriskVersion": VERSION})
        return await run(replay)

    printed = [f"asterisk: {_LEVELS[f.level]} {f.text}" for f in asyncio.run(fake())]

    def same(line: str) -> str:
        return re.sub(r"came back in [\d.]+ ms", "came back in N ms", line)

    assert [same(line) for line in shown] == [same(line) for line in printed]

    (failure,) = re.findall(r"```text\n(.*?)\n```", section(page), re.S)
    items = shipped()
    for item in items:
        if int(item["Priority"]) >= 7:
            item["Priority"] = str(int(item["Priority"]) + 1)
    items.append({**items[0], "Priority": "7", "Application": "Playback", "AppData": "beep"})
    (finding,) = lint_inbound(items)
    assert failure == f"asterisk: {_LEVELS[finding.level]} {finding.text}"
