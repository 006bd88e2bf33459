"""The 1C developer's side end to end: the shipped ``examples/onec/CallRouterAPI.bsl``
run as written against a real ``callrouter run`` and real phones (issue 16).

No 1C platform runs here. Its functions are interpreted by
:mod:`tests.unit.bsl_runner` (as the unit tests do), but ``HTTPСоединение`` is
:class:`tests.unit.bsl_platform.HttpxConnection`: each request the module builds
(path, headers, JSON body) goes to ``callrouter run``'s own uvicorn listener, with
the token the 1C guide's ``callrouter token new onec ...`` line makes (pasted into a
temporary ``router.toml``), and the module reads the real answer.
``НастройкиПодключения`` runs as written too, on the constant's address.

The click-to-call (``Позвонить``) rings the sandbox phone 101; once it answers,
callrouter dials 102 (``outbound_context = "sandbox-phones"``), which answers: a
real call between two baresip phones. ``ПолучитьСобытия`` (the scheduled job's one
read) must see that call's events, ``Звонок`` and ``Звонки`` the call,
``ПеревестиЗвонок`` hands it to 103 and ``ЗавершитьЗвонок`` ends it on the phones. The
scheduled job ``ОбработатьЛентуСобытий`` runs as written across a stop and a restart of
callrouter, and the error texts the guides show are checked against the module's own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.sandbox import listen_port
from router.sandbox.phones import PhoneCall, Phones
from tests.integration._live import run_process, start_run, stop_process, tail

# The runner and its platform objects are the unit tests' (tests/unit is on the path
# of those tests only): one interpreter and one set of platform objects for both.
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from bsl_platform import Constant, HttpxConnection
from bsl_platform import module as onec_module
from bsl_runner import Array, BslException, Map, Module

pytestmark = [pytest.mark.integration]

README = Path(__file__).parents[2] / "examples" / "onec" / "README.md"


def readme_token(folder: Path) -> tuple[str, str]:
    """The 1C token as the guide makes it: its ``callrouter token new onec ...`` line
    run as written; (the token, the ``[api.tokens.onec]`` lines it printed)."""
    (line,) = re.findall(r"^callrouter token new onec .*$", README.read_text("utf-8"), re.M)
    return new_token(folder, line)


def new_token(folder: Path, line: str) -> tuple[str, str]:
    """``callrouter token new NAME ...`` (``line``) run: (the token, its toml lines)."""
    printed = subprocess.run(
        [sys.executable, "-m", "router.cli", *shlex.split(line)[1:]],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=folder,
    ).stdout
    token = printed.splitlines()[0].rsplit(": ", 1)[1].strip()
    return token, printed[printed.index("[api.tokens.") :]


class Run:
    """``callrouter run`` with ``[api]`` on a port of its own, as systemd runs it."""

    def __init__(self, phones: Phones, folder: Path) -> None:
        self.port = listen_port()
        self.token, tokens = readme_token(folder)
        # A token that may only read the feed: what a missing permission answers.
        self.reader, reader = new_token(
            folder, "callrouter token new reader --allow events:read --extensions 101"
        )
        tokens += reader
        extra = (
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            # A click-to-call from 101 dials 102 through the phones' own context.
            'outbound_context = "sandbox-phones"\n' + tokens
        )
        self.proc, self.log = start_run(folder, phones.pbx.url, phones.pbx.secret, extra_toml=extra)
        self.address = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.secret = phones.pbx.secret

    def restart(self) -> None:
        """The same run again (its config, state and port), as after an upgrade."""
        stop_process(self.proc)
        env = {**os.environ, "CR_SECRET": self.secret}
        self.proc = run_process(self.folder / "router.toml", self.log, env)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"callrouter run exited:\n{tail(self.log)}")
            try:
                answer = httpx.get(
                    f"{self.address}/api/v1/calls",
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=2,
                )
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"callrouter run not ready in {timeout} s:\n{tail(self.log)}")


@pytest.fixture
def run(phones: Phones, tmp_path: Path) -> Iterator[Run]:
    running = Run(phones, tmp_path)
    try:
        running.wait_ready()
        yield running
    finally:
        stop_process(running.proc)


def bsl(
    run: Run,
    *,
    timeout_seconds: list[float] | None = None,
    sent: list[tuple[str, str, int]] | None = None,
    **job: Any,
) -> Module:
    """The shipped module, its HTTPСоединение real (each one's timeout kept in
    ``timeout_seconds``, each answered request in ``sent``); ``job``: the feed job's
    cursor constant and clock (:func:`tests.unit.bsl_platform.module`)."""

    def connect(*args: Any) -> HttpxConnection:
        connection = HttpxConnection(*args)
        if timeout_seconds is not None:
            timeout_seconds.append(float(connection.timeout))
        if sent is not None:
            connection.sent = sent
        return connection

    return onec_module(connect, address=run.address + "/", token=run.token, **job)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def feed_until(
    module: Module, cursor: str, wanted: Callable[[list[Map]], bool], timeout: float = 30
) -> tuple[list[Map], str]:
    """Read the feed as the scheduled job does (ПолучитьСобытия, 5 s long-polls) until
    ``wanted`` holds for everything read so far; (events, the last cursor)."""
    seen: list[Map] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = module.call("ПолучитьСобытия", cursor, 5)
        assert isinstance(batch.События, Array), batch
        assert isinstance(batch.Курсор, str), batch.Курсор
        assert batch.Курсор.isdigit(), batch.Курсор
        assert batch.Пропуск is False, batch
        seen.extend(batch.События)
        cursor = batch.Курсор
        if wanted(seen):
            return seen, cursor
    kinds = [(e.get("kind"), e.get("extension")) for e in seen]
    raise AssertionError(f"the feed did not bring what was wanted in {timeout} s: {kinds}")


def kinds(events: list[Map], call_id: str) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["extension"]) for e in events if e.get("call_id") == call_id]


def test_the_module_places_a_real_call_and_reads_its_events(run: Run, phones: Phones) -> None:
    timeouts: list[float] = []
    module = bsl(run, timeout_seconds=timeouts)
    # The job's first run: no cursor, only what happens from now on, at once.
    first = module.call("ПолучитьСобытия", "", 0)
    assert list(first.События) == []
    cursor = first.Курсор
    assert cursor.isdigit(), cursor

    answer = module.call("Позвонить", "101", "102", "order-1017-call-1")
    assert isinstance(answer, Map), answer
    call_id = answer["id"]
    assert isinstance(call_id, str), answer
    assert call_id, answer
    assert answer["click_to_call"]["from"] == "101"

    def up(name: str) -> PhoneCall | None:
        calls = phones[name].calls
        return calls[-1] if calls and calls[-1].answered else None

    wait_for("101 to answer the click-to-call", lambda: up("101"))
    wait_for("102 to answer the call 101 placed", lambda: up("102"))

    # The same click again (a retry after a lost answer): the same call, no second one.
    again = module.call("Позвонить", "101", "102", "order-1017-call-1")
    assert again["id"] == call_id
    assert len(phones["102"].calls) == 1

    def answered_at_102(events: list[Map]) -> bool:
        return any(e["kind"] == "answered" and e["extension"] == "102" for e in events)

    events, cursor = feed_until(module, cursor, answered_at_102)
    # The id Позвонить returned is the events' call_id (the module's doc: the same id
    # for ПеревестиЗвонок from either), and 102's ringing comes before its answer.
    linked = {e["call_id"] for e in events if e["kind"] in ("ringing", "answered")}
    assert linked == {call_id}, events
    linkedid = call_id
    at_102 = [k for k in kinds(events, linkedid) if k[1] == "102"]
    assert at_102[:2] == [("ringing", "102"), ("answered", "102")], events
    # 101, which placed it, hears of it as click_to_call progress.
    assert ("click_to_call", "101") in kinds(events, linkedid), events
    ringing = next(e for e in events if e["kind"] == "ringing" and e["extension"] == "102")
    assert isinstance(ringing["data"], Map)
    assert isinstance(ringing["cursor"], int)

    # The call, as Звонок and Звонки give it to a form, by the id Позвонить returned.
    call = module.call("Звонок", call_id)
    assert isinstance(call, Map), call
    assert call["id"] == call_id, call
    listed = module.call("Звонки")
    assert isinstance(listed, Array), listed
    assert call_id in [c["id"] for c in listed] or linkedid in [c["id"] for c in listed]

    # Both 101 and 102 are the token's: without Откуда callrouter asks which one.
    with pytest.raises(BslException, match=r"^callrouter 400 Bad Request: .*\(поле from\)$"):
        module.call("ПеревестиЗвонок", call_id, "103")
    # 102 hands the call to 103 (blind): 101 now talks with 103.
    moved = module.call("ПеревестиЗвонок", call_id, "103", False, "102")
    assert isinstance(moved, Map), moved
    assert moved["id"] == call_id, moved
    wait_for("103 to answer the transfer", lambda: up("103"))
    events, cursor = feed_until(
        module, cursor, lambda seen: ("answered", "103") in kinds(seen, call_id)
    )
    assert ("transferred", "102") in kinds(events, call_id), events

    hung = module.call("ЗавершитьЗвонок", call_id)
    assert isinstance(hung, Map), hung
    assert hung["id"] == call_id, hung
    assert hung["hung_up"], hung
    wait_for("103 to be hung up", lambda: phones["103"].calls[-1].ended)
    wait_for("101 to be hung up", lambda: phones["101"].calls[-1].ended)

    def ended(events: list[Map]) -> bool:
        return any(e["kind"] == "hangup" for e in events)

    events, cursor = feed_until(module, cursor, ended)
    assert ("hangup", "103") in kinds(events, linkedid), events
    # A call from 1C is known after its end (the module's doc of Звонок), and gone
    # from Звонки.
    assert module.call("Звонок", call_id)["state"] == "ended"
    assert call_id not in [c["id"] for c in module.call("Звонки")]
    # Each request's connection had the module's own timeout: 10 s, a long-poll's 5 + 15.
    assert 20.0 in timeouts
    assert 10.0 in timeouts


def test_an_api_error_is_the_modules_exception_with_the_problems_text(run: Run) -> None:
    """The texts the guides show a 1C developer are the texts the module raises."""
    module = bsl(run)
    texts: dict[int, str] = {}
    for function, args in [
        ("Позвонить", ("101", "102; Dial(PJSIP/666)")),
        ("Звонок", ("звонок 1?x=1",)),
    ]:
        with pytest.raises(BslException) as raised:
            module.call(function, *args)
        texts[int(raised.value.text.split()[1])] = raised.value.text
    reader = onec_module(HttpxConnection, address=run.address, token=run.reader)
    with pytest.raises(BslException) as raised:
        reader.call("Позвонить", "101", "102")
    texts[403] = raised.value.text
    assert texts[400].endswith("(поле to)" + texts[400].split("(поле to)", 1)[1]), texts
    assert "Idempotency-Key" in texts[400], texts  # the key, for a retry of the same click
    # The id went as one encoded path segment and came back as it was.
    assert texts[404].startswith("callrouter 404 Not Found: no call 'звонок 1?x=1' "), texts
    assert texts[403].startswith("callrouter 403 Forbidden: "), texts
    assert "(нет разрешения calls:create)" in texts[403], texts
    for guide in (README, README.with_name("README.ru.md")):
        shown = re.findall(r"`(callrouter (\d{3}) [^`]*)`", " ".join(guide.read_text().split()))
        checked = [code for _, code in shown if int(code) in texts]
        assert sorted(checked) == ["400", "403", "404"], (guide.name, shown)
        for example, code in shown:
            if int(code) in texts:
                pattern = re.escape(example).replace(re.escape("..."), ".*")
                assert re.match(pattern, texts[int(code)]), (guide.name, example, texts)


def test_the_module_sets_forwarding_and_reads_presence(run: Run, phones: Phones) -> None:
    module = bsl(run)
    first = module.call("ПолучитьСобытия", "", 0)
    state = module.call("УстановитьПереадресацию", "104", True, " 105 ")
    assert (state["dnd"], state["forward_to"]) == (True, "105"), state
    presence = module.call("Присутствие")
    assert presence.Полный is True, presence
    assert presence.НеПрочитано == 0, presence
    numbers = {n["extension"]: n for n in presence.Номера}
    assert set(numbers) >= {"101", "102", "103", "104", "105"}, numbers
    assert (numbers["104"]["dnd"], numbers["104"]["forward_to"]) == (True, "105")
    assert numbers["101"]["state"] == "Idle", numbers["101"]
    cleared = module.call("УстановитьПереадресацию", "104", False)
    assert (cleared["dnd"], cleared["forward_to"]) == (False, None), cleared
    events, _ = feed_until(
        module,
        first.Курсор,
        lambda seen: sum(e["kind"] in ("dnd", "forwarding") for e in seen) >= 2,
    )
    assert {e["extension"] for e in events if e["kind"] in ("dnd", "forwarding")} == {"104"}


def one_pass() -> Callable[[], int]:
    """``ТекущаяУниверсальнаяДатаВМиллисекундах`` for one pass of the feed job's loop:
    its start and first check read 0, every later check past МаксимумСекунд."""
    reads = iter([0, 0])
    return lambda: next(reads, 10**12)


def test_the_feed_job_hands_out_the_calls_events_then_one_gap_after_an_outage(
    run: Run, phones: Phones
) -> None:
    """ОбработатьЛентуСобытий as written, on the real feed: the call's events go to the
    panels, the cursor constant follows them; with callrouter stopped the job marks
    the cursor ``!``; once it is back, the next run reads at once (timeout=0) and the
    panels get one ``gap``, whether the feed's own or the job's mark told it."""
    module = bsl(run)
    start = module.call("ПолучитьСобытия", "", 0).Курсор
    answer = module.call("Позвонить", "101", "102")
    wait_for("102 to answer", lambda: phones["102"].calls and phones["102"].calls[-1].answered)
    module.call("ЗавершитьЗвонок", answer["id"])
    wait_for("102 to be hung up", lambda: phones["102"].calls[-1].ended)

    constant = Constant(start)
    told: list[tuple[str, str | None]] = []
    sent: list[tuple[str, str, int]] = []

    def job_run() -> None:
        job = bsl(run, sent=sent, cursor=constant, clock=one_pass())
        job.overrides["РазослатьСобытие"] = lambda e: told.append((e["kind"], e["extension"]))
        job.overrides["РазослатьПропуск"] = lambda: told.append(("gap", None))
        job.call("ОбработатьЛентуСобытий")

    wait_for(
        "the call's end in the feed",
        lambda: (
            module.call("ПолучитьСобытия", start, 0).События
            and any(e["kind"] == "hangup" for e in module.call("ПолучитьСобытия", start, 0).События)
        ),
    )
    job_run()
    assert ("ringing", "102") in told, told
    assert ("hangup", "102") in told, told
    assert ("gap", None) not in told, told
    (stored,) = constant.writes
    assert stored.isdigit(), stored
    assert int(stored) > int(start)

    stop_process(run.proc)
    told.clear()
    job_run()  # callrouter down: the mark, and nothing to the panels
    assert constant.writes[1:] == ["!" + stored], constant.writes
    assert told == []

    run.restart()
    sent.clear()
    job_run()
    assert told[0] == ("gap", None), told
    assert told.count(("gap", None)) == 1, told
    assert sent[0][:2] == ("GET", f"/api/v1/events?timeout=0&cursor={stored}"), sent
    assert not constant.value.startswith("!"), constant.writes
