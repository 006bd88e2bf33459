"""``POST /api/v1/ami/{action}``: any AMI action the catalog knows, as JSON.

The action and every parameter are checked against the AMI catalog
(:mod:`router.ami.catalog`) before anything is sent, so a typo costs the
client a 404 or 400 with a did-you-mean rather than an Asterisk error, and
nothing malformed reaches Asterisk: values are untrusted, and the encoder
refuses CR, LF and NUL (header injection, truncation). Only tokens that name
``ami:<Action>`` (as Asterisk spells it) or ``ami:*`` may send an action.
Extension patterns do not narrow this endpoint: raw AMI can touch any
channel, so grant ``ami:`` operations only to trusted tokens. Actions that
manage the AMI session they are sent on (``WaitEvent``, ``Logoff``,
``Events``, ``Filter``, ``Login``, ``Challenge``) would manage the engine's
own and are refused for every token (:mod:`router.ami.own_session`).

List actions (``CoreShowChannels``, ``Status``...) come back with their
items and their closing event (``closing``, the ``...Complete`` event with
``ListItems`` and any totals): the AJAM client collects the event list before
answering; an item skipped for a line over the parser's bound is counted in
``unread_items``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from router.ami.catalog import ActionSpec, AMIValue, encode_action, load_catalog
from router.ami.message import Message
from router.ami.own_session import session_action_problem
from router.ami.protocol import Action
from router.api.auth import audit_of, authenticate, authorize
from router.api.context import ApiContext, read_json
from router.api.errors import ApiError, problem_responses
from router.errors import AMIValidationError
from router.suggest import closest

__all__ = ["OPENAPI", "UNKNOWN_OPERATION", "routes"]

#: The audit operation (and metrics label) of a request for an action the catalog lacks.
UNKNOWN_OPERATION = "ami:unknown"

_PARAM_NAME = re.compile(r"parameter '?([A-Za-z0-9_-]+)'?")


def routes(ctx: ApiContext) -> list[BaseRoute]:
    async def ami_action(request: Request) -> JSONResponse:
        name = request.path_params["action"]
        audit = audit_of(request)
        # The operation is a metrics label: only the catalog's spelling of a known
        # action, whoever asks; anything else is one fixed label, so requests for
        # made-up paths (with or without a token) cannot fill the label's cap and
        # push real requests into "other". The path as sent is the audit target.
        known = _known(name)
        audit.operation = f"ami:{known.name}" if known is not None else UNKNOWN_OPERATION
        audit.target = name
        authenticate(request)
        spec = _action(name)
        await authorize(request, f"ami:{spec.name}")
        problem = session_action_problem(spec.name)
        if problem is not None:
            # Sent on the engine's own session: WaitEvent took the engine's events.
            raise ApiError(400, f"{problem}; no token may send it")
        params = _params(await read_json(request))
        problem = session_action_problem(spec.name, params)
        if problem is not None:
            raise ApiError(400, f"{problem}; no token may send it", field="UserEvent")
        try:
            encoded = encode_action(spec.name, params)
            Action(encoded.name, encoded.params, encoded.action_id).pairs()
        except AMIValidationError as exc:
            raise _bad_params(exc) from None
        result = await ctx.send(spec.name, params)
        return JSONResponse(
            {
                "action": spec.name,
                "response": _fields(result.response),
                "items": [_fields(item) for item in result.items],
                # The list's closing event (``...Complete``, its ``ListItems``
                # and totals no item says), as ``callrouter ami --json`` holds
                # it: null for no list, or one whose closing event never came.
                "closing": None if result.closing is None else _fields(result.closing),
                "complete": result.complete,
                # Items its closing event counts that are not in "items":
                # skipped for a line over the parser's bound (issue 16).
                "unread_items": result.unread_items,
            }
        )

    return [Route("/api/v1/ami/{action}", ami_action, methods=["POST"])]


def _known(name: str) -> ActionSpec | None:
    catalog = load_catalog()
    return catalog.action(name) if name in catalog else None


def _action(name: str) -> ActionSpec:
    catalog = load_catalog()
    try:
        return catalog.action(name)
    except AMIValidationError:
        suggestion = closest(name, [spec.name for spec in catalog])
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise ApiError(404, f"unknown AMI action {name!r}{hint}", did_you_mean=suggestion) from None


def _params(body: Mapping[str, Any]) -> dict[str, AMIValue]:
    """JSON values as the encoder takes them; 400 naming the first that is not."""
    params: dict[str, AMIValue] = {}
    for key, value in body.items():
        if key.lower() in ("actionid", "action"):
            raise ApiError(400, f"{key!r} is set by callrouter, not by the request", field=key)
        values = value.values() if isinstance(value, dict) else value
        if _scalar(value) or (isinstance(value, list | dict) and all(map(_scalar, values))):
            params[key] = value
        else:
            raise ApiError(
                400,
                f"parameter {key!r}: expected a string, number, boolean, a list of them, "
                "or an object of them (Variable)",
                field=key,
            )
    return params


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _bad_params(exc: AMIValidationError) -> ApiError:
    detail = str(exc)
    found = _PARAM_NAME.search(detail)
    hint = re.search(r"did you mean '([^']+)'", detail)
    return ApiError(
        400,
        detail,
        field=found.group(1) if found else None,
        did_you_mean=hint.group(1) if hint else None,
    )


def _fields(message: Message) -> dict[str, str | list[str]]:
    return message.to_dict()


_FIELDS = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    },
}
_SCALAR = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}

OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/ami/{action}": {
            "post": {
                "operationId": "sendAmiAction",
                "summary": "Send any AMI action the catalog knows",
                "description": "Parameters as a JSON object, validated against the AMI "
                "catalog before anything is sent. Needs `ami:<Action>` or `ami:*`. "
                "List actions answer with their items and their closing event (`closing`).",
                "tags": ["ami"],
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "description": "The action as Asterisk names it (`CoreShowChannels`)",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": {
                                    "oneOf": [
                                        _SCALAR,
                                        {"type": "array", "items": _SCALAR},
                                        {"type": "object", "additionalProperties": _SCALAR},
                                    ]
                                },
                            },
                            "example": {"Channel": "PJSIP/101-00000001"},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Asterisk's response, with the list's items",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AmiResult"}
                            }
                        },
                    },
                    **problem_responses(400, 403, 404, 409, 413, 503),
                },
            }
        }
    },
    "components": {
        "schemas": {
            "AmiFields": _FIELDS,
            "AmiResult": {
                "type": "object",
                "required": ["action", "response", "items", "closing", "complete", "unread_items"],
                "properties": {
                    "action": {"type": "string"},
                    "response": {"$ref": "#/components/schemas/AmiFields"},
                    "items": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/AmiFields"},
                    },
                    "closing": {
                        "description": "The event list's closing event (`...Complete`: its "
                        "`ListItems` and any totals), as Asterisk sent it; null for an action "
                        "with no list, or a list whose closing event never came (`complete` "
                        "false)",
                        **_FIELDS,
                        "type": ["object", "null"],
                    },
                    "complete": {"type": "boolean"},
                    "unread_items": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Items of the list that are not in `items`: each "
                        "skipped for a line over 64 KiB, which no Asterisk sends (a broken or "
                        "hostile AMI peer). Those the parser left out, or those the closing "
                        "event counts (`ListItems`) beyond `items` when more. 0 when there "
                        "are none",
                    },
                },
            },
        }
    },
}
