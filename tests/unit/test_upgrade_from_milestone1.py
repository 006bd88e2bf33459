"""An upgrade from milestone 1 (commit f24a33de, 2026-11-23) as
docs/operations.md "Upgrading" and "From an earlier version" (and the Russian
twin) tell it, against what that version's docs had the administrator write.

tests/fixtures/milestone1/ holds that version's files as they were:
``router.toml`` (its examples/router.toml), ``rules/`` (its shipped rules),
``manager.conf`` (its README's quick start), ``extensions.conf`` (its
examples/asterisk/extensions.conf, which its docs/asterisk.md said to paste)
and ``onec-history.sql``, a dump of the 1C plugin's queue it left in
``state_dir`` after routing calls on the sandbox Asterisk, four events still
pending. Played for real (issue 16): the new version's check named the
changes, its ``state backup`` copied the old state, it sent the pending
events, and the restored backup ran the old version again. What broke was the
docs: step 4 backed up and checked with ``/opt/callrouter/bin/callrouter``,
still the old version there (milestone 1 has neither ``state backup`` nor
``check --config``), and step 3 promised the check would name an earlier
version live on the Asterisk, which a version with no heartbeat is not.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from router.cli import main
from router.dialplan_lint import lint_inbound
from router.testing.asterisk import dialplan_steps

REPO = Path(__file__).parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "milestone1"
PAGES = {
    "en": (REPO / "docs" / "operations.md", "## Upgrading", "### From an earlier version"),
    "ru": (REPO / "docs" / "ru" / "operations.md", "## Обновление", "### С более ранней версии"),
}


def section(language: str, *, earlier: bool = False) -> str:
    """The page's "Upgrading" steps, or with ``earlier`` its "From an earlier
    version" part, with its lines joined (a quote may wrap)."""
    path, upgrading, from_earlier = PAGES[language]
    text = path.read_text(encoding="utf-8")
    start = text.index(from_earlier if earlier else upgrading)
    end = text.find("\n## ", start + 1) if earlier else text.index(from_earlier)
    return " ".join(text[start : end if end != -1 else None].split())


def etc(tmp_path: Path) -> Path:
    """/etc/callrouter as milestone 1's docs had it made."""
    folder = tmp_path / "etc" / "callrouter"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURE / "router.toml", folder / "router.toml")
    shutil.copytree(FIXTURE / "rules", folder / "rules")
    return folder


def earlier_state(folder: Path) -> Path:
    """The state folder milestone 1 left: its 1C history queue, in WAL mode."""
    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "onec-history.sqlite3")
    try:
        db.executescript((FIXTURE / "onec-history.sql").read_text(encoding="utf-8"))
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    return folder / "onec-history.sqlite3"


def test_the_earlier_router_toml_and_rules_pass_the_new_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page says router.toml and the rule files keep their format: no key unknown."""
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    config = etc(tmp_path) / "router.toml"
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "10 rules OK" in out
    assert "unknown" not in out.lower()


def test_the_check_names_the_manager_conf_change_the_docs_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    config = etc(tmp_path) / "router.toml"
    code = main(
        ["check", "--config", str(config), "--manager-conf-file", str(FIXTURE / "manager.conf")]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0, out
    assert "ADVICE manager.conf [general] has no bindaddr" in out
    assert "add `bindaddr = 127.0.0.1` to [general]" in out
    for language in PAGES:
        assert "`bindaddr = 127.0.0.1`" in section(language, earlier=True)


def test_the_check_fails_the_earlier_inbound_context_as_the_docs_quote() -> None:
    """Milestone 1's context sent its request, then Ringing(), then Wait()."""
    pasted = (FIXTURE / "extensions.conf").read_text(encoding="utf-8")
    findings = lint_inbound(dialplan_steps(pasted, "callrouter-inbound"))
    fails = [f.text for f in findings if f.level == "fail"]
    quote = "the step after the request is 'Ringing', not a wait"
    assert len(fails) == 1, findings
    assert quote in fails[0]
    assert "put the wait right after the request" in fails[0]
    for language in PAGES:
        assert quote in section(language, earlier=True), language


def test_the_new_state_backup_copies_the_earlier_state_and_changes_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 4 backs up with the new version; the old file stays byte for byte."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    state = tmp_path / "var" / "lib" / "callrouter"
    history = earlier_state(state)
    before = history.read_bytes()
    config = etc(tmp_path) / "router.toml"
    text = config.read_text(encoding="utf-8")
    assert '# state_dir = "/var/lib/callrouter"' in text
    config.write_text(text.replace('# state_dir = "/var/lib/callrouter"', f'state_dir = "{state}"'))
    backup = tmp_path / "backups" / "before-upgrade"
    assert main(["state", "backup", str(backup), "--config", str(config)]) == 0
    assert "onec-history.sqlite3: " in capsys.readouterr().out
    assert history.read_bytes() == before
    copy = sqlite3.connect(backup / "onec-history.sqlite3")
    try:
        rows = copy.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
    finally:
        copy.close()
    assert dict(rows) == {"pending": 4, "sent": 6}


def test_a_backup_of_the_earlier_example_router_toml_names_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its example left state_dir commented out: from a shell the backup
    refuses, naming the key, as "From an earlier version" quotes."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = etc(tmp_path) / "router.toml"
    assert main(["state", "backup", str(tmp_path / "backup"), "--config", str(config)]) != 0
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert "[router] state_dir: no folder" in said
    for language in PAGES:
        assert "`[router] state_dir: no folder ...`" in section(language, earlier=True)


@pytest.mark.parametrize("language", PAGES)
def test_step_4_backs_up_and_checks_with_the_new_virtualenv(language: str) -> None:
    """/opt/callrouter is the old version until the switch: milestone 1's
    callrouter has no `state backup` and no `check --config`."""
    steps = section(language)
    new = re.search(r"python3 -m venv (/opt/callrouter-new) && \1/bin/pip install", steps)
    assert new is not None, "step 2 names the new virtualenv"
    path, _, _ = PAGES[language]
    text = path.read_text(encoding="utf-8")
    block = text[text.index("# systemctl stop callrouter", text.index(PAGES[language][1])) :]
    block = block[: block.index("```")]
    commands = [line.split("# ", 1)[1] for line in block.splitlines() if "callrouter " in line]
    run_by_hand = [c for c in commands if "bin/callrouter " in c]
    assert [c.split()[1:3] for c in run_by_hand] == [["state", "backup"], ["check", "--config"]]
    for command in run_by_hand:
        assert command.startswith(f"{new[1]}/bin/callrouter "), command
    assert "invalid choice: 'state'" in steps


@pytest.mark.parametrize("language", PAGES)
def test_the_docs_say_a_callrouter_with_no_heartbeat_goes_unseen(language: str) -> None:
    """Milestone 1 sends no CallRouterLive: while it routed, check --asterisk
    said the OK below, not the ADVICE step 3 quotes for a version before At."""
    said = "no callrouter is live on this Asterisk now"
    assert said in (REPO / "router" / "commands" / "preflight.py").read_text(encoding="utf-8")
    assert f"`{said}`" in section(language)


#: What milestone 1's 1C plugin runs on its history file at open and for each
#: call event (its ``HistoryQueue``, verbatim): tried on the converted file (issue 16).
EARLIER_OPEN = """
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, event TEXT NOT NULL,
        payload TEXT NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending', updated REAL, detail TEXT,
        UNIQUE (call_id, event));
    CREATE INDEX IF NOT EXISTS events_state ON events (state, id);
"""
EARLIER_ENQUEUE = (
    "INSERT OR IGNORE INTO events (call_id, event, payload, created) VALUES (?, ?, ?, ?)"
)


def test_the_earlier_history_is_converted_and_a_rollback_keeps_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The page's "From an earlier version" says the file is converted with its pending
    events sent, quoting the start's line; step 5 says milestone 1 started again
    on it, without the restore, still queues its events. It lost them all:
    its rows lack the event id the converted file requires (issue 16)."""
    from callrouter_onec.history import HistoryQueue

    history = earlier_state(tmp_path / "state")
    caplog.set_level(logging.INFO, logger="callrouter_onec.history")
    with HistoryQueue(history) as queue:
        pending = queue.pending_count()
    assert pending == 4
    [converted] = [r.getMessage() for r in caplog.records]
    assert converted.startswith(f"onec: history file {history} from a version before event ids")
    converted = converted.replace(str(history), "PATH").split(" (docs/")[0]
    for language in PAGES:
        assert f"`{converted}`" in section(language, earlier=True), language
    logged = "onec: %d call events left by the last run; sending them"
    said = logged.replace("%d", str(pending))
    plugin = REPO / "plugins" / "onec" / "callrouter_onec" / "plugin.py"
    assert logged in plugin.read_text(encoding="utf-8")
    earlier = sqlite3.connect(history, isolation_level=None)
    try:
        earlier.executescript(EARLIER_OPEN)
        earlier.execute(EARLIER_ENQUEUE, ("9.1", "ringing", '{"event": "ringing"}', 9.0))
    finally:
        earlier.close()
    with HistoryQueue(history) as queue:
        assert [(r.call_id, r.event) for r in queue.pending()][-1] == ("9.1", "ringing")
        assert queue.pending_count() == 5
    quotes = {
        "en": "milestone 1 queues its 1C call events in the history file the new version "
        "converted, and they are sent",
        "ru": "версия milestone 1 ставит события звонков для 1С в файл истории, "
        "преобразованный новой версией, и они отправляются",
    }
    for language, quote in quotes.items():
        assert f"`{said}`" in section(language, earlier=True), language
        assert quote in section(language), language


def test_the_docs_quote_the_new_words_for_earlier_settings_and_clients() -> None:
    """The dial_context warning (test_check_config.py prints it) and the
    feed's 400 (seen on the sandbox with a client's ``wait=``) the page quotes."""
    from router.api.errors import ApiError, refuse_unknown_query

    plugin = (REPO / "plugins" / "onec" / "callrouter_onec" / "plugin.py").read_text(
        encoding="utf-8"
    )
    assert '"%s: [plugins.%s] dial_context: no longer used' in plugin
    with pytest.raises(ApiError) as refused:
        refuse_unknown_query(["wait"], ("cursor", "extension", "timeout", "limit"))
    for language in PAGES:
        text = section(language, earlier=True)
        assert (
            "`router.toml:27: [plugins.onec] dial_context: no longer used ...; delete the line`"
            in text
        )
        assert f"`{refused.value.detail}`" in text, refused.value.detail
