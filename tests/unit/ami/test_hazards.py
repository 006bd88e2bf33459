"""Requests that crash Asterisk are never sent (router/ami/hazards.py).

Seen on the sandbox's Asterisk 22.10 on 2026-12-04: ``Getvar`` of
``MIXMONITOR(<id>,filename)`` on a MixMonitor writing only ``r()``/``t()``
files killed Asterisk (segfault), every call on it with it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.ami.catalog import encode_action
from router.ami.hazards import hazard
from router.ami.protocol import Action
from router.commands.ami import build_action
from router.dialplan import RECORD_PATH_CHARS
from router.errors import AMIValidationError
from router.recordings.mixmonitor import dialplan_value, mixmonitor_headers
from router.recordings.naming import FORMATS, LEGS, file_names
from router.recordings.settings import RecordingSettings

CRASHERS = [
    "MIXMONITOR(0x7fb244005470,filename)",
    "mixmonitor (0x7fb244005470,filename)",
    "EVAL(${MIXMONITOR(0x7fb244005470,filename)})",
    "LEN(${MixMonitor(${CR_ID},filename)})",
]


@pytest.mark.parametrize("variable", CRASHERS)
@pytest.mark.parametrize("validate", [True, False])
def test_a_read_of_mixmonitor_is_refused_with_the_reason_and_what_to_ask_instead(
    variable: str, validate: bool
) -> None:
    encoded = encode_action(
        "Getvar", {"Channel": "PJSIP/101-0000002a", "Variable": variable}, validate=validate
    )
    with pytest.raises(AMIValidationError) as caught:
        Action(encoded.name, encoded.params).pairs()  # what every client sends through
    message = str(caught.value)
    assert message.startswith("Getvar: Variable: reading MIXMONITOR() crashes Asterisk")
    assert "/api/v1/recordings/" in message


@pytest.mark.parametrize(
    "variables",
    ["MIXMONITOR(0x7fb244005470,filename)", *[f"CALLERID(num),{v}" for v in CRASHERS[1:]]],
)
@pytest.mark.parametrize("validate", [True, False])
def test_status_asking_for_mixmonitor_among_its_variables_is_refused(
    variables: str, validate: bool
) -> None:
    """``Status`` reads each of its ``Variables`` as ``Getvar`` does: the same crash
    (seen on the sandbox's Asterisk 22.10), one request past the ``Getvar`` guard."""
    encoded = encode_action(
        "Status", {"Channel": "PJSIP/101-0000002a", "Variables": variables}, validate=validate
    )
    with pytest.raises(AMIValidationError, match=r"^Status: Variables: reading MIXMONITOR\(\)"):
        Action(encoded.name, encoded.params).pairs()
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        build_action("status", [("variables", variables)], raw=True).pairs()


def test_past_the_catalog_any_spelling_of_the_action_and_header_is_refused() -> None:
    """``--raw``/``validate=False`` send names as given; Asterisk reads them in any case."""
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        Action.build("getvar", {"variable": CRASHERS[0]}).pairs()
    with pytest.raises(AMIValidationError, match="crashes Asterisk"):
        build_action("GETVAR", [("VARIABLE", CRASHERS[0])], raw=True).pairs()


def test_what_does_not_read_mixmonitor_goes_out() -> None:
    for variable in ("CR_ID", "MIXMONITOR_FILENAME", "CHANNEL(state)"):
        pairs = Action.build("Getvar", {"Channel": "PJSIP/101-1", "Variable": variable}).pairs()
        assert ("Variable", variable) in pairs
    # The same text elsewhere is no read of the function.
    Action.build(
        "Setvar", {"Channel": "PJSIP/101-1", "Variable": "NOTE", "Value": CRASHERS[0]}
    ).pairs()
    assert hazard("Command", {"Command": "core show function MIXMONITOR"}) is None
    status = Action.build("Status", {"Variables": "CR_ID,CHANNEL(state)"}).pairs()
    assert ("Variables", "CR_ID,CHANNEL(state)") in status


INDIRECT = [
    "EVAL(${EVAL(${CR_NOTE})})",
    "eval (${LEN(${Eval(${CR_NOTE})})})",
    "EVAL_EXTEN(callrouter-notes,s,1)",
]


@pytest.mark.parametrize("read", INDIRECT)
@pytest.mark.parametrize(("action", "header"), [("Getvar", "Variable"), ("Status", "Variables")])
def test_a_read_that_evaluates_a_variables_text_is_refused(
    read: str, action: str, header: str
) -> None:
    """A variable set to ``${MIXMONITOR(<id>,filename)}`` (a Setvar, a caller's name)
    read through EVAL inside EVAL calls the function: it killed the sandbox's Asterisk
    22.10 with no MIXMONITOR in the request."""
    with pytest.raises(AMIValidationError, match=f"^{action}: {header}: an EVAL inside EVAL"):
        Action.build(action, {"Channel": "PJSIP/101-1", header: read}).pairs()


def test_one_eval_of_a_variable_goes_out() -> None:
    """``EVAL(${X})`` gives X's text and calls nothing in it (seen on the sandbox)."""
    pairs = Action.build("Getvar", {"Channel": "PJSIP/101-1", "Variable": "EVAL(${X})"}).pairs()
    assert ("Variable", "EVAL(${X})") in pairs


# Seen on the sandbox's Asterisk 22.10 (res_agi loaded by hand) on 2026-12-04: each of
# these, X holding ${MIXMONITOR(<id>,filename)} or MIXMONITOR(<id>,filename), killed
# Asterisk as the Getvar did, on the channel of a MixMonitor writing only r().
READS_PAST_THE_GETVAR_RULE = [
    "EVAL(${${CR_NOTE}})",  # X's value taken as a name: a function call
    "EVAL($[${CR_NOTE}])",  # an expression calls the function its text names
    # Not seen (func_cut is not in the sandbox), by func_cut.c: CUT reads ${<its
    # first argument>}, so ${${X}} again; FIELDQTY, LISTFILTER, IMPORT... alike.
    "CUT(${CR_NOTE},-,1)",
    "EVAL(${CUT(${CR_NOTE},-,1)})",
]


@pytest.mark.parametrize("read", READS_PAST_THE_GETVAR_RULE)
@pytest.mark.parametrize(("action", "header"), [("Getvar", "Variable"), ("Status", "Variables")])
def test_a_read_that_takes_a_value_as_a_name_or_an_expression_is_refused(
    read: str, action: str, header: str
) -> None:
    """No MIXMONITOR and one EVAL in the request: the name or the expression comes
    from the variable's value."""
    for value in (read, f"CALLERID(num),{read}"):
        with pytest.raises(AMIValidationError, match=f"^{action}: {header}: an EVAL"):
            Action.build(action, {"Channel": "PJSIP/101-1", header: value}).pairs()


def test_eval_of_plain_variables_and_literal_text_goes_out() -> None:
    for read in ("EVAL(${X})", "EVAL(ext ${CR_ID:0:4}-${X} done)"):
        Action.build("Getvar", {"Channel": "PJSIP/101-1", "Variable": read}).pairs()
    Action.build("Status", {"Variables": "CR_ID,EVAL(${X}),CHANNEL(state)"}).pairs()
    # A comma inside the parentheses stays in its item, as Asterisk splits them.
    Action.build("Status", {"Variables": "CR_ID,EVAL(${X} ${Y},${Z}),CHANNEL(state)"}).pairs()


AGI_DIRECT = [
    "GET VARIABLE MIXMONITOR(0x7f93bc002b80,filename)",
    "GET FULL VARIABLE ${MIXMONITOR(0x7f93bc002b80,filename)}",
    "get full variable ${LEN(${MixMonitor(${CR_ID},filename)})}",
]
AGI_INDIRECT = [
    "GET FULL VARIABLE ${EVAL(${CR_NOTE})}",  # one EVAL is enough after a substitution
    "GET FULL VARIABLE ${${CR_NOTE}}",
    "GET FULL VARIABLE $[${CR_NOTE}]",
    "GET VARIABLE CUT(${CR_NOTE},-,1)",
    "GET VARIABLE EVAL(${EVAL(${CR_NOTE})})",
    "GET VARIABLE EVAL_EXTEN(callrouter-notes,s,1)",
]


@pytest.mark.parametrize(
    ("command", "why"),
    [(c, "reading MIXMONITOR()") for c in AGI_DIRECT]
    + [(c, "Asterisk substitutes this text as dialplan") for c in AGI_INDIRECT],
)
@pytest.mark.parametrize("validate", [True, False])
def test_an_async_agi_command_that_reads_mixmonitor_is_refused(
    command: str, why: str, validate: bool
) -> None:
    """AMI ``AGI`` queues a command for a channel in ``AGI(agi:async)``: GET VARIABLE
    reads as Getvar does, GET FULL VARIABLE substitutes its text once more."""
    encoded = encode_action(
        "AGI", {"Channel": "PJSIP/101-1", "Command": command}, validate=validate
    )
    with pytest.raises(AMIValidationError, match=rf"^AGI: Command: {re.escape(why)}"):
        Action(encoded.name, encoded.params).pairs()
    with pytest.raises(AMIValidationError, match=r"crashed Asterisk|crashes Asterisk"):
        build_action("agi", [("channel", "PJSIP/101-1"), ("command", command)], raw=True).pairs()


def test_an_async_agi_command_that_evaluates_no_value_goes_out() -> None:
    for command in (
        "GET VARIABLE CR_ID",
        "GET VARIABLE CHANNEL(state)",
        "GET FULL VARIABLE ${CALLERID(num)}-${CR_ID}",
        "EXEC Playback beep",
        "SET VARIABLE CR_NOTE MIXMONITOR_FILENAME",
    ):
        pairs = Action.build("AGI", {"Channel": "PJSIP/101-1", "Command": command}).pairs()
        assert ("Command", command) in pairs


@pytest.mark.parametrize(
    "data",
    [
        "${MIXMONITOR(0x7f93bc002b80,filename)}",
        "${EVAL(${CR_NOTE})}",
        "${${CR_NOTE}}",
        "$[${CR_NOTE} = 1]?a:b",
        "${EVAL_EXTEN(callrouter-notes,s,1)}",
    ],
)
def test_a_priority_that_would_read_mixmonitor_when_run_is_refused(data: str) -> None:
    """``DialplanExtensionAdd`` then ``Redirect`` of the recorded channel to it:
    the data is substituted there (killed the sandbox's Asterisk 22.10)."""
    headers = {
        "Context": "notes",
        "Extension": "s",
        "Priority": "1",
        "Application": "NoOp",
        "ApplicationData": data,
    }
    with pytest.raises(AMIValidationError, match=r"^DialplanExtensionAdd: ApplicationData: "):
        Action.build("DialplanExtensionAdd", headers).pairs()
    headers["ApplicationData"] = "PJSIP/${EXTEN},30"
    Action.build("DialplanExtensionAdd", headers).pairs()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Command", "/bin/true ^{MIXMONITOR(0x7f93bc002b80,filename)}"),
        ("Command", "/bin/true ${EVAL(^{CR_NOTE})}"),
        # app_mixmonitor joins File, Options and Command with commas: the third
        # field is the command, whichever header carried it.
        ("File", "/tmp/x.wav,,/bin/true ^{MIXMONITOR(0x7f93bc002b80,filename)}"),
        ("Options", "b,/bin/true ^{EVAL(^{CR_NOTE})}"),
    ],
)
def test_a_mixmonitor_command_that_reads_mixmonitor_is_refused(header: str, value: str) -> None:
    """MixMonitor substitutes its command (``^{`` read as ``${``) as it starts on the
    channel: killed the sandbox's Asterisk 22.10 on a channel recording one leg."""
    with pytest.raises(AMIValidationError, match=f"^MixMonitor: {header}: "):
        Action.build("MixMonitor", {"Channel": "PJSIP/101-1", header: value}).pairs()


def test_callrouters_own_mixmonitor_goes_out() -> None:
    headers = {
        "Channel": "PJSIP/101-1",
        "File": "/var/spool/asterisk/monitor/c1-mix.wav",
        "Options": "r(/var/spool/asterisk/monitor/c1-in.wav)i(CALLROUTER_REC_ID)",
        "Command": "/usr/bin/nice ^{MIXMONITOR_FILENAME}",
    }
    Action.build("MixMonitor", headers).pairs()


@pytest.mark.parametrize(
    ("action", "headers", "why"),
    [
        # EXEC MixMonitor substitutes its command's ^{...} as the action does.
        (
            "AGI",
            {"Command": "EXEC MixMonitor /tmp/x.wav,,/bin/true ^{^{CR_NOTE}}"},
            "Asterisk substitutes this text",
        ),
        # A priority running MixMonitor: ^{ is ${ to the application.
        (
            "DialplanExtensionAdd",
            {"Application": "MixMonitor", "ApplicationData": "/tmp/x.wav,,/bin/true ^{^{CR_NOTE}}"},
            "Asterisk substitutes this text",
        ),
        # Exec, TryExec and MixMonitor substitute their data again: a plain ${X} too.
        (
            "DialplanExtensionAdd",
            {"Application": "Exec", "ApplicationData": "${CR_NOTE}"},
            "a priority running Exec, TryExec or MixMonitor substitutes its data twice",
        ),
        (
            "DialplanExtensionAdd",
            {"Application": " tryexec", "ApplicationData": "NoOp(x)${CR_NOTE}"},
            "a priority running Exec, TryExec or MixMonitor substitutes its data twice",
        ),
        (
            "DialplanExtensionAdd",
            {"Application": "MIXMONITOR", "ApplicationData": "/tmp/${CR_NOTE}.wav"},
            "a priority running Exec, TryExec or MixMonitor substitutes its data twice",
        ),
        # Originate hands Data over as it is; Exec or MixMonitor substitutes it, and
        # IMPORT reads the recorded channel from the new one.
        (
            "Originate",
            {
                "Application": "Exec",
                "Data": "NoOp(${IMPORT(PJSIP/101-1,MIXMONITOR(0x7f93bc002b80,filename))})",
            },
            "reading MIXMONITOR()",
        ),
        (
            "Originate",
            {"Application": "TryExec", "Data": "NoOp(${IMPORT(PJSIP/101-1,${CR_NOTE})})"},
            "Asterisk substitutes this text",
        ),
        (
            "Originate",
            {"Application": "MixMonitor", "Data": "/tmp/o.wav,,/bin/true ^{^{CR_NOTE}}"},
            "Asterisk substitutes this text",
        ),
    ],
)
def test_text_an_application_substitutes_again_is_refused(
    action: str, headers: dict[str, str], why: str
) -> None:
    """Each killed the sandbox's Asterisk 22.10 on a channel recording one leg
    (2026-12-04, tests/integration/test_asterisk_hazards.py)."""
    base = {"Channel": "Local/s@other", "Context": "notes", "Extension": "s", "Priority": "1"}
    header = {"AGI": "Command", "DialplanExtensionAdd": "ApplicationData"}.get(action, "Data")
    with pytest.raises(AMIValidationError, match=rf"^{action}: {header}: {re.escape(why)}"):
        Action.build(action, {**base, **headers}).pairs()


def test_what_an_application_takes_as_it_is_goes_out() -> None:
    """Originate's Data is not substituted by Originate; ExecIf, NoOp or Set do not
    substitute their data again; a priority's plain ${X} for them is fine."""
    for action, headers in (
        ("Originate", {"Application": "Wait", "Data": "${CR_NOTE}"}),
        ("Originate", {"Application": "NoOp", "Data": "${MIXMONITOR(0x1,filename)}"}),
        ("Originate", {"Application": "Exec", "Data": "Playback(beep)"}),
        ("Originate", {"Context": "from-api", "Exten": "101", "Priority": "1"}),
        ("DialplanExtensionAdd", {"Application": "ExecIf", "ApplicationData": "${X}?NoOp(y)"}),
        ("DialplanExtensionAdd", {"Application": "Dial", "ApplicationData": "PJSIP/${EXTEN},30"}),
        ("DialplanExtensionAdd", {"Application": "Exec", "ApplicationData": "Playback(beep)"}),
        ("AGI", {"Command": "EXEC MixMonitor /tmp/x.wav,,/bin/true ^{MIXMONITOR_FILENAME}"}),
    ):
        Action.build(action, {"Channel": "Local/s@other", **headers}).pairs()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("legs", sorted(LEGS))
def test_callrouters_own_mixmonitor_goes_out_for_every_format_legs_and_folder(
    fmt: str, legs: str
) -> None:
    """Every character the recordings' ``dir`` may hold (RECORD_PATH_CHARS), every
    format and legs setting: callrouter's own MixMonitor passes the hazard checks."""
    folder = "/" + "".join(sorted(RECORD_PATH_CHARS - {"/"})).replace("..", ".") + "/eval_exec"
    settings = RecordingSettings(dir=folder, local_dir=Path(folder), format=fmt, legs=legs)
    names = file_names("1733338000.42", legs, fmt)
    headers = mixmonitor_headers(settings, "PJSIP/101-0000002a", names)
    Action.build("MixMonitor", headers).pairs()
    assert dialplan_value(settings, names)  # the dialplan's [callrouter-record] keeps it


@pytest.mark.parametrize(
    "criteria",
    ["name", "action(include),header", "name(Hangup),method", "names", "action(exclude) name"],
)
@pytest.mark.parametrize("validate", [True, False])
def test_a_filter_whose_criteria_crash_asterisk_is_refused(criteria: str, validate: bool) -> None:
    """``Filter`` with ``MatchCriteria: name`` killed the sandbox's Asterisk
    (2026-12-05, a user with write = system): ``manager_add_filter`` reads
    name, header and method through a '(' it does not check. An API token
    with ``ami:Filter`` could take the PBX down."""
    encoded = encode_action(
        "Filter",
        {"Operation": "Add", "MatchCriteria": criteria, "Filter": ""},
        validate=validate,
    )
    with pytest.raises(AMIValidationError, match=r"^Filter: MatchCriteria: .*crashes Asterisk"):
        Action(encoded.name, encoded.params).pairs()


@pytest.mark.parametrize(
    "criteria",
    [
        "",
        "name(Hangup)",
        "action(include),name(Newexten),header(Priority),method(exact)",
        # Refused by Asterisk before it reads the option that has no '(':
        "nmae,name",
        "action,name",
        "action(Include),name",
        "name(),header",
        "method(coains),name",
    ],
)
def test_a_filter_asterisk_takes_or_refuses_goes_out(criteria: str) -> None:
    encoded = encode_action("Filter", {"Operation": "Add", "MatchCriteria": criteria, "Filter": ""})
    Action(encoded.name, encoded.params).pairs()


@pytest.mark.parametrize("name", [" Getvar", "\tStatus", "\x0cGetvar", "Getvar "])
def test_an_action_name_with_a_blank_is_refused_before_it_passes_the_hazards(name: str) -> None:
    """hreview48: Asterisk 22 skips a header value's leading blanks, so
    ``Action:  Getvar`` is Getvar there (on the sandbox ``--raw " Getvar"
    Variable=MIXMONITOR(...)`` was answered as a Getvar), while the hazards
    compared the name as spelled and let it go out."""
    key = "Variables" if "Status" in name else "Variable"
    with pytest.raises(AMIValidationError, match="invalid action name"):
        Action.build(name, {key: CRASHERS[0]}).pairs()
