"""Carries out a decision's actions, one kind at a time, and reports each outcome.

The executor is a loop over action kinds: a built-in kind runs its executor
from ``router/builtin/actions.py`` (declared and executed in one place, as a
plugin's would be), any other kind goes to the plugin that registered it
(``callrouter_execute``). It takes the AMI facade and the plugins, never the
engine.

An AMI ``Redirect`` answering ``Success`` only means Asterisk accepted it; the
call has moved when its channel shows a ``Newexten`` in the target context.
The redirect executor therefore waits (bounded) for that event, which the
engine feeds to :meth:`Executor.observe`, and reports ``confirmed`` or
``unconfirmed`` (:class:`Confirmations`). A channel that hung up meanwhile
(``Channel does not exist``) is an outcome, not an error: callers hang up, and
that is no fault of ours.

Before anything is sent, every location (``context``, ``exten``) of the
decision is held to the :class:`~router.dialplan.LocationPolicy`. Rule
evaluation already rejected rules whose templates produced a bad one; this is
the last line, so that no path (a plugin-built decision, a future action) can
hand ``Dial`` a ``&``. A Redirect to an extension the target context lacks,
as the engine's last look at the dialplan read it (:attr:`Executor.dialplan`)
and Asterisk then confirms, is refused too: Asterisk accepts it and hangs
the call up, so a 1C card naming an extension the dialplan has no step for
(``Ivanov``, ``1``) dropped the call. Rule evaluation rejects such a rule
from the same listing first (the next rule decides); this refusal is for a
decision that listing did not judge (it was read while the rules ran), and
asks Asterisk because it costs more. One refused location fails the
decision as a whole: the call then takes the dialplan's default route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from router import eager
from router.ami.message import Event
from router.ami.protocol import ActionResult
from router.dialplan import KnownContext, LocationPolicy, location_problem, missing_target
from router.dialplan_listing import DialplanListing, quiet
from router.errors import (
    AMIActionError,
    AMIConnectionError,
    AMIError,
    AMIPrivilegeError,
    PluginError,
)
from router.logsafe import peer_text

if TYPE_CHECKING:  # pragma: no cover
    from router.calls import Call
    from router.hookspecs import EngineAPI
    from router.rules.decision import Action

__all__ = [
    "ActionOutcome",
    "ActionRun",
    "Confirmations",
    "ExecuteAction",
    "Executor",
    "ExecutorAMI",
    "PluginActions",
    "PluginHooks",
    "event_timestamp",
]

log = logging.getLogger("router.executor")

#: How long a Redirect may take to show up as Newexten before we call it unconfirmed.
CONFIRM_TIMEOUT = 3.0
#: Seconds Asterisk has to confirm that a Redirect's target is missing.
ASK_TIMEOUT = 0.5
#: Kinds whose answer the next action need not wait for over a client that
#: has Asterisk run actions in the order written (:meth:`Executor.run`).
_AHEAD_KINDS = frozenset({"setvar"})
#: The action kinds whose ``context``/``exten`` reach the dialplan.
_LOCATION_KINDS = frozenset({"redirect", "originate", "ami"})


class ExecutorAMI(Protocol):
    """The AMI the executor sends with (the engine's client, or any facade)."""

    async def send(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        action_id: str | None = None,
        validate: bool = True,
        check: bool = True,
    ) -> ActionResult: ...


class PluginActions(Protocol):
    """What the executor asks of the plugins: run a kind one of them
    registered (None when none does), pass a ``notify`` on."""

    async def execute(self, action: Action, call: Call) -> Any: ...

    async def notify(self, target: str, params: Mapping[str, str], call: Call | None) -> None: ...


class _Hooks(Protocol):
    async def execute(self, action: Action, call: Call, engine: EngineAPI) -> Any: ...

    async def notify(self, target: str, params: Mapping[str, str], call: Call | None) -> None: ...


@dataclass(frozen=True, slots=True)
class PluginHooks:
    """:class:`PluginActions` over the plugin facade: ``api`` is what a
    plugin's ``callrouter_execute`` is handed as ``engine``."""

    hooks: _Hooks
    api: EngineAPI

    async def execute(self, action: Action, call: Call) -> Any:
        return await self.hooks.execute(action, call, self.api)

    async def notify(self, target: str, params: Mapping[str, str], call: Call | None) -> None:
        await self.hooks.notify(target, params, call)


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
    #: The connection to Asterisk broke (or no answer came) before Asterisk
    #: answered: whether it acted is unknown (:meth:`Router._route` lets a
    #: reconcile route the call again if it still waits).
    lost: bool = False
    #: The action's parameters left out, with why (:attr:`Action.left_out`:
    #: a ``setvar`` variable whose template gave nothing).
    left_out: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "status": self.status,
            "detail": self.detail,
            "ms": round(self.ms, 2),
        }
        if self.left_out:
            data["left_out"] = dict(self.left_out)
        return data


class Confirmations:
    """Redirects waiting for their ``Newexten``, and how many each channel got.

    The engine feeds every event to :meth:`observe`; a redirect executor
    calls :meth:`expect` with the target context before it sends, then :meth:`wait`.
    """

    def __init__(self, timeout: float = CONFIRM_TIMEOUT) -> None:
        self.timeout = timeout
        self._waiters: dict[str, list[tuple[str, asyncio.Future[Event]]]] = {}
        #: Redirects sent per channel, so tests and logs can prove "never twice".
        self.redirects: dict[str, int] = {}

    def observe(self, event: Event) -> None:
        """Resolves the waiters of the event's channel on Newexten in their target."""
        if not self._waiters or event.name != "Newexten":
            return
        channel = event.get("Channel") or ""
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        context = event.get("Context") or ""
        left = []
        for target, future in waiters:
            if target == context and not future.done():
                future.set_result(event)
            elif not future.done():
                left.append((target, future))
        # Resolved at once, not when the waiting task next runs: the channel's
        # next steps in the target are then not parsed for it (event narrowing).
        if left:
            self._waiters[channel] = left
        else:
            del self._waiters[channel]

    @property
    def waiting(self) -> bool:
        """Whether any Redirect waits for its ``Newexten``."""
        return bool(self._waiters)

    def awaits(self, channel: str) -> bool:
        """Whether a Redirect of ``channel`` waits for its ``Newexten`` (the
        engine's narrowing of the events it parses)."""
        return channel in self._waiters

    def expect(self, channel: str, context: str) -> asyncio.Future[Event]:
        """Wait for ``channel`` to enter ``context``, counted as one redirect;
        :meth:`wait` (or :meth:`drop`) the future."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append((context, future))
        self.redirects[channel] = self.redirects.get(channel, 0) + 1
        return future

    async def wait(self, channel: str, future: asyncio.Future[Event]) -> Event | None:
        """The confirming event, or None when none came within the timeout."""
        try:
            if not future.done():  # the Newexten may have come with the answer
                # One bare timer that fails the future, not a timeout scope on
                # the task (wait_for's shield and waiter, or asyncio.timeout's
                # cancel and uncancel): one per routed call. The future is ours
                # alone, so failing it touches nothing else.
                timer = asyncio.get_running_loop().call_later(self.timeout, _expire, future)
                try:
                    await future
                finally:
                    timer.cancel()
            return future.result()
        except TimeoutError:
            return None
        finally:
            self.drop(channel, future)

    def drop(self, channel: str, future: asyncio.Future[Event]) -> None:
        waiters = self._waiters.get(channel)
        if waiters is None:
            return
        left = [w for w in waiters if w[1] is not future]
        if left:
            self._waiters[channel] = left
        else:
            del self._waiters[channel]

    def forget(self, channel: str) -> None:
        """The channel hung up: drop its redirect count."""
        self.redirects.pop(channel, None)


def _expire(future: asyncio.Future[Event]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


@dataclass(slots=True)
class ActionRun:
    """One action being carried out: what a built-in kind's executor works with."""

    kind: str
    #: The action's rendered parameters (a copy: the executor may take keys out).
    params: dict[str, str]
    #: The call it is for; None for schedule rules.
    call: Call | None
    #: The routed channel (``redirect``, ``setvar`` and ``hangup`` act on it).
    channel: str | None
    ami: ExecutorAMI
    plugins: PluginActions
    confirmations: Confirmations


#: A built-in kind's executor (router/builtin/actions.py ``EXECUTE``).
ExecuteAction = Callable[[ActionRun], Awaitable["ActionOutcome"]]


class Executor:
    """Runs actions in order; one instance per engine."""

    def __init__(
        self,
        ami: ExecutorAMI,
        plugins: PluginActions,
        *,
        kinds: Mapping[str, ExecuteAction],
        confirm_timeout: float = CONFIRM_TIMEOUT,
        locations: LocationPolicy | None = None,
    ) -> None:
        self._ami = ami
        self._plugins = plugins
        self._kinds = dict(kinds)
        self._locations = locations or LocationPolicy()
        self.confirmations = Confirmations(confirm_timeout)
        #: The contexts rules redirect to, as last read from Asterisk (the
        #: engine's dialplan audit, at start and after each reload: a
        #: :class:`~router.dialplan_listing.DialplanListing`); empty until
        #: then, and a context not read is not judged.
        self.dialplan: Mapping[str, KnownContext] = {}

    @property
    def redirects(self) -> dict[str, int]:
        """Redirects sent per channel, so tests and logs can prove "never twice"."""
        return self.confirmations.redirects

    def observe(self, event: Event) -> None:
        """Feed every event; resolves Redirect waiters on Newexten in their target."""
        self.confirmations.observe(event)

    def forget(self, channel: str) -> None:
        """The channel hung up: drop its Redirect count."""
        self.confirmations.forget(channel)

    # -- execution -------------------------------------------------------------

    async def run(
        self, actions: Sequence[Action], call: Call | None, channel: str | None
    ) -> list[ActionOutcome]:
        """Execute in order; a failed action does not stop the ones after it,
        except that nothing follows a channel that is gone.

        Over a client that has Asterisk run its actions in the order written
        (``actions_in_order``: one TCP session, which Asterisk reads and runs
        one action at a time), a ``setvar`` with actions after it is not
        waited for: the next action (the Redirect) is written right behind
        its Setvars, and Asterisk still sets the variables first. The call
        then waits one round trip less. Over AJAM each action is an HTTP
        request of its own, which Asterisk may run in any order: each waits.
        """
        refused = self._refused(actions, await self._missing(actions))
        if refused is not None:
            return refused
        in_order = getattr(self._ami, "actions_in_order", False) is True
        done: list[ActionOutcome | None] = [None] * len(actions)
        ahead: list[asyncio.Task[None]] = []
        try:
            for index, action in enumerate(actions):
                if in_order and action.kind in _AHEAD_KINDS and index + 1 < len(actions):
                    task, _ = eager.start(
                        self._into(done, index, action, call, channel), name=f"{action.kind} ahead"
                    )
                    if task is not None:
                        ahead.append(task)
                    elif _gone(done[index]):
                        break
                    continue
                await self._into(done, index, action, call, channel)
                if _gone(done[index]):
                    break
        except BaseException:
            for task in ahead:
                task.cancel()
            raise
        if ahead:
            await asyncio.gather(*ahead)
        return [outcome for outcome in done if outcome is not None]

    async def _into(
        self,
        done: list[ActionOutcome | None],
        index: int,
        action: Action,
        call: Call | None,
        channel: str | None,
    ) -> None:
        """Run one action and put its outcome at ``done[index]``; never raises
        (but for cancellation)."""
        started = time.perf_counter()
        try:
            outcome = await self._one(action, call, channel)
        except AMIPrivilegeError as exc:
            # "Permission denied" alone does not say what to fix: name the class.
            outcome = ActionOutcome(action.kind, "failed", str(exc))
        except AMIActionError as exc:
            text = exc.response.get("Message") or str(exc)
            # Asterisk says a channel is gone as "Channel does not exist: X"
            # (Redirect) or "No such channel" (Setvar, Hangup, Getvar).
            gone = "does not exist" in text or text.startswith("No such channel")
            status = "channel-gone" if gone else "failed"
            # Asterisk's own text, as it came: a peer's 64 KB line with ESC
            # and bidi overrides went into every decision line and trace.
            outcome = ActionOutcome(action.kind, status, peer_text(text))
        except (AMIError, PluginError, OSError, TimeoutError) as exc:
            # PluginError: already logged with the plugin's name by the facade.
            outcome = ActionOutcome(action.kind, "failed", str(exc))
            outcome.lost = isinstance(exc, AMIConnectionError)
        except Exception as exc:  # a plugin executor's bug must not kill routing
            log.exception("action %s failed", action.kind)
            outcome = ActionOutcome(action.kind, "failed", repr(exc))
        outcome.ms = (time.perf_counter() - started) * 1000
        outcome.params = dict(action.params)
        outcome.left_out = dict(action.left_out)
        done[index] = outcome

    def _refused(
        self, actions: Sequence[Action], missing: Mapping[int, str]
    ) -> list[ActionOutcome] | None:
        """Outcomes for a decision holding a refused location, or None if all are safe."""
        problems = [
            location_problem(a.params, self._locations) or missing.get(i)
            if a.kind in _LOCATION_KINDS
            else None
            for i, a in enumerate(actions)
        ]
        if not any(problems):
            return None
        outcomes: list[ActionOutcome] = []
        for action, problem in zip(actions, problems, strict=True):
            if problem is not None:
                log.warning("action %s refused: %s", action.kind, problem)
                outcome = ActionOutcome(action.kind, "failed", problem)
            else:
                outcome = ActionOutcome(
                    action.kind, "skipped", "not sent: another action of the decision was refused"
                )
            outcome.params = dict(action.params)
            outcome.left_out = dict(action.left_out)
            outcomes.append(outcome)
        return outcomes

    async def _missing(self, actions: Sequence[Action]) -> dict[int, str]:
        """Why each Redirect's target is surely not in the dialplan, by index.

        The last listing read says so first (no request on the common path);
        Asterisk then confirms it (``ShowDialPlan`` of that one extension,
        bounded), so a listing older than the latest ``dialplan reload``
        never refuses an extension added since. No answer: not refused.
        """
        found: dict[int, str] = {}
        listing = self.dialplan
        if not listing:
            return found
        read = quiet(listing)  # it asks Asterisk itself, below
        for index, action in enumerate(actions):
            if action.kind != "redirect":
                continue
            problem = missing_target(action.params, read)
            if problem is None:
                continue
            context = str(action.params.get("context", ""))
            exten = str(action.params.get("exten", "s"))
            present = await self.presence(context, exten)
            if present is False:
                found[index] = problem
            elif present and isinstance(listing, DialplanListing):
                listing.confirmed(context, exten)
        return found

    async def presence(self, context: str, exten: str) -> bool | None:
        """Whether Asterisk has a step for ``exten`` in ``context``: True, False
        (surely not), or None when it does not answer within ``ASK_TIMEOUT``."""
        # A bare timer, not asyncio.timeout: a decision's first steps may run
        # before it has a task of its own (router/eager.py).
        asked = asyncio.ensure_future(
            self._ami.send("ShowDialPlan", {"Context": context, "Extension": exten}, check=False)
        )
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            asked.cancel()

        timer = asyncio.get_running_loop().call_later(ASK_TIMEOUT, expire)
        try:
            result = await asked
        except asyncio.CancelledError:
            if not expired:
                raise
            return None
        except (AMIError, OSError, TimeoutError):
            return None
        finally:
            timer.cancel()
        if not result.ok:
            return False if "did not find" in (result.response.message or "").lower() else None
        if not result.is_list:
            return None  # an answer that is no listing says nothing
        if any((item.get("Priority") or "").isdigit() for item in result.items):
            return True
        # A listing without a numbered step (a hint alone runs nothing), unless
        # it is short: an item skipped for a line over the parser's bound may
        # be the step, and the Redirect was refused for it (issue 16).
        return None if result.unread_items else False

    async def _one(self, action: Action, call: Call | None, channel: str | None) -> ActionOutcome:
        kind = action.kind
        execute = self._kinds.get(kind)
        if execute is not None:
            return await execute(
                ActionRun(
                    kind,
                    dict(action.params),
                    call,
                    channel,
                    self._ami,
                    self._plugins,
                    self.confirmations,
                )
            )
        if call is None:
            return ActionOutcome(kind, "no-executor", "plugin actions need a call")
        result = await self._plugins.execute(action, call)
        if result is None:
            return ActionOutcome(kind, "no-executor", "no plugin executes this action")
        return ActionOutcome(kind, "ok", str(result))


def _gone(outcome: ActionOutcome | None) -> bool:
    return outcome is not None and outcome.status == "channel-gone"


def event_timestamp(event: Event) -> float | None:
    """Asterisk's clock on ``event`` (:attr:`Event.timestamp`: ASCII, finite)."""
    return event.timestamp
