"""Whether Asterisk lets this session send what the configuration needs,
asked after every login while the engine runs (router/privileges.py asks).

Without ``write = call`` no call is routed, which used to show only when the
first call's ``Redirect`` was refused: now an ERROR at once, naming the user
and the class, and the reason /readyz gives until a login that has it (fail
open: the calls take their default route, and the rest of callrouter runs
on). A missing ``originate`` is an ERROR too. A missing ``reporting`` (a
``CoreStatus``, as ``check --asterisk`` asks) is a WARNING and /readyz's
``warnings``, not a 503: calls are routed, but those waiting after a gap are
not listed again (``CoreShowChannels``), which used to show only when that
listing was refused. A session keeps the write
classes of its login, and a login may be a user changed in manager.conf
since (a restart, ``manager reload``), whatever made it: the start, the event
stream after a gap, or an action that found its session gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from router.errors import AMIError
from router.privileges import ORIGINATE, REDIRECT, REPORTING, needed, refused
from router.supervise import log_task_failure

if TYPE_CHECKING:
    from router.ami.connect import AMIClient
    from router.config import Config
    from router.rules.ruleset import RuleSet

__all__ = ["PRIVILEGE_MISSING", "PrivilegeWatch"]

log = logging.getLogger("router.engine")

#: Logged at ERROR after a login whose manager user Asterisk refuses an
#: action the configuration needs (router/privileges.py), at WARNING for
#: ``CoreStatus`` (``write = reporting``); for ``Redirect`` also /readyz's
#: reason, for ``CoreStatus`` its warning. A live session keeps the classes
#: of its login.
PRIVILEGE_MISSING = (
    "Asterisk refuses the manager user {user!r} {action} (write = {cls} missing "
    "in manager.conf): {lost}; add {cls} to the write line of manager.conf [{user}] "
    "(beside the classes there), run asterisk -rx 'manager reload', then restart "
    "callrouter (a session keeps the classes it logged in with)"
)
#: Seconds before the write-class probe runs again when a login came during
#: each of the last two (doubled each time, up to _PROBE_PAUSE_MAX): a session
#: that does not last (a proxy dropping the cookie, an Asterisk restarting
#: over and over) logs in again inside every probe's own actions.
_PROBE_PAUSE = 1.0
_PROBE_PAUSE_MAX = 60.0


class PrivilegeWatch:
    """The write-class probe of each login (one per engine).

    The start's probe is awaited before any call is routed, so /readyz is
    right from the start (:meth:`first`); each later login's runs in the
    background, never awaited by the event stream: on an Asterisk that
    hangs, the probe's actions wait out their timeouts while calls are
    routed. One probe at a time; /readyz keeps the last answer meanwhile.
    """

    def __init__(
        self,
        client: AMIClient,
        config: Config,
        rules: Callable[[], RuleSet],
        stopping: asyncio.Event,
    ) -> None:
        self._client = client
        self._config = config
        self._rules = rules
        self._stopping = stopping
        self._enabled = False
        #: Why Asterisk refuses this session ``Redirect`` (``write = call``
        #: missing: /readyz's reason), empty when it does not.
        self.redirect_refused = ""
        #: Why Asterisk refuses this session ``CoreStatus`` (``write =
        #: reporting`` missing: /readyz's warning), empty when it does not.
        self.reporting_refused = ""
        #: The logins the client told of, and how many the last probe covered.
        self._logins = 0
        self._probed_logins = 0
        #: The last probe failed unexpectedly (logged once a streak).
        self._failing = False
        #: The background probe of the logins after the start's, while it runs.
        self.prober: asyncio.Task[None] | None = None
        self._background = False

    def listen(self) -> None:
        """Before the first login: probe each login from now on. The client
        says a refusal of a probe's action only as the probe's ERROR."""
        self._enabled = True
        for probe in (REDIRECT, ORIGINATE, REPORTING):
            self._client.refusal_reported(probe.action)
        # (a stand-in client without one: its logins after the first go unprobed)
        listen = getattr(self._client, "set_login_listener", None)
        if listen is not None:
            listen(self.logged_in)

    async def first(self) -> None:
        """The start's probe, awaited; later logins are probed in the background."""
        await self._check()
        self._background = True
        self._probe_new_logins()

    def logged_in(self) -> None:
        """The client's login listener."""
        self._logins += 1
        self._probe_new_logins()

    def cancel(self) -> None:
        """Stop the background probe (the engine's stop)."""
        if self.prober is not None:
            self.prober.cancel()

    def _probe_new_logins(self) -> None:
        """Start the background probe of the logins not probed yet, unless
        it runs already (it then covers them too)."""
        if (
            not self._background
            or self.prober is not None
            or self._stopping.is_set()
            or self._logins == self._probed_logins
        ):
            return
        task = asyncio.get_running_loop().create_task(
            self._probe_logins(), name="callrouter-privileges"
        )
        task.add_done_callback(partial(log_task_failure, logger=log))
        self.prober = task

    async def _probe_logins(self) -> None:
        rounds = 0
        try:
            # A login during the probe (its own action's, a reconnect's) is
            # another session, maybe another user's classes: asked again, at
            # once the first time, then after a pause growing each time (else
            # a session lost at every action loops Login and the probe).
            while self._logins != self._probed_logins and not self._stopping.is_set():
                if rounds >= 2:
                    pause = _PROBE_PAUSE * 2 ** min(rounds - 2, 6)
                    await asyncio.sleep(min(pause, _PROBE_PAUSE_MAX))
                    if self._stopping.is_set():
                        break
                rounds += 1
                await self._check()
        finally:
            self.prober = None

    async def _check(self) -> None:
        """One probe of what this configuration needs; shadow instances
        (never :meth:`listen`-ed) act on nothing and ask nothing."""
        if not self._enabled:
            return
        before, self._probed_logins = self._probed_logins, self._logins
        user = self._config.asterisk.username
        # Each kept when it cannot be asked now.
        said = {
            REDIRECT.action: self.redirect_refused,
            REPORTING.action: self.reporting_refused,
        }
        failed = False
        # write = reporting last, one action more than the configuration's own:
        # the reconcile after a gap lists the waiting calls with its class.
        for probe in (*needed(self._config, self._rules()), REPORTING):
            try:
                denied = await refused(self._client, probe)
            except AMIError as exc:  # the stream reports a lost Asterisk
                log.debug("write = %s not checked: %s", probe.write_class, exc)
                continue
            except Exception:
                # Not Asterisk's answer (a bug, a client fault): this login is
                # not probed, so the background loop asks again after its
                # pause; said once until a probe goes through. Never a reason
                # to stop the start: calls fail open meanwhile.
                failed = True
                if not self._failing:
                    log.exception("write = %s not checked; asked again later", probe.write_class)
                self._failing = True
                continue
            text = ""
            if denied:
                text = PRIVILEGE_MISSING.format(
                    user=user, action=probe.action, cls=probe.write_class, lost=probe.lost
                )
                # Routing goes on without reporting: a WARNING, once a login.
                log.log(logging.WARNING if probe is REPORTING else logging.ERROR, "%s", text)
            if probe.action in said:
                if said[probe.action] and not denied:
                    log.info("Asterisk allows the manager user %r %s now", user, probe.action)
                said[probe.action] = text
        self.redirect_refused = said[REDIRECT.action]
        self.reporting_refused = said[REPORTING.action]
        if failed:
            self._probed_logins = before
        else:
            self._failing = False
