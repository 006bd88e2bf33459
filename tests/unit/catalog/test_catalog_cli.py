"""``callrouter actions`` and the shared action help text."""

from __future__ import annotations

import pytest

from router.ami.catalog import load_catalog
from router.cli import main
from router.commands.actions import format_action_help


def test_actions_lists_matches_with_synopsis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actions", "originate"]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["Originate", "Originate", "a", "call."]


def test_actions_search_is_case_insensitive_and_covers_synopsis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["actions", "QUEUE STATUS"]) == 0
    assert "QueueStatus" in capsys.readouterr().out


def test_actions_without_search_lists_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actions"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 154


def test_no_match_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actions", "zzzz-nothing"]) == 1
    assert "no action matches" in capsys.readouterr().err


def test_events_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["actions", "--events", "dialbegin"]) == 0
    assert capsys.readouterr().out.startswith("DialBegin")


def test_action_help_shows_parameters_and_list_reply() -> None:
    text = format_action_help(load_catalog().action("QueueStatus"))
    assert text.startswith("usage: callrouter ami QueueStatus [Queue=VALUE] [Member=VALUE]")
    assert "closed by QueueStatusComplete" in text
    bridge = format_action_help(load_catalog().action("Bridge"))
    assert "Channel1=VALUE Channel2=VALUE [Tone=VALUE]" in bridge
    assert "one of no, Channel1, Channel2, Both" in bridge
