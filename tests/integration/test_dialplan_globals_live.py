"""`[callrouter-inbound]` pasted without the snippet's `[globals]`, on the
real Asterisk 22 (issue 16, hnew32's trial of README's quick start, which
said to paste that context alone): `Wait()` of nothing did not wait and
`Goto(,did,1)` ran the context again and again, while `callrouter check
--asterisk` said the context was OK. It fails such an older copy now, and
passes the whole snippet; the context now sets its own defaults, so pasted
alone it waits 4 s and takes [callrouter-default] (and check passes it)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from router.cli import main
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from router.testing import shipped_dialplan
from tests.integration._live import (
    SALES_RULES,
    TEST_QUEUE,
    admin_placer,
    builtin_engine,
    cli,
    sales_router_toml,
    serving_leniently,
)

pytestmark = pytest.mark.integration


def inbound_alone() -> str:
    """The shipped `[callrouter-inbound]` as a reader of the old README pasted it."""
    text = shipped_dialplan()
    start = text.index("[callrouter-inbound]")
    end = text.index("\n[", start)
    return text[start:end] + "\n"


def older_inbound_alone() -> str:
    """:func:`inbound_alone` as pasted before the context set its own
    defaults: the request reads the [globals] alone."""
    lines = inbound_alone().splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if not line.startswith(";")
        and "Set(CALLROUTER_WAIT=" not in line
        and "Set(CALLROUTER_DEFAULT=" not in line
    ]
    first = next(i for i, line in enumerate(kept) if "Set(CALLROUTER_DID=" in line)
    kept[first] = kept[first].replace(" same => n,", "exten => _X.,1,", 1)
    return "".join(kept)


def default_route() -> str:
    """The shipped ``[callrouter-default]``, the default route the defaults name."""
    text = shipped_dialplan()
    start = text.index("[callrouter-default]")
    end = text.find("\n[", start)
    return text[start : None if end < 0 else end] + "\n"


async def test_a_call_without_the_globals_waits_then_takes_the_default_route(
    queue_box: Sandbox, queue_placer: CallPlacer
) -> None:
    """The shipped [callrouter-inbound] alone (no [globals]) and no callrouter:
    the call waits the default 4 s, sends one request, and lands in
    [callrouter-default] once, instead of running the context again and again."""
    await asyncio.to_thread(queue_box.set_dialplan, inbound_alone() + default_route() + TEST_QUEUE)
    assert "CALLROUTER_WAIT=" not in await cli(queue_box, "dialplan show globals")
    assert "CALLROUTER_DEFAULT=" not in await cli(queue_box, "dialplan show globals")
    call = await queue_placer.place("74950000032", "79160000032")
    await queue_placer.wait_all([call], timeout=10)
    await asyncio.sleep(0.5)  # a request sent again after the landing would show now
    assert call.requests == 1, (call.requests, call.destination)
    assert call.destination == "callrouter-default,74950000032", call.destination
    assert call.landings == 1, call.landings
    assert call.requested_at is not None
    assert call.landed_at is not None
    waited = call.landed_at - call.requested_at
    assert 3.5 <= waited <= 6.0, waited


def with_global_wait(value: str) -> str:
    """The whole shipped snippet with ``CALLROUTER_WAIT=value`` in its [globals]."""
    text = shipped_dialplan()
    line = next(line for line in text.splitlines() if line.startswith("CALLROUTER_WAIT="))
    return text.replace(line, f"CALLROUTER_WAIT={value}", 1)


@pytest.mark.parametrize("value", ["four", "4s", "", "0", "-1", "0x4", "1:2", 'a"b?c'])
async def test_a_global_wait_that_is_no_number_waits_the_default_then_takes_the_default_route(
    queue_box: Sandbox, queue_placer: CallPlacer, value: str
) -> None:
    """hleft33's trial: a [globals] CALLROUTER_WAIT that is not a positive
    number (a typo, a unit) went to Wait() and into the deadline unchecked:
    `Wait(four)` did not wait, `$[${EPOCH} + four]` is no deadline, and the
    request told callrouter `Wait: four`. The shipped context now falls back
    to the default 4 s: the call waits, sends one request saying `Wait: 4`,
    and lands in [callrouter-default] once."""
    await asyncio.to_thread(queue_box.set_dialplan, with_global_wait(value) + TEST_QUEUE)
    call = await queue_placer.place("74950000033", "79160000033")
    await queue_placer.wait_all([call], timeout=10)
    await asyncio.sleep(0.5)  # a request sent again after the landing would show now
    assert call.requests == 1, (call.requests, call.destination)
    assert call.destination == "callrouter-default,74950000033", call.destination
    assert call.landings == 1, call.landings
    assert call.variables.get("CALLROUTER_WAIT") == "4", call.variables
    deadline = call.variables.get("CALLROUTER_DEADLINE", "")
    assert deadline.isdigit(), call.variables
    assert call.requested_at is not None
    assert call.landed_at is not None
    assert abs(int(deadline) - (call.requested_at + 4)) <= 1.5, (deadline, call.requested_at)
    waited = call.landed_at - call.requested_at
    assert 3.5 <= waited <= 6.0, waited


async def test_a_global_wait_that_is_a_number_is_kept(
    queue_box: Sandbox, queue_placer: CallPlacer
) -> None:
    """The check above keeps a positive number as it is: 2.5 s is waited."""
    await asyncio.to_thread(queue_box.set_dialplan, with_global_wait("2.5") + TEST_QUEUE)
    call = await queue_placer.place("74950000034", "79160000034")
    await queue_placer.wait_all([call], timeout=10)
    assert call.destination == "callrouter-default,74950000034", call.destination
    assert call.variables.get("CALLROUTER_WAIT") == "2.5", call.variables
    assert call.requested_at is not None
    assert call.landed_at is not None
    waited = call.landed_at - call.requested_at
    assert 2.3 <= waited <= 3.5, waited


@pytest.fixture
def queue_dialplan() -> str:
    return older_inbound_alone() + TEST_QUEUE


def test_check_fails_the_inbound_context_without_its_globals(
    queue_box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sales_router_toml(queue_box, tmp_path)
    assert "CALLROUTER_WAIT=" not in queue_box.cli("dialplan show globals")
    assert main(["check", "--config", str(config), "--asterisk"]) == 1
    fails = re.findall(r"^asterisk: FAIL +(.*)$", capsys.readouterr().out, re.M)
    assert [line.split(",")[0] for line in fails] == [
        "[callrouter-inbound] reads ${CALLROUTER_WAIT}",
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}",
    ], fails
    assert "again and again" in fails[1]
    # The context as shipped now, pasted alone: it defaults both itself.
    queue_box.set_dialplan(inbound_alone() + default_route() + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 0, capsys.readouterr().out
    assert "asterisk: FAIL" not in capsys.readouterr().out
    # The whole snippet, as README now says: its [globals] set both.
    queue_box.set_dialplan(shipped_dialplan() + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 0, capsys.readouterr().out
    assert "asterisk: FAIL" not in capsys.readouterr().out


async def test_a_dial_channel_without_the_globals_takes_the_default_route(
    queue_box: Sandbox,
) -> None:
    """A channel that enters [callrouter-dial] without the inbound context's
    values (a Local channel of an internal forward) and without [globals]:
    a skipped extension (DND) goes to [callrouter-default], where the old
    `Goto(${CALLROUTER_DEFAULT},${CALLROUTER_DID},1)`, all empty, ran
    [callrouter-dial] again and again."""
    text = shipped_dialplan()
    await asyncio.to_thread(
        queue_box.set_dialplan, text[text.index("[callrouter-inbound]") :] + TEST_QUEUE
    )
    assert "CALLROUTER_DEFAULT=" not in await cli(queue_box, "dialplan show globals")
    await cli(queue_box, "dialplan set global CALLROUTER_DND_132 1")
    async with admin_placer(
        queue_box, request_timeout=3.0, inbound_context="callrouter-dial"
    ) as placer:
        call = await placer.place("132", "79160000032")
        await placer.wait_all([call], timeout=6)
        await asyncio.sleep(0.5)
        assert call.destination == "callrouter-default,132", call.destination
        assert call.landings == 1, call.landings


def test_check_names_a_global_wait_that_is_no_number(
    queue_box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`CALLROUTER_WAIT=four` in [globals]: the shipped context waits its own
    4 s (above), and `check --asterisk` says the value is not used, naming it."""
    config = sales_router_toml(queue_box, tmp_path)
    queue_box.set_dialplan(with_global_wait("four") + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 0
    out = capsys.readouterr().out
    assert "asterisk: FAIL" not in out
    assert (
        "the global CALLROUTER_WAIT is 'four', not a positive number of seconds: "
        "[callrouter-inbound] waits its default 4 s instead"
    ) in out, out


async def test_run_sets_the_globals_an_older_inbound_context_lacks(
    queue_box: Sandbox, queue_placer: CallPlacer, tmp_path: Path
) -> None:
    """hleft33b: an older [callrouter-inbound] pasted without [globals] (and
    [callrouter-default], pasted as README then said): with callrouter running,
    a call ran the context 22 to 46 times before the Redirect landed. `run`
    now sets CALLROUTER_WAIT=4 and CALLROUTER_DEFAULT=callrouter-default
    (Setvar, no channel) at start: a call sends one request and is routed
    once; with callrouter stopped, it waits 4 s and takes the default route
    once."""
    await asyncio.to_thread(
        queue_box.set_dialplan, older_inbound_alone() + default_route() + TEST_QUEUE
    )
    assert "CALLROUTER_WAIT=" not in await cli(queue_box, "dialplan show globals")
    engine = builtin_engine(queue_box.url, queue_box.secret, tmp_path, SALES_RULES)
    async with serving_leniently(engine):
        for _ in range(100):
            if "CALLROUTER_DEFAULT=callrouter-default" in await cli(
                queue_box, "dialplan show globals"
            ):
                break
            await asyncio.sleep(0.1)
        shown_globals = await cli(queue_box, "dialplan show globals")
        assert "CALLROUTER_WAIT=4" in shown_globals, shown_globals
        assert "CALLROUTER_DEFAULT=callrouter-default" in shown_globals, shown_globals
        routed = await queue_placer.place("74950000035", "79160000035")
        await queue_placer.wait_all([routed], timeout=10)
        await asyncio.sleep(0.5)
        assert routed.requests == 1, (routed.requests, routed.destination)
        assert routed.destination == "test-queue,sales", routed.destination
        assert routed.landings == 1, routed.landings
    fallen = await queue_placer.place("74950000036", "79160000036")
    await queue_placer.wait_all([fallen], timeout=10)
    await asyncio.sleep(0.5)
    assert fallen.requests == 1, (fallen.requests, fallen.destination)
    assert fallen.destination == "callrouter-default,74950000036", fallen.destination
    assert fallen.landings == 1, fallen.landings


def snippet_globals(*, clearing: bool = True) -> str:
    """The shipped ``[globals]``; without ``clearing``, as milestone 1 shipped
    them: no ``CALLROUTER_GLOBALS_BY=`` line."""
    text = shipped_dialplan()
    start = text.index("[globals]")
    section = text[start : text.index("\n[", start)] + "\n"
    if clearing:
        return section
    return "".join(
        line for line in section.splitlines(keepends=True) if "CALLROUTER_GLOBALS_BY" not in line
    )


async def test_check_tells_the_globals_run_set_from_the_dialplans(
    queue_box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: after `run` set CALLROUTER_WAIT and CALLROUTER_DEFAULT for an
    older [callrouter-inbound], `check --asterisk` said OK, so an administrator
    never pasted [globals] and after the next Asterisk restart with callrouter
    down calls ran round. `run` marks them (CALLROUTER_GLOBALS_BY): check fails
    them, also after an older [globals] (without the clearing line) was pasted
    and reloaded; the snippet's [globals] and a `dialplan reload` clear it."""
    older = older_inbound_alone() + default_route() + TEST_QUEUE
    queue_box.set_dialplan(older)
    (tmp_path / "run").mkdir()
    engine = builtin_engine(queue_box.url, queue_box.secret, tmp_path / "run", SALES_RULES)
    marked = "CALLROUTER_GLOBALS_BY=callrouter:CALLROUTER_WAIT,CALLROUTER_DEFAULT"
    async with serving_leniently(engine):
        for _ in range(100):
            if "CALLROUTER_DEFAULT=callrouter-default" in queue_box.cli("dialplan show globals"):
                break
            await asyncio.sleep(0.1)
    shown_globals = queue_box.cli("dialplan show globals")  # callrouter stopped: they stay
    assert marked in shown_globals, shown_globals
    assert "CALLROUTER_WAIT=4" in shown_globals, shown_globals
    config = sales_router_toml(queue_box, tmp_path)
    check = ["check", "--config", str(config), "--asterisk"]

    async def fails() -> list[str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, check)
        found = re.findall(r"^asterisk: FAIL +(.*)$", capsys.readouterr().out, re.M)
        assert code == (1 if found else 0), (code, found)
        return found

    said = (
        "[callrouter-inbound] reads ${CALLROUTER_WAIT} and ${CALLROUTER_DEFAULT}, which "
        "extensions.conf does not set"
    )
    (fail,) = await fails()
    assert fail.startswith(said), fail
    assert "callrouter set the globals CALLROUTER_WAIT=4" in fail, fail
    assert "Asterisk forgets them when it restarts" in fail, fail
    # The milestone-1 [globals] pasted, `dialplan reload`: the values are the
    # file's now, but the mark stays until Asterisk restarts, and check says how.
    queue_box.set_dialplan(snippet_globals(clearing=False) + older)
    assert marked in queue_box.cli("dialplan show globals")
    (fail,) = await fails()
    assert fail.startswith(said), fail
    assert "if you have pasted [globals] since" in fail, fail
    # The snippet's [globals] as shipped now: its empty line clears the mark.
    queue_box.set_dialplan(snippet_globals() + older)
    shown_globals = queue_box.cli("dialplan show globals")
    assert "CALLROUTER_GLOBALS_BY=callrouter" not in shown_globals, shown_globals
    assert "CALLROUTER_WAIT=4" in shown_globals, shown_globals
    assert await fails() == []


async def test_run_started_again_keeps_saying_the_globals_an_earlier_run_set(
    queue_box: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A `run` started after another had set the globals (a restart, a
    standby) took them for the file's; the mark says they are callrouter's:
    its WARNING says so."""
    caplog.set_level(logging.INFO, logger="router.engine")
    queue_box.set_dialplan(older_inbound_alone() + default_route() + TEST_QUEUE)
    queue_box.cli("dialplan set global CALLROUTER_WAIT 4")
    queue_box.cli("dialplan set global CALLROUTER_DEFAULT callrouter-default")
    queue_box.cli(
        "dialplan set global CALLROUTER_GLOBALS_BY callrouter:CALLROUTER_WAIT,CALLROUTER_DEFAULT"
    )
    engine = builtin_engine(queue_box.url, queue_box.secret, tmp_path, SALES_RULES)
    async with serving_leniently(engine):
        for _ in range(100):
            if "callrouter set the globals" in caplog.text:
                break
            await asyncio.sleep(0.1)
    assert "callrouter set the globals CALLROUTER_WAIT=4" in caplog.text, caplog.text


def with_global_default(value: str) -> str:
    """The whole shipped snippet with ``CALLROUTER_DEFAULT=value`` in its [globals]."""
    text = shipped_dialplan()
    line = next(line for line in text.splitlines() if line.startswith("CALLROUTER_DEFAULT="))
    return text.replace(line, f"CALLROUTER_DEFAULT={value}", 1)


async def test_a_default_route_to_a_context_asterisk_lacks_hangs_the_call_up(
    queue_box: Sandbox, queue_placer: CallPlacer
) -> None:
    """hast46's trial: `CALLROUTER_DEFAULT=my-ivx` (a typo of the PBX's own
    IVR context) in [globals]: with callrouter down, the call waits, then
    Asterisk hangs it up at the default route's Goto ("sent to invalid
    extension"), while `check --asterisk` said OK (below)."""
    await asyncio.to_thread(queue_box.set_dialplan, with_global_default("my-ivx") + TEST_QUEUE)
    call = await queue_placer.place("74950000035", "79160000035")
    await queue_placer.wait_all([call], timeout=10)
    assert call.destination == "hangup", call.destination


def test_check_fails_a_default_route_to_a_context_asterisk_lacks(
    queue_box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sales_router_toml(queue_box, tmp_path)
    queue_box.set_dialplan(with_global_default("my-ivx") + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 1
    out = capsys.readouterr().out
    assert (
        "asterisk: FAIL   the global CALLROUTER_DEFAULT is 'my-ivx', a context Asterisk's "
        "dialplan does not have: every call callrouter does not route in time"
    ) in out, out
    queue_box.set_dialplan(with_global_default("test-queue") + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 0
    out = capsys.readouterr().out
    assert "CALLROUTER_DEFAULT" not in out, out


async def test_a_default_route_with_a_comma_hangs_the_call_up(
    queue_box: Sandbox, queue_placer: CallPlacer
) -> None:
    """hnewuser46's trial: `CALLROUTER_DEFAULT=test-queue,s`: the context up to
    the comma exists, but Goto(test-queue,s,${CALLROUTER_DID},1) takes the
    dialled number for the priority and Asterisk hangs the call up."""
    await asyncio.to_thread(
        queue_box.set_dialplan, with_global_default("test-queue,s") + TEST_QUEUE
    )
    call = await queue_placer.place("74950000036", "79160000036")
    await queue_placer.wait_all([call], timeout=10)
    assert call.destination == "hangup", call.destination


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("callrouter-inbound", "the context that sends the request itself"),
        ("test-queue,s", "which holds a comma"),
    ],
)
def test_check_fails_a_default_route_that_loops_or_holds_a_comma(
    queue_box: Sandbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    value: str,
    said: str,
) -> None:
    """hnewuser46's trial: both passed `check --asterisk`; the first ran each
    call not routed in time through [callrouter-inbound] again and again, a
    request every wait, until the caller hung up."""
    config = sales_router_toml(queue_box, tmp_path)
    queue_box.set_dialplan(with_global_default(value) + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 1
    out = capsys.readouterr().out
    assert f"asterisk: FAIL   the global CALLROUTER_DEFAULT is {value!r}, {said}" in out, out
