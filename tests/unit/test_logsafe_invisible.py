"""Invisible characters in the logs (issue 16): shown escaped, as controls are.

A caller's name with a zero-width space, a word joiner, a byte order mark, a
soft hyphen or tag characters (U+E0000-E007F) read in the log as the name
without them: two callers that differ looked the same, and text hidden in tag
characters reached the log unseen. They are written as ``\\u200b``,
``\\U000e0041``; the joiners real names need (ZWNJ, ZWJ) stay as they are.
"""

from __future__ import annotations

import json
import logging

import pytest

from router.logsafe import JsonFormatter, TextFormatter, escape_controls, escape_json_line

HIDDEN = {
    "\u200b": "\\u200b",  # zero-width space
    "\u2060": "\\u2060",  # word joiner
    "\ufeff": "\\ufeff",  # byte order mark / zero-width no-break space
    "\u00ad": "\\xad",  # soft hyphen
    "\u180e": "\\u180e",  # Mongolian vowel separator
    "\u2063": "\\u2063",  # invisible separator
    "\U000e0001": "\\U000e0001",  # language tag
    "\U000e0041": "\\U000e0041",  # tag latin capital letter A
    "\U000e007f": "\\U000e007f",  # cancel tag
    "\u206a": "\\u206a",  # inhibit symmetric swapping (deprecated format control)
    "\u206f": "\\u206f",  # nominal digit shapes (deprecated format control)
    "\u3164": "\\u3164",  # Hangul filler (a "blank" name)
    "\uffa0": "\\uffa0",  # halfwidth Hangul filler
    "\U0001d173": "\\U0001d173",  # musical symbol begin beam (format control)
}


@pytest.mark.parametrize(("char", "escaped"), list(HIDDEN.items()))
def test_an_invisible_character_is_escaped_in_a_log_line(char: str, escaped: str) -> None:
    assert escape_controls(f"Ivan{char}ov") == f"Ivan{escaped}ov"
    assert escape_controls(f"Ivan{char}ov", keep_newlines=True) == f"Ivan{escaped}ov"


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ in می‌خواهم
        "\u0915\u094d\u200d\u0937",  # Devanagari with ZWJ
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family emoji (ZWJ sequence)
        "\u2764\ufe0f",  # a variation selector
        "Пётр Иванов",
    ],
)
def test_the_joiners_real_names_need_stay(name: str) -> None:
    assert escape_controls(name) == name
    assert escape_json_line(json.dumps({"name": name}, ensure_ascii=False)) == json.dumps(
        {"name": name}, ensure_ascii=False
    )


def test_both_log_formats_show_them_escaped_and_json_still_decodes() -> None:
    name = "Ivan\u200bov\U000e0041\ufeff"
    record = logging.LogRecord(
        "router.engine", logging.INFO, __file__, 1, "caller %s", (name,), None
    )
    text = TextFormatter("%(message)s").format(record)
    assert text == "caller Ivan\\u200bov\\U000e0041\\ufeff"
    line = JsonFormatter().format(record)
    for raw in ("\u200b", "\U000e0041", "\ufeff"):
        assert raw not in line
    assert json.loads(line)["message"] == f"caller {name}"
    decision = logging.LogRecord(
        "router.decision",
        logging.INFO,
        __file__,
        1,
        json.dumps({"caller": name}, ensure_ascii=False),
        None,
        None,
    )
    out = JsonFormatter().format(decision)
    assert "\U000e0041" not in out
    assert "\u200b" not in out
    assert json.loads(out) == {"caller": name, "ts": round(decision.created, 3)}


@pytest.mark.parametrize("char", list(HIDDEN))
def test_each_is_escaped_in_a_json_log_line_that_still_decodes(char: str) -> None:
    name = f"Ivan{char}ov"
    record = logging.LogRecord(
        "router.engine", logging.INFO, __file__, 1, "caller %s", (name,), None
    )
    line = JsonFormatter().format(record)
    assert char not in line
    assert json.loads(line)["message"] == f"caller {name}"
