"""Fixtures for tests against the real Asterisk sandbox (:mod:`router.sandbox`).

``sandbox``
    session-scoped: one Asterisk for the whole run (``pytest-<pid>``), removed
    at the end. Tests must not stop it or change its configuration for good.
``scratch_sandbox``
    function-scoped: a second, private Asterisk with ``httptimeout=12`` for
    destructive tests (session expiry, restart, kill), removed after the test.

``manager_user``
    ``manager_user(box, name, **classes)`` adds a manager user
    (:meth:`Sandbox.add_manager_user`) and takes it back after the test.
``sandbox_globals_kept``
    the shared ``sandbox``'s dialplan globals as the test found them: those it
    set or changed are set back after it (Asterisk 22 removes none at runtime,
    so one that was not there comes back empty, which every read takes as unset).

``double``
    module-scoped: the in-process 1C double (``callrouter_onec.double``),
    password ``_live.ONEC_PASSWORD``, serving ``double_directory`` (the
    double's demo directory unless a module overrides that fixture). Module
    scope, so that a module's router fixtures (module scope) can hold it; what
    it logged and stored carries from one test of the module to the next.
``clean_double``
    the module's ``double`` reset before the test (:meth:`OneCDouble.reset`:
    no faults, log, events, sessions or recordings; up), as a new double
    starts: a module whose tests each want a fresh 1C says
    ``pytestmark = pytest.mark.usefixtures("clean_double")``.
``tone``
    a 30 s WAV of ``_live.TONE_HZ``, for the PSTN phone to play once a call is up.

``ami_transport``
    ``"ajam"`` unless a test or module parametrizes it with
    :data:`AMI_TRANSPORTS` (``indirect=True``, or its own fixture of that
    name): the engine then reaches the sandbox over AJAM or native TCP AMI
    (:func:`ami_url`), so the tests that exercise the transport run over both.

Each sandbox has a manager secret of its own (:func:`private_secret`), not
the kit's default that every sandbox on the host would share: a router or
client left over from another test, another xdist worker or another run on
this host, reconnecting to a port a new sandbox took, cannot log in there, so
it never routes that sandbox's calls nor claims to be its live router (the
heartbeat key derives from the secret: router/liveguard.py).

If a sandbox cannot be started, the tests that need it fail with the exact
reason under CI (``CI`` set) or with ``CALLROUTER_REQUIRE_SANDBOX=1``, and are
skipped with the reason otherwise. A failed test gets the Asterisk log tail of
every sandbox it used attached as a report section.

A test on the sandbox phones that fails while one of their baresip processes
died of a signal (Debian's baresip 1.1.0 crashes now and then in its audio
path: router/sandbox/phones.py) is run once more on phones started again, as
``make demo`` tells its story once more; the crash's report is kept and the
run's summary names the test. A second failure fails it, crash or not.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _pytest.runner import runtestprotocol
from callrouter_onec.directory import Directory
from callrouter_onec.double import OneCDouble

from router.errors import SandboxError
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from router.sandbox.phones import Phones, tone_wav
from router.testing import shipped_dialplan
from tests.integration._live import (
    ONEC_PASSWORD,
    TEST_QUEUE,
    TONE_HZ,
    admin_placer,
    dialplan_globals,
    set_globals,
)

#: The section title of a phone's crash in a failed test's report.
PHONE_CRASH = "baresip of phone "
#: Stash key: the tests run once more after a phone's crash, with what crashed.
_RERUNS = pytest.StashKey[list[tuple[str, str]]]()

#: manager.conf httptimeout of ``scratch_sandbox``: short, but over 10 s.
SCRATCH_HTTPTIMEOUT = 12

_scratch_numbers = itertools.count(1)

#: The two ways callrouter reaches Asterisk (``[asterisk] url``).
AMI_TRANSPORTS = ("ajam", "tcp")


def ami_url(box: Sandbox, transport: str) -> str:
    """The sandbox's ``[asterisk] url`` for ``transport`` (``ajam`` or ``tcp``)."""
    return box.tcp_url if transport == "tcp" else box.url


@pytest.fixture
def ami_transport(request: pytest.FixtureRequest) -> str:
    """``ajam``, or the transport a test parametrizes (``indirect=True``)."""
    return str(getattr(request, "param", "ajam"))


def sandbox_required() -> bool:
    """True when a missing sandbox must fail the run instead of skipping."""
    ci = os.environ.get("CI", "").strip().lower()
    required = os.environ.get("CALLROUTER_REQUIRE_SANDBOX", "").strip()
    return ci not in ("", "0", "false", "no") or required == "1"


def private_secret() -> str:
    """A manager secret for one sandbox alone (module doc)."""
    return f"pytest-{secrets.token_hex(8)}"


def _start_or_give_up(name: str, *, httptimeout: int = 60) -> Sandbox:
    try:
        return Sandbox.start(name=name, httptimeout=httptimeout, secret=private_secret())
    except SandboxError as exc:
        message = f"the Asterisk sandbox could not be started: {exc}"
        if sandbox_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One running Asterisk for the session: ``.url``, ``.users()``, ``.cli()``."""
    box = _start_or_give_up(f"pytest-{os.getpid()}")
    try:
        yield box
    finally:
        box.remove()


@pytest.fixture
def scratch_sandbox() -> Iterator[Sandbox]:
    """A private Asterisk (``httptimeout=12``) that a test may restart or kill."""
    box = _start_or_give_up(
        f"pytest-{os.getpid()}-scratch{next(_scratch_numbers)}", httptimeout=SCRATCH_HTTPTIMEOUT
    )
    try:
        yield box
    finally:
        box.remove()


@pytest.fixture
def manager_user() -> Iterator[Callable[..., None]]:
    """``manager_user(box, name, **classes)``: a manager user added for the test
    alone, taken back after it (module doc)."""
    added: list[tuple[Sandbox, str]] = []

    def add(box: Sandbox, name: str, **classes: Any) -> None:
        box.add_manager_user(name, **classes)
        added.append((box, name))

    yield add
    for box, name in reversed(added):
        box.remove_manager_user(name)


@pytest.fixture
def sandbox_globals_kept(sandbox: Sandbox) -> Iterator[None]:
    """The shared sandbox's globals as the test found them (module doc)."""
    before = dialplan_globals(sandbox)
    yield
    after = dialplan_globals(sandbox)
    changed = {n: before.get(n, "") for n, v in after.items() if before.get(n, "") != v}
    if changed:
        set_globals(sandbox, changed)


@pytest.fixture(scope="module")
def double_directory() -> Directory | None:
    """The clients and managers ``double`` serves: None, the double's demo
    directory; a module that needs others overrides this fixture."""
    return None


@pytest.fixture(scope="module")
def double(double_directory: Directory | None) -> Iterator[OneCDouble]:
    """The module's in-process 1C double, password ``ONEC_PASSWORD`` (module doc)."""
    with OneCDouble(double_directory, password=ONEC_PASSWORD) as running:
        yield running


@pytest.fixture
def clean_double(double: OneCDouble) -> OneCDouble:
    """The module's ``double`` as a new one starts (module doc)."""
    double.reset()
    return double


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    """A 30 s WAV of ``TONE_HZ`` for the PSTN phone to play (module doc)."""
    return tone_wav(tmp_path / "tone.wav", hz=TONE_HZ, seconds=30)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach Asterisk's log tail to a failed test's report, one section per sandbox."""
    report = yield
    if not report.failed:
        return report
    funcargs = getattr(item, "funcargs", {})
    told: set[int] = set()  # phones and sandbox_phones are one Phones
    for name, value in funcargs.items():
        if isinstance(value, Sandbox):
            try:
                tail = value.log_tail(60)
            except OSError as exc:  # pragma: no cover - the log went away
                tail = f"(could not read the log: {exc})"
            report.sections.append((f"Asterisk log of {name} ({value.name}, {call.when})", tail))
        if isinstance(value, Phones) and id(value) not in told:
            told.add(id(value))
            # Debian's baresip dies of SIGSEGV now and then (router/sandbox/phones.py):
            # said first, so a crash of the phone is not read as callrouter's failure.
            for agent in value.all:
                code = agent.process.poll() if agent.process is not None else None
                if code is not None and code < 0:
                    report.sections.append(
                        (
                            f"{PHONE_CRASH}{agent.name} died of signal {-code} "
                            f"({call.when}): the sandbox phone crashed, see its log "
                            "and the backtrace of its core",
                            agent.crash_report(40),
                        )
                    )
    return report


@pytest.fixture
def queue_dialplan() -> str:
    """The dialplan of ``queue_box``: the shipped snippet and ``[test-queue]``
    (``_live.TEST_QUEUE``, where ``_live.SALES_RULES`` sends calls); a module
    that needs another base overrides this fixture."""
    return shipped_dialplan() + TEST_QUEUE


@pytest.fixture
def queue_box(scratch_sandbox: Sandbox, queue_dialplan: str) -> Sandbox:
    """``scratch_sandbox`` running ``queue_dialplan``."""
    scratch_sandbox.set_dialplan(queue_dialplan)
    return scratch_sandbox


@pytest_asyncio.fixture
async def queue_placer(queue_box: Sandbox) -> AsyncIterator[CallPlacer]:
    """Places calls into ``queue_box`` as ``admin`` (3 s requests: the box may be down)."""
    async with admin_placer(queue_box, request_timeout=3.0) as placer:
        yield placer


def _phone_crashes(reports: list[pytest.TestReport]) -> list[str]:
    """The crash sections of the failed ``reports`` (pytest_runtest_makereport above)."""
    return [
        title
        for report in reports
        if report.failed
        for title, _ in report.sections
        if title.startswith(PHONE_CRASH)
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Run a phones test once more when it failed on a crashed baresip (module doc)."""
    names = getattr(item, "fixturenames", ())
    initrequest = getattr(item, "_initrequest", None)  # what a fresh run needs (pytest 8, 9)
    if ("phones" not in names and "sandbox_phones" not in names) or initrequest is None:
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    crashes = _phone_crashes(reports)
    if crashes:
        item.config.stash.setdefault(_RERUNS, []).append((item.nodeid, "; ".join(crashes)))
        for report in reports:
            if report.failed:
                report.sections.append(("run once more", "a sandbox phone crashed in this run"))
        initrequest()  # the next run sets its fixtures up again (phones: restarted)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reruns = terminalreporter.config.stash.get(_RERUNS, [])
    if reruns:
        terminalreporter.section("tests run once more after a sandbox phone crashed")
        for nodeid, crashes in reruns:
            terminalreporter.write_line(f"{nodeid}: {crashes}")
