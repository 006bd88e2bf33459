"""callrouter demo: real Asterisk, the 1C double, the router, sample calls routed live.

``make demo`` runs this. It starts the sandbox Asterisk (provisioning it the
first time) with the shipped dialplan (examples/asterisk/extensions.conf),
the 1C test double with its demo data, and callrouter with the shipped rules
(rules/inbound.yaml) plus demo lists. Then it places calls that show each
kind of routing and prints what happened to each: where the call landed,
which rule decided, the outcome, and the latency from the dialplan's request
to the call arriving, measured on Asterisk's own clock.

callrouter reaches Asterisk over AJAM, or over native TCP AMI with
``--transport tcp`` (or ``DEMO_TRANSPORT=tcp``, which ``make demo`` passes on).
``--quick`` (the test suite's, not ``make demo``'s) places the same calls and
tells the same stories with shorter pauses (:data:`QUICK_PAUSE`).

Then real SIP phones (baresip, :mod:`router.sandbox.phones`) register as
extensions 101-105 and a PSTN-side phone calls in, for a few whole calls told
as stories: answered by the owner, transferred on the phone, missed and then
called back. Each story is one function (``story_*``) and is told by
:func:`tell_story`, the place to print what the 1C double recorded of it.

Exit status 0 when every call landed where expected and every story went as
planned. Its work folder (``callrouter-demo-*`` in the temporary directory:
router.toml, rules, state) is removed when it ends, also on an error, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from router.ami.client import AJAMClient, ClientSettings
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer, PlacedCall
from router.sandbox.phones import PhoneCall, Phones

try:
    from callrouter_onec.double import OneCDouble
except ImportError:  # the demo still runs, on the static directory only
    OneCDouble = None  # type: ignore[assignment,misc]

REPO = Path(__file__).resolve().parents[1]
MOSCOW = ZoneInfo("Europe/Moscow")

# Destinations the shipped rules use, as contexts a call can wait in, and
# hints so extension_state() has something to ask about.
DEMO_CONTEXTS = """
[queues]
exten => _[a-z0-9].,1,NoOp(queue ${EXTEN})
 same => n,Wait(60)
[ivr]
exten => _[a-z0-9].,1,NoOp(ivr ${EXTEN})
 same => n,Wait(60)
[from-internal]
exten => _X.,1,NoOp(internal ${EXTEN})
 same => n,Wait(60)
[hints]
exten => 101,hint,Custom:mgr101
exten => 102,hint,Custom:mgr102
exten => 104,hint,Custom:mgr104
exten => 105,hint,Custom:mgr105
"""

DID = "74951234567"
#: Every pause of the demo with ``--quick``: how long the phones talk and ring in
#: the stories, and the wait of the call placed while callrouter is stopped.
QUICK_PAUSE = 0.5


@dataclass
class Scenario:
    title: str
    caller: str
    expected: str
    setup: Callable[[Demo], Awaitable[None]] | None = None
    at_night: bool = False
    needs_onec: bool = False


class Demo:
    def __init__(
        self,
        pbx: Sandbox,
        workdir: Path,
        double: Any,
        transport: str = "ajam",
        *,
        quick: bool = False,
    ) -> None:
        self.pbx = pbx
        self.transport = transport
        self.quick = quick
        self.workdir = workdir
        self.double = double
        self.engine: Engine | None = None
        self.serve_task: asyncio.Task[None] | None = None

    def pause(self, seconds: float) -> float:
        """``seconds``, or :data:`QUICK_PAUSE` with ``--quick``."""
        return QUICK_PAUSE if self.quick else seconds

    async def sleep(self, seconds: float) -> None:
        """A pause of the demo's (:meth:`pause`)."""
        await asyncio.sleep(self.pause(seconds))

    def write_config(self) -> Path:
        rules = self.workdir / "rules"
        shutil.copytree(REPO / "rules", rules)
        (rules / "lists" / "blacklist.txt").write_text("+7 999 000-00-00\n", encoding="utf-8")
        (rules / "lists" / "vip.txt").write_text("8 (999) 000-00-01\n", encoding="utf-8")
        (self.workdir / "directory.csv").write_text(
            "number,extension,name\n79031112233,105,Склад (прямой номер)\n", encoding="utf-8"
        )
        onec = ""
        if self.double is not None:
            onec = (
                f'[plugins.onec]\nurl = "{self.double.url}"\n'
                f'username = "{self.double.username}"\n'
                f'password = "{self.double.password}"\n'
            )
            if self.quick:  # the router stops while 1C is down: no wait for it then
                onec += "drain_timeout = 0\n"
            # Asterisk's CEL store: calls made while the router is stopped still
            # reach 1C's call history, replayed when it starts (docs/history.md).
            onec += f'[history]\ncel = "sqlite://{self.pbx.cel_store}"\n'
        path = self.workdir / "router.toml"
        path.write_text(
            f'[asterisk]\nurl = "{self.pbx.tcp_url if self.transport == "tcp" else self.pbx.url}"\n'
            f'username = "router"\n'
            f'secret = "{self.pbx.secret}"\n'
            f'[router]\nrules = ["{rules}"]\nstate_dir = "{self.workdir / "state"}"\n'
            f'[plugins.directory]\nfile = "{self.workdir / "directory.csv"}"\n' + onec,
            encoding="utf-8",
        )
        return path

    async def start_router(self) -> Engine:
        config = load_config(
            self.write_config() if self.engine is None else self.workdir / "router.toml"
        )
        engine = Engine(config, options=EngineOptions(watch_interval=0))
        await engine.start()
        self.serve_task = asyncio.ensure_future(engine.serve())
        await engine.ready.wait()
        self.engine = engine
        return engine

    async def stop_router(self) -> None:
        if self.engine is not None and self.serve_task is not None:
            self.engine.request_stop()
            await self.serve_task
            await self.engine.stop()
            self.serve_task = None


async def check_setup(demo: Demo) -> int:
    """``callrouter check --asterisk`` on the demo's settings, as an administrator
    runs it (docs/asterisk.md, "Checking the setup"); 1 when it failed."""
    print("$ callrouter check --config router.toml --asterisk")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "check",
        "--config",
        "router.toml",
        "--asterisk",
        cwd=demo.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    for line in out.decode(errors="replace").splitlines():
        if line.strip():
            print(f"  {line}")
    print()
    return 0 if proc.returncode == 0 else 1


def next_weekday_at(hour: int) -> datetime:
    now = datetime.now(MOSCOW)
    day = now
    while day.weekday() >= 5 or day.strftime("%m-%d") in (
        "01-01",
        "01-02",
        "01-07",
        "02-23",
        "03-08",
        "05-01",
        "05-09",
        "06-12",
        "11-04",
    ):
        day += timedelta(days=1)
    return day.replace(hour=hour, minute=15, second=0, microsecond=0)


async def busy_102(demo: Demo) -> None:
    await demo.pbx_admin.send(
        "Setvar", {"Variable": "DEVICE_STATE(Custom:mgr102)", "Value": "BUSY"}, validate=False
    )


async def onec_slow(demo: Demo) -> None:
    demo.double.faults.set_global("latency=3")


async def onec_down(demo: Demo) -> None:
    demo.double.faults.set_global("")
    demo.double.down = True


SCENARIOS = [
    Scenario(
        "known customer -> their manager (1C)",
        "+7 (916) 123-45-67",
        "callrouter-dial,101",
        needs_onec=True,
    ),
    Scenario(
        "same customer, another format", "89161234567", "callrouter-dial,101", needs_onec=True
    ),
    Scenario(
        "manager without an extension -> fallback",
        "8-926-111-22-33",
        "queues,sales",
        needs_onec=True,
    ),
    Scenario(
        "owner busy -> fallback", "74957770101", "queues,sales", setup=busy_102, needs_onec=True
    ),
    Scenario("number in the static directory", "79031112233", "callrouter-dial,105"),
    Scenario("unknown number -> sales queue", "79160000000", "queues,sales"),
    Scenario("VIP list -> VIP queue", "79990000001", "queues,vip"),
    Scenario("blacklisted -> rejected", "79990000000", "hangup"),
    Scenario("internal caller", "201", f"from-internal,{DID}"),
    Scenario("after hours -> closed IVR", "+7 (916) 123-45-67", "ivr,closed", at_night=True),
    Scenario(
        "1C slow (3 s) -> fallback within budget",
        "79857654321",
        "queues,sales",
        setup=onec_slow,
        needs_onec=True,
    ),
    Scenario(
        "1C down, answer cached -> manager",
        "+79161234567",
        "callrouter-dial,101",
        setup=onec_down,
        needs_onec=True,
    ),
    Scenario("1C down, not cached -> fallback", "84959990000", "queues,sales", needs_onec=True),
]


@dataclass
class Story:
    """One whole call with real phones, as the demo tells it."""

    title: str
    #: The customer's number as the PSTN side sent it (or dialled it).
    customer: str
    #: What should have happened, and what did (the same when it went as planned).
    expected: str
    happened: str
    #: Asterisk's linkedid of each call in the story, where callrouter routed it.
    call_ids: list[str]
    #: The calls as the phones saw them: (phone, call).
    calls: list[tuple[str, PhoneCall]]


def _linkedid(engine: Engine) -> str:
    """The linkedid of the call callrouter routed last (a call from the trunk)."""
    record = next(
        (r for r in reversed(engine.records) if r.channel.startswith("PJSIP/pstn-")), None
    )
    return record.linkedid if record is not None else "-"


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The phones' API is synchronous (bounded waits): keep it off the event loop."""
    return await asyncio.to_thread(func, *args, **kwargs)


async def story_answered(demo: Demo, phones: Phones, engine: Engine) -> Story:
    """A customer of the manager at 101 calls in; 101 answers and they talk."""
    caller = "+7 (916) 123-45-67"
    call = await _in_thread(phones.pstn.call, did=DID, caller=caller)
    await _in_thread(call.wait_answered, 20)
    owner = await _in_thread(phones["101"].current)
    await demo.sleep(2)
    await _in_thread(call.hangup)
    await _in_thread(owner.wait_ended)
    return Story(
        "answered by the owner",
        caller,
        "101 answers",
        "101 answers" if owner.answered else "nobody answers",
        [_linkedid(engine)],
        [("pstn", call), ("101", owner)],
    )


async def story_transferred(demo: Demo, phones: Phones, engine: Engine) -> Story:
    """101 answers a customer and hands them to 102 with a blind transfer on the phone."""
    caller = "8 916 765-43-21"  # a contact person of 101's client
    call = await _in_thread(phones.pstn.call, did=DID, caller=caller)
    await _in_thread(call.wait_answered, 20)
    first = await _in_thread(phones["101"].current)
    await demo.sleep(1)
    await _in_thread(phones["101"].blind_transfer, "102")
    second = await _in_thread(phones["102"].current)
    await demo.sleep(1)
    await _in_thread(call.hangup)
    await _in_thread(second.wait_ended)
    return Story(
        "transferred on the phone",
        caller,
        "101 -> 102",
        "101 -> 102" if first.ended and second.answered else "not transferred",
        [_linkedid(engine)],
        [("pstn", call), ("101", first), ("102", second)],
    )


async def story_missed_then_called_back(demo: Demo, phones: Phones, engine: Engine) -> Story:
    """Nobody answers a customer of 104, who gives up; 104 calls back and they talk."""
    caller = "8 (985) 765-43-21"
    phones["104"].mode = "noanswer"
    call = await _in_thread(phones.pstn.call, did=DID, caller=caller)
    rung = await _in_thread(_wait_for_call, phones, "104")
    await demo.sleep(3)  # the customer gives up after a few rings
    await _in_thread(call.hangup)
    await _in_thread(rung.wait_ended)
    missed_id = _linkedid(engine)
    phones["104"].mode = "answer"
    back = await _in_thread(phones["104"].dial, "89857654321")
    await _in_thread(back.wait_answered, 20)
    customer = await _in_thread(phones.pstn.current)
    await demo.sleep(1)
    await _in_thread(back.hangup)
    await _in_thread(customer.wait_ended)
    missed = call.answered_at is None
    return Story(
        "missed, then called back",
        caller,
        "missed; 104 calls back",
        "missed; 104 calls back" if missed and back.answered else "not as planned",
        [missed_id],
        [("pstn", call), ("104", rung), ("104", back), ("pstn", customer)],
    )


def _wait_for_call(phones: Phones, name: str, timeout: float = 15.0) -> PhoneCall:
    """The newest call ringing at phone ``name`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = phones[name].calls
        if calls and not calls[-1].ended:
            return calls[-1]
        time.sleep(0.05)
    raise RuntimeError(f"no call rang at {name} within {timeout:.0f} s")


def crashed_phones(phones: Phones) -> list[str]:
    """The phones whose baresip died of a signal (``101 (SIGSEGV)``)."""
    return [f"{agent.name} ({agent.crashed})" for agent in phones.all if agent.crashed]


def crash_reports(phones: Phones) -> str:
    """The log tail and core backtrace of every crashed phone, indented for the
    demo's output: the crash is Debian's baresip's, and this is what its
    maintainers would ask for (router.sandbox.crash)."""
    return "\n".join(
        textwrap.indent(agent.crash_report(15), "    ") for agent in phones.all if agent.crashed
    )


async def tell_once_more_after_a_crash(
    story: Callable[[Demo, Phones, Engine], Awaitable[Story]],
    demo: Demo,
    phones: Phones,
    engine: Engine,
) -> Story:
    """The story; told once more on phones started again if a baresip crashed in it.

    Debian's baresip has died of SIGSEGV in its own audio path (an early-media
    stream set up again at the answer; seen once in CI on the PSTN side; likely
    the aufile player's race that the phones now avoid, router/sandbox/crash.py).
    That is the phone, not callrouter, and it says nothing of the routing: the
    demo says so and tells the story again. A second crash, or any failure without one,
    fails the demo as before.
    """
    try:
        return await story(demo, phones, engine)
    except Exception:
        crashed = crashed_phones(phones)
        if not crashed:
            raise
    print(
        f"  baresip of {', '.join(crashed)} crashed in the story "
        f"{story.__name__}; the phones start again and the story is told once more"
    )
    print(crash_reports(phones))
    await _in_thread(phones.reset)
    return await story(demo, phones, engine)


STORIES: list[Callable[[Demo, Phones, Engine], Awaitable[Story]]] = [
    story_answered,
    story_transferred,
    story_missed_then_called_back,
]


def tell_story(demo: Demo, story: Story) -> None:
    """Print one story: the phones' view, then what 1C stored of each call (the double)."""
    mark = "ok" if story.happened == story.expected else "NOT AS PLANNED"
    print(f"\n{story.title}: {story.customer} -> {story.happened} [{mark}]")
    for phone, call in story.calls:
        talk = (
            f"talk {call.talk_seconds:.1f} s" if call.talk_seconds is not None else "not answered"
        )
        print(f"  {phone:<5} {call.direction:<3} {call.remote:<20} {talk}")
    if demo.double is None:
        return
    print("  what 1C has (python -m callrouter_onec.double story <call id>):")
    for call_id in story.call_ids:
        for line in demo.double.story_text(call_id).splitlines():
            print(f"    {line}")


async def history_told(demo: Demo, story: Story, timeout: float = 10.0) -> None:
    """The router posts a call's end to 1C just after it: wait for it (and, for a
    missed call, for its missed_closed once someone has called back)."""
    if demo.double is None:
        return
    deadline = time.monotonic() + timeout
    for call_id in story.call_ids:
        while time.monotonic() < deadline:
            kinds = {e.get("event") for e in demo.double.story(call_id)}
            if "hangup" in kinds or {"missed", "missed_closed"} <= kinds:
                break
            await asyncio.sleep(0.1)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


async def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print("starting the sandbox Asterisk (first run provisions it: about a minute)...", flush=True)
    dialplan = (REPO / "examples" / "asterisk" / "extensions.conf").read_text() + DEMO_CONTEXTS
    pbx = await asyncio.to_thread(
        Sandbox.start, name=f"demo-{os.getpid()}", extra_dialplan=dialplan
    )
    double = OneCDouble() if OneCDouble is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="callrouter-demo-"))
    rows: list[list[str]] = []
    failures = 0
    try:
        if double is not None:
            double.start()
            print(f"1C double at {double.url}")
        else:
            print("callrouter_onec is not installed: 1C scenarios are skipped")
        demo = Demo(pbx, workdir, double, args.transport, quick=args.quick)
        over = "native TCP AMI" if args.transport == "tcp" else "AJAM"
        print(f"callrouter talks to Asterisk over {over}")
        admin = AJAMClient(ClientSettings(url=pbx.url, username="admin", secret=pbx.secret))
        await admin.login()
        demo.pbx_admin = admin  # type: ignore[attr-defined]
        engine = await demo.start_router()
        failures += await check_setup(demo)
        day, night = next_weekday_at(11), next_weekday_at(21)
        print(
            f"callrouter routing; working hours are judged as at {day:%a %H:%M} Moscow "
            f"(and {night:%H:%M} for the after-hours call)\n"
        )
        async with CallPlacer(admin) as placer:
            scenarios = [s for s in SCENARIOS if double is not None or not s.needs_onec]
            for scenario in scenarios:
                if scenario.setup is not None:
                    await scenario.setup(demo)
                moment = night if scenario.at_night else day
                engine.clock = lambda moment=moment: moment  # type: ignore[misc]
                call = await placer.place(DID, scenario.caller, wait=args.wait)
                await placer.wait_all([call], args.wait + 6)
                await engine.wait_idle()
                rows.append(row(scenario.title, call, scenario.expected, engine))
                failures += call.destination != scenario.expected
                await placer.client.send(
                    "Hangup", {"Channel": call.channel}, validate=False, check=False
                )
            await demo.stop_router()
            down = await placer.place(DID, "+7 (916) 123-45-67", wait=demo.pause(2))
            await placer.wait_all([down], 10)
            expected = f"callrouter-default,{DID}"
            rows.append(
                [
                    "callrouter stopped -> default route after the wait",
                    down.caller,
                    expected,
                    down.destination,
                    "-",
                    "(no router)",
                    _ms(down.latency_ms),
                    "-",
                    "ok" if down.destination == expected else "WRONG",
                ]
            )
            failures += down.destination != expected
        await admin.aclose()
        print(
            table(
                rows,
                [
                    "scenario",
                    "caller",
                    "expected",
                    "landed",
                    "rule",
                    "outcome",
                    "latency",
                    "what the rules knew",
                    "",
                ],
            )
        )
        if double is not None:
            await demo.sleep(1.0)
            receipts = list(double.event_book.receipts)
            fresh = [r for r in receipts if not r.duplicate]
            print(
                f"\ncall history in the 1C double: {len(fresh)} events "
                f"({len(receipts) - len(fresh)} repeats recognised as duplicates)"
            )
            history = [
                [
                    str(r.payload.get("event")),
                    str(r.payload.get("call_id")),
                    str(r.payload.get("from")),
                    str(r.payload.get("extension") or "-"),
                    str(r.payload.get("status") or "-"),
                ]
                for r in fresh[-8:]
            ]
            print(table(history, ["event", "call", "from", "extension", "status"]))
        print(f"\n{len(rows) - failures} of {len(rows)} calls landed where expected")
        if double is not None:
            failures += await phone_stories(demo, pbx, double, day)
        return 1 if failures else 0
    finally:
        # The work folder (router.toml, rules, state: nothing to read afterwards)
        # goes even when stopping the router or removing the sandbox fails.
        try:
            await demo.stop_router() if "demo" in locals() else None
            if double is not None:
                with contextlib.suppress(Exception):
                    double.stop()
            await asyncio.to_thread(pbx.remove)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


async def phone_stories(demo: Demo, pbx: Sandbox, double: Any, day: datetime) -> int:
    """Real phones, the router back on with 1C healthy: tell every story; the failures."""
    double.down = False
    double.faults.set_global("")
    print("\nreal phones (baresip) register as 101-105, a PSTN-side phone calls in:")
    phones = await _in_thread(Phones.start, pbx, extensions=("101", "102", "103", "104", "105"))
    engine = await demo.start_router()
    engine.clock = lambda: day
    stories: list[Story] = []
    try:
        for story in STORIES:
            told = await tell_once_more_after_a_crash(story, demo, phones, engine)
            stories.append(told)
            await history_told(demo, told)
            tell_story(demo, told)
            await _in_thread(phones.reset)
    finally:
        await demo.stop_router()
        await _in_thread(phones.stop)
    good = sum(s.happened == s.expected for s in stories)
    print(f"\n{good} of {len(STORIES)} phone stories went as planned")
    return len(STORIES) - good


def row(title: str, call: PlacedCall, expected: str, engine: Engine) -> list[str]:
    record = next((r for r in engine.records if r.uniqueid == call.uniqueid), None)
    rule = record.rules[0] if record and record.rules else "-"
    outcome = record.outcome if record else "-"
    facts = ", ".join(_fact(lk) for lk in record.lookups) if record else ""
    return [
        title,
        call.caller,
        expected,
        call.destination,
        rule,
        outcome,
        _ms(call.latency_ms),
        facts or "-",
        "ok" if call.destination == expected else "WRONG",
    ]


def _fact(lookup: dict[str, Any]) -> str:
    """One lookup as a few words: what the rules knew when they decided."""
    name, value, error = lookup.get("name"), lookup.get("value"), lookup.get("error")
    if error:
        return f"{name}: {str(error)[:28]}"
    if isinstance(value, dict) and "found" in value:
        manager = value.get("manager") or {}
        if not value.get("found"):
            return f"{name}: not in 1C"
        return f"{name}: {manager.get('name') or 'no manager'} ({manager.get('extension') or '-'})"
    if isinstance(value, dict):
        return f"{name}: {value.get('extension') or '-'}"
    return f"{name}: {'-' if value is None else value}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


TRANSPORTS = ("ajam", "tcp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's options. ``DEMO_TRANSPORT`` is checked as ``--transport``
    is: argparse checks no default against ``choices``, and a mistyped one
    (``tls``, ``TCP``) ran the demo over AJAM while the user believed TCP."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wait",
        type=float,
        default=4.0,
        help="seconds each call waits for a decision (CALLROUTER_WAIT)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the same calls and stories with shorter pauses ({QUICK_PAUSE:g} s of talk "
        "and ringing), and no wait for 1C when callrouter stops: for the test suite",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=os.environ.get("DEMO_TRANSPORT") or "ajam",
        help="how callrouter reaches Asterisk: AJAM (HTTP) or native TCP AMI "
        "(default: $DEMO_TRANSPORT, else ajam)",
    )
    args = parser.parse_args(argv)
    if args.transport not in TRANSPORTS:
        parser.error(
            f"DEMO_TRANSPORT={args.transport!r} is no transport: use ajam or tcp "
            "(make demo DEMO_TRANSPORT=tcp)"
        )
    return args


def main() -> int:
    # SIGTERM ends the demo as Ctrl-C does: with its clean-up (the router, the
    # sandbox Asterisk, the work folder).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
