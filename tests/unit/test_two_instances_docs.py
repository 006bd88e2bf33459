"""docs/operations.md "Two instances on one Asterisk" (and its Russian twin):
the refusals a second ``callrouter run`` meets, as the page quotes them.

hnewuser45's trial (issue 16): the page said a second run of the same
router.toml with ``[api]`` on stops with ``[api] listen: cannot listen on
...``; it stops with the state folder's ``[router] state_dir: ... is in use by
another `callrouter run``` (the lock is taken first), which the page gave for
a router.toml without ``[api]`` only. And the messages that quote
``callrouter run`` itself were written as one-backtick code spans with
escaped backticks inside, which a code span does not take: they showed cut in
two with a stray backslash (the restore's refusal too).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.errors import StateRestoreError
from router.statebackup import backup_state
from router.staterestore import restore_state
from tests.unit.cli_code import run_cli
from tests.unit.state_lock import locking_engine

REPO = Path(__file__).parents[2]
#: The service's router.toml, as the pages name it.
SERVICE_CONFIG = "/etc/callrouter/router.toml"
PAGES = {
    "en": (
        REPO / "docs" / "operations.md",
        "## Two instances on one Asterisk",
        "## State and backups",
    ),
    "ru": (
        REPO / "docs" / "ru" / "operations.md",
        "## Два экземпляра на одном Asterisk",
        "## Состояние и резервные копии",
    ),
}
RULES = """version: 1
rules:
  - name: all
    on: call
    do:
      - redirect: {context: default, exten: "100"}
"""


def section(language: str, heading: int) -> str:
    """The page's section (0: two instances, 1: state and backups), to the next ``## ``."""
    path, *headings = PAGES[language]
    text = path.read_text(encoding="utf-8")
    start = text.index(headings[heading] + "\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """Each inline code span of ``text`` (outside fenced blocks) as CommonMark
    reads it: opened by a run of backticks and closed by a run of the same
    length, no backslash escapes inside; its content with the lines joined,
    and where it starts."""
    prose = re.sub(r"(?ms)^```.*?^```", lambda m: " " * len(m.group(0)), text)
    pos = 0
    while (opening := re.compile(r"`+").search(prose, pos)) is not None:
        ticks = opening.group(0)
        closing = re.compile(rf"(?<!`){ticks}(?!`)").search(prose, opening.end())
        if closing is None:
            pos = opening.end()
            continue
        content = " ".join(prose[opening.end() : closing.start()].split())
        yield opening.start(), content
        pos = closing.end()


def quoted(language: str, heading: int, start: str) -> tuple[int, str]:
    """The section's one code span that starts with ``start``."""
    found = [
        (at, span) for at, span in code_spans(section(language, heading)) if span.startswith(start)
    ]
    assert len(found) == 1, (language, start, found)
    return found[0]


def page_message(span: str) -> str:
    """A quoted message up to its elision (`` ...``), with the page's example
    line and folder, which every page quotes so."""
    assert span.endswith("..."), f"not one code span (cut by a backtick?): {span!r}"
    return span.removesuffix("...").rstrip()


def run_config(tmp_path: Path, state: Path, port: int) -> Path:
    """A router.toml with ``[api]`` on ``port``; its state_dir is on line 9."""
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:9/asterisk"\nusername = "u"\n'
        f'secret_env = "CR_SECRET"\n\n[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
        f'# the service\'s state\nstate_dir = "{state}"\n\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return config


def second_run(config: Path, cwd: Path, *options: str) -> str:
    """``callrouter run [OPTIONS] --config CONFIG``'s stderr; it must stop at once."""
    try:
        run = run_cli("run", *options, "--config", str(config), cwd=cwd)
    except subprocess.TimeoutExpired:
        pytest.fail("the second callrouter run went on starting")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    return run.stderr


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A running service's hold, as `callrouter run` with [api] keeps it: its
    state folder locked and its [api] listen port taken. (state_dir, port)."""
    state = tmp_path / "var" / "lib" / "callrouter"
    state.mkdir(parents=True, mode=0o700)
    held = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield state, listening.getsockname()[1]
        finally:
            os.close(held)


@pytest.mark.parametrize("language", PAGES)
def test_a_second_run_of_the_same_router_toml_with_api_on_is_stopped_by_the_state_folder(
    language: str, service: tuple[Path, int], tmp_path: Path
) -> None:
    state, port = service
    config = run_config(tmp_path, state, port)
    said = second_run(config, tmp_path)

    at_state, state_span = quoted(language, 0, "callrouter run: error:")
    message = page_message(state_span)
    message = message.replace("router.toml:9", f"{config}:9")
    message = message.replace("/var/lib/callrouter", str(state))
    assert message in said
    assert "cannot listen" not in said
    # The page says this refusal first, as the one of the same router.toml,
    # and the [api] listen one for a configuration with a state_dir of its own.
    at_api, _ = quoted(language, 0, "[api] listen: cannot listen on")
    assert at_state < at_api


@pytest.mark.parametrize("language", PAGES)
def test_a_run_with_its_own_state_dir_but_the_service_s_api_listen_is_stopped_by_the_port(
    language: str, service: tuple[Path, int], tmp_path: Path
) -> None:
    _, port = service
    own = tmp_path / "trial-state"
    own.mkdir(mode=0o700)
    said = second_run(run_config(tmp_path, own, port), tmp_path)

    _, api_span = quoted(language, 0, "[api] listen: cannot listen on")
    message = page_message(api_span).replace("127.0.0.1:8089", f"127.0.0.1:{port}")
    head, tail = message.split(" (...)")
    assert f"callrouter run: error: {head} (" in said
    assert tail.strip("; ") in said


@pytest.mark.parametrize("language", PAGES)
def test_the_restore_s_refusal_of_a_running_router_is_quoted_whole(
    language: str, tmp_path: Path
) -> None:
    state, backup = tmp_path / "state", tmp_path / "backup"
    state.mkdir(mode=0o700)
    (state / "calllife.json").write_text('{"mark": 1.0, "told": {}}\n', encoding="utf-8")
    list(backup_state(state, backup))
    engine = locking_engine(tmp_path, state)
    engine._check_state_dir()  # what `callrouter run` does at start
    try:
        with pytest.raises(StateRestoreError) as refused:
            restore_state(backup, state)
    finally:
        engine._unlock_state_dir()
    said = str(refused.value)

    _, span = quoted(language, 1, "STATE_DIR: in use by a running")
    assert "\\" not in span
    head, tail = span.replace("STATE_DIR", str(state)).split(" (pid 4242 (...))")
    assert said.startswith(f"{head} (pid {os.getpid()} ("), said
    assert said.endswith(tail), said


UPGRADING = {"en": ("## Upgrading", "\n4. "), "ru": ("## Обновление", "\n4. ")}


def upgrade_step_3(language: str) -> str:
    path = PAGES[language][0]
    text = path.read_text(encoding="utf-8")
    heading, step_4 = UPGRADING[language]
    start = text.index("\n3. ", text.index(heading + "\n"))
    return text[start : text.index(step_4, start)]


@pytest.mark.parametrize("language", PAGES)
def test_the_upgrade_s_shadow_trial_runs_on_a_configuration_of_its_own(
    language: str, service: tuple[Path, int], tmp_path: Path
) -> None:
    """Step 3 ran the new version with ``--shadow`` and no word of its
    configuration: with the service's router.toml it is refused by the
    state folder's lock beside a version that takes it, and beside an
    earlier one (milestone 1) it wrote its calllife.json into the service's
    state folder (hnewuser45's trial)."""
    step = upgrade_step_3(language)
    commands = [
        span
        for _, span in code_spans(step)
        if span.startswith("/opt/callrouter-new/bin/callrouter run --shadow")
    ]
    assert len(commands) == 1, step
    config = commands[0].split("--config ", 1)[1].split()[0]
    assert config != SERVICE_CONFIG
    assert config in section(language, 0)  # the Two instances section's trial.toml

    state, port = service
    said = second_run(run_config(tmp_path, state, port), tmp_path, "--shadow")
    assert f"[router] state_dir: {state} is in use by another `callrouter run`" in said
    quoted_refusal = [span for _, span in code_spans(step) if "is in use by another" in span]
    assert len(quoted_refusal) == 1, step
    head = page_message(quoted_refusal[0]).replace("/var/lib/callrouter", str(state))
    assert head in said
