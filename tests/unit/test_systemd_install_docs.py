"""The install steps of docs/operations.md (and its Russian twin, and the
unit's own header) leave a configuration folder the service can use.

examples/systemd/callrouter.service runs callrouter as ``DynamicUser=yes``
with ``WorkingDirectory=/etc/callrouter``: a uid made at start, in no group
that owns anything, which systemd switches to before it changes into that
folder (and ``ConfigurationDirectory=`` neither chowns an existing folder nor
changes its mode). The steps said ``install -d -m 750 /etc/callrouter``: root's
folder, closed to others, so the service could not enter it or read
router.toml (issue 16). Replayed here as root, with a uid of our own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
UNIT = REPO / "examples" / "systemd" / "callrouter.service"
SOURCES = [REPO / "docs" / "operations.md", REPO / "docs" / "ru" / "operations.md", UNIT]
#: A uid and gid no account has, as DynamicUser= allocates.
NOBODY_ELSE = 61934


def documented_mode(path: Path) -> int:
    (mode,) = re.findall(r"install -d -m (\d+) /etc/callrouter\b", path.read_text("utf-8"))
    return int(mode, 8)


def test_the_unit_runs_as_a_dynamic_user_in_the_config_folder() -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^DynamicUser=yes$", text, re.M)
    assert re.search(r"^WorkingDirectory=/etc/callrouter$", text, re.M)
    assert re.search(r"^ConfigurationDirectory=callrouter$", text, re.M)


@pytest.fixture
def etc() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are closed to other users.
    top = Path(tempfile.mkdtemp(prefix="callrouter-etc-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as the install steps do")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_service_user_can_enter_the_folder_and_read_router_toml(
    source: Path, etc: Path
) -> None:
    folder = etc / "callrouter"
    folder.mkdir(mode=documented_mode(source))
    folder.chmod(documented_mode(source))  # `install -d -m MODE`, whatever the umask
    old = os.umask(0o022)  # a root shell's
    try:
        shutil.copy(REPO / "examples" / "router.toml", folder / "router.toml")  # cp
        shutil.copytree(REPO / "rules", folder / "rules")  # cp -r
    finally:
        os.umask(old)
    # As systemd does it: the user first, then WorkingDirectory=, then what
    # `callrouter run --config /etc/callrouter/router.toml` reads (its rules).
    # (This machine's interpreter is not one another user may run: the reads
    # stand in for it; test_documented_commands.py runs `check` on the same copy.)
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'cd "{folder}" && cat router.toml >/dev/null '
            "&& find rules -type f -exec cat {} + >/dev/null",
        ],
        user=NOBODY_ELSE,
        group=NOBODY_ELSE,
        extra_groups=[],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


PAGES = [REPO / "docs" / "operations.md", REPO / "docs" / "ru" / "operations.md"]


def drop_in(page: Path) -> dict[str, list[str]]:
    """key -> values of the ``[Service]`` drop-in the page gives."""
    blocks = re.findall(r"```ini\n(\[Service\]\n.*?)```", page.read_text("utf-8"), re.S)
    assert len(blocks) == 1, f"{page.name}: one [Service] drop-in expected"
    settings: dict[str, list[str]] = {}
    for line in blocks[0].splitlines()[1:]:
        key, value = line.split("=", 1)
        settings.setdefault(key, []).extend(value.split())
    return settings


def example_recordings_folder() -> str:
    """The ``[recordings] local_dir`` examples/router.toml suggests (commented out)."""
    text = (REPO / "examples" / "router.toml").read_text("utf-8")
    (folder,) = re.findall(r'^# local_dir = "([^"]+)"', text, re.M)
    return folder


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_recordings_folder_is_given_to_the_hardened_service(page: Path) -> None:
    """``ProtectSystem=strict`` leaves the service only its state directory to
    write, and ``DynamicUser=`` puts it in no group, while retention deletes,
    moves and transcodes in Asterisk's recordings folder (0750 asterisk on
    Debian): with the unit as shipped and nothing said, recordings could be
    neither read nor deleted (issue 16)."""
    unit = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^ProtectSystem=strict$", unit, re.M)
    settings = drop_in(page)
    folder = example_recordings_folder()
    assert folder in settings["ReadWritePaths"]
    assert settings["SupplementaryGroups"] == ["asterisk"]
    # The folder exists (ReadWritePaths= of a missing one stops the start)
    # and the group may write it.
    made = re.search(
        rf"install -d -o asterisk -g asterisk -m (\d+) {re.escape(folder)}\n",
        page.read_text("utf-8"),
    )
    assert made is not None
    assert int(made.group(1), 8) & 0o070 == 0o070


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_systemd_accepts_the_unit_with_the_documented_drop_in(page: Path, tmp_path: Path) -> None:
    unit = tmp_path / "callrouter.service"
    unit.write_bytes(UNIT.read_bytes())
    (tmp_path / "callrouter.service.d").mkdir()
    lines = [f"{key}={' '.join(values)}" for key, values in drop_in(page).items()]
    (tmp_path / "callrouter.service.d" / "override.conf").write_text(
        "[Service]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (checked.stdout + checked.stderr).splitlines()
        if "/opt/callrouter/bin/callrouter" not in line  # installed by the admin
    ]
    assert complaints == []


def documentation_files() -> list[Path]:
    """The local files the unit's ``Documentation=`` lines name."""
    text = UNIT.read_text(encoding="utf-8")
    urls = re.findall(r"^Documentation=(.+)$", text, re.M)
    assert urls, "the unit names its documentation"
    return [Path(url.removeprefix("file://")) for url in " ".join(urls).split() if "://" in url]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_install_steps_put_the_units_documentation_where_it_points(
    source: Path, tmp_path: Path
) -> None:
    """``Documentation=file:///usr/share/doc/callrouter/operations.md`` named a
    file nothing made: pip installs no docs, and the steps copied none (issue 16).
    The steps' copy of the checkout's docs/ is replayed under ``tmp_path``."""
    (copy,) = re.findall(r"cp -r docs/\. (/\S+?)/?$", source.read_text("utf-8"), re.M)
    root = tmp_path / "root"
    target = root / copy.lstrip("/")
    target.mkdir(parents=True)  # install -d
    shutil.copytree(REPO / "docs", target, dirs_exist_ok=True)  # cp -r docs/. TARGET/
    for named in documentation_files():
        assert named.is_absolute()
        assert (root / str(named).lstrip("/")).is_file(), f"{named} is not what {copy} gets"
