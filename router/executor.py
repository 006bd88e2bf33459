"""Carries out a decision's actions through AMI, and proves they took effect.

An AMI ``Redirect`` answering ``Success`` only means Asterisk accepted it; the
call has moved when its channel shows a ``Newexten`` in the target context.
The executor therefore waits (bounded) for that event, fed to it by the
engine, and reports ``confirmed`` or ``unconfirmed``. A channel that hung up
meanwhile (``Channel does not exist``) is an outcome, not an error: callers
hang up, and that is no fault of ours.

Before anything is sent, every location (``context``, ``exten``) of the
decision is held to the :class:`~router.dialplan.LocationPolicy`. Rule
evaluation already rejected rules whose templates produced a bad one; this is
the last line, so that no path (a plugin-built decision, a future action) can
hand ``Dial`` a ``&``. One refused location fails the decision as a whole:
the call then takes the dialplan's default route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from router.ami.message import Event
from router.ami.numbers import ascii_float
from router.ami.protocol import ActionResult
from router.dialplan import LocationPolicy, location_problem
from router.errors import (
    AMIActionError,
    AMIError,
    AMIPrivilegeError,
    AMIValidationError,
    PluginError,
)

if TYPE_CHECKING:  # pragma: no cover
    from router.calls import Call
    from router.rules.decision import Action

__all__ = ["ActionOutcome", "Executor", "ExecutorHost"]

log = logging.getLogger("router.executor")

#: How long a Redirect may take to show up as Newexten before we call it unconfirmed.
CONFIRM_TIMEOUT = 3.0
#: The action kinds whose ``context``/``exten`` reach the dialplan.
_LOCATION_KINDS = frozenset({"redirect", "originate", "ami"})


class _AMI(Protocol):
    async def send(self, name: str, params: Mapping[str, Any] | None = None, *,
                   action_id: str | None = None, validate: bool = True,
                   check: bool = True) -> ActionResult: ...


class ExecutorHost(Protocol):
    """What the executor needs from the engine: AMI and the plugin hooks."""

    @property
    def ami(self) -> _AMI: ...

    async def plugin_execute(self, action: Action, call: Call) -> Any: ...

    async def plugin_notify(self, target: str, params: Mapping[str, str],
                            call: Call | None) -> None: ...


@dataclass(slots=True)
class ActionOutcome:
    """What happened to one action: for the trace and the decision log line."""

    kind: str
    status: str  # ok | confirmed | unconfirmed | channel-gone | failed | no-executor | skipped
    detail: str = ""
    ms: float = 0.0
    params: dict[str, str] = field(default_factory=dict)
    #: Asterisk's ``Timestamp`` of the confirming event, for latency on its own clock.
    event_timestamp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "detail": self.detail,
                "ms": round(self.ms, 2)}


class Executor:
    """Runs actions in order; one instance per engine."""

    def __init__(self, host: ExecutorHost, *, confirm_timeout: float = CONFIRM_TIMEOUT,
                 locations: LocationPolicy | None = None) -> None:
        self._host = host
        self._confirm_timeout = confirm_timeout
        self._locations = locations or LocationPolicy()
        self._waiters: dict[str, list[tuple[str, asyncio.Future[Event]]]] = {}
        #: Redirects sent per channel, so tests and logs can prove "never twice".
        self.redirects: dict[str, int] = {}

    # -- confirmation ----------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Feed every event; resolves Redirect waiters on Newexten in their target."""
        if not self._waiters or event.name != "Newexten":
            return
        channel = event.get("Channel") or ""
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        context = event.get("Context") or ""
        for target, future in list(waiters):
            if target == context and not future.done():
                future.set_result(event)

    def _expect(self, channel: str, context: str) -> asyncio.Future[Event]:
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append((context, future))
        return future

    def _unexpect(self, channel: str, future: asyncio.Future[Event]) -> None:
        waiters = self._waiters.get(channel, [])
        self._waiters[channel] = [w for w in waiters if w[1] is not future]
        if not self._waiters[channel]:
            del self._waiters[channel]

    def forget(self, channel: str) -> None:
        """The channel hung up: drop its Redirect count."""
        self.redirects.pop(channel, None)

    # -- execution -------------------------------------------------------------

    async def run(self, actions: Sequence[Action], call: Call | None,
                  channel: str | None) -> list[ActionOutcome]:
        """Execute in order; a failed action does not stop the ones after it,
        except that nothing follows a channel that is gone."""
        refused = self._refused(actions)
        if refused is not None:
            return refused
        outcomes: list[ActionOutcome] = []
        for action in actions:
            started = time.perf_counter()
            try:
                outcome = await self._one(action, call, channel)
            except AMIPrivilegeError as exc:
                # "Permission denied" alone does not say what to fix: name the class.
                outcome = ActionOutcome(action.kind, "failed", str(exc))
            except AMIActionError as exc:
                text = exc.response.get("Message") or str(exc)
                status = "channel-gone" if "does not exist" in text else "failed"
                outcome = ActionOutcome(action.kind, status, text)
            except (AMIError, PluginError, OSError, TimeoutError) as exc:
                # PluginError: already logged with the plugin's name by the facade.
                outcome = ActionOutcome(action.kind, "failed", str(exc))
            except Exception as exc:  # a plugin executor's bug must not kill routing
                log.exception("action %s failed", action.kind)
                outcome = ActionOutcome(action.kind, "failed", repr(exc))
            outcome.ms = (time.perf_counter() - started) * 1000
            outcome.params = dict(action.params)
            outcomes.append(outcome)
            if outcome.status == "channel-gone":
                break
        return outcomes

    def _refused(self, actions: Sequence[Action]) -> list[ActionOutcome] | None:
        """Outcomes for a decision holding a refused location, or None if all are safe."""
        problems = [location_problem(a.params, self._locations)
                    if a.kind in _LOCATION_KINDS else None for a in actions]
        if not any(problems):
            return None
        outcomes: list[ActionOutcome] = []
        for action, problem in zip(actions, problems, strict=True):
            if problem is not None:
                log.warning("action %s refused: %s", action.kind, problem)
                outcome = ActionOutcome(action.kind, "failed", problem)
            else:
                outcome = ActionOutcome(action.kind, "skipped",
                                        "not sent: another action of the decision was refused")
            outcome.params = dict(action.params)
            outcomes.append(outcome)
        return outcomes

    async def _one(self, action: Action, call: Call | None, channel: str | None) -> ActionOutcome:
        params = dict(action.params)
        kind = action.kind
        ami = self._host.ami
        if kind == "redirect":
            return await self._redirect(params, channel)
        if kind == "setvar":
            for name, value in params.items():
                await ami.send("Setvar", {"Channel": channel, "Variable": name, "Value": value},
                               validate=False)
            return ActionOutcome(kind, "ok", ", ".join(params))
        if kind == "hangup":
            target = params.get("channel") or channel
            if not target:
                return ActionOutcome(kind, "failed", "no channel to hang up")
            await ami.send("Hangup", {"Channel": target, "Cause": params.get("cause")},
                           validate=False)
            return ActionOutcome(kind, "ok", target)
        if kind == "originate":
            headers = {_header(k): v for k, v in params.items()}
            headers.setdefault("Async", "true")
            await ami.send("Originate", headers)
            return ActionOutcome(kind, "ok", headers.get("Channel", ""))
        if kind == "ami":
            name = params.pop("action", "")
            if not name:
                raise AMIValidationError("ami action without 'action'")
            result = await ami.send(name, params)
            return ActionOutcome(kind, "ok", f"{name}: {result.response.message or 'Success'}")
        if kind == "notify":
            target = params.pop("plugin", "")
            await self._host.plugin_notify(target, params, call)
            return ActionOutcome(kind, "ok", target)
        if call is None:
            return ActionOutcome(kind, "no-executor", "plugin actions need a call")
        result = await self._host.plugin_execute(action, call)
        if result is None:
            return ActionOutcome(kind, "no-executor", "no plugin executes this action")
        return ActionOutcome(kind, "ok", str(result))

    async def _redirect(self, params: dict[str, str], channel: str | None) -> ActionOutcome:
        target = params.get("channel") or channel
        if not target:
            return ActionOutcome("redirect", "failed", "no channel to redirect")
        context = params["context"]
        exten = params.get("exten", "s")
        headers = {"Channel": target, "Context": context, "Exten": exten,
                   "Priority": params.get("priority", "1")}
        future = self._expect(target, context)
        try:
            self.redirects[target] = self.redirects.get(target, 0) + 1
            await self._host.ami.send("Redirect", headers, validate=False)
            try:
                await asyncio.wait_for(asyncio.shield(future), self._confirm_timeout)
            except TimeoutError:
                return ActionOutcome("redirect", "unconfirmed",
                                     f"{context},{exten}: no Newexten within "
                                     f"{self._confirm_timeout:.0f} s")
            confirmed = ActionOutcome("redirect", "confirmed", f"{context},{exten}")
            confirmed.event_timestamp = _timestamp(future.result())
            return confirmed
        finally:
            self._unexpect(target, future)


def _timestamp(event: Event) -> float | None:
    # ASCII and finite only: a "nan" would make total_ms NaN and the JSON
    # decision line invalid.
    return ascii_float(event.get("Timestamp"))


def _header(key: str) -> str:
    """Rule parameters are snake_case; AMI headers are CamelCase (caller_id -> CallerID)."""
    special = {"callerid": "CallerID", "caller_id": "CallerID", "async": "Async",
               "channelid": "ChannelId", "otherchannelid": "OtherChannelId"}
    low = key.lower()
    if low in special:
        return special[low]
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))
