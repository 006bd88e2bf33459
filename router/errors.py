"""The one exception tree of callrouter.

Every error callrouter raises on purpose is a :class:`CallRouterError`, so a
plugin or the CLI can catch "anything of ours" in one place, while the
stdlib base classes let generic code (``except ConnectionError``) keep working,
as aiosmtplib does::

    CallRouterError
    ├── ConfigError(ValueError)            router.toml or a plugin setting is wrong
    │   └── ConfigUnreadable               router.toml itself could not be read (missing, not TOML)
    ├── AMIError                           anything on the Asterisk side
    │   ├── AMIProtocolError(ValueError)   bytes that are not AMI (malformed, truncated, too big)
    │   ├── AMIConnectionError(ConnectionError)  Asterisk unreachable, connection dropped
    │   │   ├── AMITimeoutError(TimeoutError)    no answer in time
    │   │   └── AMIEmptyAnswerError        AJAM's HTTP 200 with no manager answer in it
    │   ├── AMIEventsDropped                events read over TCP dropped unhandled (a full queue)
    │   ├── AMIAuthenticationError(PermissionError)  login refused (wrong secret, ACL, 401)
    │   ├── AMIActionError                 Asterisk answered ``Response: Error``
    │   │   └── AMIPrivilegeError          ``Permission denied`` on a live session: no write class
    │   └── AMIValidationError(ValueError) an action call that does not fit the catalog
    ├── RuleError                          rule files
    │   ├── RuleValidationError(ValueError) one located problem (file:line) in a rule
    │   ├── RulesRefused                   ``run`` will not start on rules with problems
    │   └── FunctionFailed                 a rule function raised while a rule was evaluated
    ├── PluginError                        a plugin misbehaved (wraps its exception)
    ├── LookupUnavailable                  a fact source (1C, CSV, AMI) could not answer
    │   └── LookupCutOff                   ... because the call's deadline came (said by the lookup)
    ├── router.api.errors.ApiError         an HTTP API request failed (status, problem details)
    ├── RecordingError                     a call recording could not be made, closed or transcoded
    ├── HistorySourceError(OSError)        the stored CEL ([history] cel) could not be read
    ├── StateBackupError(OSError)          ``callrouter state backup`` could not copy the state
    ├── StateRestoreError(OSError)         ``callrouter state restore`` refused or failed
    ├── FileOutOfSight(OSError)            ``stat`` cannot tell whether a state file is there
    │   └── StateFileDenied(PermissionError)  a state file callrouter may not read: start refused
    ├── NotTheRecording(OSError)           a recording's path leads to a link, a FIFO, elsewhere
    └── SandboxError(RuntimeError)         the test Asterisk could not be provisioned or started

Lower-layer exceptions (httpx, lxml, OSError) are mapped to this tree at the
module boundary that owns the I/O; they never leak to callers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.logsafe import peer_text

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Message

__all__ = [
    "AMIActionError",
    "AMIAuthenticationError",
    "AMIConnectionError",
    "AMIEmptyAnswerError",
    "AMIError",
    "AMIEventsDropped",
    "AMIPrivilegeError",
    "AMIProtocolError",
    "AMITimeoutError",
    "AMIValidationError",
    "CallRouterError",
    "ConfigError",
    "ConfigUnreadable",
    "FileOutOfSight",
    "FunctionFailed",
    "HistorySourceError",
    "LookupCutOff",
    "LookupUnavailable",
    "NotTheRecording",
    "PluginError",
    "RecordingError",
    "RuleError",
    "RuleValidationError",
    "RulesRefused",
    "SandboxError",
    "StateBackupError",
    "StateFileDenied",
    "StateRestoreError",
]


class CallRouterError(Exception):
    """Base of every error callrouter raises on purpose."""


class ConfigError(CallRouterError, ValueError):
    """The configuration cannot be used; the message names the file and key."""


class ConfigUnreadable(ConfigError):
    """The settings file itself could not be read: missing, a folder, too big,
    unreadable, not UTF-8 or not TOML. The message names the file. Unlike a
    wrong key (a finding ``callrouter check`` lists), it is the command's
    error, as a bad command-line value is: nothing in the file was checked."""


class StartRefused(ConfigError):
    """A refusal the engine keeps and raises itself once the plugins have
    started (a plugin's own state folder another router holds:
    ``EngineAPI.hold_state_folder``): the plugin manager does not log it
    from the hook it came through, where it would stand as the plugin's
    crash, with a traceback, above the start's own error."""


class AMIError(CallRouterError):
    """Something went wrong talking to Asterisk."""


class AMIProtocolError(AMIError, ValueError):
    """Input that is not valid AMI: the only error the sans-I/O layer raises."""


class AMIConnectionError(AMIError, ConnectionError):
    """Asterisk could not be reached, or the connection broke mid-request."""


class AMITimeoutError(AMIConnectionError, TimeoutError):
    """Asterisk did not answer within the configured time."""


class AMIEmptyAnswerError(AMIConnectionError):
    """Asterisk's HTTP server answered an AJAM action with HTTP 200 and an empty
    body: its manager wrote no answer. Asterisk writes each answer to a
    temporary file in its own /tmp first (manager.c), and sends nothing when
    that file cannot be written (the folder full, or not writable); a second
    WaitEvent on the session also ends the first with nothing. Like a
    connection that broke: a retry or a reconnect may well get an answer."""


class AMIEventsDropped(AMIError):
    """Events Asterisk sent were dropped unhandled: the native TCP client's
    queue of events read but not yet taken was full (callrouter fell behind).

    Raised by ``wait_event`` once the events queued before the first dropped
    one are taken; the event stream reports it as a gap (``overflow``), so the
    engine reconciles. ``since`` is when the first was dropped (wall clock).
    """

    def __init__(self, message: str, *, since: float) -> None:
        super().__init__(message)
        self.since = since


class AMIAuthenticationError(AMIError, PermissionError):
    """Asterisk refused our credentials (and a re-login did not help)."""


class AMIActionError(AMIError):
    """Asterisk answered an action with ``Response: Error``.

    The response is kept so callers can branch on its ``Message`` (for
    instance ``Channel does not exist``), which is how AMI reports causes.
    """

    def __init__(self, action: str, response: Message) -> None:
        self.action = action
        self.response = response
        # Quoted in part and escaped: ``check --asterisk`` and the CLI print
        # this, and a peer's Message may be a 64 KB line of control characters
        # (the whole answer stays in ``response``).
        super().__init__(f"{action}: {peer_text(response.get('Message'), 'no message')}")


class AMIPrivilegeError(AMIActionError):
    """Asterisk refused an action on a session that is alive: the manager user
    lacks the action's write class.

    Asterisk answers an expired session with the same ``Permission denied``;
    the client tells the two apart (a ``Ping`` on the same session still
    works) so that a missing class is reported, not "healed" by logging in
    again on every call.
    """

    def __init__(
        self, action: str, response: Message, *, username: str, classes: tuple[str, ...]
    ) -> None:
        super().__init__(action, response)
        self.username = username
        #: The write classes that allow the action (any one of them), from the catalog.
        self.classes = classes
        if classes:
            need = (
                f"write class {classes[0]}"
                if len(classes) == 1
                else "one of the write classes " + ", ".join(classes)
            )
        else:
            need = "a write class it lacks"
        self.args = (
            f"{action}: Permission denied: the manager user {username!r} needs "
            f"{need} (manager.conf)",
        )


class AMIValidationError(AMIError, ValueError):
    """An action call that the catalog says Asterisk would refuse.

    Raised before anything is sent, so a typo never reaches the PBX.
    """


class RuleError(CallRouterError):
    """Rule files could not be loaded."""


class FunctionFailed(RuleError):
    """A rule function raised while a rule was evaluated; says which one.

    The trace said only ``RuntimeError: boom`` of ``if: is_vip(caller.number)
    and workhours()``: not which function, so not which plugin, to look at.
    """

    def __init__(self, name: str, error: Exception) -> None:
        self.function = name
        self.error = error
        super().__init__(f"{name}() raised {type(error).__name__}: {error}")


class RuleValidationError(RuleError, ValueError):
    """One problem in one rule, located as ``file:line``."""

    def __init__(
        self, message: str, *, file: str = "<string>", line: int = 0, rule: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.rule = rule
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f" rule {self.rule!r}:" if self.rule else ""
        return f"{where}:{who} {self.detail}"


class RulesRefused(RuleError):
    """``callrouter run`` found problems in the rule files at start.

    A reload with a broken file keeps the previous rule set; at start there is
    none, and running with some rules silently left out would let every call
    they were meant for fall through. ``problems`` are the lines ``callrouter
    check`` prints, one per problem (``file:line: rule 'x': message``).
    """

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        count = len(problems)
        super().__init__(
            f"not started: {count} problem{'s' if count != 1 else ''} in the "
            "rule files or plugins (callrouter check shows the same); at start "
            "there is no previous rule set to keep"
        )


class PluginError(CallRouterError):
    """A plugin raised or returned something unusable; names the plugin."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class LookupUnavailable(CallRouterError):
    """A lookup source could not answer; rules treat the value as ``None``."""


class LookupCutOff(LookupUnavailable):
    """A lookup gave up because the call's deadline (``RequestInfo.deadline``)
    came first: the decision counts as late, as when the engine cuts a lookup
    off, but the trace keeps the lookup's own words (what it asked, where) and
    no WARNING blames the plugin."""


class RecordingError(CallRouterError):
    """A call recording could not be started, closed or transcoded (router.recordings)."""


class HistorySourceError(CallRouterError, OSError):
    """Asterisk's stored CEL (``[history] cel``) could not be read: the message
    names the key and the file or server; a replay is retried after the next gap."""


class StateBackupError(CallRouterError, OSError):
    """``[router] state_dir`` could not be backed up (router/statebackup.py): the
    target is not a new folder, or a file could not be read or written."""


class StateRestoreError(CallRouterError, OSError):
    """A backup could not be put back into ``[router] state_dir``
    (router/staterestore.py): a callrouter runs there, the backup is not a
    whole one, or a file could not be copied or moved. The message names the
    file; nothing in the state folder was changed unless it says so."""


class FileOutOfSight(CallRouterError, OSError):
    """A state file that cannot be looked at (``stat`` failed, but not for its
    absence: the state folder's permissions changed, an I/O error): it may well
    still be there, so it is neither said deleted nor written over. Public as
    ``router.FileOutOfSight`` (docs/plugins.md, a plugin's own state file); an
    ``OSError`` with the errno, its text and the path, as ``stat`` gave them."""


class StateFileDenied(FileOutOfSight, PermissionError):
    """A state file callrouter may not read, or an SQLite one it may not write
    (EACCES, EPERM, SQLITE_READONLY: its owner or mode, or its folder's,
    changed): not a damaged file, so it is neither set aside nor written
    over, and the start is refused with the file named and what to do
    (router.aside.denied_state_file)."""


class NotTheRecording(CallRouterError, OSError):
    """What a recording's path leads to is not the recording (a symbolic link on
    the way, a FIFO, a folder, a file outside the recordings folder): never read,
    sent or served. Public as ``router.NotTheRecording`` for plugins that read
    recordings (docs/plugins.md); defined here so it is in the one tree, its
    kinds in router/recordings/files.py."""


class SandboxError(CallRouterError, RuntimeError):
    """The Asterisk sandbox could not be provisioned or started.

    The message always says exactly why (no root, no debootstrap, no network
    to the Debian mirror, Asterisk died with its last log lines), because a
    CI run must fail loudly rather than skip the integration tests.
    """
