"""The benchmarks leave nothing in the temporary directory (issue 16).

Each ``bench_*.py`` run made a ``bench-*`` folder (router.toml, rules, state,
router.log) with ``tempfile.mkdtemp`` and never removed it: 236
``bench-engine-*`` folders had piled up on one host. They now make it with
``_common.scratch_dir``, which removes it when the run ends, however it ends.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.unit.bench_script import BENCH, load_bench_script

COMMON = load_bench_script("_common.py", "bench_common_under_test")
#: What makes a file or folder nobody removes.
LEFT_BEHIND = re.compile(r"\bmkdtemp\(|\bmkstemp\(|delete\s*=\s*False")


def made_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def test_the_folder_is_removed_when_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made_in(tmp_path, monkeypatch)
    with COMMON.scratch_dir("bench-x-") as folder:
        assert folder.parent == tmp_path
        assert folder.name.startswith("bench-x-")
        (folder / "rules").mkdir()
        (folder / "rules" / "inbound.yaml").write_text("version: 1\n", encoding="utf-8")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop", [RuntimeError("the sandbox failed"), KeyboardInterrupt()])
def test_the_folder_is_removed_when_the_run_fails_or_is_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    made_in(tmp_path, monkeypatch)

    def run() -> None:
        with COMMON.scratch_dir("bench-x-") as folder:
            (folder / "router.toml").write_text("[router]\n", encoding="utf-8")
            raise stop

    with pytest.raises(type(stop)):
        run()
    assert list(tmp_path.iterdir()) == []


def test_the_log_handler_into_the_folder_is_closed_and_taken_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As each benchmark logs: ``basicConfig`` with a FileHandler into the folder.
    A handler elsewhere stays."""
    made_in(tmp_path, monkeypatch)
    root = logging.getLogger()
    elsewhere = logging.FileHandler(tmp_path / "elsewhere.log")
    monkeypatch.setattr(root, "handlers", [elsewhere])
    with COMMON.scratch_dir("bench-x-") as folder:
        into = logging.FileHandler(folder / "router.log")
        root.addHandler(into)
        assert into.stream is not None
    assert root.handlers == [elsewhere]
    assert into.stream is None  # closed
    assert [p.name for p in tmp_path.iterdir()] == ["elsewhere.log"]
    elsewhere.close()


#: ``scratch_dir`` itself, and the soak, which keeps its folder when asked
#: (test_bench_soak_office.py).
OWN_FOLDER = ("_common.py", "soak_office.py")


@pytest.mark.parametrize(
    "script", sorted(p.name for p in BENCH.glob("*.py") if p.name not in OWN_FOLDER)
)
def test_no_benchmark_makes_a_temporary_folder_of_its_own(script: str) -> None:
    """Only ``scratch_dir`` calls ``mkdtemp``; ``TemporaryDirectory`` removes itself."""
    text = (BENCH / script).read_text(encoding="utf-8")
    found = [
        f"{script}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if LEFT_BEHIND.search(line)
    ]
    assert found == []
