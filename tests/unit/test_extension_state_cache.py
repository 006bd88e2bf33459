"""``[plugins.extension_state] cache``: states from ExtensionStatus events,
answered without a round trip (router/builtin/extension_state.py)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from router.ami.message import Event, Response
from router.ami.protocol import ActionResult
from router.builtin.extension_state import MAX_AGE, MAX_CACHED, ExtensionState
from router.cli import main
from router.config import load_config


class AskedAMI:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def send(self, name: str, params: dict[str, str], **_: Any) -> ActionResult:
        self.asked.append(params["Exten"])
        return ActionResult(Response((("Response", "Success"), ("Status", "0"))))


def status(exten: str, code: str, context: str = "hints") -> Event:
    return Event(
        (
            ("Event", "ExtensionStatus"),
            ("Exten", exten),
            ("Context", context),
            ("Hint", f"PJSIP/{exten}"),
            ("Status", code),
        )
    )


def plugin(tmp_path: Path, table: str) -> tuple[ExtensionState, AskedAMI]:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f"[plugins.extension_state]\n{table}",
        encoding="utf-8",
    )
    config = load_config(path)
    state = ExtensionState()
    state.callrouter_configure(config, config.plugins.for_plugin("extension_state"))
    ami = AskedAMI()
    state.ami = ami  # type: ignore[assignment]
    return state, ami


async def answer(state: ExtensionState, exten: str) -> str:
    got = state.lookup(exten)
    return await got if inspect.isawaitable(got) else got


async def test_without_the_cache_every_lookup_asks_and_no_event_is_wanted(
    tmp_path: Path,
) -> None:
    state, ami = plugin(tmp_path, "")
    assert state.callrouter_wanted_events() == ()
    state.callrouter_event(status("101", "2"), None)
    assert await answer(state, "101") == "idle"
    assert ami.asked == ["101"]


async def test_a_state_an_event_told_is_answered_without_a_round_trip(tmp_path: Path) -> None:
    """The owner rule asks for every call: with the cache, an extension whose
    change Asterisk told is answered from memory (no ExtensionState), one it
    did not is asked, and a gap empties it (a change may have been missed)."""
    state, ami = plugin(tmp_path, "cache = true\n")
    assert state.callrouter_wanted_events() == ("ExtensionStatus",)
    assert await answer(state, "101") == "idle"  # nothing told yet: asked
    state.callrouter_event(status("101", "2"), None)
    state.callrouter_event(status("102", "1", context="other"), None)  # not the hints
    assert not inspect.isawaitable(state.lookup("101"))
    assert await answer(state, "101") == "busy"
    assert await answer(state, "102") == "idle"  # asked
    state.callrouter_event(status("101", "0"), None)
    assert await answer(state, "101") == "idle"
    state.callrouter_stream_gap(None)  # type: ignore[arg-type]
    assert await answer(state, "101") == "idle"
    assert ami.asked == ["101", "102", "101"]


@pytest.mark.parametrize("gone", ["-2", "-1"])
async def test_a_hint_that_went_away_is_asked_again(tmp_path: Path, gone: str) -> None:
    """-2/-1 (removed, deactivated) is no state of a phone: kept as "unavailable"
    or "unknown" it would answer for a hint whose next state is never told
    (Asterisk tells nothing when a hint is added back the way it went); the
    extension is asked instead."""
    state, ami = plugin(tmp_path, "cache = true\n")
    state.callrouter_event(status("101", "2"), None)
    state.callrouter_event(status("101", gone), None)
    assert "101" not in state.states
    assert await answer(state, "101") == "idle"
    assert ami.asked == ["101"]


async def test_a_state_is_held_for_max_age_seconds_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asterisk 22 tells nothing when a dialplan reload drops a hint (seen on
    the sandbox): a held "busy" skipped that manager for ever, where Asterisk
    answers "unknown" and the owner rule rings. Held MAX_AGE seconds at most,
    then asked; the next event holds it again."""
    now = [1000.0]
    monkeypatch.setattr("router.builtin.extension_state.time.monotonic", lambda: now[0])
    state, ami = plugin(tmp_path, "cache = true\n")
    assert state.max_age == MAX_AGE
    state.callrouter_event(status("101", "2"), None)
    now[0] += MAX_AGE - 1
    assert state.lookup("101") == "busy"
    now[0] += 2
    assert await answer(state, "101") == "idle"  # asked
    assert "101" not in state.states
    assert await answer(state, "101") == "idle"  # asked again: only events fill it
    state.callrouter_event(status("101", "1"), None)
    assert state.lookup("101") == "inuse"
    assert ami.asked == ["101", "101"]


def test_the_cache_holds_a_bounded_number_of_extensions(tmp_path: Path) -> None:
    state, _ = plugin(tmp_path, "cache = true\n")
    for n in range(MAX_CACHED + 5):
        state.callrouter_event(status(str(n), "0"), None)
    assert len(state.states) == MAX_CACHED
    state.callrouter_event(status("0", "2"), None)  # one held is still updated
    assert state.states["0"] == "busy"


@pytest.mark.parametrize(("value", "wanted"), [("true", True), ("false", False)])
def test_check_prints_the_eventfilter_line_the_cache_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, wanted: bool
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n"
        "    do: [{redirect: {context: queues, exten: sales}}]\n",
        encoding="utf-8",
    )
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "router"\nsecret = "s"\n'
        f'[router]\nrules = ["{rules}"]\n[plugins.extension_state]\ncache = {value}\n',
        encoding="utf-8",
    )
    assert main(["check", "--config", str(path), "--manager-conf"]) == 0
    line = "eventfilter(action(include),name(ExtensionStatus))="
    assert (line in capsys.readouterr().out.splitlines()) is wanted
