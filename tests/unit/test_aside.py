"""router.aside.move_aside: a file set aside never overwrites one set aside before (issue 16)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import router.aside as aside_module
from router.aside import move_aside


def test_the_name_asked_for_when_free_then_numbered_names(tmp_path: Path) -> None:
    path, aside = tmp_path / "state.db", tmp_path / "state.db.replaced-20270101T120000"
    got = []
    for n in range(3):
        path.write_text(f"file {n}")
        got.append(move_aside(path, aside).name)
    assert got == [aside.name, f"{aside.name}-2", f"{aside.name}-3"]
    assert [(tmp_path / name).read_text() for name in got] == ["file 0", "file 1", "file 2"]
    assert not path.exists()


def test_a_file_that_cannot_be_hard_linked_is_renamed_to_a_free_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fs.protected_hardlinks`` refuses a link to another owner's file
    (EPERM), where a rename in the folder works."""

    def refused(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(aside_module.os, "link", refused)
    path, aside = tmp_path / "forwarding.json", tmp_path / "forwarding.json.bad"
    aside.write_text("set aside before")
    path.write_text("damaged")
    assert move_aside(path, aside) == tmp_path / "forwarding.json.bad-2"
    assert aside.read_text() == "set aside before"
    assert (tmp_path / "forwarding.json.bad-2").read_text() == "damaged"
    assert not path.exists()


def test_a_symbolic_link_is_moved_itself_not_what_it_names(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("not ours")
    path = tmp_path / "state.db"
    path.symlink_to(tmp_path / "elsewhere")
    moved = move_aside(path, tmp_path / "state.db.bad")
    assert moved.is_symlink()
    assert os.readlink(moved) == str(tmp_path / "elsewhere")
    assert not os.path.lexists(path)


def test_a_refused_move_leaves_the_file_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with pytest.raises(FileNotFoundError):
        move_aside(path, tmp_path / "state.db.bad")
    path.write_text("kept")
    with pytest.raises(FileNotFoundError):
        move_aside(path, tmp_path / "no-such-folder" / "state.db.bad")
    assert path.read_text() == "kept"
