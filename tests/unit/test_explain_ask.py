"""``callrouter explain --ask`` asks 1C as ``callrouter run`` would (issue 16).

"Why did this customer not reach their manager?" needs 1C's real answer:
with ``--ask`` the plugin is started (its client made), its lookup runs with
its configured timeout and fails open, and the trace says for each lookup
whether it was asked, given or not provided, and how long it took. Without
``--ask`` explain asks nothing; nothing ever reaches Asterisk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from callrouter_onec.double import DEFAULT_USER, OneCDouble

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "пароль-secret"
CALL = [
    "explain",
    "--caller",
    "8 916 123-45-67",
    "--did",
    "74951234567",
    "--at",
    "2026-11-23 12:15",
]
OWNER = "lookup owner = onec.responsible('79161234567') -> "


@pytest.fixture
def double() -> Iterator[OneCDouble]:
    """The 1C double on a free loopback port (as plugins/onec/tests start it)."""
    with OneCDouble(password=PASSWORD) as running:
        yield running


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's shell: the service's secrets are not in it."""
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    monkeypatch.delenv("ONEC_EXPLAIN_PASSWORD", raising=False)


def router_toml(folder: Path, double: OneCDouble, password: str | None = None) -> Path:
    secret = f'password = "{PASSWORD}"' if password is None else f'password_env = "{password}"'
    path = folder / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "router"\n'
        f'[router]\nrules = ["{ROOT / "rules"}"]\n'
        f'[plugins.onec]\nurl = "{double.url}"\nusername = "{DEFAULT_USER}"\n{secret}\n'
        "connect_timeout = 0.2\ntimeout = 0.5\nping_interval = 0\n",
        encoding="utf-8",
    )
    return path


def explain(config: Path, *extra: str) -> int:
    return main([*CALL, "--config", str(config), *extra])


def test_ask_gets_1cs_answer_and_says_it_was_asked(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    config = router_toml(tmp_path, double)
    assert explain(config, "--ask") == 0
    out, err = capsys.readouterr()
    assert OWNER + "{'found': True" in out
    line = next(line for line in out.splitlines() if OWNER in line)
    assert line.endswith(" ms)")
    assert "(asked, " in line
    # extension_state asks Asterisk: refused, said so, and the rule fails open.
    assert (
        "lookup state = extension_state('101') -> failed: not sent: callrouter explain "
        "sends Asterisk nothing (ExtensionState) (asked, " in out
    )
    assert "redirect(context=callrouter-dial, exten=101) (rules: owner)" in out
    asked = double.requests("/v1/responsible/")
    assert [request.path.rsplit("/", 1)[-1] for request in asked] == ["79161234567"]
    assert asked[0].query.get("did") == "74951234567"
    # Shadow mode: 1C's call history hears nothing of an explanation.
    assert double.requests("/v1/calls/events") == []
    assert "Traceback" not in out + err

    assert explain(config, "--ask", "--json") == 0
    lookups = json.loads(capsys.readouterr().out)["trace"]["rules"][2]["lookups"]
    assert [(lk["name"], lk["source"]) for lk in lookups] == [
        ("owner", "asked"),
        ("state", "asked"),
    ]
    assert lookups[0]["value"]["manager"]["extension"] == "101"
    assert lookups[0]["ms"] > 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"faults": "latency=3", "count": None}, "failed: no answer within 0.50 s"),
        ({"faults": "500", "count": None}, "failed: 1C module or infobase error"),
        ({"down": True}, "failed: "),
    ],
    ids=["slow", "failing", "down"],
)
def test_a_slow_or_failing_1c_shows_in_the_trace_and_the_rules_fall_through(
    tmp_path: Path,
    double: OneCDouble,
    capsys: pytest.CaptureFixture[str],
    fault: dict[str, object],
    error: str,
) -> None:
    httpx.post(f"{double.root_url}/_double/faults", json=fault).raise_for_status()
    config = router_toml(tmp_path, double)
    assert explain(config, "--ask") == 0
    out, err = capsys.readouterr()
    line = next(line for line in out.splitlines() if OWNER in line)
    assert line.startswith(f"      {OWNER}{error}"), line
    assert "(asked, " in line
    assert "decision: redirect(context=queues, exten=sales) (rules: default)" in out
    assert "Traceback" not in out + err


def test_a_given_answer_wins_over_asking(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    config = router_toml(tmp_path, double)
    given = json.dumps({"found": True, "manager": {"name": "Ivan", "extension": "105"}})
    assert explain(config, "--ask", "--lookup", f"onec.responsible={given}", "--json") == 0
    lookups = json.loads(capsys.readouterr().out)["trace"]["rules"][2]["lookups"]
    assert lookups[0]["source"] == "given"
    assert lookups[0]["value"]["manager"]["extension"] == "105"
    assert double.requests("/v1/responsible/") == []


def test_without_ask_nothing_is_asked(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    config = router_toml(tmp_path, double)
    assert explain(config) == 0
    out = capsys.readouterr().out
    assert OWNER + "failed: not provided (not provided, 0.0 ms)" in out
    assert double.log == []


def test_ask_refuses_a_plugin_secret_this_shell_lacks(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in password would only earn a refused login in 1C's log."""
    config = router_toml(tmp_path, double, password="ONEC_EXPLAIN_PASSWORD")
    assert explain(config, "--ask") == 1
    said = capsys.readouterr()
    assert (
        f"callrouter explain: error: --ask: {config}:9: [plugins.onec] password_env: "
        "the secret is not set" in said.err
    )
    assert said.out == ""
    assert double.log == []


@pytest.mark.parametrize("left_out", ['disabled = ["onec"]', 'enabled = ["timefuncs"]'])
def test_ask_needs_no_secret_of_a_plugin_that_is_not_started(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str], left_out: str
) -> None:
    """--ask refused for [plugins.onec] password_env though [plugins] left the
    plugin out: callrouter run starts no such plugin, so nothing needs it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: default\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: sales}\n",
        encoding="utf-8",
    )
    config = router_toml(tmp_path, double, password="ONEC_EXPLAIN_PASSWORD")
    text = config.read_text(encoding="utf-8").replace(
        "[plugins.onec]", f"[plugins]\n{left_out}\n[plugins.onec]"
    )
    config.write_text(text.replace(str(ROOT / "rules"), str(rules)), encoding="utf-8")
    assert explain(config, "--ask") == 0
    out, err = capsys.readouterr()
    assert "decision: redirect(context=queues, exten=sales) (rules: default)" in out
    assert "password_env" not in out + err  # not refused, not warned about
    assert double.log == []


def test_ask_leaves_the_live_instances_call_history_alone(
    tmp_path: Path, double: OneCDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shadow mode: with ``[plugins.onec] state_dir`` the running service's
    history file is where the plugin would open it; an explanation neither
    opens it nor sends 1C the events it holds (they are the service's to send)."""
    from datetime import datetime

    from callrouter_onec.history import CallRecord, HistoryQueue, build_event

    live = tmp_path / "live"
    live.mkdir()
    call = CallRecord(
        call_id="1714557600.42",
        direction="in",
        from_number="79161234567",
        to_number="74951234567",
        extension="101",
        manager_id=None,
        client_id=None,
        started_at=datetime(2024, 5, 1, 12, 0, 0),
        answered_at=None,
        ended_at=datetime(2024, 5, 1, 12, 0, 30),
        status="NOANSWER",
    )
    with HistoryQueue(live) as queue:
        assert queue.enqueue(build_event("missed", call))
    before = (live / "onec-history.sqlite3").stat().st_mtime_ns
    config = router_toml(tmp_path, double)
    with config.open("a", encoding="utf-8") as file:
        file.write(f'state_dir = "{live}"\n')
    assert explain(config, "--ask") == 0
    assert OWNER + "{'found': True" in capsys.readouterr().out
    assert double.requests("/v1/calls/events") == []
    assert (live / "onec-history.sqlite3").stat().st_mtime_ns == before
    with HistoryQueue(live) as queue:
        assert queue.pending_count() == 1


def test_ask_gives_the_lookups_a_calls_budget(
    tmp_path: Path,
    double: OneCDouble,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call's deadline cuts a lookup its own timeout would let run on
    (``ASK_BUDGET``: 3.7 s for the shipped dialplan; shortened here).

    The plugin cuts itself ``DEADLINE_MARGIN`` (10 ms) before the engine's own
    cut at the same deadline; a loop held past both (a loaded machine) fired the
    engine's first, and its line ("timed out after 203 ms") failed this test
    about one run in six with four busy loops on its core. What is under test is
    the plugin's cut and what it says: the engine's timer is kept, with the
    call's budget it was given recorded, but moved past the double's 3 s
    latency, so a plugin that did not cut itself gets 1C's late answer."""
    from router import eager
    from router.commands import explain as command
    from router.rules import evaluate

    given: list[float | None] = []

    def engine_cut_later(delay: float | None) -> eager.timeout:
        given.append(delay)
        return eager.timeout(None if delay is None else delay + 5.0)

    monkeypatch.setattr(command, "ASK_BUDGET", 0.2)
    monkeypatch.setattr(evaluate, "eager", SimpleNamespace(timeout=engine_cut_later))
    httpx.post(
        f"{double.root_url}/_double/faults", json={"faults": "latency=3", "count": None}
    ).raise_for_status()
    assert explain(router_toml(tmp_path, double), "--ask") == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if OWNER in line)
    # Issue 16: cut at the call's 0.2 s, not the plugin's 0.5 s, and said by the plugin:
    # 1C's request and the advice (it said only "timed out after 201 ms").
    assert line.startswith(
        f"      {OWNER}failed: no answer from 1C to GET /demo/hs/telephony/v1/responsible/"
    ), line
    # What was left of the 0.2 s when the lookup began (less on a loaded machine).
    left = re.search(r"within the call's remaining (\d+\.\d\d) s", line)
    assert left is not None, line
    assert float(left.group(1)) <= 0.2, line
    assert "the lookup deadline passed during evaluation" in out
    # The engine was given the call's budget for the lookup, as the plugin was.
    assert given, "the engine set no timer for the lookup"
    assert all(delay is not None and delay <= 0.2 for delay in given), given


def test_a_plugin_lookup_bug_is_said_once(
    tmp_path: Path,
    double: OneCDouble,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup raising something else than "no answer" is its plugin's bug:
    the one-shot line names it once, not ``KeyError('x') (KeyError: 'x')``."""
    from callrouter_onec.plugin import OneCPlugin

    def broken(self: OneCPlugin, number: str, request: object = None) -> None:
        raise KeyError("x")

    monkeypatch.setattr(OneCPlugin, "lookup", broken)
    config = router_toml(tmp_path, double)
    assert explain(config, "--ask") == 0
    out, err = capsys.readouterr()
    assert OWNER + "failed: KeyError: 'x'" in out
    [said] = [line for line in err.splitlines() if "onec.responsible" in line]
    assert said == (
        "callrouter explain: error: plugin 'onec' failed in its lookup onec.responsible: "
        "KeyError('x')"
    )
    assert "Traceback" not in out + err
