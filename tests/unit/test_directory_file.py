"""The directory plugin's file (``[plugins.directory] file``) is bounded like a rule
file: a size, and YAML without aliases or anchors (router/builtin/directory.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from router.builtin import directory
from router.builtin.directory import MAX_DIRECTORY_BYTES, load_directory
from router.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs"

#: "Billion laughs", nine levels: str() of the shared lists, as an entry's name,
#: was 72 MB for seven levels (a 466-byte file), ten times more for each level.
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 10)}]\n" for n in range(8)
)


def test_yaml_aliases_are_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        '"79161234567": {extension: "101", name: &who Ivan}\n'
        '"79161234568": {extension: "102", name: *who}\n'
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:1: YAML anchors"):
        load_directory(path)


def test_a_control_character_is_refused_naming_the_file_line_and_column(tmp_path: Path) -> None:
    """PyYAML refuses it before any mark exists: it was a bare ReaderError."""
    path = tmp_path / "directory.yaml"
    path.write_text('"79161234567": {extension: "101"}\n"79161234568": {extension: "1\x0002"}\n')
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:2: character U\+0000 at column 30 is not"
    ):
        load_directory(path)


def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "directory.yml"
    path.write_text(f"{LAUGHS}'79161234567': {{extension: '101', name: *i}}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:1: YAML anchors"):
        load_directory(path)
    # At once: milliseconds, where the billion expansions would take far longer
    # than this bound a loaded machine stays below (1 s measured the host; issue 16).
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("name", ["directory.csv", "directory.yaml"])
def test_a_file_over_the_bound_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(directory, "MAX_DIRECTORY_BYTES", 100)
    path = tmp_path / name
    path.write_text("79161234567,101,Ivan\n" * 5 if name.endswith("csv") else "'7916': '1'\n" * 9)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: bigger than 100 bytes"):
        load_directory(path)
    path.write_text("79161234567,101,Ivan\n" if name.endswith("csv") else "'79161234567': '101'\n")
    assert load_directory(path).get("79161234567") == (
        {"extension": "101", "name": "Ivan"} if name.endswith("csv") else {"extension": "101"}
    )


def test_the_bound_is_documented() -> None:
    for page in ("reference/config.md", "ru/reference/config.md"):
        text = (DOCS / page).read_text(encoding="utf-8").replace(" ", ",")
        assert f"{MAX_DIRECTORY_BYTES:,}" in text, page


def test_yaml_entries_keep_their_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        "79161234567: 0101\n"
        "+7 916 123-45-68: {extension: 102, name: yes}\n"
        "'79161234569': {extension: '103', name: ~}\n"
    )
    found = load_directory(path)
    assert found.get("79161234567") == {"extension": "0101"}
    assert found.get("89161234568") == {"extension": "102", "name": "yes"}
    assert found.get("79161234569") == {"extension": "103", "name": None}


def test_a_field_that_is_no_text_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("'79161234567':\n  extension: '101'\n  name: [Ivan, Petrov]\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3: 79161234567: name: "):
        load_directory(path)


def test_an_empty_yaml_file_is_an_empty_directory(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("# nobody yet\n")
    assert load_directory(path).entries == {}
