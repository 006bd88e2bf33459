"""A manager user's eventfilter lines against what callrouter asks for
(router/manager_conf.py, ``callrouter check --manager-conf-file``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from router.ami.event_filter import EventSelection, HeaderFilter
from router.cli import main
from router.manager_conf import (
    asterisk_classes,
    compare_eventfilters,
    disabled_events,
    section_classes,
    section_eventfilters,
)

SELECTION = EventSelection(
    frozenset({"Hangup", "Newexten", "UserEvent"}),
    frozenset({"call", "dialplan", "user"}),
    frozenset({HeaderFilter("Newexten", "Priority", frozenset({"1"}))}),
)
LINES = SELECTION.manager_conf_lines()

#: The read and write classes callrouter needs: a user without them FAILs
#: the comparison whatever its eventfilter lines (docs/asterisk.md).
CLASSES = "read = call,dialplan,user\nwrite = call,reporting,user\n"


def test_the_lines_callrouter_prints_compare_ok() -> None:
    assert LINES == [
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1",
        "eventfilter(action(include),name(UserEvent))=",
    ]
    [finding] = compare_eventfilters("router", LINES, SELECTION)
    assert finding.level == "ok"
    assert finding.text == (
        "manager.conf [router]: its 3 eventfilter line(s) let through what callrouter "
        "asks for, and no more"
    )


def test_the_section_is_read_as_asterisk_writes_it() -> None:
    text = (
        "[general]\nenabled = yes\n#include manager.d/*.conf\n"
        "[router](user-template)\nsecret = s ; comment\nread = call\n"
        "eventfilter(action(include),name(Hangup)) => ; the whole event\n"
        "  eventfilter(action(include),name(UserEvent)) =  \n"
        "[watcher]\neventfilter(action(include),name(VarSet))=\n"
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.lines == [
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter(action(include),name(UserEvent))=",
    ]
    assert found.includes == ["#include manager.d/*.conf"]
    assert found.templates == ()  # [user-template] is not in this file
    assert found.errors == ()  # ... but may be in the #include above it
    assert not found.elsewhere
    # No [nobody] here, but the #include may hold it: told so, not as missing.
    assert section_eventfilters(text, "nobody") == (
        [],
        ["#include manager.d/*.conf"],
        (),
        (),
        (),
        True,
    )
    alone = section_eventfilters(text.replace("#include", ";#include"), "nobody")
    assert alone is not None  # without the #include, the template is surely missing
    assert (alone.elsewhere, alone.includes, len(alone.errors)) == (True, [], 1)


def test_a_template_s_lines_are_the_user_s_as_asterisk_applies_them() -> None:
    """Asterisk copies [base](!)'s lines into [router](base) when it reads
    the header: the sandbox's Asterisk sent a session of [router](base) only
    the events of base's lines. Lines added to the template below the user's
    header are not the user's, and a template of a template is."""
    text = (
        "[root](!)\neventfilter(action(include),name(UserEvent))=\n"
        "[base](!,root)\neventfilter(action(include),name(Hangup))=\n"
        "[other](!)\neventfilter(action(include),name(VarSet))=\n"
        "[router](base)\nsecret = s\n"
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1\n"
        "[base](+)\neventfilter(action(include),name(DialEnd))=\n"
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.lines == LINES[2:] + LINES[:1] + LINES[1:2]
    assert found.templates == ("root", "base")
    [ok] = compare_eventfilters("router", found.lines, SELECTION, found.templates)
    assert ok.text == (
        "manager.conf [router] (with its templates [root], [base]): its 3 eventfilter "
        "line(s) let through what callrouter asks for, and no more"
    )
    # A template is no user: Asterisk logs no [router](!) in.
    assert section_eventfilters("[router](!)\nsecret = s\n", "router") is None


def test_the_user_is_found_as_asterisk_finds_it_without_regard_to_case() -> None:
    """Asterisk 22 matches manager user and template names with strcasecmp
    (manager.c's get_manager_by_name_locked, config.c's categories): on the
    sandbox, ``HCHECKONE`` logged in as ``[hcheckone]`` and got its filters'
    events, ``[hcheckthree](BASE)`` got ``[base](!)``'s too, and of
    ``[hchecktwo]`` then ``[HCHECKTWO]`` only the second's: manager.c drops a
    user's filters at each of its sections. check said "no [router] section"
    for ``[Router]`` and compared both sections' lines."""
    text = (
        "[Filters](!)\neventfilter(action(include),name(Hangup))=\n"
        "[Router](FILTERS)\nsecret = s\neventfilter(action(include),name(VarSet))=\n"
        "[ROUTER](filters)\n"
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1\n"
        "[router](+)\neventfilter(action(include),name(Newchannel))=\n"
        "[router](+)\neventfilter(action(include),name(UserEvent))=\n"
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    # (+) adds to the first [router]: the lines the user has are the last
    # section's, with its template's.
    assert found.lines == LINES[:2]
    assert found.templates == ("Filters",)
    found = section_eventfilters(text.replace("[ROUTER](filters)", "[ROUTER](+)"), "ROUTER")
    assert found is not None
    assert found.lines == [
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter(action(include),name(VarSet))=",
        LINES[1],
        "eventfilter(action(include),name(Newchannel))=",
        LINES[2],
    ]
    # Only ASCII letters are folded, as strcasecmp does; [general] is no user.
    assert section_eventfilters("[ROUTEß]\nsecret = s\n", "routess") is None
    assert section_eventfilters("[General]\nsecret = s\n", "general") is None


def test_lines_written_for_earlier_rules_are_told_with_what_to_change() -> None:
    """A rule now reads QueueCallerJoin; VarSet was read by a rule since removed."""
    now = EventSelection(
        frozenset({*(SELECTION.names or ()), "QueueCallerJoin"}),
        SELECTION.classes,
        SELECTION.narrowed,
    )
    have = [*LINES, "eventfilter(action(include),name(VarSet))="]
    missing, stale = compare_eventfilters("router", have, now)
    assert missing.level == "fail"
    assert missing.text.startswith(
        "manager.conf [router]: its eventfilter lines filter out events callrouter now "
        "needs (QueueCallerJoin; a rule or plugin added since they were written): add "
        "these lines, then `asterisk -rx 'manager reload'` and restart callrouter"
    )
    assert missing.lines == ("eventfilter(action(include),name(QueueCallerJoin))=",)
    assert stale.level == "advice"
    assert "let through events callrouter no longer asks for: remove them" in stale.text
    assert stale.lines == ("eventfilter(action(include),name(VarSet))=",)


def test_a_header_value_no_line_has_is_missing() -> None:
    """A redirect to priority 2 since the lines were written."""
    now = EventSelection(
        SELECTION.names,
        SELECTION.classes,
        frozenset({HeaderFilter("Newexten", "Priority", frozenset({"1", "2"}))}),
    )
    [missing] = compare_eventfilters("router", LINES, now)
    assert missing.level == "fail"
    assert missing.lines == (
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=2",
    )


def test_a_whole_event_line_covers_its_header_lines_but_is_wider() -> None:
    have = [LINES[0], "eventfilter(action(include),name(Newexten))=", LINES[2]]
    [wider] = compare_eventfilters("router", have, SELECTION)
    assert wider.level == "advice"
    assert "replace them with the header lines" in wider.text


@pytest.mark.parametrize(
    "line", ["eventfilter=!Event: Hangup", "eventfilter(action(exclude),name(Hangup))="]
)
def test_an_exclude_line_that_drops_a_needed_event_fails(line: str) -> None:
    [dropped] = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert dropped.level == "fail"
    assert "exclude lines drop events callrouter needs (Hangup)" in dropped.text
    assert dropped.lines == (line,)


def _exclude(event: str, header: str, value: str, method: str = "exact") -> str:
    return f"eventfilter(action(exclude),name({event}),header({header}),method({method}))={value}"


@pytest.mark.parametrize(
    "line",
    [
        _exclude("Newexten", "Priority", "2"),  # callrouter asks for Priority 1 only
        _exclude("Newexten", "Priority", "^(2|3)$", "regex"),
        _exclude("VarSet", "Variable", "X"),  # an event callrouter does not read
    ],
)
def test_a_header_exclude_of_values_callrouter_does_not_ask_for_passes(line: str) -> None:
    """manager.c drops only the events whose header has the excluded value:
    check FAILed on any exclude line naming an event callrouter needs."""
    [ok] = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert ok.level == "ok"


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (_exclude("Newexten", "Priority", "1"), "Newexten"),  # the value asked for
        (_exclude("Newexten", "Priority", "^(1|3)$", "regex"), "Newexten"),
        (_exclude("Hangup", "Cause", "16"), "Hangup"),  # callrouter reads every Hangup
    ],
)
def test_a_header_exclude_of_a_value_callrouter_needs_fails(line: str, event: str) -> None:
    [dropped] = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert dropped.level == "fail"
    assert f"exclude lines drop events callrouter needs ({event})" in dropped.text
    assert dropped.lines == (line,)


def test_a_header_exclude_on_another_header_than_callrouter_s_is_advice() -> None:
    """Newexten by Context, where callrouter asks for Newexten by Priority:
    whether a step it needs is in that context is not known here."""
    line = _exclude("Newexten", "Context", "from-internal")
    [maybe] = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert maybe.level == "advice"
    assert maybe.text == (
        "manager.conf [router]: exclude lines on a header callrouter does not select "
        "Newexten by may drop some it needs (those whose header has the excluded "
        "value): check them by hand"
    )
    assert maybe.lines == (line,)


def test_a_line_is_read_as_manager_c_reads_it_case_and_all() -> None:
    """manager.c takes a key for a filter when it begins with ``eventfilter``,
    case counting (on the sandbox a user whose only line was
    ``EventFilter(...)=`` got every event), and its options with strcmp: an
    ``action(Include)`` is a line Asterisk refuses. Both were compared as
    filters. A ``!`` before the value excludes, as in a legacy line."""
    found = section_eventfilters("[router]\nEventFilter(action(include),name(Hangup))=\n", "router")
    assert found is not None
    assert found.lines == []
    odd = "eventfilter(action(Include),name(Hangup))="
    refused, ok = compare_eventfilters("router", [*LINES, odd], SELECTION)
    assert refused.level == "advice"
    assert refused.lines == (f"{odd}  ; 'action' option 'Include' is unknown",)
    assert ok.level == "ok"
    bang = "eventfilter(name(Hangup))=!"
    [dropped] = compare_eventfilters("router", [*LINES, bang], SELECTION)
    assert dropped.level == "fail"
    assert dropped.lines == (bang,)


@pytest.mark.parametrize(
    "line",
    [
        _exclude("Newexten", "Context", "from", "starts_with"),
        "eventfilter=!(.*)*Z",  # a legacy regex not tried
    ],
)
def test_an_exclude_line_not_compared_is_told(line: str) -> None:
    """It may drop events callrouter needs: check said OK, leaving it out."""
    [unread] = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert unread.level == "advice"
    assert unread.text == (
        "manager.conf [router]: 1 exclude line(s) not in a form callrouter compares: "
        "they may drop events callrouter needs (check them by hand)"
    )
    assert unread.lines == (line,)


def test_legacy_include_lines_are_tried_on_the_event_line() -> None:
    have = ["eventfilter=Event: (Hangup|UserEvent|Newexten)"]
    assert [f.level for f in compare_eventfilters("router", have, SELECTION)] == ["ok"]
    [missing] = compare_eventfilters("router", ["eventfilter=Event: Hangup"], SELECTION)
    assert missing.level == "fail"
    assert "(Newexten, UserEvent;" in missing.text


def test_no_lines_is_advice_with_the_lines_to_add() -> None:
    [advice] = compare_eventfilters("router", [], SELECTION)
    assert advice.level == "advice"
    assert advice.lines == tuple(LINES)


def test_the_lines_to_add_are_the_ones_manager_conf_prints() -> None:
    """The advice for a section without include lines says "add these
    (`callrouter check --manager-conf`)" but listed the call life's CEL filter
    as eight `method(exact)` lines, where `--manager-conf` prints one
    `method(regex)` line (issue 16): the lines shown are the command's."""
    selection = EventSelection(
        frozenset({"CEL", "Hangup"}),
        frozenset({"call"}),
        frozenset({HeaderFilter("CEL", "EventName", frozenset({"ANSWER", "HANGUP"}))}),
    )
    printed = selection.manager_conf_lines()
    assert printed == [
        "eventfilter(action(include),name(CEL),header(EventName),method(regex))=^(ANSWER|HANGUP)$",
        "eventfilter(action(include),name(Hangup))=",
    ]
    for lines in ([], ["eventfilter=!Event: RTCP*"]):
        [advice] = compare_eventfilters("router", lines, selection)
        assert "add these (`callrouter check --manager-conf`)" in advice.text
        assert advice.lines == tuple(printed)
    # ... and pasted, they compare OK.
    [finding] = compare_eventfilters("router", printed, selection)
    assert finding.level == "ok"


@pytest.mark.parametrize(
    "line", ["eventfilter=!Event: RTCP*", "eventfilter(action(exclude),name(RTCPSent))="]
)
def test_exclude_lines_alone_are_advice_with_the_lines_to_add(line: str) -> None:
    """With no include line manager.c passes every event no exclude drops: a
    FreePBX-style ``!Event: RTCP*`` section was told it let through what
    callrouter asks for "and no more"."""
    [advice] = compare_eventfilters("router", [line], SELECTION)
    assert advice.level == "advice"
    assert "only exclude, so every other event" in advice.text
    assert advice.lines == tuple(LINES)
    [advice, dropped] = compare_eventfilters(
        "router", [line, "eventfilter=!Event: Hangup"], SELECTION
    )
    assert (advice.level, dropped.level) == ("advice", "fail")


def test_every_event_wanted_and_lines_that_keep_some_back_fail() -> None:
    everything = EventSelection(None, None)
    assert compare_eventfilters("router", [], everything) == []
    [fail] = compare_eventfilters("router", LINES, everything)
    assert fail.level == "fail"
    assert "callrouter reads every event" in fail.text


def test_a_legacy_exclude_line_when_every_event_is_wanted_names_what_it_drops() -> None:
    """``events = "all"`` beside FreePBX's ``eventfilter = !Event: RTCP*``
    failed with "drop events callrouter needs ((any))": which ones, not said."""
    everything = EventSelection(None, None)
    [fail] = compare_eventfilters("router", ["eventfilter=!Event: RTCP*"], everything)
    assert fail.level == "fail"
    assert "exclude lines drop events callrouter needs (RTCPReceived, RTCPSent):" in fail.text
    [fail] = compare_eventfilters("router", ["eventfilter=!Event: NoSuchThing"], everything)
    assert "(events the AMI catalog does not list)" in fail.text
    assert "(any)" not in fail.text


def test_check_compares_the_file_and_fails_on_events_kept_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example configuration's lines without its queue rules' events: the
    lines were written before those rules."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    assert main(["check", "--config", "router.toml", "--manager-conf"]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if line.startswith("eventfilter")]
    conf = tmp_path / "manager.conf"
    conf.write_text("[router]\n" + CLASSES + "\n".join(lines) + "\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "manager.conf: OK     manager.conf [router]: its 16 eventfilter line(s) let "
        "through what callrouter asks for, and no more"
    )
    kept = [line for line in lines if "Queue" not in line]
    conf.write_text("[router]\n" + CLASSES + "\n".join(kept) + "\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith(
        "manager.conf: FAIL   manager.conf [router]: its eventfilter lines filter out "
        "events callrouter now needs (QueueCallerAbandon, QueueCallerJoin, QueueCallerLeave;"
    )
    assert out[3:] == [
        "    eventfilter(action(include),name(QueueCallerAbandon))=",
        "    eventfilter(action(include),name(QueueCallerJoin))=",
        "    eventfilter(action(include),name(QueueCallerLeave))=",
    ]
    # The same lines in a template the user inherits are the user's.
    conf.write_text("[tpl](!)\n" + "\n".join(kept) + "\n[router](tpl)\n" + CLASSES)
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith(
        "manager.conf: FAIL   manager.conf [router] (with its template [tpl]): its "
        "eventfilter lines filter out events callrouter now needs (QueueCallerAbandon,"
    )
    assert main(["check", "--config", "router.toml", "--manager-conf-file", "nope.conf"]) == 1
    assert "manager.conf: FAIL   cannot read nope.conf: No such file" in capsys.readouterr().out


def test_a_user_in_an_included_file_is_found_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FreePBX writes manager.conf itself and keeps the admin's users in
    manager_custom.conf, which it #includes at its end: the check of
    manager.conf FAILed (exit 1) on "no [router] section". Now the #included
    files are read where the #include stands, after the lines above it (whose
    templates a header there may name), and the user's section compared."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    assert main(["check", "--config", "router.toml", "--manager-conf"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eventfilter")]
    conf = tmp_path / "manager.conf"
    head = ";" + "-" * 80 + ";\n[general]\nenabled = yes\n\n[admin]\nsecret = a\n\n"
    conf.write_text(head + "#include manager_additional.conf\n#include manager_custom.conf\n")
    custom = tmp_path / "manager_custom.conf"
    custom.write_text("[router]\nsecret = s\n" + CLASSES + "\n".join(lines) + "\n")
    # manager_additional.conf missing: Asterisk refuses the whole manager.conf
    # (measured on 22.10), so a FAIL (it was an ADVICE, exit 0).
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    out = capsys.readouterr().out
    additional = tmp_path / "manager_additional.conf"
    assert f"FAIL   {conf}: cannot read {additional}" in out
    assert "Asterisk refuses the whole manager.conf" in out
    (tmp_path / "manager_additional.conf").write_text("")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"manager.conf: OK     [router] is in {custom}, which the file #includes" in out
    assert "let through what callrouter asks for, and no more" in out
    assert "FAIL" not in out

    # A template above the #include, in manager.conf, gives the lines.
    conf.write_text(
        "[filters](!)\n" + "\n".join(lines) + "\n" + head + '#include "manager_custom.conf"\n'
    )
    custom.write_text("[router](filters)\nsecret = s\n" + CLASSES)
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "(with its template [filters])" in out
    assert "FAIL" not in out

    # Lines missing there: the finding names manager_custom.conf, where they
    # go (FreePBX rewrites manager.conf); it said "manager.conf [router]".
    conf.write_text(head + "#include manager_custom.conf\n")
    custom.write_text("[router]\nsecret = s\n" + "\n".join(lines[1:]) + "\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    out = capsys.readouterr().out
    assert "manager.conf: FAIL   manager_custom.conf [router]: its eventfilter lines" in out
    assert "manager.conf [router]" not in out.replace("manager_custom.conf [router]", "")

    # An #include in a comment is none.
    conf.write_text(head + ";-- #include manager_custom.conf --;\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    assert "has no [router] section (the manager user" in capsys.readouterr().out
    conf.write_text(head + '#include "manager_custom.conf" ; the admin\'s own\n')
    custom.write_text("[router]\nsecret = s\n" + CLASSES + "\n".join(lines) + "\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 0
    assert f"[router] is in {custom}" in capsys.readouterr().out

    # A line Asterisk dies of in the included file, whoever's section: FAIL
    # with that file's own line number.
    custom.write_text("[router]\nsecret = s\n[other]\neventfilter(name)=x\n")
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    assert f"manager.conf: FAIL   {custom}: line 4: eventfilter(name)=x" in capsys.readouterr().out

    # Not in any: ADVICE naming the files looked in, each cut short, five at most;
    # none of them there, each a FAIL (Asterisk refuses the file), its name cut short.
    conf.write_text("".join(f"#include {'x' * 500}{n}.conf\n" for n in range(7)))
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    out = capsys.readouterr().out
    fails = [ln for ln in out.splitlines() if "FAIL" in ln]
    assert len(fails) == 7, fails
    assert all(len(ln) < 700 for ln in fails), fails
    (advice,) = [ln for ln in out.splitlines() if "has no [router]" in ln]
    assert "nor the 7 file(s) its #include lines name" in advice
    assert advice.count(f"{tmp_path}/xxx") == 5
    assert ", ...)" in advice
    assert len(advice) < 1200
    conf.write_text("[general]\nenabled = yes\n")  # no include: surely missing
    assert main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)]) == 1
    assert "has no [router] section (the manager user" in capsys.readouterr().out


def test_the_commands_check_suggests_name_the_user_of_username(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check --username watcher`` compared [watcher], but its ADVICE said to
    run `callrouter check --manager-conf`, which prints the lines under
    router.toml's user [router]: the suggested command names the user too."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    conf.write_text(
        "[watcher]\n" + CLASSES + "[ops desk]\neventfilter(action(include),name(Newexten))=\n"
    )
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    assert main([*argv, "--username", "watcher"]) == 0
    out = capsys.readouterr().out
    assert "manager.conf: ADVICE manager.conf [watcher] has no eventfilter lines" in out
    assert "add these (`callrouter check --manager-conf --username watcher`), then" in out
    main([*argv, "--username", "ops desk"])
    out = capsys.readouterr().out
    assert "manager.conf [ops desk]: these lines let through every event of a name" in out
    assert "the header lines `callrouter check --manager-conf --username 'ops desk'` prints" in out
    # Without --username the command is router.toml's: nothing to add.
    conf.write_text("[router]\n" + CLASSES)
    assert main(argv) == 0
    assert "add these (`callrouter check --manager-conf`), then" in capsys.readouterr().out


def test_check_reads_no_fifo_and_no_file_past_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO named as manager.conf hung the command (it waited for a writer),
    and a file past 4 MB was cut short silently: its [router] section at the
    end was told missing. Both are refused with the reason."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    fifo = tmp_path / "manager.conf"
    os.mkfifo(fifo)
    codes: list[int] = []
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(fifo)]
    worker = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # let the blocked open go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
    assert codes == [1]
    assert "cannot read" in capsys.readouterr().out
    big = tmp_path / "big.conf"
    big.write_text(";" * (4 * 1024 * 1024) + "\n[router]\n")
    argv[-1] = str(big)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"manager.conf: FAIL   cannot read {big}: bigger than 4194304 bytes" in out


def test_a_template_gives_its_lines_first_and_is_no_user() -> None:
    """Lines kept in a template (``[router](filters)``) were not read: check said
    the section had no eventfilter lines, or that they kept back events."""
    text = (
        "[filters](!)\n"
        "eventfilter(action(include),name(Hangup))=\n"
        "[router](!)\n"
        "eventfilter(action(include),name(VarSet))=\n"
        "[router](filters)\nsecret = s\n"
        "eventfilter(action(include),name(UserEvent))=\n"
        "[router](+)\n"
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1\n"
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.lines == [LINES[0], LINES[2], LINES[1]]
    assert [f.level for f in compare_eventfilters("router", found.lines, SELECTION)] == ["ok"]
    assert section_eventfilters(text, "filters") is None  # a template, no user


def test_block_comments_and_escaped_semicolons_are_read_as_asterisk_reads_them() -> None:
    text = (
        "[router]\n"
        "eventfilter(action(include),name(Hangup))= ;-- a comment --; \n"
        ";-- the lines of before,\n"
        "eventfilter(action(include),name(VarSet))=\n"
        " ;-- nested --;\n"
        "eventfilter(action(include),name(Newchannel))=\n"
        "--;\n"
        ";--- a line comment, no block\n"
        "eventfilter=Event: A\\;B\n"
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.lines == [
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter=Event: A;B",
    ]
    assert found.includes == []


@pytest.mark.parametrize(
    "regex",
    [
        "(.|\\s)*Z",  # a loop of alternatives: (.|\s)*(.|\s)*... held check for good
        "(.*)*Z",  # a loop in a loop
        ".*.*.*.*Z",  # four loops side by side
        "Event: [[:alpha:]]+",  # a POSIX class, which Python reads as another set
        "Event: (Hangup",  # Asterisk adds no filter it cannot compile
        # Python's own syntax: glibc's regcomp (REG_EXTENDED) refuses (?...) ...
        "(?i)event: ",
        "Event: (?:Hangup|Newexten|UserEvent)",
        # ... and reads a backslash as a plain character in a set, \A as "A".
        "Event: [\\w]+",
        "\\AEvent: ",
    ],
)
def test_a_legacy_regex_that_is_not_tried_is_a_line_not_compared(regex: str) -> None:
    """Python's ``re`` has no time limit: ``eventfilter = (.*)*(.*)*(.*)*x`` held
    ``check --manager-conf-file`` on one line for good."""
    line = f"eventfilter={regex}"
    findings = compare_eventfilters("router", [line], SELECTION)
    assert [f.level for f in findings] == ["advice", "advice"]
    assert "unless the lines not compared (below) do, add these" in findings[0].text
    assert findings[1].lines == (line,)


#: main/manager.c's own parsing_filter_tests (Asterisk 22): the lines its
#: manager_add_filter takes, and those it refuses with FILTER_FORMAT_ERROR.
ASTERISK_TAKES = [
    "eventfilter=XXX",
    "eventfilter=!XXX",
    "eventfilter(name(VarSet),method(none))=",
    "eventfilter(name(Newchannel),method(regex))=X[XYZ]X",
    "eventfilter(action(exclude),name(Newchannel),method(regex))=X[XYZ]X",
    "eventfilter(action(include),name(VarSet),header(Channel),method(starts_with))=AB",
    "eventfilter(action(include),name(VarSet),header(Channel),method(ends_with))=BC",
    "eventfilter(action(include),name(VarSet),header(Channel),method(exact))=ABC",
    "eventfilter(name(VarSet),header(Channel),method(exact))=!ZZZ",
    "eventfilter(action(exclude),name(VarSet),header(Channel),method(exact))=ZZZ",
    "eventfilter(action(include),name(VarSet),header(Someheader),method(exact))=!XXX",
    "eventfilter(action(include),name(Hangup))=",  # callrouter's own form
    "eventfilter(name(Hangup))=!",  # excludes every Hangup
]
ASTERISK_REFUSES = [
    "eventfilter(action(include)=",
    "eventfilter(action(inlude)=",
    "eventfilter(nnnn(yyy)=XXX",
    "eventfilter(eader(VarSet)=XXX",
    "eventfilter(ethod(contains)=XXX",
    "eventfilter(nnnn(yyy),header(VarSet),method(contains)=XXX",
    "eventfilter(name(yyy),heder(VarSet),method(contains)=XXX",
    "eventfilter(name(yyy),header(VarSet),mehod(contains)=XXX",
    "eventfilter(name(yyy),header(VarSet),method(coains)=XXX",
    "eventfilter(method(yyy))=XXX",
    "eventfilter=",
    "eventfilter=!",
    "eventfilter()=XXX",
    # A value and no method: the method is 'none', which takes no value.
    "eventfilter(action(include),name(Newexten),header(Priority))=1",
    # A method and no value.
    "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=",
]


@pytest.mark.parametrize("line", ASTERISK_TAKES)
def test_a_line_asterisk_takes_is_compared(line: str) -> None:
    """main/manager.c parsing_filter_tests, FILTER_SUCCESS: no refusal told."""
    findings = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert not any("Asterisk refuses" in f.text for f in findings), findings


@pytest.mark.parametrize("line", ASTERISK_REFUSES)
def test_a_line_asterisk_refuses_is_told_and_filters_nothing(line: str) -> None:
    """main/manager.c manager_add_filter returns FILTER_FORMAT_ERROR for these
    (its parsing_filter_tests, and its checks of a pattern against the
    method): Asterisk logs a WARNING and adds no filter. They were compared
    as filters (an advanced line with a value and no method counted as
    letting Priority 1 through) or told as "not compared"."""
    refused, *rest = compare_eventfilters("router", [*LINES, line], SELECTION)
    assert refused.level == "advice"
    assert refused.text.startswith(
        "manager.conf [router]: Asterisk refuses 1 eventfilter line (main/manager.c logs a "
        "WARNING at each manager reload and adds no filter; "
    )
    assert [entry.split("  ; ")[0] for entry in refused.lines] == [line]
    assert [f.level for f in rest] == ["ok"]


def test_an_advanced_line_with_a_value_and_no_method_lets_nothing_through() -> None:
    """The line meant to let ``Newexten`` with ``Priority: 1`` through says no
    method: Asterisk refuses it, so the event callrouter needs is filtered
    out by the other include lines: a FAIL, not an OK."""
    meant = "eventfilter(action(include),name(Newexten),header(Priority))=1"
    lines = [line for line in LINES if "Newexten" not in line] + [meant]
    refused, missing = compare_eventfilters("router", lines, SELECTION)
    assert "method can't be 'none' with a filter pattern" in refused.text
    assert missing.level == "fail"
    assert "Newexten" in missing.text


def test_a_key_that_begins_with_eventfilter_is_a_filter() -> None:
    """manager.c takes every key that begins with ``eventfilter``
    (``ast_begins_with``): ``eventfilter1 = ...`` is a legacy line and
    ``eventfilter2(...)=`` an advanced one. They were left out of the
    section, so a user filtered by them was told it had no lines at all."""
    text = (
        "[router]\neventfilter1(action(include),name(Hangup))=\n"
        "eventfilter_b(action(include),name(Newexten),header(Priority),method(exact))=1\n"
        "eventfilter2(action(include),name(UserEvent))=\n"
        "eventfilter_legacy = !Event: Cdr\n"
        "Eventfilter3(action(include),name(Cdr))=\n"  # case counts: not a filter
    )
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.lines == [
        "eventfilter1(action(include),name(Hangup))=",
        "eventfilter_b(action(include),name(Newexten),header(Priority),method(exact))=1",
        "eventfilter2(action(include),name(UserEvent))=",
        "eventfilter_legacy=!Event: Cdr",
    ]
    [ok] = compare_eventfilters("router", found.lines, SELECTION)
    assert ok.level == "ok"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            "[base](!)\neventfilter(action(include),name(Hangup))=\n"
            "[base](+)\neventfilter(action(include),name(Cdr))=\n"
            "[router](base)\nsecret = s\n",
            "line 3: [base](+) adds to no section [base] above it that is not a template",
            id="plus-on-a-template",
        ),
        pytest.param(
            "[router](+)\neventfilter(action(include),name(Hangup))=\n[router]\nsecret = s\n",
            "line 1: [router](+) adds to no section [router] above it that is not a template",
            id="plus-before-its-section",
        ),
        pytest.param(
            "[router](base)\nsecret = s\n[base](!)\neventfilter(action(include),name(Hangup))=\n",
            "line 1: [router](base) inherits from no section [base] above it",
            id="base-below",
        ),
    ],
)
def test_a_file_asterisk_refuses_whole_is_a_failure(
    text: str,
    error: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config.c's process_text_line returns -1 for a ``(+)`` that finds no
    category that is not a template (``category_get_sep`` with an empty
    filter matches only ``!cat->ignored``) and for an inherited name no
    category above has: the whole manager.conf is refused. check read the
    lines as if Asterisk had taken them."""
    found = section_eventfilters(text, "router")
    assert found is not None
    assert any(e.startswith(error) for e in found.errors), found.errors
    conf = tmp_path / "manager.conf"
    conf.write_text(text, encoding="utf-8")
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    code = main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{conf}: {error}" in out
    assert "Asterisk refuses the whole file" in out


@pytest.mark.parametrize(
    "line",
    [
        "eventfilter(name)=",
        "eventfilter(action(include),header)=",
        "eventfilter(action(include),name(Hangup),method)=x",
        "eventfilter2(namex)=!",  # any key that begins with eventfilter, any prefix
    ],
)
def test_a_line_asterisk_dies_of_fails_in_any_users_section(
    line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An option name, header or method with no '(': manager_add_filter reads
    through the NULL of ``strstr(option, "(")`` and Asterisk 22 dies (on the
    sandbox each of these lines stopped it at ``manager reload``). check told it
    as a line Asterisk refuses, advice, and only in the user's own section; it
    kills the PBX from any user's section. A refusal before it (an unknown
    option first) is Asterisk's answer, as are a template's and [general]'s
    lines, which manager.c never reads."""
    text = (
        "[general]\neventfilter(name)=\n[tpl](!)\neventfilter(header)=\n"
        f"[router]\nsecret = s\n{chr(10).join(LINES)}\n"
        f"[watcher]\nsecret = s\neventfilter(nmae,name)=\n{line}\n"
    )
    at = text.split("\n").index(line, 5) + 1  # the [watcher] one
    found = section_eventfilters(text, "router")
    assert found is not None
    assert found.crashes == (f"line {at}: {line}",)
    conf = tmp_path / "manager.conf"
    conf.write_text(text, encoding="utf-8")
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    code = main(["check", "--config", "router.toml", "--manager-conf-file", str(conf)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{conf}: line {at}: {line}: Asterisk 22 dies of this eventfilter line" in out
    own = compare_eventfilters("router", [*LINES, line], SELECTION)[0]
    assert "Asterisk 22 dies of it" in own.text


HANGUP = "eventfilter(action(include),name(Hangup))="


@pytest.mark.parametrize(
    ("text", "lines", "error"),
    [
        # A header's options are not stripped: Asterisk looks for ' base', refuses the file.
        pytest.param(
            f"[base](!)\n{HANGUP}\n[tpl](!)\n[router](tpl, base)\nsecret = s\n",
            [],
            "line 4: [router]( base) inherits from no section [ base] above it",
            id="options-not-stripped",
        ),
        # What follows ']' is left out: [router] (!) is the user, no template.
        pytest.param(
            f"[general]\nenabled = yes\n[router] (!)\n{HANGUP}\n",
            [HANGUP],
            None,
            id="text-after-the-header",
        ),
        pytest.param(
            "[general]\n[router\n" + HANGUP + "\n", None, "line 2: no closing ']'", id="no-]"
        ),
        pytest.param("[router](!\n" + HANGUP + "\n", None, "line 1: no closing ')'", id="no-)"),
        pytest.param(
            f"enabled = yes\n[router]\n{HANGUP}\n",
            None,
            "line 1: a line above every section",
            id="above-every-section",
        ),
        # An empty name inherits the file's first category, here [base]: no error.
        pytest.param(
            f"[base]\n{HANGUP}\n[router]()\nsecret = s\n", [HANGUP], None, id="empty-options"
        ),
        # A --; that closes no block: every later line is a comment until a ;-- .
        pytest.param(
            f"[router]\nsecret = s--;\n{HANGUP}\n;-- back --;\n",
            [],
            None,
            id="stray-block-end",
        ),
        pytest.param(
            f"[router]\nsecret = s--;\n{HANGUP}\n;-- back\n{HANGUP}\n",
            [HANGUP],
            None,
            id="stray-block-end-then-opened",
        ),
        # Only \n ends a line: a form feed is inside the comment.
        pytest.param(f"[router]\n; note\x0c{HANGUP}\n", [], None, id="form-feed"),
        pytest.param(f"[router]\n; note\r{HANGUP}\n", [], None, id="carriage-return"),
        # A line of 8191 bytes or more is skipped whole; one of 8190 is read.
        pytest.param(
            f"[router]\neventfilter=Event: {'A' * 8172}\neventfilter=Event: {'B' * 8171}\n",
            [f"eventfilter=Event: {'B' * 8171}"],
            None,
            id="long-line",
        ),
        pytest.param(f"\ufeff[router]\n{HANGUP}\n", [HANGUP], None, id="bom"),
        pytest.param(f"[router]\n{HANGUP}\0junk\n", [HANGUP], None, id="nul"),
        pytest.param(
            "[router]\n" + ";-- " * 129 + "\n",
            [],
            "line 2: more than 128 ';--' comments open",
            id="nest-limit",
        ),
    ],
)
def test_the_file_is_read_line_by_line_as_config_c_reads_it(
    text: str, lines: list[str] | None, error: str | None
) -> None:
    """main/config.c (Asterisk 22), each case seen on the sandbox where it is
    not plain from the code: headers (``process_text_line``), the lines that
    ``fgets`` reads into 8192 bytes, comments (``config_text_file_load``).
    check read them with Python's rules: a header with a space in its options
    was taken, one with text after it was not (its lines went to the section
    above), a stray ``--;`` or a form feed changed nothing, a line above every
    section or an unclosed header was left out where Asterisk refuses the file."""
    found = section_eventfilters(text, "router")
    if lines is None:
        assert found is not None
        assert found.lines == []
    else:
        assert found is not None
        assert found.lines == lines
    if error is None:
        assert found.errors == ()
    else:
        assert any(e.startswith(error) for e in found.errors), found.errors


def test_a_name_with_spaces_is_another_user_and_exec_is_an_include() -> None:
    """config.c keeps a header's name as written: ``[ router ]`` is the user
    `` router `` (the sandbox listed it so), not ``router``. ``#exec`` reads a
    program's output into the file as ``#include`` reads a file: not followed,
    told."""
    assert section_eventfilters(f"[ router ]\n{HANGUP}\n", "router") is None
    found = section_eventfilters(f"#exec /bin/true\n[router]\n{HANGUP}\n", "router")
    assert found is not None
    assert found.includes == ["#exec /bin/true"]


def test_read_and_write_are_taken_as_asterisk_takes_them() -> None:
    """manager.c's get_perm: an item is compared by its own length, so a
    space after a comma makes it no class (on Asterisk 22 `read = call,
    dialplan, user` gave `read perm: call` in `manager show user`)."""
    assert asterisk_classes("call, dialplan, user") == {"call"}
    assert asterisk_classes("call,dialplan,user") == {"call", "dialplan", "user"}
    assert asterisk_classes("cal,user") == {"call", "user"}  # a prefix, not the last
    assert "dialplan" in asterisk_classes("call,,user")  # an empty item: every label
    assert asterisk_classes("none") == {"none"}
    assert asterisk_classes("") == set()
    assert "dialplan" in asterisk_classes("all")
    text = "[tpl](!)\nread = call,dialplan,user\n[router](tpl)\nsecret = s\nWRITE = call\n"
    assert section_classes(text, "router") == ("call,dialplan,user", "call")
    # A second section of the user keeps what the first set and it does not.
    text = "[router]\nread = call\nwrite = user\n[ROUTER]\nread = call,user\n"
    assert section_classes(text, "router") == ("call,user", "user")
    assert section_classes("[other]\nread = all\n", "router") == (None, None)


def test_a_missing_read_class_fails_the_manager_conf_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`read = dialplan` missing passed every check: no AMI action tells a
    session its read classes, and callrouter check --asterisk cannot see it.
    The file can: --manager-conf-file FAILs naming the class, the line, what
    is lost and how to see what Asterisk took."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    conf.write_text(
        "[router]\nread = call,user,agent,system\nwrite = call,originate,user,reporting\n"
    )
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "manager.conf: FAIL   manager.conf [router] read = call,user,agent,system lacks "
        "dialplan (dialplan: no Newexten arrives: every Redirect is reported unconfirmed"
    ) in out
    assert "add it to the read line, then `asterisk -rx 'manager reload'`" in out
    assert "`asterisk -rx 'manager show user router'` shows the classes" in out
    assert "[router] write" not in out  # the write line is right: nothing said
    # Spaces after the commas: Asterisk takes the first class only.
    conf.write_text("[router]\nread = call, dialplan, user\nwrite = call,reporting,user\n")
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "read = call, dialplan, user lacks dialplan, user (" in out
    assert "(Asterisk reads ' dialplan', ' user' as no class: it does not strip" in out
    # No write line at all: Asterisk gives it no class.
    conf.write_text("[router]\nread = call,dialplan,user\n")
    assert main(argv) == 1
    assert "[router] has no write line and lacks call, reporting, user (" in (
        capsys.readouterr().out
    )
    # Everything: it works, but never give it write = all.
    conf.write_text("[router]\nread = all\nwrite = all\n")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "manager.conf: ADVICE manager.conf [router] write = all gives all, which" in out


def test_disabledevents_naming_an_event_callrouter_needs_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[general] disabledevents = Newexten`` (its sample configuration
    suggests it for busy systems) passed --manager-conf-file: no AMI action
    shows the list, and check --asterisk cannot tell an event never raised
    from one that did not happen. Items are read as Asterisk's
    ast_in_delimited_string reads them: a blank before one skipped (on the
    sandbox `VarSet, UserEvent` turned UserEvent off), case counted."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    conf.write_text(
        "[general]\nenabled = yes\nDisabledEvents = VarSet, Newexten\n[router]\n" + CLASSES
    )
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "manager.conf: FAIL   manager.conf [general] disabledevents = VarSet, Newexten turns "
        "off Newexten for every session, which callrouter needs (Newexten: every Redirect "
        "waits 250 ms"
    ) in out
    assert "keep the key: Asterisk's manager reload keeps the old list" in out
    for harmless in ("VarSet,newexten", "VarSet", "Newexten ,VarSet", ""):
        conf.write_text(f"[general]\ndisabledevents = {harmless}\n[router]\n" + CLASSES)
        assert main(argv) == 0, harmless
        assert "disabledevents" not in capsys.readouterr().out.split("\n\n", 1)[1]
    assert disabled_events("[general]\ndisabledevents = A\n[general]\ndisabledevents = B\n") == "B"
    assert disabled_events("[router]\ndisabledevents = A\n") is None


def test_disabledevents_is_checked_with_events_all_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``[asterisk] events = "all"`` callrouter asks for every event, and
    ``disabledevents = UserEvent`` passed --manager-conf-file without a word
    (exit 0) while no routing request could arrive. The events no call is routed
    right without are checked whatever is asked for; others turned off on
    purpose (a busy system's noisy ones) still pass."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules.yaml").write_text("version: 1\nrules: []\n", encoding="utf-8")
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "x"\nevents = "all"\n[router]\nrules = ["rules.yaml"]\n',
        encoding="utf-8",
    )
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    conf.write_text(
        "[general]\nenabled = yes\ndisabledevents = VarSet,UserEvent\n[router]\n" + CLASSES
    )
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "manager.conf: FAIL   manager.conf [general] disabledevents = VarSet,UserEvent turns "
        "off UserEvent for every session, which callrouter needs (UserEvent: no routing "
        "request arrives"
    ) in out, out
    conf.write_text(
        "[general]\nenabled = yes\ndisabledevents = VarSet,RTCPSent\n[router]\n" + CLASSES
    )
    assert main(argv) == 0
    assert "disabledevents" not in capsys.readouterr().out


def test_a_manager_open_on_every_interface_is_advice_with_the_line_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's quick start before issue 16 enabled the manager with no
    ``bindaddr``: Asterisk 22 then opens the native AMI port on every interface
    (``TCP Bindaddress: [::]:5038``). An administrator who followed it and
    upgrades was told nothing: the README changed, the file did not."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    old = "[general]\nenabled = yes\nwebenabled = yes\nhttptimeout = 60\n"
    for general, said in (
        (old, "has no bindaddr"),
        (old + "BindAddr = 0.0.0.0\n", "has bindaddr = 0.0.0.0"),
        (old + "bindaddr = 127.0.0.1\n[general]\nbindaddr = ::\n", "has bindaddr = ::"),
    ):
        conf.write_text(general + "[router]\n" + CLASSES)
        assert main(argv) == 0, general  # advice: another host may use the port on purpose
        out = capsys.readouterr().out
        assert (
            f"manager.conf: ADVICE manager.conf [general] {said}: Asterisk opens the native "
            "AMI port (5038 unless `port` says) on every interface"
        ) in out, out
        assert "add `bindaddr = 127.0.0.1` to [general]" in out
        assert "`asterisk -rx 'manager reload'`" in out
    for general in (
        old + "bindaddr = 127.0.0.1\n",
        "[general]\nenabled = no\n",  # no port open
        "[general]\nwebenabled = yes\n",  # enabled defaults to no
        "",
    ):
        conf.write_text(general + "[router]\n" + CLASSES)
        assert main(argv) == 0
        assert "bindaddr" not in capsys.readouterr().out, general


def test_general_keys_in_included_files_are_read_as_asterisk_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: ``disabledevents`` and ``bindaddr`` were read from manager.conf
    alone: FreePBX's ``[general]`` ends in ``#include manager_general_additional.conf``,
    whose lines (no header of their own) go on ``[general]`` in config.c, and a
    ``disabledevents = Newexten`` there passed. The #include and #tryinclude lines
    are followed in place, nested (a relative name in manager.conf's folder, as
    config.c resolves every one), a cycle read once, a missing #tryinclude skipped."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    conf.write_text(
        "[general]\nenabled = yes\nbindaddr = 127.0.0.1\n#include sub/manager_general.conf\n"
        "#tryinclude nowhere.conf\n[router]\n" + CLASSES
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "manager_general.conf").write_text(
        "; FreePBX's own\n#include <manager_more.conf> ; nested\n"
    )
    # Nested and relative: config.c looks in its configuration folder, not in sub/.
    (tmp_path / "manager_more.conf").write_text(
        "disabledevents = VarSet, Newexten\n#include sub/manager_general.conf\n"
    )
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "manager.conf: FAIL   manager.conf (with manager_general.conf, manager_more.conf) "
        "[general] disabledevents = VarSet, Newexten turns off Newexten for every session"
    ) in out, out
    assert "bindaddr" not in out
    # A [general] of its own in an included file, after manager.conf's: the last wins.
    (tmp_path / "sub" / "manager_general.conf").write_text("[general]\nbindaddr = 0.0.0.0\n")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "manager.conf: ADVICE manager.conf (with manager_general.conf) [general] has "
        "bindaddr = 0.0.0.0: Asterisk opens the native AMI port"
    ) in out, out
    # A commented-out #include is not followed.
    conf.write_text(
        "[general]\nenabled = yes\nbindaddr = 127.0.0.1\n;#include manager_general.conf\n"
        "[router]\n" + CLASSES
    )
    assert main(argv) == 0
    assert "bindaddr" not in capsys.readouterr().out


def test_a_user_in_a_file_an_included_file_includes_is_found_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the #include lines of manager.conf were followed one level: a user in
    a file that an included file #includes (manager_custom.conf including the admin's
    own files) was told missing. They are followed as config.c reads them, nested (a
    relative name in manager.conf's folder), a cycle once, a template of manager.conf
    above still named, a broken line told with its own file's line number."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    assert main(["check", "--config", "router.toml", "--manager-conf"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("eventfilter")]
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    conf.write_text(
        "[filters](!)\n" + "\n".join(lines) + "\n[general]\nenabled = yes\n"
        "bindaddr = 127.0.0.1\n#include manager_custom.conf\n"
    )
    custom = tmp_path / "manager_custom.conf"
    custom.write_text("[admin]\nsecret = a\n#include users/*.conf\n#include manager_custom.conf\n")
    (tmp_path / "users").mkdir()
    mine = tmp_path / "users" / "router.conf"
    mine.write_text("[router](filters)\nsecret = s\n" + CLASSES + "#include manager.conf\n")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"manager.conf: OK     [router] is in {mine}, which the file #includes" in out, out
    assert "(with its template [filters])" in out
    assert "FAIL" not in out
    # A line Asterisk dies of, two files down: its own file's line number.
    mine.write_text("[router]\nsecret = s\n[other]\neventfilter(name)=x\n")
    assert main(argv) == 1
    assert f"manager.conf: FAIL   {mine}: line 4: eventfilter(name)=x" in capsys.readouterr().out


def test_a_missing_include_fails_as_asterisk_refuses_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: an ``#include`` of a file that is not there (or a pattern that
    matches none) makes Asterisk refuse the whole manager.conf (measured on
    22.10: "was listed as a #include but it does not exist", "Unable to open AMI
    configuration manager.conf"). The check said nothing when the user's section
    was in manager.conf itself, and nothing of a pattern matching none, and
    passed. A missing ``#tryinclude`` is silent, as in Asterisk."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    (tmp_path / "manager.d").mkdir()
    (tmp_path / "manager.d" / "a.conf").write_text("[other]\nsecret = x\n")
    head = "[general]\nenabled = yes\nbindaddr = 127.0.0.1\n"
    tail = "#tryinclude nowhere.conf\n#include manager.d/*.conf\n[router]\n" + CLASSES
    conf.write_text(head + tail)
    assert main(argv) == 0
    assert "FAIL" not in capsys.readouterr().out
    for include, missing in (
        ("#include missing.conf\n", "missing.conf"),
        ('#include "nomatch.d/*.conf"\n', "nomatch.d/*.conf"),
    ):
        conf.write_text(head + include + tail)
        assert main(argv) == 1, include
        out = capsys.readouterr().out
        assert (
            f"manager.conf: FAIL   {conf}: cannot read {tmp_path / missing}, which it "
            "#includes: No such file or directory: Asterisk refuses the whole manager.conf"
        ) in out, out


def test_an_include_pattern_looks_through_a_bounded_number_of_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hsec34's trial: ``#tryinclude /*/*/*/*/*/*/*/*/*/*/*/*/nothing.conf`` in
    manager.conf held ``callrouter check --manager-conf-file`` for over a minute
    (glob walked the whole file system, /proc too). A pattern now looks through
    at most 20,000 directory entries; past them the line is not followed and an
    ADVICE says so. A pattern within the bound is followed as before."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    tree = tmp_path / "tree"
    for folder in range(21):
        (tree / f"d{folder:02}").mkdir(parents=True)
        for name in range(1000):
            (tree / f"d{folder:02}" / f"f{name:04}").touch()
    (tree / "d00" / "f0000").unlink()
    (tree / "d00" / "f0000").mkdir()
    (tree / "d00" / "f0000" / "disabled.conf").write_text("disabledevents = Newexten\n")
    conf = tmp_path / "manager.conf"
    argv = ["check", "--config", "router.toml", "--manager-conf-file", str(conf)]
    head = "[general]\nenabled = yes\nbindaddr = 127.0.0.1\n"
    conf.write_text(head + "#tryinclude tree/*/*/disabled.conf\n[router]\n" + CLASSES)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"manager.conf: ADVICE {conf}: #tryinclude tree/*/*/disabled.conf looks through "
        "more than 20,000 files and folders: not followed"
    ) in out, out
    assert "FAIL" not in out
    # Within the bound: followed (and the disabledevents there fails the check).
    conf.write_text(head + "#tryinclude tree/d0[0-9]/f000*/disabled.conf\n[router]\n" + CLASSES)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "disabledevents = Newexten turns off Newexten" in out, out
    assert "looks through" not in out


def test_the_bounded_pattern_matches_what_glob_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded walk behind an #include pattern names the files glob.glob
    names (sorted): hidden names only for a part starting with '.', a link to a
    folder followed, a class, a trailing '/' for folders only, a relative name."""
    import glob

    from router.commands.check import _glob

    for folder in ("a/b", ".h", "c"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("a/x.conf", "a/.y.conf", "a/b/z.conf", ".h/w.conf", "c/q.conf", "top.conf"):
        (tmp_path / name).touch()
    (tmp_path / "lnk").symlink_to(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path)
    for pattern in (
        f"{root}/*/*.conf",
        f"{root}/*.conf",
        f"{root}/.*/*.conf",
        f"{root}/a/.*",
        f"{root}/[ac]/*",
        f"{root}/*/b/*.conf",
        f"{root}/a/*/",
        f"{root}/lnk/*.conf",
        f"{root}/**/*.conf",
        f"{root}/nowhere/*.conf",
        "*/*.conf",
        "*/",
    ):
        assert _glob(pattern) == sorted(glob.glob(pattern)), pattern
