"""A list file is the rule editor's, kept with the rules (issue 16).

``lists: {x: /etc/passwd}`` loaded as a numbers list, or failed with the
file's first line quoted in the log; entries were normalized so leniently
that ``1-800-FLOWERS`` became ``1800``.
"""

from __future__ import annotations

import os
from pathlib import Path

from router.plugin_registry import plugin_registry
from router.rules import load_rules

REGISTRY = plugin_registry()


def errors_of(folder: Path, lists: str) -> list[str]:
    path = folder / "rules.yaml"
    path.write_text(f"version: 1\nlists:\n{lists}rules: []\n", encoding="utf-8")
    return [str(e) for e in load_rules([path], REGISTRY).errors]


def test_a_symbolic_link_out_of_the_rules_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("79161234567\n", encoding="utf-8")
    rules = tmp_path / "rules"
    (rules / "lists").mkdir(parents=True)
    os.symlink(secret, rules / "lists" / "vip.txt")
    (error,) = errors_of(rules, "  vip: lists/vip.txt\n")
    assert "lists/vip.txt leads out of the rule file's folder (a symbolic link?)" in error


def test_a_link_inside_the_rules_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "all.txt").write_text("+7 916 000-00-01\n", encoding="utf-8")
    os.symlink(tmp_path / "lists" / "all.txt", tmp_path / "lists" / "vip.txt")
    assert errors_of(tmp_path, "  vip: lists/vip.txt\n") == []


def test_a_bad_entry_is_quoted_short_and_escaped(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    entry = "root:x:0:0:root:/root:/bin/bash\x1b[2J" + "y" * 500
    (tmp_path / "lists" / "vip.txt").write_text(entry + "\n", encoding="utf-8")
    (error,) = errors_of(tmp_path, "  vip: lists/vip.txt\n")
    assert "\x1b" not in error
    assert "y" * 50 not in error
    assert error.endswith(f"... ({len(entry)} characters)"), error


def test_a_date_written_another_way_says_the_one_meant(tmp_path: Path) -> None:
    """hsched48's trial: 31.12.2026, as dates are written in Russia, said only
    "not a date (YYYY-MM-DD or MM-DD)"; the hint spells it out."""
    (tmp_path / "lists").mkdir()
    said: dict[str, str] = {}
    for entry in ("31.12.2026", "31.12", "2026/12/31", "2026-1-5", "30.02.2026", "2026-13-01"):
        (tmp_path / "lists" / "holidays.txt").write_text(f"01-01\n{entry}\n", encoding="utf-8")
        (error,) = errors_of(tmp_path, "  holidays: {file: lists/holidays.txt, type: dates}\n")
        said[entry] = error.split("holidays.txt:2: ", 1)[1]
    bad = "list 'holidays': not a date (YYYY-MM-DD or MM-DD): "
    assert said == {
        "31.12.2026": bad + "'31.12.2026' (did you mean '2026-12-31'?)",
        "31.12": bad + "'31.12' (did you mean '12-31'?)",
        "2026/12/31": bad + "'2026/12/31' (did you mean '2026-12-31'?)",
        "2026-1-5": bad + "'2026-1-5' (did you mean '2026-01-05'?)",
        # No such day: no hint to take.
        "30.02.2026": bad + "'30.02.2026'",
        "2026-13-01": bad + "'2026-13-01'",
    }
