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

from bsl_platform import Constant, Request, Response
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


# -- one read of the feed, ПолучитьСобытия as written, on the shared platform objects -------


class _Answers:
    """``HTTPСоединение`` answering each request with the next JSON body (status 200)."""

    def __init__(self, *bodies: str) -> None:
        self.bodies = list(bodies)
        self.paths: list[str] = []

    def ВызватьHTTPМетод(self, _method: str, request: Request) -> Response:
        self.paths.append(request.path)
        return Response(200, {"content-type": "application/json"}, self.bodies.pop(0))


def test_a_feed_answer_becomes_the_events_array_and_the_cursor_text() -> None:
    """JSON arrays are ``Массив`` (``ТипЗнч`` = ``Тип("Массив")``), as ПрочитатьJSON
    gives them: a reader that gave a plain list dropped every event of the answer."""
    answers = _Answers(
        '{"events": [{"cursor": 1764590400123457, "kind": "ringing", "extension": "101",'
        ' "call_id": "1764590399.42", "ts": 1764590400.1, "data": {"card": null}}],'
        ' "cursor": 1764590400125013, "gap": false}',
        '{"events": [], "cursor": 1764590400125099, "gap": true}',
    )
    settings = SimpleNamespace(
        Токен="t", Путь="/pbx", Сервер="pbx.local", Порт=8089, ЗащищенноеСоединение=None
    )
    module = onec_module(lambda *_: answers, settings=settings)
    batch = module.call("ПолучитьСобытия", 1764590400123456, 0)
    assert isinstance(batch.События, Array)
    assert [e["kind"] for e in batch.События] == ["ringing"]
    assert batch.События[0]["data"] == {"card": None}
    assert (batch.Курсор, batch.Пропуск) == ("1764590400125013", False)
    again = module.call("ПолучитьСобытия", batch.Курсор)
    assert (list(again.События), again.Курсор, again.Пропуск) == ([], "1764590400125099", True)
    assert answers.paths == [
        "/pbx/api/v1/events?timeout=0&cursor=1764590400123456",
        "/pbx/api/v1/events?timeout=25&cursor=1764590400125013",
    ]
