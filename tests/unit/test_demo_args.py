"""``make demo DEMO_TRANSPORT=...`` (README.md) runs the demo over the
transport it names, or refuses the name: it never falls back in silence."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
