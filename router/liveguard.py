"""One live router per Asterisk: a second live instance notices and stands by.

Two live routers on one PBX both redirect every call, and the second
Redirect restarts the Dial. A manual ``callrouter run`` next to the systemd
unit is an easy mistake, so live instances find each other through Asterisk
itself, with nothing but what the documented manager user may do:

- every ``interval`` seconds a live instance sends ``UserEvent(CallRouterLive)``
  (``write = user``) carrying its claim: a random instance id and ``Since``,
  Asterisk's own clock when it went live, to the microsecond (a manual run
  started within a second of the service must still be the younger one);
  every session with
  ``read = user`` sees it, the sender included;
- the claim with the smaller ``(Since, Instance)`` is the older one and
  keeps routing; the other stands by, deciding and logging as in shadow mode.
  Both compare the same two values, so they always agree, and no host clock
  enters it (clock skew between hosts changes nothing);
- an instance that stops sends ``State: leaving``, so the one standing by
  takes over at once; one that dies stops beating, and after three missed
  beats the other takes over, and routes the calls still waiting that arrived
  meanwhile (``on_takeover``: the engine's reconcile, trigger ``takeover``; a
  call the dead one redirected is no longer waiting). One that left is still
  finishing its own Redirects, and is not reconciled after;
- a newcomer asks (``Probe: yes``) and the others answer at once, and until
  ``settle`` seconds have passed since it asked (at start, after an event
  stream gap) its decisions wait rather than act: a call arriving right then is
  not redirected by two instances;
- an instance whose process stalled (``kill -STOP``, a paused VM, a swapped-out
  host) sent no beat for as long as the others wait for one, so they may have
  taken over and routed the calls it has not read yet. When it runs again
  (:meth:`LiveGuard.check_in`, at its next beat or decision, whichever is
  first: a tick, or the probe after the gap the stall made of its event
  stream) it rejoins as a newcomer: its claim is dated now, so it is the
  younger one, and it settles again before acting. Without this the resumed
  instance, still the older, redirected the calls queued for it that the
  other had routed meanwhile (seen on the sandbox), and took its own
  heartbeat, queued unread, for a session that gets no ``UserEvent``.

Heartbeats are signed. Whoever may send the ``UserEvent`` action (another
manager user, an API token with ``ami:UserEvent``, a rule's ``ami`` action) can
write ``UserEvent: CallRouterLive`` with any claim, and a claim dated 1970
would make every real instance stand by: no call routed, each left to its
default route. So each beat carries ``Beat``, a number that only grows, and
``Sign``, an HMAC over the claim keyed from the manager secret
(:func:`heartbeat_key`): instances run with the same secret know each other,
a sender without it is ignored (logged at most once a minute), and a beat
seen before, replayed, changes nothing. Whoever reads ``UserEvent`` can also
record beats and replay them to an instance that has seen none (the service
restarted: a new instance id), numbered above each other; so each beat carries
``At``, when it was sent on Asterisk's clock as its host knows it (its own clock
and the difference the engine measured), and another instance's beat more than
``_FRESH`` seconds from this one's reading of that clock is stale. The order of
the claims still takes no host clock; only the freshness does, corrected.

The sender's own heartbeat coming back is also the one proof that Asterisk
sends this session ``UserEvent`` at all, which the routing requests are too: a
user without ``read = user``, an ``eventfilter`` or a ``[general]
disabledevents`` that leaves it out, and no call is ever routed while every
other check is green. An instance that sent beats for three intervals and
heard none of them says so (:attr:`LiveGuard.deaf`, a readiness check).

This module only keeps the state (no I/O): the engine sends :meth:`LiveGuard.beat`
and feeds the heartbeats it receives to :meth:`LiveGuard.observe`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from router.ami.message import Event
from router.ami.numbers import ascii_float
from router.logsafe import escape_controls

__all__ = [
    "CHECK_EVENT",
    "FRESH",
    "LIVE_EVENT",
    "Claim",
    "LiveGuard",
    "heartbeat_age",
    "heartbeat_key",
    "signed",
    "signed_before_at",
]

log = logging.getLogger("router.liveguard")

#: The ``UserEvent`` name of the heartbeat.
LIVE_EVENT = "CallRouterLive"
#: The ``UserEvent`` name of ``callrouter check --asterisk``'s probe: like the
#: heartbeats, for callrouter's own sessions, never a rule's or a plugin's.
CHECK_EVENT = "CallRouterCheck"
#: Missed beats after which a silent instance counts as gone.
_MISSED_BEATS = 3
#: Intervals without a beat of its own after which an instance takes itself for
#: gone in the others' eyes (a stall): half an interval short of their
#: patience, the margin for a beat's way through Asterisk.
_STALL_BEATS = _MISSED_BEATS - 0.5
#: Bounds on the interval another instance announces (a hostile value cannot
#: keep a dead instance alive for long, nor expire a live one at once).
_INTERVAL_BOUNDS = (0.5, 30.0)
#: The heartbeat fields the signature covers, in this order.
_SIGNED = (
    "UserEvent",
    "Instance",
    "Since",
    "Host",
    "Pid",
    "Interval",
    "State",
    "Probe",
    "Beat",
    "At",
)
#: Instances whose last beat number is remembered (replays of older beats are refused).
_REMEMBERED = 64
#: Seconds between two warnings about heartbeats that are not signed with our key.
_WARN_EVERY = 60.0
#: How far behind the newest a beat may arrive without being taken for a
#: replay (two beats sent at once, the answer to a probe and the interval's).
_OVERTAKEN = 4
#: Seconds a beat of another instance counts, from when it was sent (its
#: ``At``, Asterisk's clock as its sender knows it) to when it is read (the
#: same clock as this one knows it): a beat recorded and replayed later, to a
#: successor that has seen none of its beats, is stale. Longer than the way
#: of a beat through a busy Asterisk and the two clock estimates' error.
_FRESH = 30.0
#: The same for ``callrouter check --asterisk``, which applies the rule too.
FRESH = _FRESH


def heartbeat_key(secret: str) -> bytes:
    """The heartbeat key of instances run with this manager secret.

    Derived rather than the secret itself: the HMAC never reveals the secret,
    and the key is good for nothing but heartbeats.
    """
    return hmac.new(
        secret.encode("utf-8"), b"callrouter live-instance heartbeat v1", hashlib.sha256
    ).digest()


def _mac(key: bytes, text: str) -> str | None:
    """The HMAC of ``text`` (UTF-8); None when it is no valid text (a lone
    surrogate): such a field is refused, never signed. Encoded with "replace",
    a lone surrogate signed as "?" did, so the two signed the same."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


def _signature(key: bytes, fields: Mapping[str, str | None]) -> str | None:
    return _mac(key, "\n".join(f"{name}={fields.get(name) or ''}" for name in _SIGNED))


def _valid_text(text: str) -> str:
    """``text`` as valid UTF-8 text: a name the OS gave with bytes that are no
    UTF-8 (``socket.gethostname()`` escapes them as lone surrogates) has them
    replaced, so the beat is sent and signed rather than refused."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _same(sign: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(
        sign.encode("ascii", "replace"), expected.encode()
    )


def signed(event: Event, key: bytes) -> bool:
    """Whether a ``CallRouterLive`` event was signed with ``key``; never one
    with a field that is not valid text."""
    sign = event.get("Sign") or ""
    fields = {name: event.get(name) for name in _SIGNED}
    return _same(sign, _signature(key, fields))


def heartbeat_age(event: Event, asterisk_now: float) -> float | None:
    """Seconds since a heartbeat was sent (its ``At``) at ``asterisk_now`` on
    Asterisk's clock; None when it carries no time. Fresh within ``FRESH``
    either way; the instances ignore any other (a beat recorded and replayed)."""
    sent = ascii_float(event.get("At"))
    return None if sent is None else asterisk_now - sent


def signed_before_at(event: Event, key: bytes) -> bool:
    """Whether a ``CallRouterLive`` event with no ``At`` was signed with
    ``key`` as a callrouter of a version before ``At`` signs (the fields
    without it): an instance with the same secret, not yet upgraded. Its
    beat is still refused (nothing dates it: a replay could not be told),
    but the warning says what to do instead of blaming the secret."""
    if event.get("At") is not None:
        return False
    sign = event.get("Sign") or ""
    text = "\n".join(f"{name}={event.get(name) or ''}" for name in _SIGNED if name != "At")
    return _same(sign, _mac(key, text))


@dataclass(frozen=True, slots=True)
class Claim:
    """Who a live instance is, and since when (on Asterisk's clock)."""

    instance: str
    #: Asterisk's clock (Unix seconds) when the instance went live.
    since: float
    host: str = ""
    pid: int = 0

    @classmethod
    def from_heartbeat(cls, event: Event) -> Claim | None:
        """The claim a ``CallRouterLive`` heartbeat carries; None without an
        instance id or a ``Since`` (another instance's word: bounded)."""
        instance = (event.get("Instance") or "")[:64]
        since = ascii_float(event.get("Since"))
        if not instance or since is None:
            return None
        pid = ascii_float(event.get("Pid"))
        return cls(
            instance, since, (event.get("Host") or "")[:64], int(pid) if pid is not None else 0
        )

    def older_than(self, other: Claim) -> bool:
        return (self.since, self.instance) < (other.since, other.instance)

    def describe(self) -> str:
        try:
            # Milliseconds: two instances started in the same second must read apart.
            when = datetime.fromtimestamp(self.since, UTC).isoformat(" ", "milliseconds")
            when = when.removesuffix("+00:00") + " UTC"
        except (OverflowError, OSError, ValueError):  # another instance's word: any number
            when = f"{self.since:.0f} (not a date)"
        return (
            f"instance {self.instance} on host {self.host or '?'}, pid {self.pid}, "
            f"live since {when}"
        )


@dataclass(slots=True)
class _Peer:
    claim: Claim
    seen: float
    interval: float


@dataclass(slots=True)
class _Undated:
    """Beats of a known instance dropped for their ``At`` since its last one
    heard: when the first and the last came (the guard's clock), and the last
    one's age on Asterisk's clock as this host knows it."""

    first: float
    last: float
    age: float


class LiveGuard:
    """The live-instance state of one engine: acting, settling or standing by."""

    def __init__(
        self,
        me: Claim,
        *,
        key: bytes = b"",
        interval: float = 2.0,
        settle: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        asterisk_clock: Callable[[], float] = time.time,
        on_takeover: Callable[[Claim], None] | None = None,
    ) -> None:
        self.me = me
        #: Told when this instance takes over from one that went silent (it
        #: died, or its host or network did): the engine then routes the calls
        #: still waiting that arrived while it stood by. Not told when the other
        #: one left (it finishes its own Redirects), nor after a stall of this one.
        self._on_takeover = on_takeover
        #: Instances whose beats stopped (expired, not ``leaving``) while this one
        #: ran, since the last :meth:`update`.
        self._went_silent: set[str] = set()
        #: Signs this instance's beats and proves the others' (:func:`heartbeat_key`).
        self.key = key
        self.interval = interval
        self.settle = settle
        self._clock = clock
        #: Asterisk's wall clock as this host knows it (its own clock and the
        #: measured difference): the beats' ``At``, and what they are read against.
        self.asterisk_clock = asterisk_clock
        self._peers: dict[str, _Peer] = {}
        self._settled_at = clock() + settle
        #: The guard's clock when ``me`` was claimed (its ``since`` moves by the
        #: time passed since then when a stall makes it rejoin).
        self._claimed_at = clock()
        #: When the last beat was made: a stall is a long time without one.
        self._beat_at = clock()
        self._leaving = False
        #: Whether the last evaluation let this instance act (to log changes once).
        self._was_blocked_by: Claim | None = None
        #: When the first beat sent since this instance last heard its own was
        #: sent; None while every beat sent has come back (or none was sent).
        self._unheard_since: float | None = None
        #: The number of the last beat sent (each beat's is one more).
        self._beat = 0
        #: Instance -> the number of its newest beat seen: an older or the
        #: same one again is a replay (bounded: the oldest entries go).
        self._seen_beats: dict[str, int] = {}
        #: Instance -> its beats dropped for their ``At`` since its last beat
        #: heard (bounded as ``_seen_beats``), and those already said.
        self._undated: dict[str, _Undated] = {}
        self._undated_said: set[str] = set()
        #: Heartbeats refused (not signed with our key, or replayed).
        self.refused = 0
        self._warned_at: float | None = None

    # -- what the engine sends -----------------------------------------------------

    def beat(self, *, probe: bool = False) -> dict[str, str]:
        """Headers of the heartbeat ``UserEvent`` (after ``Action``/``UserEvent``)."""
        # A stall first, whoever asks for the beat: the probe after the stream
        # gap the stall caused (AJAM's poll outlived its timeout meanwhile) comes
        # before any tick or decision, and the beat must carry the new claim.
        self.check_in()
        state = "leaving" if self._leaving else ("standby" if self.blocker() else "live")
        fields = {
            "UserEvent": LIVE_EVENT,
            "Instance": self.me.instance,
            "Since": f"{self.me.since:.6f}".rstrip("0").rstrip("."),
            "Host": _valid_text(self.me.host)[:64],
            "Pid": str(self.me.pid),
            "Interval": f"{self.interval:g}",
            "State": state,
        }
        if probe:
            fields["Probe"] = "yes"
        self._beat_at = self._clock()
        self._beat += 1
        fields["Beat"] = str(self._beat)
        fields["At"] = f"{self.asterisk_clock():.3f}"
        sign = _signature(self.key, fields)
        assert sign is not None  # every field is valid text (Host made so above)
        fields["Sign"] = sign
        return fields

    def probe(self) -> dict[str, str]:
        """Start (again) listening for others: at start and after a stream gap,
        heartbeats may have been missed. Decisions wait ``settle`` seconds."""
        self._settled_at = self._clock() + self.settle
        # Echoes of beats sent before a gap may be lost with the stream, which
        # says nothing of the session's filters: count from this beat on;
        # unless the session was deaf already, which the gap does not explain.
        if not self.deaf:
            self._unheard_since = None
        return self.beat(probe=True)

    def leave(self) -> dict[str, str]:
        """The last heartbeat: the one standing by takes over now."""
        self._leaving = True
        return self.beat()

    @property
    def leaving(self) -> bool:
        return self._leaving

    def sent(self) -> None:
        """A heartbeat went out (Asterisk accepted the ``UserEvent`` action).

        Over TCP Asterisk writes the ``UserEvent`` before the action's
        ``Response``: the echo of this beat may be in hand already, and then it
        starts no streak (it did, and a standby whose tick ran late read its
        own session as deaf and let a takeover pass)."""
        if self._unheard_since is None and self._seen_beats.get(self.me.instance, -1) < self._beat:
            self._unheard_since = self._clock()

    def heard_from_now(self) -> None:
        """Asterisk answers the beats again after answering none for a while (it
        was stopped or hung): the echoes are counted from the beat it answered."""
        self._unheard_since = self._clock()

    @property
    def unheard_for(self) -> float:
        """Seconds since the first beat sent that has not come back (0: none)."""
        since = self._unheard_since
        return 0.0 if since is None else self._clock() - since

    @property
    def deaf(self) -> bool:
        """Beats sent for three intervals and none heard back: Asterisk does not
        send this session ``UserEvent``, so routing requests cannot arrive."""
        return self.unheard_for > _MISSED_BEATS * self.interval

    # -- stalls ------------------------------------------------------------------------

    def _stalled_for(self) -> float:
        """Seconds without a beat of this instance, when that is a stall (else 0)."""
        silent = self._clock() - self._beat_at
        return silent if silent > _STALL_BEATS * self.interval and not self._leaving else 0.0

    def check_in(self) -> float:
        """The engine runs again: before its heartbeat tick and before a decision acts.

        After a stall as long as the others wait for a beat (the process was
        stopped or starved), another instance may have taken over and routed
        calls whose events this one has not read yet; their requests are
        queued for it, still within their wait. So it rejoins as a newcomer:
        its claim is dated now (on Asterisk's clock: the old one plus the time
        passed), which makes it younger than one that took over, and it
        settles again before acting. The others already known are taken as
        seen now (their beats are queued unread too), and so is its own
        heartbeat. Returns the stall's length, 0 when there was none.
        """
        stalled = self._stalled_for()
        if not stalled:
            return 0.0
        now = self._clock()
        before = self.me
        self.me = replace(before, since=before.since + (now - self._claimed_at))
        self._claimed_at = self._beat_at = now
        self._settled_at = now + self.settle
        self._unheard_since = None
        for peer in self._peers.values():
            peer.seen = now
        log.warning(
            "this callrouter sent no heartbeat for %.1f s (the process was stopped, or "
            "its host paused or starved it), as long as another live instance waits "
            "before taking over: it rejoins as a newcomer (%s) and stands by if "
            "another one routes calls now",
            stalled,
            self.me.describe(),
        )
        return stalled

    # -- what the engine receives --------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Take one ``CallRouterLive`` event; True when it asks for an answer now."""
        instance = (event.get("Instance") or "")[:64]
        if not self._authentic(event, instance):
            return False
        if instance == self.me.instance:
            self._unheard_since = None  # our own beat: UserEvents reach this session
            return False
        if not instance:
            return False
        if (event.get("State") or "") == "leaving":
            peer = self._peers.pop(instance, None)
            if peer is not None:
                log.warning("the other live callrouter (%s) stopped", peer.claim.describe())
            self.update()
            return False
        claim = Claim.from_heartbeat(event)
        if claim is None:
            return False
        interval = ascii_float(event.get("Interval")) or self.interval
        interval = min(max(interval, _INTERVAL_BOUNDS[0]), _INTERVAL_BOUNDS[1])
        known = self._peers.get(instance)
        self._peers[instance] = _Peer(claim, self._clock(), interval)
        if known is None and not claim.older_than(self.me):
            log.warning(
                "another live callrouter started on this Asterisk (%s); it stands "
                "by while this one (%s) routes calls",
                claim.describe(),
                self.me.describe(),
            )
        self.update()
        return (event.get("Probe") or "") == "yes"

    def _authentic(self, event: Event, instance: str) -> bool:
        """Signed with our key, sent lately, and newer than the last beat of its instance."""
        if not signed(event, self.key):
            if signed_before_at(event, self.key):
                self._refuse(
                    "a CallRouterLive heartbeat of a callrouter version before the "
                    "heartbeat's At was ignored (%s): the two versions do not notice "
                    "each other, so both route calls; upgrade every instance on this "
                    "Asterisk together (docs/operations.md, Two instances on one Asterisk)",
                    event,
                )
                return False
            self._refuse(
                "a CallRouterLive heartbeat not signed with this router's key was "
                "ignored (%s): either another callrouter run with a different "
                "[asterisk] secret, which must then share this one's to be noticed, "
                "or a UserEvent forged by a manager user, an API token or a rule",
                event,
            )
            return False
        number = ascii_float(event.get("Beat"))
        if number is None or not instance:
            return False
        if instance != self.me.instance:
            # (Our own beats prove only that UserEvents reach this session, and
            # come late after an Asterisk stall: their numbers are enough.)
            age = heartbeat_age(event, self.asterisk_clock())
            if age is None or not -_FRESH <= age <= _FRESH:
                last = self._seen_beats.get(instance)
                if age is not None and last is not None and number > last:
                    self._dated_off(instance, age)
                if age is not None and age > 0 and last is not None and number > last:
                    # An instance heard before, a beat not: Asterisk stalled
                    # (stopped, hung) with it queued, and delivers it now. Old
                    # news, as a replay would be, but nothing to warn of.
                    self._seen_beats[instance] = int(number)
                    log.debug("a CallRouterLive heartbeat %.0f s late was ignored", age)
                    return False
                if age is None:
                    when = "with no time"
                elif age > 0:
                    when = f"sent {age:.0f} s ago"
                else:
                    when = f"dated {-age:.0f} s ahead"
                self._refuse(
                    "a stale CallRouterLive heartbeat was ignored (%s): "
                    f"{when} on Asterisk's clock, more than {_FRESH:g} s from now: "
                    "a beat recorded and replayed, or a host clock set since "
                    "callrouter measured Asterisk's",
                    event,
                )
                return False
        last = self._seen_beats.pop(instance, None)
        if last is not None and number <= last:
            self._seen_beats[instance] = last
            # (A beat a later one overtook, over AJAM's parallel requests, is
            # stale: dropped without a word. So is one of this instance's own,
            # however late: after Asterisk was stopped, its queued actions run
            # in any order, and an own claim never makes this one stand by.)
            if not last - _OVERTAKEN < number < last and instance != self.me.instance:
                self._refuse("a replayed CallRouterLive heartbeat was ignored (%s)", event)
            return False
        self._seen_beats[instance] = int(number)
        while len(self._seen_beats) > _REMEMBERED:
            del self._seen_beats[next(iter(self._seen_beats))]
        self._undated.pop(instance, None)
        self._undated_said.discard(instance)
        return True

    def _dated_off(self, instance: str, age: float) -> None:
        """A new beat of an instance heard before is dropped for its ``At``."""
        now = self._clock()
        undated = self._undated.get(instance)
        if undated is None:
            self._undated[instance] = _Undated(now, now, age)
            while len(self._undated) > _REMEMBERED:
                gone = next(iter(self._undated))
                del self._undated[gone]
                # Forgotten with it: the said set stays as bounded (issue 16).
                self._undated_said.discard(gone)
        else:
            undated.last, undated.age = now, age

    def _say_clocks_disagree(self, key: str, peer: _Peer, patience: float) -> None:
        """Before taking over from a peer whose beats keep coming, each dropped
        for its ``At``: its host's reading of Asterisk's clock went stale (its
        clock was set and its Ping to Asterisk fails, so the difference it
        measured is the old one), or this one's did. Dropped at DEBUG as late
        beats Asterisk held up, they let this one take over with no line
        naming the clock. Once, until a beat of it is heard again."""
        undated = self._undated.get(key)
        if undated is None or key in self._undated_said or undated.first < peer.seen:
            return
        now = self._clock()
        # Beats that keep coming, one an interval, not a burst Asterisk held
        # up while it was stopped (those came at once, and stop).
        if undated.last - undated.first < peer.interval or now - undated.last > 2 * patience:
            return
        self._undated_said.add(key)
        when = (
            f"sent {undated.age:.0f} s ago"
            if undated.age > 0
            else f"dated {-undated.age:.0f} s ahead"
        )
        log.warning(
            "the heartbeats of the other live callrouter (%s) keep coming but each is "
            "%s on Asterisk's clock as this host knows it, more than %g s from now, "
            "so they were ignored for %.0f s: the two hosts' clocks disagree (one was "
            "set since callrouter measured Asterisk's, and its Ping to Asterisk fails "
            "to measure it again); this one takes over as from a dead one, and both "
            "may route calls: set both hosts' clocks (NTP) and check their Ping to "
            "Asterisk",
            peer.claim.describe(),
            when,
            _FRESH,
            now - peer.seen,
        )

    def _refuse(self, message: str, event: Event) -> None:
        self.refused += 1
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            claim = Claim.from_heartbeat(event)
            said = claim.describe() if claim is not None else "no claim"
            log.warning(message, escape_controls(said))

    # -- the verdict -----------------------------------------------------------------

    def blocker(self) -> Claim | None:
        """The oldest live instance older than this one, if any is still beating."""
        now = self._clock()
        for key, peer in list(self._peers.items()):
            patience = _MISSED_BEATS * max(peer.interval, self.interval)
            if now - peer.seen > patience:
                del self._peers[key]
                if not self._stalled_for():
                    self._say_clocks_disagree(key, peer, patience)
                    # (After a stall of this one, the other's beats are queued
                    # unread: it may well be routing. check_in says so.)
                    self._went_silent.add(key)
        older = [p.claim for p in self._peers.values() if p.claim.older_than(self.me)]
        return min(older, key=lambda c: (c.since, c.instance)) if older else None

    def update(self) -> Claim | None:
        """Re-evaluate (after a heartbeat, and every tick): log a change once."""
        blocker = self.blocker()
        previous = self._was_blocked_by
        if blocker is not None and previous is None:
            log.warning(
                "another live callrouter is routing calls on this Asterisk (%s): "
                "this one (%s) acts as in shadow mode until it is gone",
                blocker.describe(),
                self.me.describe(),
            )
        elif blocker is None and previous is not None:
            log.warning(
                "the other live callrouter (%s) is gone: this one routes calls again",
                previous.describe(),
            )
        self._was_blocked_by = blocker
        silent, self._went_silent = self._went_silent, set()
        if (
            blocker is None
            and previous is not None
            and previous.instance in silent
            and not self._leaving
            and not self._stalled_for()
            and self._on_takeover is not None
        ):
            self._on_takeover(previous)
        return blocker

    @property
    def settled(self) -> bool:
        return self._clock() >= self._settled_at

    @property
    def acting(self) -> bool:
        """May this instance act right now (settled, and no older live instance)?

        Still true while leaving: the decisions in flight are finished and
        confirmed; new calls are refused by the engine itself.
        """
        return self.settled and self.update() is None

    def now(self) -> float:
        """The guard's clock (what :meth:`wait_settled`'s deadline is read on)."""
        return self._clock()

    async def wait_settled(self, deadline: float) -> None:
        """Wait until settled or ``deadline`` (the guard's clock), whichever is first.

        A settle started during the wait (a stall noticed, then the event stream
        gap it made: hsched49's trial, kill -STOP for 85 s) moves the end: waited
        for too. Waking at the first end, a timed rule's run made up after the
        stall found this instance settling again, not acting, and sent nothing."""
        while True:
            until = self._settled_at
            delay = min(until, deadline) - self._clock()
            if delay <= 0:
                return
            await asyncio.sleep(delay)
            if self._settled_at == until:  # no settle began meanwhile
                return
