"""Whether callrouter can route calls now: what ``/readyz``, ``callrouter_ready``
and systemd's ``READY=1``/``STATUS=`` all say.

Ready means all of: logged in to Asterisk, the event stream current (the last
poll answered), Asterisk sending the session ``UserEvent`` (the router's own
heartbeat comes back: the routing requests are ``UserEvent`` too), the
manager user allowed ``Redirect`` (``write = call``, probed after each
login), the rules loaded without a problem, and the engine serving (started,
not stopping).
Each check that fails gives a reason a person can act on; a load balancer or
systemd only needs the yes or no.

Not ready is not broken: callrouter fails open, so while it is not ready
calls simply take the dialplan's default route. The ``phase`` says which
not-ready it is (``starting``, waiting for Asterisk among others;
``running``; ``stopping``), which ``/healthz`` tells a monitor that holds
"starting" apart from "dead".

Ready is not routing: the ``role`` says whether this instance is the one that
routes (``live``), decides and logs while another live instance on the same
Asterisk routes (``standby``, router/liveguard.py), or never routes
(``shadow``, ``--shadow``). A standby stays ready (its API serves, and it takes
over the moment the live one goes); ``/readyz?role=live`` is for a balancer
that wants only the one routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.wording import counted

__all__ = ["REPORTING_BRIEF", "ROLES", "USER_EVENTS_MISSING", "Health", "readiness"]

#: What an instance does with the calls it decides (:attr:`Health.role`).
ROLES = ("live", "standby", "shadow")

#: Logged (with ``seconds`` and ``user``, the manager user's section) and given
#: as the reason when the session hears no ``UserEvent``: each cause named is
#: one an administrator can check, the class said as the other refused classes
#: are (router/commands/preflight.py): a line to write, and where.
USER_EVENTS_MISSING = (
    "Asterisk sends this router no UserEvent (its own heartbeat has not come "
    "back for {seconds:g} s), so no routing request can reach it and every call "
    "takes its default route: add user to the read line of manager.conf [{user}] "
    "(beside the classes there), check its eventfilter lines (callrouter check "
    "--manager-conf) and that [general] disabledevents in manager.conf does not "
    "name UserEvent, then asterisk -rx 'manager reload'"
)


#: systemd's status line for the ``privilege_warning`` of :func:`readiness`
#: (the whole sentence is /readyz's ``warnings`` and the log's WARNING).
REPORTING_BRIEF = "manager user {user} lacks write = reporting"


@dataclass(frozen=True, slots=True)
class Health:
    """One look at the engine: ready or not, and why not."""

    ready: bool
    #: Why not ready, one sentence per failed check (empty when ready).
    reasons: tuple[str, ...]
    #: Each check by name (``asterisk``, ``event_stream``, ``user_events``,
    #: ``privileges``, ``rules``, ``serving``).
    checks: dict[str, bool]
    #: Rules in use.
    rules: int = 0
    #: ``starting`` (until the engine routes: rules, the login, a wait for
    #: Asterisk), ``running`` or ``stopping``.
    phase: str = "running"
    #: What the start is doing while ``starting`` (waiting for Asterisk at
    #: its URL, and why); empty otherwise.
    detail: str = ""
    #: ``live`` (routes), ``standby`` (another live instance routes:
    #: :attr:`live_instance` names it) or ``shadow`` (``--shadow``: routes nothing).
    role: str = "live"
    #: While ``standby``: the instance that routes (its id and host).
    live_instance: str = ""
    #: What is lost while ready (the manager user lacks ``write =
    #: reporting``: the calls waiting after a gap are not listed), one
    #: sentence each: /readyz still answers 200.
    warnings: tuple[str, ...] = ()
    #: Each of :attr:`warnings` in a few words, for systemd's one status line.
    warnings_brief: tuple[str, ...] = ()

    def to_dict(self, *, details: bool = True) -> dict[str, Any]:
        """``/readyz``'s body; without ``details`` the reasons (which name
        Asterisk's URL, its error, the manager user) are left out, the failed
        checks' names stay; so are the ``warnings``, which are there only
        when there are some."""
        body: dict[str, Any] = {
            "status": "ready" if self.ready else "not ready",
            "phase": self.phase,
            "reasons": list(self.reasons),
            "checks": dict(self.checks),
            "rules": self.rules,
            "role": self.role,
        }
        if self.live_instance and details:
            body["live_instance"] = self.live_instance
        if self.warnings and details:  # told as the reasons are
            body["warnings"] = list(self.warnings)
        if not details:
            del body["reasons"]
        return body

    def liveness(self, *, details: bool = True) -> dict[str, Any]:
        """``/healthz``: alive, and in which phase (with what a start waits
        for, when ``details``)."""
        alive: dict[str, Any] = {"status": "alive", "phase": self.phase}
        if self.detail and details:
            alive["detail"] = self.detail
        return alive

    def status_line(self) -> str:
        """systemd's ``STATUS=``: one line, what ``systemctl status`` shows;
        the :attr:`warnings` briefly at its end (/readyz and the log say them whole)."""
        return self._state_line() + self._warnings_line()

    def _state_line(self) -> str:
        if not self.ready:
            return "not ready: " + "; ".join(self.reasons)
        rules = counted(self.rules, "rule")
        if self.role == "standby":
            return f"standing by: {self.live_instance or 'another instance'} is live ({rules})"
        if self.role == "shadow":
            return f"shadow: routing nothing ({rules})"
        return f"routing calls ({rules})"

    def _warnings_line(self) -> str:
        brief = self.warnings_brief or self.warnings
        if not brief:
            return ""
        return f"; {counted(len(brief), 'warning')}: " + "; ".join(brief)

    def in_role(self, role: str) -> bool:
        """Ready, and doing ``role`` (``/readyz?role=live``)."""
        return self.ready and self.role == role


def readiness(
    *,
    logged_in: bool,
    stream_current: bool,
    rule_problems: int,
    rules: int,
    serving: bool,
    user_events: bool = True,
    unheard_for: float = 0.0,
    phase: str = "running",
    waiting_for: str = "",
    privileges: str = "",
    privilege_warning: str = "",
    role: str = "live",
    live_instance: str = "",
    user: str = "USER",
) -> Health:
    """The checks, in the order a person should look at them.

    ``user_events`` False: the own heartbeat sent ``unheard_for`` seconds ago and
    since has not come back (router/liveguard.py); True where nothing is known
    (the guard is off, or the heartbeat may not be sent). ``phase``: the
    engine's (:attr:`Health.phase`); ``waiting_for``: what the start waits
    for (Asterisk at its URL, and why), the reason while not logged in;
    ``privileges``: why Asterisk refuses the manager user what routing needs
    (empty when it does not); ``privilege_warning``: what is lost by a class
    it refuses that routing can do without (``write = reporting``), a warning,
    not a reason; ``role`` and ``live_instance``: as :class:`Health`;
    ``user``: the manager user (``[asterisk] username``), its section in
    manager.conf.
    """
    checks = {
        "asterisk": logged_in,
        "event_stream": stream_current,
        "user_events": user_events,
        "privileges": not privileges,
        "rules": rule_problems == 0,
        "serving": serving,
    }
    reasons = []
    if not logged_in and waiting_for:
        reasons.append(f"{waiting_for}; calls take the dialplan's default route meanwhile")
    elif not logged_in:
        reasons.append("not logged in to Asterisk (see the log for the AMI error)")
    elif not stream_current:
        reasons.append("the event stream is not current: Asterisk does not answer its polls")
    elif not user_events:
        reasons.append(USER_EVENTS_MISSING.format(seconds=round(unheard_for), user=user))
    if privileges:
        reasons.append(privileges)
    if rule_problems:
        reasons.append(
            f"{counted(rule_problems, 'problem')} in the rules or plugins (callrouter check)"
        )
    if not serving:
        reasons.append(
            "not serving: callrouter is starting"
            if phase == "starting"
            else "not serving: starting or stopping"
        )
    return Health(
        ready=not reasons,
        reasons=tuple(reasons),
        checks=checks,
        rules=rules,
        phase=phase,
        detail=waiting_for if phase == "starting" else "",
        role=role,
        live_instance=live_instance if role == "standby" else "",
        warnings=(privilege_warning,) if privilege_warning else (),
        warnings_brief=(REPORTING_BRIEF.format(user=user),) if privilege_warning else (),
    )
