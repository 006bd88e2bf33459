"""DND, forwarding and presence: ``/api/v1/extensions/{ext}/forwarding``, ``/api/v1/presence``.

Setting is two globals per extension (:mod:`router.api.forwarding_state`)
that the shipped ``[callrouter-dial]`` honours; the file in ``state_dir`` is
the truth, re-applied when the API starts, after every stream gap and on
Asterisk's ``FullyBooted``/``Reload``. Presence joins what Asterisk knows of
each extension (its hint's state, from ``ExtensionStateList``, and the
device's, from ``DeviceStateList``) with these settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from router.ami.message import Event
from router.api import forwarding_state
from router.api.auth import authorize
from router.api.context import read_json
from router.api.dialing import Dialing
from router.api.errors import ApiError, refuse_unknown_fields
from router.api.forwarding_state import Forwarding, ForwardingState, is_forwardable_extension
from router.callerid import cut
from router.errors import AMIError
from router.wording import counted

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.stream import StreamGap
    from router.api.context import ApiContext
    from router.calls import Call

__all__ = ["OPENAPI", "ForwardingService", "routes"]

log = logging.getLogger("router.api.forwarding")

#: Asterisk events after which the globals may be gone: a restart, a reload.
_REAPPLY_EVENTS: Final = frozenset({"FullyBooted", "Reload"})
_BODY_KEYS: Final = ("dnd", "forward_to")
#: Longest device state the presence answer tells, in characters: Asterisk's
#: longest is ``UNAVAILABLE``. One device's state is told for every extension
#: whose hint names it: a hostile AMI peer's 60 KB state was repeated in each
#: item, a 500 KB list answered with 180 MB (issue 16).
_MAX_DEVICE_STATE: Final = 32


class ForwardingService:
    """The settings, their copy in Asterisk, and who is told of a change."""

    def __init__(self, ctx: ApiContext, dialing: Dialing) -> None:
        self.ctx = ctx
        self.dialing = dialing
        self.state = ForwardingState(ctx.engine.state_dir)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()
        #: A re-apply was asked for while one ran: it runs once more after it.
        self._again = False
        #: Stored forwards found looping at a re-apply, told once each.
        self._loops_told: set[str] = set()
        #: Per AMI list (``ExtensionStateList``...) cut in a row: the answers
        #: without its closing event since the last whole one (:meth:`whole`).
        self._cut: dict[str, int] = {}
        self.stop_watching = ctx.engine.watch(self._observe)

    def _observe(self, item: Event | StreamGap, call: Call | None) -> None:
        if not isinstance(item, Event) or item.name in _REAPPLY_EVENTS:
            self.spawn_reapply()

    def spawn_reapply(self) -> None:
        """Set every stored extension's globals again, in the background.

        One re-apply runs at a time, and a request while it runs makes it run
        once more when done (the globals may have been lost after it read
        them): an Asterisk whose events overflow callrouter's queue makes a
        stream gap of every poll, each ``module reload`` sends a ``Reload``,
        and a hostile AMI peer as many as it likes; each spawned a re-apply of
        its own, three ``Setvar`` for each of up to 10,000 extensions.
        """
        if any(not task.done() for task in self._tasks):
            self._again = True
            return
        task = asyncio.get_running_loop().create_task(self._reapply_while_asked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reapply_while_asked(self) -> None:
        self._again = True
        while self._again:  # each turn asked for during the one before
            self._again = False
            await self.reapply()

    async def reapply(self) -> int:
        """Every stored setting sent to Asterisk again; how many extensions made it."""
        done = 0
        async with self._lock:
            for extension, value in self.state:
                try:
                    await self._setvars(extension, value, internal=self._stored(extension, value))
                except (ApiError, AMIError, OSError) as exc:
                    log.warning("forwarding for %s not re-applied: %s", extension, exc)
                    continue
                done += 1
        if done:
            log.info("forwarding re-applied to Asterisk for %d extension(s)", done)
        return done

    def _stored(self, extension: str, value: Forwarding) -> bool:
        """Is a stored forward dialled as internal? Not when it loops: a file
        an earlier callrouter wrote (before internal forwards went through
        ``[callrouter-dial]`` and loops were refused) may hold 101 -> 101, which
        the new ``[callrouter-dial]`` would dial round and round (40 Local
        channels for one call on Asterisk 22.10.1); it keeps dialling
        through the outbound context, as then, and is named once."""
        if not self.internal(value):
            return False
        loop = self.loop(extension, value)
        if loop is None:
            self._loops_told.discard(extension)
            return True
        if extension not in self._loops_told:
            self._loops_told.add(extension)
            log.warning(
                "forwarding of %s in %s, stored by an earlier callrouter, loops (%s): it is "
                "dialled through the outbound context as before, not through "
                "[callrouter-dial]; clear it or forward it to a number outside the loop "
                "(PUT /api/v1/extensions/%s/forwarding)",
                extension,
                self.state.path,
                loop,
                extension,
            )
        return False

    def internal(self, value: Forwarding) -> bool:
        """Is the forward number an extension (under the number plan, as a transfer
        decides): dialled through ``[callrouter-dial]``, not the outbound context.
        Decided when the globals are set, so a setting stored before is right too."""
        return value.forward_to is not None and self.dialing.internal(value.forward_to)

    async def _setvars(
        self, extension: str, value: Forwarding, *, internal: bool | None = None
    ) -> None:
        internal = self.internal(value) if internal is None else internal
        for variable, text in ForwardingState.globals_for(
            extension, value, internal=internal
        ).items():
            # The catalog calls Value required; Asterisk takes an empty one as
            # "unset", which is what clearing needs.
            await self.ctx.send(
                "Setvar", {"Variable": variable, "Value": text}, validate=bool(text)
            )

    async def put(self, extension: str, value: Forwarding) -> None:
        """Asterisk first, then the file: a 503 leaves the stored setting as it was.

        The feed hears ``dnd`` when do-not-disturb changed and ``forwarding``
        when the forward number did, each with the whole setting.
        """
        async with self._lock:
            if self.state.full_for(extension, value):
                # Refused before Asterisk is told: its globals and the file agree.
                raise ApiError(
                    409,
                    f"at most {forwarding_state.MAX_EXTENSIONS} extensions carry DND or "
                    "forwarding at once: clear one (dnd false, forward_to null) "
                    "before setting another",
                )
            loop = self.loop(extension, value)
            if loop is not None:
                raise ApiError(400, loop, field="forward_to")
            before = self.state.get(extension)
            await self._setvars(extension, value)
            self.state.set(extension, value)
        feed = self.ctx.feed
        if feed is None:
            return
        data = {"extension": extension, **value.to_dict()}
        if before.dnd != value.dnd:
            feed.publish("dnd", extension, data)
        if before.forward_to != value.forward_to:
            feed.publish("forwarding", extension, data)

    def loop(self, extension: str, value: Forwarding) -> str | None:
        """Why forwarding ``extension`` as ``value`` would loop, or None.

        An internal forward is dialled through ``[callrouter-dial]``, where the
        target's own forwarding applies: 101 to itself, or to 102 while 102
        forwards (maybe through others) back to 101, would dial Local channels
        without end.
        """
        chain = [extension]
        target = value.forward_to
        # Each step adds an extension not seen yet: it ends within the stored ones.
        while target is not None and self.dialing.internal(target):
            if target in chain:
                if target == extension and len(chain) == 1:
                    return f"forward_to: {extension} cannot forward to itself (a loop)"
                path = " -> ".join([*chain, target])
                if target == extension:
                    return (
                        f"forward_to: {value.forward_to} forwards back to {extension} "
                        f"({path}): a loop"
                    )
                return f"forward_to: {value.forward_to} leads into a loop ({path})"
            chain.append(target)
            target = self.state.get(target).forward_to
        return None

    def whole(self, name: str, complete: bool, items: int) -> bool:
        """Whether the list answer of ``name`` came whole; a WARNING the first
        time it did not, none for the next ones until it comes whole again.

        The shipped AMI clients never hand one over cut (AJAM refuses a body
        without its closing event, TCP waits for it until the action's
        timeout: 503 either way), but the AMI interface a plugin's client
        implements says ``complete`` (issue 16). A 1C panel polls presence
        every few seconds: a WARNING per answer flooded the log with one
        line; ``callrouter_presence_incomplete_total`` counts them all."""
        if complete:
            cut = self._cut.pop(name, None)
            if cut is not None:
                log.info(
                    "presence: AMI %s answers whole again, after %s without its closing event",
                    name,
                    counted(cut, "answer"),
                )
            return True
        metrics = self.ctx.metrics
        if metrics is not None:
            metrics.presence_incomplete.labels(name).inc()
        cut = self._cut.get(name, 0)
        self._cut[name] = cut + 1
        if cut == 0:
            log.warning(
                "presence: AMI %s answered %s without its closing event: the answer "
                "says complete false (not said again until it answers whole; "
                "callrouter_presence_incomplete_total counts each)",
                name,
                counted(items, "item"),
            )
        else:
            log.debug("presence: AMI %s cut again (%d items)", name, items)
        return False

    def parse(self, body: Mapping[str, object], current: Forwarding) -> Forwarding:
        """The new setting from a PUT body; keys left out keep their value."""
        refuse_unknown_fields(body, _BODY_KEYS)
        dnd = body.get("dnd", current.dnd)
        if not isinstance(dnd, bool):
            raise ApiError(400, "dnd: expected true or false", field="dnd")
        if "forward_to" not in body:
            return Forwarding(dnd, current.forward_to, current.dial)
        raw = body["forward_to"]
        if raw is None or raw == "":
            return Forwarding(dnd)
        number = self.dialing.number(raw, "forward_to")
        return Forwarding(dnd, number.number, number.dial)


def _extension(request: Request) -> str:
    extension = str(request.path_params["ext"])
    if not is_forwardable_extension(extension):
        raise ApiError(
            400,
            f"ext: {extension[:40]!r} cannot carry forwarding: the shipped [callrouter-dial] "
            "dials only letters and digits (1 to 80)",
            field="ext",
        )
    return extension


def routes(ctx: ApiContext) -> list[BaseRoute]:
    service = ForwardingService(ctx, Dialing(ctx.engine.config, ctx.settings.dial_prefix))
    # The globals may have been lost while callrouter was down; outside a
    # running loop (a test building the app) the first gap re-applies them.
    with contextlib.suppress(RuntimeError):
        service.spawn_reapply()

    async def get_forwarding(request: Request) -> JSONResponse:
        extension = _extension(request)
        await authorize(request, "forwarding:read", extension)
        return JSONResponse({"extension": extension, **service.state.get(extension).to_dict()})

    async def put_forwarding(request: Request) -> JSONResponse:
        extension = _extension(request)
        await authorize(request, "forwarding:write", extension)
        body = await read_json(request, required=True)
        value = service.parse(body, service.state.get(extension))
        ctx.require_asterisk()
        await service.put(extension, value)
        return JSONResponse({"extension": extension, **value.to_dict()})

    async def presence(request: Request) -> JSONResponse:
        token = await authorize(request, "presence:read")
        ctx.require_asterisk()
        states, unread_states, states_whole = await _extension_states(service)
        devices, unread_devices, devices_whole = await _device_states(service)
        extensions = set(states) | {ext for ext, _ in service.state}
        items = []
        for extension in sorted(extensions):
            if not token.sees(extension):
                continue
            hint, status = states.get(extension, ("", "Unknown"))
            device = devices.get(hint.split("&")[0]) if hint else None
            items.append(
                {
                    "extension": extension,
                    "state": status,
                    "hint": hint or None,
                    "device_state": device,
                    **service.state.get(extension).to_dict(),
                }
            )
        # Items the two lists lack, each skipped for a line over the parser's
        # bound: an extension whose item it was shows as Unknown (issue 16).
        # A list whose closing event never came is partial: said, not passed
        # off as all of Asterisk's (its missing extensions are no news).
        return JSONResponse(
            {
                "extensions": items,
                "unread_items": unread_states + unread_devices,
                "complete": states_whole and devices_whole,
            }
        )

    return [
        Route(
            "/api/v1/extensions/{ext}/forwarding",
            get_forwarding,
            methods=["GET"],
            name="forwarding-get",
        ),
        Route(
            "/api/v1/extensions/{ext}/forwarding",
            put_forwarding,
            methods=["PUT"],
            name="forwarding-put",
        ),
        Route("/api/v1/presence", presence, methods=["GET"], name="presence"),
    ]


async def _extension_states(
    service: ForwardingService,
) -> tuple[dict[str, tuple[str, str]], int, bool]:
    """Extension -> (hint, state text) from ``ExtensionStateList`` (first context
    wins), the items the list lacks (``unread_items``), and whether it came whole."""
    result = await service.ctx.send("ExtensionStateList")
    states: dict[str, tuple[str, str]] = {}
    for item in result.items:
        exten = item.get("Exten") or ""
        if exten and exten not in states:
            states[exten] = (item.get("Hint") or "", item.get("StatusText") or "Unknown")
    whole = service.whole("ExtensionStateList", result.complete, len(result.items))
    return states, result.unread_items, whole


async def _device_states(service: ForwardingService) -> tuple[dict[str, str], int, bool]:
    """Device -> state (``PJSIP/101`` -> ``NOT_INUSE``, at most
    :data:`_MAX_DEVICE_STATE` characters) from ``DeviceStateList``, the items
    the list lacks (``unread_items``), and whether it came whole."""
    result = await service.ctx.send("DeviceStateList")
    devices = {
        item.get("Device") or "": cut(item.get("State") or "UNKNOWN", _MAX_DEVICE_STATE)
        for item in result.items
        if item.get("Device")
    }
    return (
        devices,
        result.unread_items,
        service.whole("DeviceStateList", result.complete, len(result.items)),
    )


_FORWARDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["extension", "dnd", "forward_to"],
    "properties": {
        "extension": {"type": "string"},
        "dnd": {"type": "boolean"},
        "forward_to": {"type": ["string", "null"], "description": "Normalized number, or null"},
    },
}
_EXT_PARAM: dict[str, Any] = {
    "name": "ext",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,80}$"},
}
_PROBLEM: dict[str, Any] = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

#: This module's part of ``/api/v1/openapi.json``.
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/extensions/{ext}/forwarding": {
            "get": {
                "operationId": "getForwarding",
                "summary": "Do-not-disturb and forwarding of one extension (forwarding:read)",
                "parameters": [_EXT_PARAM],
                "responses": {
                    "200": {
                        "description": "The setting",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Forwarding"}
                            }
                        },
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "429": _PROBLEM,
                },
            },
            "put": {
                "operationId": "setForwarding",
                "summary": "Set do-not-disturb and/or forwarding (forwarding:write)",
                "parameters": [_EXT_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "dnd": {"type": "boolean"},
                                    "forward_to": {"type": ["string", "null"]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The setting now in force",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Forwarding"}
                            }
                        },
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "409": _PROBLEM,
                    "413": _PROBLEM,
                    "429": _PROBLEM,
                    "503": _PROBLEM,
                },
            },
        },
        "/api/v1/presence": {
            "get": {
                "operationId": "getPresence",
                "summary": "Every extension the token sees: state, device, DND, forwarding "
                "(presence:read)",
                "responses": {
                    "200": {
                        "description": "Presence",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["extensions", "unread_items", "complete"],
                                    "properties": {
                                        "extensions": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Presence"},
                                        },
                                        "unread_items": {
                                            "type": "integer",
                                            "minimum": 0,
                                            "description": "Items the `ExtensionStateList` "
                                            "and `DeviceStateList` answers lack (left out by "
                                            "the parser, or counted by their closing events' "
                                            "`ListItems` beyond the items read): "
                                            "each skipped for a line over 64 KiB, which no "
                                            "Asterisk sends (a broken or hostile AMI peer). "
                                            "Not 0: an extension whose item was skipped "
                                            "shows `state` `Unknown` (and a device's "
                                            "`device_state` null)",
                                        },
                                        "complete": {
                                            "type": "boolean",
                                            "description": "Both lists' closing events "
                                            "came. False: a list was cut (an AMI client "
                                            "that hands over what it read); an extension "
                                            "missing from `extensions` is then no news: "
                                            "keep what you showed for it and ask again",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "409": _PROBLEM,
                    "429": _PROBLEM,
                    "503": _PROBLEM,
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Forwarding": _FORWARDING_SCHEMA,
            "Presence": {
                "type": "object",
                "required": ["extension", "state", "dnd", "forward_to"],
                "properties": {
                    "extension": {"type": "string"},
                    "state": {
                        "type": "string",
                        "description": "ExtensionStatus StatusText; `Unknown` also for an "
                        "extension with a DND or forwarding setting and no hint, or whose "
                        "list item was skipped (`unread_items` above 0)",
                    },
                    "hint": {"type": ["string", "null"]},
                    "device_state": {"type": ["string", "null"]},
                    "dnd": {"type": "boolean"},
                    "forward_to": {"type": ["string", "null"]},
                },
            },
        }
    },
}
