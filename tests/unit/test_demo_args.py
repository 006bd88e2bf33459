"""``make demo DEMO_TRANSPORT=...`` (README.md) runs the demo over the
transport it names, or refuses the name: it never falls back in silence."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

from router.sandbox.crash import signal_name

DEMO = Path(__file__).parents[2] / "examples" / "demo.py"


def demo_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("callrouter_demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("env", "transport"), [(None, "ajam"), ("", "ajam"), ("tcp", "tcp")])
def test_demo_transport_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str | None, transport: str
) -> None:
    if env is None:
        monkeypatch.delenv("DEMO_TRANSPORT", raising=False)
    else:
        monkeypatch.setenv("DEMO_TRANSPORT", env)
    assert demo_module(monkeypatch).parse_args([]).transport == transport


@pytest.mark.parametrize("env", ["tls", "TCP", "ami"])
def test_an_unknown_demo_transport_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str
) -> None:
    """argparse checks no default against ``choices``: ``DEMO_TRANSPORT=tls``
    ran the demo over AJAM while it printed nothing about the name."""
    monkeypatch.setenv("DEMO_TRANSPORT", env)
    with pytest.raises(SystemExit) as exited:
        demo_module(monkeypatch).parse_args([])
    assert exited.value.code == 2
    assert f"DEMO_TRANSPORT={env!r} is no transport: use ajam or tcp" in capsys.readouterr().err


def test_make_demo_keeps_its_pauses_and_only_quick_shortens_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--quick`` is the test suite's (tests/integration/test_demo.py): ``make demo``
    passes no flag, and its stories talk and ring as long as they always did."""
    demo = demo_module(monkeypatch)
    assert demo.parse_args([]).quick is False
    assert demo.parse_args(["--quick"]).quick is True
    shown = demo.Demo(None, tmp_path, None)
    quick = demo.Demo(None, tmp_path, None, quick=True)
    assert [shown.pause(s) for s in (1, 2, 3)] == [1, 2, 3]
    assert [quick.pause(s) for s in (1, 2, 3)] == [demo.QUICK_PAUSE] * 3


# -- a crashed baresip in a phone story ----------------------------------------------


class _Process:
    def __init__(self, code: int | None) -> None:
        self.code = code

    def poll(self) -> int | None:
        return self.code


class _Agent:
    def __init__(self, name: str, code: int | None) -> None:
        self.name = name
        self.process = _Process(code)

    @property
    def crashed(self) -> str | None:
        return signal_name(self.process.code)

    def crash_report(self, lines: int = 40) -> str:
        return f"the log of {self.name}\n--- {self.crashed}: the backtrace of its core"


class _Phones:
    """What tell_once_more_after_a_crash uses of Phones: ``all`` and ``reset``."""

    def __init__(self, *agents: _Agent) -> None:
        self.all = list(agents)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        for agent in self.all:
            agent.process.code = None  # started again


def _story(failures: list[BaseException], crash: _Agent | None) -> object:
    told: list[str] = []

    async def story_example(demo: object, phones: object, engine: object) -> str:
        told.append("told")
        if failures:
            if crash is not None:
                crash.process.code = -11
            raise failures.pop(0)
        return f"happened after {len(told)}"

    return story_example


def test_a_story_a_baresip_crashed_in_is_told_once_more_on_phones_started_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = demo_module(monkeypatch)
    pstn = _Agent("pstn", None)
    phones = _Phones(_Agent("101", None), pstn)
    story = _story([RuntimeError("pstn: waited 0 s of 20 s for a call to be up")], pstn)
    told = asyncio.run(demo.tell_once_more_after_a_crash(story, None, phones, None))
    assert told == "happened after 2"
    assert phones.resets == 1
    out = capsys.readouterr().out
    assert "baresip of pstn (SIGSEGV) crashed in the story story_example" in out
    # what Debian's maintainers would ask for, indented under the story's line
    assert "    the log of pstn\n    --- SIGSEGV: the backtrace of its core" in out
    assert "the log of 101" not in out


def test_a_story_that_fails_without_a_crash_fails_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = demo_module(monkeypatch)
    phones = _Phones(_Agent("101", None), _Agent("pstn", None))
    story = _story([RuntimeError("no call rang at 104 within 15 s")], None)
    with pytest.raises(RuntimeError, match="no call rang at 104"):
        asyncio.run(demo.tell_once_more_after_a_crash(story, None, phones, None))
    assert phones.resets == 0


def test_a_second_crash_fails_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = demo_module(monkeypatch)
    pstn = _Agent("pstn", None)
    phones = _Phones(pstn)
    story = _story([RuntimeError("first"), RuntimeError("second")], pstn)
    with pytest.raises(RuntimeError, match="second"):
        asyncio.run(demo.tell_once_more_after_a_crash(story, None, phones, None))
    assert phones.resets == 1


def test_crashed_phones_names_each_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = demo_module(monkeypatch)
    phones = _Phones(_Agent("101", -11), _Agent("102", 0), _Agent("103", -99), _Agent("pstn", None))
    assert demo.crashed_phones(phones) == ["101 (SIGSEGV)", "103 (signal 99)"]


# -- the work folder -------------------------------------------------------------------


class _GoneSandbox:
    """A sandbox Asterisk that started, and whose removal fails."""

    url = "http://127.0.0.1:9/asterisk"
    secret = "x"

    def remove(self) -> None:
        raise RuntimeError("the sandbox would not stop")


class _NoAsterisk:
    def __init__(self, *_: object) -> None:
        pass

    async def login(self) -> None:
        raise ConnectionError("no Asterisk there")


def test_the_work_folder_goes_even_when_the_sandbox_will_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each demo left a ``callrouter-demo-*`` folder in /tmp when removing its
    sandbox failed (issue 16): the folder's removal came after it."""
    demo = demo_module(monkeypatch)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(demo.Sandbox, "start", lambda **_: _GoneSandbox())
    monkeypatch.setattr(demo, "OneCDouble", None)
    monkeypatch.setattr(demo, "AJAMClient", _NoAsterisk)
    with pytest.raises(RuntimeError, match="would not stop"):
        asyncio.run(demo.run(demo.parse_args(["--quick"])))
    assert list(tmp_path.iterdir()) == []


def test_sigterm_ends_the_demo_as_ctrl_c_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM killed the demo before its clean-up (the sandbox, the work folder)."""
    demo = demo_module(monkeypatch)
    handlers: dict[int, object] = {}
    monkeypatch.setattr(demo.signal, "signal", lambda sig, handler: handlers.update({sig: handler}))
    monkeypatch.setattr(demo, "run", lambda args: asyncio.sleep(0, 0))
    monkeypatch.setattr("sys.argv", ["demo.py"])
    assert demo.main() == 0
    assert handlers[signal.SIGTERM] is signal.default_int_handler
