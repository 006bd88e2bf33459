"""CHANGELOG.md is merged with git's union driver (helpers' branches are
cherry-picked), which can drop a line of an entry without a conflict: an
entry cut mid-sentence runs into the next one unnoticed."""

from __future__ import annotations

from pathlib import Path

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"


def _entries(text: str) -> list[tuple[int, str]]:
    """Each bullet with its continuation lines joined, and its first line number."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("- "):
            entries.append((number, line))
        elif line.startswith("  ") and entries and line.strip():
            start, joined = entries[-1]
            entries[-1] = (start, f"{joined} {line.strip()}")
        elif line.strip() and not line.startswith("#"):
            entries.append((number, ""))  # prose between lists ends the entry
    return [(n, e) for n, e in entries if e]


def test_every_entry_ends_as_a_sentence_does() -> None:
    cut = [
        f"CHANGELOG.md:{n}: ...{e[-60:]}"
        for n, e in _entries(CHANGELOG.read_text(encoding="utf-8"))
        if not e.rstrip().endswith((".", ")"))
    ]
    assert not cut, "entries cut short (a merge lost their last line?):\n" + "\n".join(cut)


def test_unreleased_has_only_the_three_kinds_of_change_each_once() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
    kinds = [line[4:] for line in unreleased.splitlines() if line.startswith("### ")]
    assert kinds == ["Added", "Fixed", "Security"]


def test_a_cut_entry_is_found() -> None:
    text = "### Fixed\n- one (api.md,\n- two (issue 16).\n"
    assert [e for _, e in _entries(text) if not e.endswith((".", ")"))] == ["- one (api.md,"]
