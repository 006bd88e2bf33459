"""``callrouter check --asterisk``: what Asterisk itself says of the setup.

``callrouter check`` alone never connects; a setup can pass it and still route
nothing: a manager user that cannot ``Redirect``, Asterisk sending the user no
``UserEvent`` (no ``read = user``, an ``eventfilter``, ``[general]
disabledevents``), a dialplan pasted with a step between the request and its
``Wait``. Each of those fails open, so calls still ring somewhere and nobody
notices. This logs in as ``callrouter run`` would and asks, without touching a
call: the version, the ``Redirect`` permission and, where the configuration
dials, the ``Originate`` one (router/privileges.py: Asterisk checks the class
before the headers; ``callrouter run`` asks after each login), the loaded inbound
context (``ShowDialPlan``, router/dialplan_lint.py), the places the rules
redirect to (a typo there hangs the call up), and its own
``UserEvent`` coming back, listening meanwhile for a live callrouter's
heartbeat.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from router.ami.client import AJAMClient, session_lifetime_problem
from router.ami.numbers import ascii_float
from router.api.settings import is_loopback
from router.dialplan import shown
from router.dialplan_audit import UNREADABLE, audit_dialplan
from router.dialplan_lint import Finding
from router.errors import AMIConnectionError, AMIError, AMIPrivilegeError
from router.liveguard import (
    CHECK_EVENT,
    FRESH,
    LIVE_EVENT,
    Claim,
    heartbeat_age,
    heartbeat_key,
    signed,
    signed_before_at,
)
from router.logsafe import escape_controls
from router.privileges import DIALPLAN, FILTER, REDIRECT, REPORTING, Probe, refused
from router.recordings.naming import SYSTEMNAME_MAX, check_call_id

if TYPE_CHECKING:
    from router.ami.connect import AMIClient
    from router.ami.message import Event
    from router.ami.protocol import ActionResult
    from router.rules.ruleset import RedirectTarget

__all__ = ["PROBE_EVENT", "check_asterisk"]

#: The ``UserEvent`` the check sends itself (no rule or plugin reads it).
PROBE_EVENT = CHECK_EVENT


async def check_asterisk(
    client: AMIClient,
    *,
    targets: Sequence[RedirectTarget] = (),
    built: int = 0,
    listen: float = 2.5,
    recording: bool = False,
    forwarding: bool = False,
    probes: Sequence[Probe] = (REDIRECT,),
    filtering: bool = False,
    suggested_flags: str = "",
    compared: str | None = None,
) -> list[Finding]:
    """Log in with ``client`` and check; ``targets`` are the rules' redirect
    locations to look up (``built`` more are made per call and cannot be);
    ``listen`` seconds for events (more than the live-instance heartbeat's
    2 s, so a live router shows); ``recording``: router.toml has ``[recordings]``,
    so ``[callrouter-record]`` is checked too; ``forwarding``: router.toml has
    ``[api]`` (which sets forwarding), so ``[callrouter-dial]``'s internal
    forward is checked too; ``probes``: the actions whose
    write class is asked for (router/privileges.py, ``needed``); ``filtering``:
    ``[asterisk] events = "auto"``, so whether callrouter may send ``Filter``
    (or only manager.conf's eventfilter lines filter event names) is told;
    ``suggested_flags`` (`` --username X``) go into the ``callrouter check``
    commands the findings suggest, so that they read the same user's section;
    ``compared``: the manager.conf this check compared above (``--manager-conf-file``),
    which the filtering advice then names instead of suggesting that command."""
    where = f"{client.settings.url} as {client.settings.username!r}"
    if isinstance(client, AJAMClient):
        client.warn_lifetime = False  # told below as a finding, not also on stderr
    try:
        await client.login()
    except AMIError as exc:
        # The client's own words name the url, the user and what went
        # unanswered or wrong (router.ami.tcp, router.ami.client): said once.
        return [Finding("fail", str(exc))]
    # Each refusal below is told as a finding (CoreSettings's needs none: the
    # version is a courtesy), not also as the client's WARNING on stderr.
    told = (*probes, REPORTING)
    for action in ("CoreSettings", *(p.action for p in told), "ShowDialPlan", "UserEvent"):
        client.refusal_reported(action)
    # A peer that stops answering after the login ends the check at its first
    # unanswered question, instead of one wait (and a login again) per step.
    asking = _Answering(client)
    core = await _core_settings(asking)
    findings = [Finding("ok", f"logged in to {where}{_version(core)}")]
    if asking.stopped():  # _core_settings keeps its errors to itself: said here
        return [*findings, _stopped(where, f"{asking.silence}; ")]
    if recording and (named := _systemname_problem(core)) is not None:
        findings.append(named)
    advice = _plain_transport(
        client.settings.url, client.settings.auth, verify=client.settings.verify
    )
    if advice is not None:
        findings.append(advice)
    if isinstance(client, AJAMClient):
        # Busy polling, or polls cut short, still route every call: ADVICE
        # (a FAIL is what stops routing: the exit code a deploy script reads).
        lifetime = session_lifetime_problem(client.session_ttl, client.settings.waitevent_timeout)
        if lifetime is not None:
            findings.append(Finding("advice", lifetime))
    for probe in probes:
        findings.append(await _allowed(asking, probe))
        if asking.stopped():
            return [*findings, _stopped(where)]
    # write = reporting: without it the audit below could only say the
    # dialplan could not be read, an ADVICE, and the check passed a user
    # whose reconcile after every gap is refused.
    reporting = await _allowed(asking, REPORTING)
    if asking.stopped():
        return [*findings, _stopped(where)]
    if reporting.level != "ok":
        findings.append(reporting)
    else:
        # CoreStatus is reporting or system, ShowDialPlan config or reporting: a
        # user with write = system alone passed above and only got the audit's
        # advice below, which named no class it lacked.
        dialplan = await _dialplan_allowed(asking)
        if asking.stopped():
            return [*findings, _stopped(where)]
        if dialplan is not None:
            findings.append(dialplan)
    if filtering:
        findings.append(await _filtering(asking, suggested_flags, compared))
        if asking.stopped():
            return [*findings, _stopped(where)]
    audit = await audit_dialplan(asking, targets, built, recording=recording, forwarding=forwarding)
    said = any(f.level == "fail" and f"refuses {DIALPLAN.action}" in f.text for f in findings)
    # The FAIL above named the class missing: the audit's advice says it again.
    findings.extend(f for f in audit.findings if not (said and f.text.startswith(UNREADABLE)))
    if asking.stopped():
        return [*findings, _stopped(where)]
    findings.extend(await _user_events(asking, listen, suggested_flags))
    return findings


async def _asterisk_now(client: _Answering, event: Event, offset: list[float]) -> float:
    """Asterisk's clock as ``event`` arrives: its ``Timestamp`` (Asterisk raised
    it just now), else this host's clock and the difference a ``Ping``'s answer
    shows (asked once, kept in ``offset``; none if it cannot be asked)."""
    stamp = ascii_float(event.get("Timestamp"))
    if stamp is not None:
        return stamp
    if not offset:
        sent = time.time()
        try:
            answer = await client.action("Ping", check=False)
        except AMIError:
            offset.append(0.0)
        else:
            value = ascii_float(answer.response.get("Timestamp"))
            offset.append(0.0 if value is None else value - (sent + time.time()) / 2)
    return time.time() + offset[0]


class _Answering:
    """The client as the check's steps use it, until Asterisk stops answering.

    Each question waits as long as the login did (``callrouter check``: 5 s,
    router/commands/_connect.py; a real Asterisk answers these in
    milliseconds). The first action that gets no answer (a timeout, a
    connection found dead) is kept in :attr:`silence`; every later one fails
    at once with it, rather than each step waiting ``request_timeout`` (over
    TCP: the keepalive's ``ping_interval``, then a login again) in turn: 45 s
    and more against a peer that answered the Login and nothing else.
    """

    def __init__(self, client: AMIClient) -> None:
        self.settings = client.settings
        self.silence: AMIConnectionError | None = None
        self._client = client
        self._wait = client.settings.login_wait()[0]

    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> ActionResult:
        if self.silence is not None:
            raise AMIConnectionError(str(self.silence))
        try:
            return await self._client.action(name, params, check=check, timeout=self._wait)
        except AMIConnectionError as exc:
            self.silence = exc
            raise

    async def wait_event(self, timeout: int = 20) -> list[Event]:
        if self.silence is not None:
            raise AMIConnectionError(str(self.silence))
        try:
            return await self._client.wait_event(timeout=timeout)
        except AMIConnectionError as exc:
            self.silence = exc
            raise

    def refusal_reported(self, name: str) -> None:
        self._client.refusal_reported(name)

    def stopped(self) -> bool:
        """Whether an action went unanswered (then :attr:`silence` says how)."""
        return self.silence is not None


def _stopped(where: str, why: str = "") -> Finding:
    return Finding(
        "fail",
        f"{where} stopped answering after the login: {why}the checks after that were not run "
        "(a connection gone half-open, a firewall or proxy in between, or an Asterisk too "
        "busy to answer)",
    )


async def _core_settings(client: _Answering) -> Mapping[str, str]:
    """``CoreSettings``'s answer, or nothing: what it tells (the version, the
    system name) is a courtesy, and the user may lack reporting."""
    try:
        settings = await client.action("CoreSettings", check=False)
    except AMIError:
        return {}
    return {key: settings.response.get(key) or "" for key in ("AsteriskVersion", "SystemName")}


def _version(core: Mapping[str, str]) -> str:
    version = core.get("AsteriskVersion") or ""
    return f" (Asterisk {shown(version)[1:-1]})" if version else ""


def _systemname_problem(core: Mapping[str, str]) -> Finding | None:
    """A FAIL when Asterisk's ``systemname`` (asterisk.conf) makes Linkedids
    no recording can be named after (router/recordings/naming.py): with a
    space or a letter outside ASCII in it, every call's recording failed, one
    error per call, and nothing before said why (issue 16)."""
    name = core.get("SystemName") or ""
    if not name:
        return None
    try:
        check_call_id(f"{name}-1733050000.42")
    except ValueError:
        longer = (
            f"{len(name)} characters, over {SYSTEMNAME_MAX}; " if len(name) > SYSTEMNAME_MAX else ""
        )
        return Finding(
            "fail",
            f"Asterisk's systemname {shown(name)} (asterisk.conf [options]) begins every "
            "Linkedid, and no recording can be named after such a Linkedid: no call would be "
            f"recorded ({longer}use at most {SYSTEMNAME_MAX} letters, digits, '_', '-' and "
            "single dots; docs/recordings.md)",
        )
    return None


def _took(user: str) -> str:
    """Where to see the classes Asterisk took, for a class refused that the
    write line seems to have: Asterisk does not strip the items, so ``write =
    call, user`` gives ``call`` alone (seen on 22.10.1)."""
    return (
        f"; asterisk -rx 'manager show user {user}' shows the classes Asterisk took "
        "(a class after a comma and a space is none: write them without spaces)"
    )


def _add(cls: str, line: str, user: str) -> str:
    """What to change, and where, for a class Asterisk refuses: "give it
    write = reporting" read as a line to write, and the user lost the
    classes it had (``write = call`` among them)."""
    return (
        f"add {cls} to the {line} line of manager.conf [{user}] (beside the classes "
        "there), then asterisk -rx 'manager reload'"
    )


async def _allowed(client: _Answering, probe: Probe) -> Finding:
    try:
        if await refused(client, probe):
            return Finding(
                "fail",
                f"Asterisk refuses this user {probe.action}: "
                f"{_add(probe.write_class, 'write', client.settings.username)} "
                f"(docs/asterisk.md, the manager user); without it "
                f"{probe.lost}{_took(client.settings.username)}",
            )
    except AMIError as exc:
        return Finding("fail", f"{probe.action} could not be tried: {exc}")
    return Finding("ok", f"{probe.action} allowed (write = {probe.write_class})")


async def _dialplan_allowed(client: _Answering) -> Finding | None:
    """A FAIL naming what is missing when Asterisk allows the user ``CoreStatus``
    (asked first) but refuses ``ShowDialPlan``; None when it allows it too, or
    when it cannot be tried (the audit then says why the dialplan was not read)."""
    from router.ami.catalog import load_catalog

    try:
        if not await refused(client, DIALPLAN):
            return None
    except AMIError:
        return None
    catalog = load_catalog()
    needs = " or ".join(catalog.action(DIALPLAN.action).write_classes)
    status = " or ".join(catalog.action(REPORTING.action).write_classes)
    user = client.settings.username
    return Finding(
        "fail",
        f"Asterisk allows this user {REPORTING.action} (write = {status}) but refuses "
        f"{DIALPLAN.action} (write = {needs}): it has system, which the least-privilege "
        f"user has not, and no {DIALPLAN.write_class}; "
        f"{_add(DIALPLAN.write_class, 'write', user)} (not config, which lets a leaked "
        "secret reconfigure the PBX; docs/asterisk.md, The manager user for callrouter); "
        f"without it {DIALPLAN.lost}{_took(user)}",
    )


async def _filtering(
    client: _Answering, suggested_flags: str = "", compared: str | None = None
) -> Finding:
    """Whether callrouter filters event names itself. Without ``write =
    system`` (the recommended user) only the eventfilter lines of the user's
    manager.conf section do, which this session cannot read: they are
    compared offline (``--manager-conf-file``), since lines written for an
    earlier set of rules keep back events the rules now need."""
    client.refusal_reported(FILTER.action)  # told here, not as a client WARNING
    try:
        denied = await refused(client, FILTER)
    except AMIError as exc:
        return Finding("advice", f"Filter could not be tried: {exc}")
    if not denied:
        return Finding(
            "ok", "Filter allowed (write = system): callrouter filters event names itself"
        )
    user = client.settings.username
    said = (
        f"Asterisk refuses this user Filter (write = system), so callrouter does not "
        f"filter event names itself: the class mask applies, and the eventfilter lines "
        f"of manager.conf [{user}] if it has any; lines written for earlier rules or "
        "plugins can keep back events they now need, so compare them: "
    )
    if compared is not None:
        # The user ran the very command the advice would suggest: say where its
        # answer is rather than tell them to run it again.
        return Finding(
            "advice",
            f"{said}the manager.conf lines above are that comparison, of {compared} "
            "(docs/asterisk.md, Event filtering)",
        )
    return Finding(
        "advice",
        f"{said}callrouter check --manager-conf-file /etc/asterisk/manager.conf"
        f"{suggested_flags} (the manager.conf of Asterisk's configuration directory, "
        "which asterisk -rx 'core show settings' names; docs/asterisk.md, Event filtering)",
    )


async def _user_events(
    client: _Answering, listen: float, suggested_flags: str = ""
) -> list[Finding]:
    token = secrets.token_hex(6)
    sent = time.monotonic()
    try:
        await client.action("UserEvent", {"UserEvent": PROBE_EVENT, "Token": token})
    except AMIPrivilegeError:
        return [
            Finding(
                "fail",
                "Asterisk refuses this user UserEvent: "
                f"{_add('user', 'write', client.settings.username)} (the "
                "live-instance heartbeat needs it; docs/operations.md); until then this "
                "check cannot see whether the routing requests, UserEvents, reach this "
                "user (read = user) nor whether a callrouter is live on this Asterisk"
                + _took(client.settings.username),
            )
        ]
    except AMIError as exc:
        return [Finding("fail", f"UserEvent could not be sent: {exc}")]
    heard: float | None = None
    stamped = True
    live: dict[str, Claim] = {}
    #: Claims not signed with this config's key (another secret, or forged).
    foreign: dict[str, Claim] = {}
    #: Signed claims whose beat was sent more than FRESH s from now on
    #: Asterisk's clock (a beat recorded and replayed): no live router, as
    #: ``run`` ignores them; with the age, or None for a beat with no time.
    stale: dict[str, tuple[Claim, float | None]] = {}
    offset: list[float] = []  # Asterisk's clock minus this host's, when asked
    #: Claims of a callrouter with this key but of a version before ``At``.
    earlier: dict[str, Claim] = {}
    key = heartbeat_key(client.settings.secret)
    deadline = sent + listen
    while (left := deadline - time.monotonic()) > 0:
        try:
            events = await client.wait_event(timeout=max(1, round(left)))
        except AMIError as exc:
            return [Finding("fail", f"events could not be read: {exc}")]
        for event in events:
            if event.name != "UserEvent":
                continue
            name = event.get("UserEvent")
            if name == PROBE_EVENT and event.get("Token") == token and heard is None:
                heard = time.monotonic() - sent
                stamped = bool(event.get("Timestamp"))
            elif name == LIVE_EVENT and (event.get("State") or "") != "leaving":
                claim = Claim.from_heartbeat(event)
                if claim is not None:
                    sure = signed(event, key)
                    if sure:
                        age = heartbeat_age(event, await _asterisk_now(client, event, offset))
                        if age is None or not -FRESH <= age <= FRESH:
                            if len(stale) < 8:
                                stale[claim.instance] = (claim, age)
                            continue
                        live[claim.instance] = claim
                    elif len(earlier) < 8 and signed_before_at(event, key):
                        earlier[claim.instance] = claim
                    elif len(foreign) < 8:
                        foreign[claim.instance] = claim
    findings = []
    if heard is None:
        findings.append(
            Finding(
                "fail",
                f"Asterisk sends this user no UserEvent (its own did not come back in "
                f"{listen:g} s), so no routing request can reach callrouter: "
                f"{_add('user', 'read', client.settings.username)}, and check its "
                "eventfilter lines "
                f"(callrouter check --manager-conf{suggested_flags}) and that [general] "
                "disabledevents in manager.conf does not name UserEvent",
            )
        )
    else:
        findings.append(
            Finding(
                "ok", f"UserEvents reach this user (its own came back in {heard * 1000:.1f} ms)"
            )
        )
    if not stamped:
        findings.append(
            Finding(
                "fail",
                "Asterisk's events carry no Timestamp: set timestampevents = yes in "
                "manager.conf [general], then manager reload; without it callrouter "
                "cannot tell how old a routing request is, and after a stall it may "
                "redirect a call that has already taken its default route",
            )
        )
    for claim in sorted(live.values(), key=lambda c: (c.since, c.instance)):
        findings.append(Finding("ok", f"a callrouter is live on this Asterisk: {claim.describe()}"))
    if heard is not None and not live:
        findings.append(Finding("ok", "no callrouter is live on this Asterisk now"))
    for claim, age in sorted(stale.values(), key=lambda s: (s[0].since, s[0].instance)):
        if claim.instance in live:
            continue  # a fresh beat of the same instance came too
        if age is None:
            when = "with no time"
        elif age > 0:
            when = f"sent {age:.0f} s ago"
        else:
            when = f"dated {-age:.0f} s ahead"
        findings.append(
            Finding(
                "advice",
                f"a stale CallRouterLive heartbeat was not counted as a live callrouter "
                f"({escape_controls(claim.describe())}): {when} on Asterisk's clock, more "
                f"than {FRESH:g} s from now, as a running callrouter ignores it: a beat "
                "recorded and replayed by a manager user, or a host clock far off "
                "Asterisk's (keep the clocks in step: NTP); docs/operations.md",
            )
        )
    for claim in sorted(earlier.values(), key=lambda c: (c.since, c.instance)):
        findings.append(
            Finding(
                "advice",
                f"a callrouter of an earlier version is live on this Asterisk "
                f"({escape_controls(claim.describe())}): its heartbeat has no At, so "
                "this version and it do not notice each other and both would route "
                "every call; stop it before starting this one, and upgrade every "
                "instance on this Asterisk together (docs/operations.md, Upgrading)",
            )
        )
    for claim in sorted(foreign.values(), key=lambda c: (c.since, c.instance)):
        findings.append(
            Finding(
                "advice",
                f"a CallRouterLive heartbeat not signed with this config's key "
                f"({escape_controls(claim.describe())}): a callrouter run with another "
                "[asterisk] secret, which a live instance cannot tell from a forged "
                "one and so ignores (both would route every call), or a UserEvent "
                "forged by a manager user; docs/operations.md",
            )
        )
    return findings


def _plain_transport(url: str, auth: str, *, verify: bool | str = True) -> Finding | None:
    """Advice when the secret crosses a network unencrypted: plain ``tcp://`` or
    ``http://`` to another host proves callrouter to whatever answers there,
    never that peer to callrouter; and so does ``tls://`` or ``https://``
    with ``verify = false`` (``--insecure``): encrypted to whoever answers."""
    parts = urlsplit(url)
    if is_loopback(parts.hostname or ""):
        return None
    if parts.scheme in ("tls", "https") and verify is False:
        conf = "http.conf" if parts.scheme == "https" else "manager.conf"
        return Finding(
            "advice",
            f"{parts.scheme}:// to {parts.hostname} with verify = false (or --insecure): "
            "the certificate is not checked, so whatever answers there is taken for "
            "Asterisk and is sent the secret, and events can be forged on the way; give "
            f'the CA that signed {conf}\'s tlscertfile as verify = "/path/ca.pem" (a '
            "self-signed certificate is its own CA) (docs/security.md, Hardening the "
            "Asterisk manager user)",
        )
    if parts.scheme not in ("tcp", "http"):
        return None
    if parts.scheme == "tcp":
        sent = (
            "an MD5 of the secret and a challenge the peer chooses, against which a "
            "short secret can be guessed offline"
            if auth == "md5"
            else 'the secret itself (auth = "plain")'
        )
        instead = "tls:// (AMI over TLS, certificate verified)"
    else:
        sent = "the secret and then the session cookie, readable on the way"
        instead = "https:// (certificate verified)"
    return Finding(
        "advice",
        f"{parts.scheme}:// to {parts.hostname}, not this host: whatever answers there "
        f"is taken for Asterisk and is sent {sent}, and events can be forged on the "
        f"way; use {instead}, or run callrouter on the PBX over loopback "
        "(docs/security.md, Hardening the Asterisk manager user)",
    )
