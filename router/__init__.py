"""callrouter: route Asterisk calls with declarative rules and plugins.

This module is the public API a plugin may import; everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionError,
    AMIError,
    AMIProtocolError,
    AMITimeoutError,
    AMIValidationError,
    CallRouterError,
    ConfigError,
    FileOutOfSight,
    LookupCutOff,
    LookupUnavailable,
    NotTheRecording,
    PluginError,
    RuleError,
    RuleValidationError,
    SandboxError,
)
from router.hookspecs import hookimpl
from router.request import RequestInfo, current_request

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.facade import AMI
    from router.ami.message import Event
    from router.ami.protocol import ActionResult
    from router.ami.stream import StreamGap
    from router.aside import (
        check_db_writable,
        named_db_error,
        set_aside_odd_db_files,
        state_db_error,
    )
    from router.builtin.numbers import (
        NumberKind,
        NumberPlan,
        ParsedNumber,
        normalize_number,
        number_digits,
        parse_number,
    )
    from router.builtin.timefuncs import rules_timezone, time_zone
    from router.callerid import cut
    from router.calllife.model import CallEvent, Transfer
    from router.calls import Call
    from router.config import Config, SettingsReader
    from router.dialplan import LocationPolicy, argument_problem, location_problem
    from router.hookspecs import EngineAPI, LiveCalls, RouteOutcome, StateFolder
    from router.metrics import Metrics
    from router.private_dir import private_dir_problem
    from router.recordings import open_recordings, recording_signer
    from router.recordings.files import open_recording
    from router.recordings.naming import recording_key_problem
    from router.recordings.settings import RecordingSettings
    from router.recordings.store import (
        Recording,
        RecordingStore,
        seen_identity,
        write_back,
    )
    from router.rules.cron import check_cron, cron_trigger
    from router.rules.decision import Action, Decision, LookupTrace, Trace
    from router.rules.registry import ActionSpec, ParamSpec, Registry
    from router.state_peek import peek_db
    from router.supervise import Supervised
    from router.tasks import cancel_and_wait

#: Types plugins annotate hooks with, imported on first use so that
#: ``import router`` stays light (no httpx, no scheduler) for the CLI.
_LAZY = {
    "Event": "router.ami.message",
    "Call": "router.calls",
    # A call's life from CEL (callrouter_call_event, docs/history.md).
    "CallEvent": "router.calllife.model",
    "Transfer": "router.calllife.model",
    # Phone numbers: one normalization for the core, lists and plugins (1C).
    "NumberKind": "router.builtin.numbers",
    "NumberPlan": "router.builtin.numbers",
    "ParsedNumber": "router.builtin.numbers",
    "normalize_number": "router.builtin.numbers",
    "number_digits": "router.builtin.numbers",
    "parse_number": "router.builtin.numbers",
    # Timed jobs: classic cron in the rules' zone (schedule: rules, plugins).
    "check_cron": "router.rules.cron",
    "cron_trigger": "router.rules.cron",
    "rules_timezone": "router.builtin.timefuncs",
    # An IANA zone by name, its ValueError saying what to write ('MSK', 'UTC+3').
    "time_zone": "router.builtin.timefuncs",
    # A text cut to a length, ending in "…", as callrouter cuts a caller's texts.
    "cut": "router.callerid",
    "Config": "router.config",
    "SettingsReader": "router.config",
    # A plugin action's dialplan location and argument checks, as the built-ins'.
    "LocationPolicy": "router.dialplan",
    "argument_problem": "router.dialplan",
    "location_problem": "router.dialplan",
    # The plugin contract: what hooks receive (router/hookspecs.py).
    "EngineAPI": "router.hookspecs",
    "LiveCalls": "router.hookspecs",
    "RouteOutcome": "router.hookspecs",
    "StateFolder": "router.hookspecs",
    "AMI": "router.ami.facade",
    "StreamGap": "router.ami.stream",
    "ActionResult": "router.ami.protocol",
    "LookupTrace": "router.rules.decision",
    "Action": "router.rules.decision",
    "Decision": "router.rules.decision",
    "Trace": "router.rules.decision",
    "ActionSpec": "router.rules.registry",
    "ParamSpec": "router.rules.registry",
    "Registry": "router.rules.registry",
    # A plugin's long-lived loop, logged and restarted when it dies.
    "Supervised": "router.supervise",
    # A plugin's stop: a task cancelled and waited for, the stopper's own cancellation raised.
    "cancel_and_wait": "router.tasks",
    # Call recordings: the catalog a receiving plugin polls and confirms (router/recordings).
    "Recording": "router.recordings.store",
    "RecordingStore": "router.recordings.store",
    "RecordingSettings": "router.recordings.settings",
    "open_recordings": "router.recordings",
    "recording_signer": "router.recordings",
    "recording_key_problem": "router.recordings.naming",
    # A recording's file read only below the recordings folder, no link on the way.
    "open_recording": "router.recordings.files",
    # A plugin's own SQLite state file deleted or replaced while open: written back.
    "seen_identity": "router.recordings.store",
    "write_back": "router.recordings.store",
    # Before a plugin's SQLite file in state_dir is opened: no link, FIFO or folder there.
    "set_aside_odd_db_files": "router.aside",
    "named_db_error": "router.aside",
    # ... and refused naming it when it is another user's, opened read-only.
    "check_db_writable": "router.aside",
    "state_db_error": "router.aside",
    # callrouter_state_conversions: a SQLite state file read with nothing written.
    "peek_db": "router.state_peek",
    # A plugin's own state folder: nobody but root and callrouter's user can change it.
    "private_dir_problem": "router.private_dir",
    "Metrics": "router.metrics",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'router' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__version__ = "0.2.0.dev0"

__all__ = [
    "AMI",
    "AMIActionError",
    "AMIAuthenticationError",
    "AMIConnectionError",
    "AMIError",
    "AMIProtocolError",
    "AMITimeoutError",
    "AMIValidationError",
    "Action",
    "ActionResult",
    "ActionSpec",
    "Call",
    "CallEvent",
    "CallRouterError",
    "Config",
    "ConfigError",
    "Decision",
    "EngineAPI",
    "Event",
    "FileOutOfSight",
    "LiveCalls",
    "LocationPolicy",
    "LookupCutOff",
    "LookupTrace",
    "LookupUnavailable",
    "Metrics",
    "NotTheRecording",
    "NumberKind",
    "NumberPlan",
    "ParamSpec",
    "ParsedNumber",
    "PluginError",
    "Recording",
    "RecordingSettings",
    "RecordingStore",
    "Registry",
    "RequestInfo",
    "RouteOutcome",
    "RuleError",
    "RuleValidationError",
    "SandboxError",
    "SettingsReader",
    "StateFolder",
    "StreamGap",
    "Supervised",
    "Trace",
    "Transfer",
    "__version__",
    "argument_problem",
    "cancel_and_wait",
    "check_cron",
    "check_db_writable",
    "cron_trigger",
    "current_request",
    "cut",
    "hookimpl",
    "location_problem",
    "named_db_error",
    "normalize_number",
    "number_digits",
    "open_recording",
    "open_recordings",
    "parse_number",
    "peek_db",
    "private_dir_problem",
    "recording_key_problem",
    "recording_signer",
    "rules_timezone",
    "seen_identity",
    "set_aside_odd_db_files",
    "state_db_error",
    "time_zone",
    "write_back",
]
