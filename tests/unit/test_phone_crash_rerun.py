"""The sandbox suite's answer to a crashed baresip phone (tests/integration/conftest.py):
a failed phones test whose phone died of a signal is told and run once more; a
second failure, or a failure with no crash, fails as ever. Run by ``pytester`` on
stand-in phones (a real crash needs the sandbox: checked by hand on it)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import types

import pytest

from router.sandbox.phones import Phones

RUNS = {}


class Agent:
    def __init__(self, name):
        self.name = name
        self.process = types.SimpleNamespace(poll=lambda: None)

    def crash_report(self, lines=40):
        return f"the log of {self.name}\\n--- SIGSEGV: the backtrace of {self.name}'s core"


@pytest.fixture
def phones():
    """Phones whose baresip processes run (the real fixture restarts dead ones)."""
    stand_in = Phones.__new__(Phones)
    stand_in._phones = {"101": Agent("101")}
    stand_in.pstn = Agent("pstn")
    return stand_in


def crash(phones):
    phones._phones["101"].process = types.SimpleNamespace(poll=lambda: -11)


def runs(name):
    RUNS[name] = RUNS.get(name, 0) + 1
    return RUNS[name]


def test_crash_once(phones):
    if runs("once") == 1:
        crash(phones)
        assert False, "failed on the crash"


def test_crash_always(phones):
    runs("always")
    crash(phones)
    assert False, "failed on the crash"


def test_no_crash(phones):
    runs("plain")
    assert False, "a plain failure"


def test_runs_told():
    assert RUNS == {"once": 2, "always": 2, "plain": 1}
'''


def test_a_phones_test_failing_on_a_crashed_phone_runs_once_more(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_crashed_phone_inner=TESTS)
    result = pytester.runpytest_inprocess(
        "-p", "tests.integration.conftest", "-p", "no:cacheprovider", "-rA"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*tests run once more after a sandbox phone crashed*",
            "*test_crash_once: baresip of phone 101 died of signal 11 (call)*",
            "*test_crash_always: baresip of phone 101 died of signal 11 (call)*",
            "PASSED test_crashed_phone_inner.py::test_crash_once",
            "FAILED test_crashed_phone_inner.py::test_crash_always*",
            "FAILED test_crashed_phone_inner.py::test_no_crash*",
        ],
        consecutive=False,
    )
    assert "test_no_crash: baresip" not in result.stdout.str()
    # the failed run's report holds the phone's crash report (its core's backtrace)
    result.stdout.fnmatch_lines(
        [
            "*baresip of phone 101 died of signal 11 (call)*backtrace of its core*",
            "the log of 101",
            "--- SIGSEGV: the backtrace of 101's core",
        ]
    )
