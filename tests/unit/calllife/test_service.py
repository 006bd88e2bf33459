"""The engine's call life (router/calllife/service.py): the replay mark across a
restart, the replay after a stream gap, and nothing raised into the engine."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from test_captured import ALL, FIXTURES, SCENARIOS, blocks

from router.ami.message import Event
from router.calllife import fold
from router.calllife.fold import FOLDED, Folder
from router.calllife.model import CallEvent, CelRecord
from router.calllife.service import MARK_FILE, CallLife
from router.calllife.settings import HistorySettings
from router.calllife.sources import SqliteSource
from router.testing.cel import Cel, as_ami

SETTINGS = HistorySettings(cel=f"sqlite://{FIXTURES / 'cel.db'}", settle_delay=0)
EVENTS = [b for name in SCENARIOS for b in blocks(name)]
#: Asterisk's clock a little after the captures.
NOW = max(r.at for r in ALL) + 60


def expected_ids() -> list[str]:
    folder = Folder()
    return sorted(e.event_id for r in ALL for e in folder.feed(r))


def life(told: list[CallEvent], clock: list[float] | None = None) -> CallLife:
    """A call life on a clock the test moves (``clock[0]``), NOW by default."""

    async def emit(event: CallEvent) -> None:
        told.append(event)

    now = clock if clock is not None else [NOW]
    return CallLife(SETTINGS, emit, clock=lambda: now[0])


async def settle(service: CallLife, deadline: float = 30.0) -> None:
    """Wait for the replays themselves, not a fixed number of ticks: the replay
    reads the store in a worker thread, which a loaded CI machine may start a
    second or more late (a tick count failed there, with nothing wrong)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while service._tasks:
        left = end - loop.time()
        if left <= 0:
            raise AssertionError("the replay did not finish")
        await asyncio.wait(set(service._tasks), timeout=left)


@pytest.mark.parametrize("cut", [0, 40, 75, 120, len(EVENTS)])
async def test_a_router_killed_mid_stream_tells_the_rest_after_its_restart(
    tmp_path: Path, cut: int
) -> None:
    first: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    before = life(first, clock)
    before.start(tmp_path)
    for fields in EVENTS[:cut]:
        if "Timestamp" in fields:
            clock[0] = float(fields["Timestamp"])  # Asterisk's clock as the events tell it
        await before.ingest(fields["Event"], fields)
    before.write_mark()  # what the timed job did last before the SIGKILL
    second: list[CallEvent] = []
    after = life(second)
    after.start(tmp_path)
    await settle(after)
    ids = [e.event_id for e in second]
    assert len(ids) == len(set(ids))  # once per process
    assert sorted({e.event_id for e in first} | set(ids)) == expected_ids()
    assert all(e.replayed for e in second)


@pytest.mark.parametrize("cut", [40, 75, 120, len(EVENTS)])
async def test_a_call_told_to_its_end_is_not_told_again_after_a_restart(
    tmp_path: Path, cut: int
) -> None:
    """The restart's replay reads back past the mark (its margin, a long call); the
    calls it meets that the killed router had told to the end stay told."""
    first: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    before = life(first, clock)
    before.start(tmp_path)
    for fields in EVENTS[:cut]:
        if "Timestamp" in fields:
            clock[0] = float(fields["Timestamp"])
        await before.ingest(fields["Event"], fields)
    before.write_mark()
    ended = {e.call_id for e in first if e.kind in ("hangup", "missed")}
    assert ended  # the cut leaves some calls told to the end
    second: list[CallEvent] = []
    after = life(second)
    after.start(tmp_path)
    await settle(after)
    assert [e.event_id for e in second if e.call_id in ended] == []
    assert sorted({e.event_id for e in first} | {e.event_id for e in second}) == expected_ids()
    if cut == len(EVENTS):
        assert second == []  # every call was told to the end before the kill


async def test_a_first_start_writes_its_mark_at_once(tmp_path: Path) -> None:
    """Killed before the first timed save, the next start still replays from then."""
    service = life([], [1_800_000_000.0])
    service.start(tmp_path)
    assert service.read_mark() == 1_800_000_000.0


@pytest.mark.parametrize("cut", [40, 75, 120])
async def test_a_first_start_tells_no_call_that_was_up_before_it(tmp_path: Path, cut: int) -> None:
    """With no mark there is no history to rebuild a call already up from: the
    calls whose start came before the cut are not told; those that start
    after it are, every fact of them (docs/history.md)."""
    told: list[CallEvent] = []
    service = life(told)
    service.start(tmp_path)
    assert service.folder.history_from == NOW
    later = {
        f["UniqueID"] for f in EVENTS[cut:] if f.get("EventName") == "CHAN_START"
        and f["UniqueID"] == f["LinkedID"]
    }  # fmt: skip
    assert later
    assert len(later) < len({f["LinkedID"] for f in EVENTS if "LinkedID" in f})
    for fields in EVENTS[cut:]:
        await service.ingest(fields["Event"], fields)
    folder = Folder()
    whole = sorted(e.event_id for r in ALL if r.linkedid in later for e in folder.feed(r))
    assert sorted(e.event_id for e in told) == whole


async def test_a_start_that_replays_from_its_mark_has_history_already(tmp_path: Path) -> None:
    life([], [NOW - 100]).start(tmp_path)  # leaves a mark
    service = life([])
    service.start(tmp_path)
    assert service.folder.history_from is None
    await settle(service)


async def test_a_gap_is_replayed_and_live_continues(tmp_path: Path) -> None:
    told: list[CallEvent] = []
    service = life(told)
    service.start(tmp_path)
    for fields in EVENTS[:50]:
        await service.ingest(fields["Event"], fields)
    # Events 50..89 are lost; the stream comes back and the engine reports the gap.
    service.gap(ALL[0].at)
    await settle(service)
    for fields in EVENTS[90:]:
        await service.ingest(fields["Event"], fields)
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_ids()


async def test_an_end_the_store_had_not_written_at_the_replay_is_told_by_a_second_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asterisk writes its CEL store late under load: a gap's replay read the
    store before the last call's end was in it, and that call stayed open to 1C
    until the next gap or restart (seen in CI: 8 calls placed while the router
    was stopped, the last one never ended in 1C). A call of before the gap still
    open after the replay makes the store be read once more."""
    from router.calllife import service as service_module

    monkeypatch.setattr(service_module, "SECOND_LOOK", 0.0)
    real = SqliteSource(FIXTURES / "cel.db")
    last = max(r.at for r in ALL)
    reads: list[int] = []

    class Lagging:
        """The store as Asterisk under load has it: the first read lacks the last second."""

        def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
            reads.append(len(reads))
            calls = real.read(since, until)
            if len(reads) > 1:
                return calls
            cut = {k: [r for r in v if r.at < last - 1] for k, v in calls.items()}
            return {k: v for k, v in cut.items() if v}

    told: list[CallEvent] = []
    service = life(told)
    service.source = Lagging()
    service.start(tmp_path)
    await settle(service)
    reads.clear()
    for fields in EVENTS[:50]:
        await service.ingest(fields["Event"], fields)
    service.gap(ALL[0].at)  # everything after the 50th event is lost
    await settle(service)
    assert len(reads) == 2  # the replay, and the second look
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_ids()
    # Nothing open from before the gap: no second look.
    reads.clear()
    service.gap(NOW)
    await settle(service)
    assert len(reads) == 1


async def test_with_nobody_listening_nothing_is_replayed_and_the_mark_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No ``callrouter_call_event`` plugin: no replay at start or after a gap, and
    the mark stays where the last listener left it, so a listener enabled later
    is told what it missed, as after a restart."""
    caplog.set_level(logging.INFO, logger="router.calllife")
    first: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    before = life(first, clock)
    before.start(tmp_path)
    before.write_mark()
    mark = before.read_mark()
    assert mark == ALL[0].at - 1

    async def emit(event: CallEvent) -> None:
        raise AssertionError("nobody listens")

    listening = [False]
    idle = CallLife(SETTINGS, emit, clock=lambda: NOW, listening=lambda: listening[0])
    idle.start(tmp_path)
    idle.gap(ALL[0].at)
    assert not idle._tasks
    idle.write_mark()
    await idle.stop()
    assert idle.read_mark() == mark  # untouched
    assert "no plugin reads call events" in caplog.text

    told: list[CallEvent] = []
    later = life(told)
    later.start(tmp_path)
    await settle(later)
    assert sorted(e.event_id for e in told) == expected_ids()


async def test_without_a_store_a_gap_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[CallEvent] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    service = CallLife(HistorySettings(), emit, clock=lambda: 1_800_000_000.0)
    service.start(tmp_path)
    service.gap(0.0)
    assert not service._tasks
    assert "no [history] cel store" in caplog.text
    assert service.folder.history_from == 1_800_000_000.0  # nothing rebuilds the calls up


async def test_without_a_store_the_start_says_what_a_restart_loses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """h1c46's trial (issue 16): with the 1C plugin and no ``[history] cel``, a call
    made while callrouter was restarting never reached 1C, and nothing said so."""

    async def emit(event: CallEvent) -> None:
        raise AssertionError("nothing to tell")

    service = CallLife(HistorySettings(), emit, clock=lambda: 1_800_000_000.0)
    with caplog.at_level(logging.INFO, logger="router.calllife"):
        service.start(tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no [history] cel store" in warnings[0].getMessage()
    assert "while callrouter is stopped" in warnings[0].getMessage()


async def test_without_a_store_and_no_listener_the_start_says_nothing_of_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def emit(event: CallEvent) -> None:
        raise AssertionError("nothing to tell")

    service = CallLife(HistorySettings(), emit, listening=lambda: False)
    service.start(tmp_path)
    assert "no [history] cel store" not in caplog.text


async def test_bad_events_never_reach_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    told: list[CallEvent] = []
    service = life(told)
    await service.ingest("CEL", {"EventName": "CHAN_START"})  # no ids, no time
    await service.ingest("CEL", {"EventName": "HANGUP", "UniqueID": "u", "LinkedID": "l",
                                 "Timestamp": "nan", "EventTime": "x"})  # fmt: skip
    await service.ingest("Newstate", {"ChannelState": "5"})

    async def boom(event: CallEvent) -> None:
        raise RuntimeError("plugin facade bug")

    failing = CallLife(SETTINGS, boom)
    for fields in blocks("answered"):
        await failing.ingest(fields["Event"], fields)
    assert told == []
    assert failing.emitted == 3
    assert "not folded" in caplog.text


async def test_the_mark_is_the_oldest_open_call(tmp_path: Path) -> None:
    told: list[CallEvent] = []
    service = life(told)
    service.start(tmp_path)
    answered = blocks("answered")
    for fields in answered[:5]:  # the call has started, not ended
        await service.ingest(fields["Event"], fields)
    start = min(r.at for r in ALL if r.event == "CHAN_START")
    assert service.mark() == start
    await service.save_mark()
    # Nothing ended yet: no call told to the end beside the mark.
    assert json.loads((tmp_path / MARK_FILE).read_text(encoding="utf-8")) == {
        "mark": start,
        "told": {},
    }
    assert service.read_mark() == start


def test_the_fixture_store_is_what_the_tests_think() -> None:
    assert len(SqliteSource(FIXTURES / "cel.db").read(0)) == len(SCENARIOS) + 1


async def test_the_mark_stays_before_a_gap_until_its_replay_is_done(tmp_path: Path) -> None:
    """Killed between a gap and its replay, the next start must still read the gap."""
    told: list[CallEvent] = []
    clock = [1_800_000_000.0]
    service = life(told, clock)
    service.settings = HistorySettings(cel=SETTINGS.cel, settle_delay=3600)  # never settles here
    service.start(tmp_path)
    service.gap(clock[0] - 30)
    clock[0] += 120
    assert service.mark() == clock[0] - 120 - 30 - 10  # the gap's start, less the margin
    await service.stop()
    assert service.read_mark() == clock[0] - 160


async def test_failing_replays_keep_the_earliest_gap_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[CallEvent] = []
    clock = [1_800_000_000.0]
    service = life(told, clock)
    service.settings = HistorySettings(cel=f"sqlite://{tmp_path / 'missing.db'}", settle_delay=0)
    service.source = SqliteSource(tmp_path / "missing.db")
    service.start(tmp_path)
    for n in range(100):
        service.gap(clock[0] - 1000 + n)
        await settle(service)
    assert len(service._pending) <= 32
    assert service.mark() == clock[0] - 1000 - 10
    assert "no such file" in caplog.text


async def test_a_burst_of_gaps_waiting_for_their_replay_is_read_once(tmp_path: Path) -> None:
    """Each gap spawned a replay of its own, each reading the store after the
    settle delay (issue 16): a hostile or overloaded AMI peer whose events
    overflow the queue makes a gap of every poll, and 100 gaps within the delay
    read the store 100 times, one after another, the later ones behind an ever
    longer queue. A gap whose replay still waits out its settle delay joins
    it: one read from the earliest start, the mark before it until then."""
    reads: list[float] = []
    real = SqliteSource(FIXTURES / "cel.db")

    class Counting:
        def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
            reads.append(since)
            return real.read(since, until)

    told: list[CallEvent] = []
    service = life(told)
    service.source = Counting()
    service.settings = HistorySettings(cel=SETTINGS.cel, settle_delay=0.05)
    service.start(tmp_path)
    await settle(service)
    reads.clear()
    for fields in EVENTS[:50]:
        await service.ingest(fields["Event"], fields)
    earliest = ALL[0].at
    for n in range(100):
        service.gap(earliest + 100 - n)
    assert service.mark() is not None
    assert service.mark() <= earliest  # before the earliest gap, less the margin
    assert len(service._pending) <= 33
    await settle(service)
    assert len(reads) <= 2, len(reads)  # the replay, and maybe its second look
    assert min(reads) <= earliest
    for fields in EVENTS[90:]:
        await service.ingest(fields["Event"], fields)
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_ids()
    assert service._pending == []


@pytest.mark.parametrize("ended", [True, False])
async def test_records_the_fold_does_not_read_count_for_their_call_as_built_ones_did(
    ended: bool,
) -> None:
    """CHAN_END, BRIDGE_*, APP_* records are not built into a CelRecord live
    (issue 16: half of a call's CEL), yet the call's bookkeeping (records seen,
    count, last time: the mark and the stale sweep read it) and the events told
    are what folding every built record gives; with the calls left open too."""
    told: list[CallEvent] = []
    service = life(told)
    built = Folder()
    expected: list[CallEvent] = []
    cel = [b for b in EVENTS if b["Event"] == "CEL"]
    if not ended:
        cel = [b for b in cel if b["EventName"] != "LINKEDID_END"]
    assert {b["EventName"] for b in cel} - FOLDED  # the short way is taken
    for block in cel:
        message = Event(tuple(block.items()))
        await service.ingest("CEL", message)
        expected += built.feed(CelRecord.from_fields(message))
    assert told == expected
    assert service.folder.told_since(0) == built.told_since(0)
    assert [(c.linkedid, c.records, c.last_at, c.seen) for c in service.folder.open_calls()] == [
        (c.linkedid, c.records, c.last_at, c.seen) for c in built.open_calls()
    ]
    assert len(service.folder) == len(built)
    assert (len(built) == 0) is ended


async def test_a_bad_record_the_fold_does_not_read_is_a_logged_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The short way checks what building the record checked: no LinkedID (a
    record cut in two, said as such: the next test), no usable time (``nan``)."""
    told: list[CallEvent] = []
    service = life(told)
    base = (("Event", "CEL"), ("EventName", "BRIDGE_ENTER"), ("UniqueID", "u.1"))
    with caplog.at_level(logging.WARNING, logger="router.calllife"):
        await service.ingest("CEL", Event((*base, ("Timestamp", "1.5"))))
        await service.ingest("CEL", Event((*base, ("LinkedID", "l.1"), ("Timestamp", "nan"))))
    assert (service._failures, service.incomplete) == (1, 1)
    [cut] = [r for r in caplog.records if "needs an event name" in r.getMessage()]
    assert "needs an event name, a UniqueID and a LinkedID" in cut.getMessage()
    assert (cut.levelno, cut.exc_info) == (logging.WARNING, None)
    [bad] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert bad.exc_info is not None
    assert "needs a Timestamp or an EventTime" in str(bad.exc_info[1])
    assert len(service.folder) == 0
    assert told == []


async def test_records_a_caller_number_cut_use_up_no_failure_report(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a caller number with a blank line (Asterisk 22 writes it as it
    is) cuts each CEL record of its call in two, the head without its UniqueID
    and LinkedID. Each was an ERROR with a traceback, and the first three used
    up the process's tracebacks: a real failure after them was never said.
    Now they are counted and said once a minute, without a traceback, and the
    next real failure is the first one."""
    told: list[CallEvent] = []
    service = life(told)
    head = (
        ("Event", "CEL"),
        ("Privilege", "call,all"),
        ("Timestamp", "1796130037.638372"),
        ("EventName", "CHAN_START"),
        ("AccountCode", ""),
        ("CallerIDnum", "79161234567"),
    )
    with caplog.at_level(logging.WARNING, logger="router.calllife"):
        for _ in range(12):
            await service.ingest("CEL", Event(head))
    assert service.incomplete == 12
    said = [r for r in caplog.records if r.name == "router.calllife"]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    assert said[0].exc_info is None
    message = said[0].getMessage()
    assert "an event CEL was not folded: a CEL record needs an event name" in message
    assert service._failures == 0

    def broken(name: str, fields: Any) -> list[CallEvent]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "_fold", broken)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="router.calllife"):
        await service.ingest("CEL", Event(head))
    [failure] = caplog.records
    assert failure.getMessage() == "call life: event CEL not folded (failure 1)"
    assert failure.exc_info is not None
    assert told == []


async def test_a_cut_record_without_timestampevents_uses_up_no_failure_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: without ``timestampevents = yes`` (manager.conf's default is no)
    a CEL record has no ``Timestamp``, and its ``EventTime`` comes after
    ``AppData``: the head a caller number's blank line cut off has neither.
    It was a failure with a traceback ("needs a Timestamp or an EventTime"),
    three of which any caller used up; it is an incomplete record as the
    head with a Timestamp is."""
    told: list[CallEvent] = []
    service = life(told)
    head = (
        ("Event", "CEL"),
        ("Privilege", "call,all"),
        ("EventName", "CHAN_START"),
        ("AccountCode", ""),
        ("CallerIDnum", "79161234567"),
    )
    skimmed = (("Event", "CEL"), ("Privilege", "call,all"), ("EventName", "CHAN_END"))
    with caplog.at_level(logging.WARNING, logger="router.calllife"):
        for _ in range(4):
            await service.ingest("CEL", Event(head))
            await service.ingest("CEL", Event(skimmed))
    assert (service._failures, service.incomplete) == (0, 8)
    said = [r for r in caplog.records if r.name == "router.calllife"]
    assert [(r.levelno, r.exc_info) for r in said] == [(logging.WARNING, None)]
    assert told == []


async def test_the_mark_is_read_on_the_event_loop_and_only_written_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timed save and the stop read the folder (open calls, calls told to
    the end) on the loop's own thread, which changes it with every record: a
    worker thread walking it meanwhile would fail ("changed size during
    iteration") or write a half-changed mark. Only the file is written off
    the loop."""
    import threading

    told: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    service = life(told, clock)
    service.start(tmp_path)
    for fields in blocks("answered"):
        if "Timestamp" in fields:
            clock[0] = float(fields["Timestamp"])  # the call ends within the mark's window
        await service.ingest(fields["Event"], fields)
    loop_thread = threading.current_thread()
    readers: list[threading.Thread] = []
    writers: list[threading.Thread] = []
    folder = service.folder
    for name in ("oldest_open", "told_since"):
        read = getattr(folder, name)

        def spy(*args: object, _read: Any = read) -> Any:
            readers.append(threading.current_thread())
            return _read(*args)

        monkeypatch.setattr(folder, name, spy)
    write = service._write_mark_file

    def write_spy(data: dict[str, Any]) -> None:
        writers.append(threading.current_thread())
        write(data)

    monkeypatch.setattr(service, "_write_mark_file", write_spy)
    await service.save_mark()
    assert readers
    assert set(readers) == {loop_thread}
    assert writers
    assert loop_thread not in writers
    assert json.loads((tmp_path / MARK_FILE).read_text(encoding="utf-8"))["told"]
    readers.clear()
    await service.stop()
    assert set(readers) <= {loop_thread}


@pytest.mark.parametrize("left_over", [False, True])
def test_the_mark_file_is_private_whatever_the_umask(tmp_path: Path, left_over: bool) -> None:
    """Every state file is 0600 (docs/operations.md); the mark was written
    through the umask (0644 under a shell's, 0640 under the unit's)."""
    if left_over:  # a crash left the temporary behind, with a wide mode
        stale = tmp_path / f".{MARK_FILE}.{os.getpid()}"
        stale.write_text("{}")
        stale.chmod(0o644)
    old = os.umask(0o022)
    try:
        service = life([])
        service.start(tmp_path)
        service._mark_written = None
        service.write_mark()
    finally:
        os.umask(old)
    assert (tmp_path / MARK_FILE).stat().st_mode & 0o777 == 0o600


def test_a_mark_that_cannot_be_written_is_said_once_and_once_more_when_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """hops32's trial: with the state folder full (a 1 MiB tmpfs), `callrouter run`
    logged `call life: cannot write .../calllife.json: [Errno 28] No space left on
    device` every 5 s, the mark job's interval, for as long as the disk stayed full."""
    caplog.set_level(logging.INFO, logger="router.calllife")
    service = life([])
    service.start(tmp_path)
    blocker = tmp_path / f".{MARK_FILE}.{os.getpid()}"
    blocker.mkdir()  # the temporary cannot be opened for writing: a real OSError
    for _ in range(5):
        service._mark_written = None
        service.write_mark()
    failed = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    assert "trying again every few seconds" in failed[0].getMessage()
    blocker.rmdir()
    service._mark_written = None
    service.write_mark()
    service._mark_written = None
    service.write_mark()
    again = [r for r in caplog.records if r.getMessage().endswith("written again")]
    assert len(again) == 1
    assert (tmp_path / MARK_FILE).exists()


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_the_state_files_table_gives_the_mark_file_the_mode_it_is_written_with(
    tmp_path: Path, page: str
) -> None:
    """hnew31's trial: `ls -l state/` showed calllife.json 0600, as every state
    file, while the State and backups table said `umask (0640)`."""
    service = life([])
    service.start(tmp_path)
    service._mark_written = None
    service.write_mark()
    written = f"{(tmp_path / MARK_FILE).stat().st_mode & 0o777:04o}"
    text = (Path(__file__).parents[3] / page).read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith(f"| `{MARK_FILE}` |"))
    assert row.rstrip(" |").rsplit("|", 1)[1].strip() == written


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,  # nested past the interpreter's limit
        '{"mark": 1800000000, "told": ' + '{"a": ' * 3000 + "1" + "}" * 3001,
    ],
)
async def test_a_mark_file_nested_past_the_parsers_limit_is_unreadable_not_fatal(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: ``json.loads`` raised RecursionError for a ``calllife.json`` of
    ``[`` repeated (a tampered or damaged state file), which the reader's
    ``except ValueError`` let through: ``callrouter run`` stopped at start. It
    is now an unreadable mark, logged naming the file; history starts now."""
    (tmp_path / MARK_FILE).write_text(text, encoding="utf-8")
    service = life([], [1_800_000_000.0])
    service.start(tmp_path)
    assert service.folder.history_from == 1_800_000_000.0
    assert [r.getMessage() for r in caplog.records if MARK_FILE in r.getMessage()] == [
        f"call life: {tmp_path / MARK_FILE} unreadable (JSON nested too deeply (arrays or "
        "objects in each other)); no replay from it"
    ]
    await service.stop()


@pytest.mark.parametrize("store", ["whole", "without its end", "without it"])
async def test_the_late_end_of_a_call_the_gap_took_waits_for_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """Seen in CI under load: the router stopped while calls were made, and when
    it went on, Asterisk's CEL (seconds late) sent it the last records of the
    last call, whose start the gap had taken. Folded live, that call ended with
    what those records say (no answer, nobody on it), and the gap's replay, which
    read the whole call a moment later, told nothing of its end again (45 events
    where 46 were due, and no second look: the call was no longer open). The
    live records wait for the replay, which folds them after the stored ones;
    every event is then the one an unbroken stream tells. A call the store did
    not hold at all yet is read by the second look."""
    from router.calllife import service as service_module

    monkeypatch.setattr(service_module, "SECOND_LOOK", 0.0)
    real = SqliteSource(FIXTURES / "cel.db")
    call = "callrouter-sandbox-1796130044.17"
    start = next(
        i for i, f in enumerate(EVENTS) if f.get("EventName") == "CHAN_START"
        and f.get("UniqueID") == call
    )  # fmt: skip
    end = next(
        i for i, f in enumerate(EVENTS) if f.get("EventName") == "LINKEDID_END"
        and f.get("LinkedID") == call
    )  # fmt: skip
    # The call's end: its callee's hangup, then the caller's, then LINKEDID_END.
    late_from = next(
        i for i in range(start, end) if EVENTS[i].get("EventName") == "BRIDGE_EXIT"
        and EVENTS[i].get("LinkedID") == call
        and float(EVENTS[i]["Timestamp"]) > float(EVENTS[end]["Timestamp"]) - 1
    )  # fmt: skip
    late_at = float(EVENTS[late_from]["Timestamp"])
    reads: list[int] = []

    class Lagging:
        """The first read lacks what Asterisk had not written yet."""

        def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
            reads.append(len(reads))
            calls = real.read(since, until)
            if store == "whole" or len(reads) > 1:
                return calls
            if store == "without it":
                return {k: v for k, v in calls.items() if k != call}
            cut = {k: [r for r in v if r.at < late_at] for k, v in calls.items()}
            return {k: v for k, v in cut.items() if v}

    told: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    service = life(told, clock)
    service.source = Lagging()
    service.start(tmp_path)  # history from before the first call
    for fields in EVENTS[:start]:
        clock[0] = float(fields["Timestamp"])
        await service.ingest(fields["Event"], fields)
    # The stream lost EVENTS[start:late_from]; it comes back, the engine reports
    # the gap, and the records Asterisk's CEL had not sent yet arrive at once,
    # before the replay's settle delay is over.
    clock[0] = late_at
    service.gap(float(EVENTS[start - 1]["Timestamp"]))
    for fields in EVENTS[late_from : end + 1]:
        clock[0] = float(fields["Timestamp"])
        await service.ingest(fields["Event"], fields)
    await settle(service)
    # The held end completes the call read; one not read yet makes a second look.
    assert reads == ([0, 1] if store == "without it" else [0])
    for fields in EVENTS[end + 1 :]:
        await service.ingest(fields["Event"], fields)
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_ids()
    whole: dict[str, CallEvent] = {}
    folder = Folder()
    for record in ALL:
        for event in folder.feed(record):
            whole[event.event_id] = event
    ours = [e for e in told if e.call_id == call]
    assert [e.kind for e in ours][-1] == "hangup"
    # The store's times are a few microseconds off the live ones: the facts only.
    assert [facts(e) for e in ours] == [facts(whole[e.event_id]) for e in ours]
    assert ours[-1].extension == "102"
    assert ours[-1].status == "ANSWER"
    assert ours[-1].talk_seconds is not None


def facts(event: CallEvent) -> tuple[object, ...]:
    """What an event tells but its times (live and stored records' differ a little)."""
    return (
        event.kind, event.event_id, event.direction, event.external, event.did,
        event.extension, event.status, event.hangup_by, event.transfer,
        event.answered_at is None, event.talk_seconds is None,
    )  # fmt: skip


async def test_records_held_for_a_replay_that_fails_are_folded_as_they_came(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay that cannot read the store does not keep the live records it
    held for ever: they are folded as they came, as they were before any was held."""

    class Broken:
        def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
            raise OSError("disk gone")

    call = "callrouter-sandbox-1796130044.17"
    end = next(
        i for i, f in enumerate(EVENTS) if f.get("EventName") == "LINKEDID_END"
        and f.get("LinkedID") == call
    )  # fmt: skip
    told: list[CallEvent] = []
    clock = [ALL[0].at - 1]
    service = life(told, clock)
    service.source = Broken()
    service.start(tmp_path)
    service.gap(ALL[0].at - 1)
    for fields in EVENTS[end - 3 : end + 1]:  # the callee's end, then the call's
        await service.ingest(fields["Event"], fields)
    assert service.folder.held == 1
    assert told == []
    await settle(service)
    assert service.folder.held == 0
    assert not service.folder.holding
    assert [e.kind for e in told] == ["hangup"]
    assert "replay after gap failed: disk gone" in caplog.text


async def test_a_call_end_waiting_for_a_leg_in_vain_is_told_by_the_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live, Asterisk sent the call's LINKEDID_END ahead of the ringing phone's
    HANGUP, and that HANGUP never came: with no further record to carry it, the
    call's end is told when the grace runs out, and 102's, which did come, first."""
    monkeypatch.setattr(fold, "END_GRACE", 0.05)
    cel = Cel()
    trunk = cel.channel("PJSIP/pstn", first=True, cid_num="89161234567", exten="74951234567")
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102")]
    cel.tick(3)
    cel.hangup(trunk, cause=127, source=cel.name(trunk), dialstatus="CANCEL")
    cel.end()
    cel.hangup(legs[1], cause=127)  # 101's never comes
    told: list[CallEvent] = []
    service = life(told)
    for record in cel.records:
        await service.ingest("CEL", as_ami(record))
    assert [(e.kind, e.extension) for e in told] == [("ringing", "102")]
    assert service.folder.ending is not None
    await settle(service, deadline=5.0)
    assert [(e.kind, e.extension) for e in told] == [
        ("ringing", "102"),
        ("hangup", None),
        ("missed", None),
    ]
    assert told[-1].status == "CANCEL"
    assert service.folder.ending is None
    assert len(service.folder) == 0
