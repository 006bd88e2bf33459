"""The shipped feed job (``ОбработатьЛентуСобытий`` in ``examples/onec/CallRouterAPI.bsl``)
run as written, by :mod:`tests.unit.bsl_runner`, against fakes of the platform and of
callrouter's feed: the ``!`` it puts before the stored cursor when callrouter cannot
be reached, and the ``gap`` the next run sends the panels.

The first read of a run after such an outage used to be the usual 25 s long-poll:
with a quiet feed the panels' ``gap`` (re-read the calls and phones) came up to 25 s
after callrouter answered again (issue 16). It now asks with ``timeout=0``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bsl_platform import Constant
from bsl_platform import module as onec_module
from bsl_runner import Array, BslException, Map


class _Feed:
    """callrouter's feed: each read answers the next batch, or fails (None)."""

    def __init__(self, batches: list[tuple[list[dict[str, Any]], str, bool] | None]) -> None:
        self.batches = list(batches)
        #: (cursor, timeout) of each read.
        self.reads: list[tuple[str, int]] = []

    def read(self, cursor: str, timeout: int = 25) -> SimpleNamespace:
        self.reads.append((cursor, timeout))
        batch = self.batches.pop(0) if self.batches else None
        if batch is None:
            raise BslException("callrouter недоступен (GET /events?timeout=25): Couldn't connect")
        events, new_cursor, gap = batch
        return SimpleNamespace(
            События=Array(Map(e) for e in events), Курсор=new_cursor, Пропуск=gap
        )


def _run(stored: str, feed: _Feed) -> tuple[Constant, list[str]]:
    """One run of the job; (the cursor constant, what went to the panels in order)."""
    constant = Constant(stored)
    told: list[str] = []
    module = onec_module(lambda *_: None, cursor=constant)
    module.overrides.update(
        {
            "ПолучитьСобытия": feed.read,
            "РазослатьПропуск": lambda: told.append("gap"),
            "РазослатьСобытие": lambda event: told.append(event["kind"]),
        }
    )
    module.call("ОбработатьЛентуСобытий")
    return constant, told


def test_callrouter_unreachable_marks_the_cursor_once() -> None:
    feed = _Feed([([{"kind": "ringing"}], "43", False), None])
    constant, told = _run("42", feed)
    assert told == ["ringing"]
    assert constant.writes == ["43", "!43"]
    assert feed.reads == [("42", 25), ("43", 25)]
    again = _Feed([None])
    constant, told = _run("!43", again)  # still unreachable: no "!!43"
    assert constant.writes == []
    assert told == []


def test_after_an_outage_the_first_read_does_not_wait_and_the_gap_goes_out_once() -> None:
    feed = _Feed([([], "43", False), ([{"kind": "ringing"}], "44", False), ([], "44", False), None])
    constant, told = _run("!43", feed)
    # At once (timeout=0), from the cursor without its mark; then the usual long-polls.
    assert feed.reads[:3] == [("43", 0), ("43", 25), ("44", 25)]
    assert told == ["gap", "ringing"]  # one gap, before the events
    assert constant.writes[0] == "43"  # the mark is gone after callrouter answered
    assert constant.writes[-1] == "!44"  # and back when it went away again


def test_a_run_without_a_mark_waits_as_ever_and_sends_the_feeds_own_gap() -> None:
    feed = _Feed([([], "42", True), None])
    _, told = _run("42", feed)
    assert feed.reads[0] == ("42", 25)
    assert told == ["gap"]
