"""``POST /api/v1/explain``: what the current rules would do with a call.

The rules are the ones the engine routes with at this moment (a reload
shows at once), evaluated by :mod:`router.rules.explain`, the code behind
``callrouter explain``: nothing is sent to Asterisk or to a plugin, lookups
answer only with what the request gives in ``lookups`` (any other is "not
provided"). So the explain box of the live page (``ui:read``) and a script
checking a rule change (``rules:explain``) cannot reach a customer or 1C.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from router.api.auth import Token, audit_of, authenticate
from router.api.context import ApiContext, read_json
from router.api.errors import ApiError, problem_responses, refuse_unknown_fields
from router.rules.explain import answer_stubs, explain_call, moment

__all__ = ["OPENAPI", "PERMISSIONS", "explain", "routes"]

#: Either lets a token explain: the page's own, or the one for scripts.
PERMISSIONS = ("ui:read", "rules:explain")
_FIELDS = {"caller": 64, "did": 64, "name": 128, "at": 40}


def _text(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None or (value == "" and not required):
        if required:
            raise ApiError(400, f"{name!r} is required (a string)", field=name)
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name!r}: expected a string", field=name)
    if len(value) > _FIELDS[name] or (required and not value.strip()):
        raise ApiError(
            400, f"{name!r}: expected 1..{_FIELDS[name]} characters, not blank", field=name
        )
    return value


async def explain(ctx: ApiContext, body: dict[str, Any]) -> dict[str, Any]:
    """The explanation for one request body; 400 naming the field, 503 with no rules."""
    refuse_unknown_fields(body, (*_FIELDS, "lookups"))
    caller = _text(body, "caller", required=True) or ""
    did = _text(body, "did", required=True) or ""
    name = _text(body, "name", required=False) or ""
    at = _text(body, "at", required=False)
    answers = body.get("lookups", {})
    if answers is None:
        answers = {}
    if not isinstance(answers, dict):
        raise ApiError(400, "'lookups': expected an object {lookup: its answer}", field="lookups")
    if ctx.rules is None:
        raise ApiError(503, "no rules are loaded here", headers={"Retry-After": "5"})
    ruleset = ctx.rules()
    stubs = answer_stubs(ruleset.registry, answers)
    if isinstance(stubs, str):
        raise ApiError(400, f"'lookups': {stubs}", field="lookups")
    when = moment(at, ruleset.registry)
    if isinstance(when, str):
        raise ApiError(400, f"'at': {when}", field="at")
    explained = await explain_call(ruleset, caller, did, stubs=stubs, now=when, caller_name=name)
    return {**explained.to_dict(), "text": explained.outcome.trace.render()}


async def authorize_explain(request: Request) -> Token:
    """The bearer token, if it has ``ui:read`` or ``rules:explain`` (401/403/429)."""
    audit = audit_of(request)
    audit.operation = "rules:explain"
    token = authenticate(request)
    if not any(token.allows(permission) for permission in PERMISSIONS):
        raise ApiError(
            403,
            f"token {token.name!r} lacks the permission 'rules:explain' (or 'ui:read')",
            missing_permission="rules:explain",
        )
    return token


def routes(ctx: ApiContext) -> list[BaseRoute]:
    async def post(request: Request) -> Response:
        await authorize_explain(request)
        body = await read_json(request, required=True)
        return JSONResponse(await explain(ctx, body), headers={"Cache-Control": "no-store"})

    return [Route("/api/v1/explain", post, methods=["POST"], name="explain")]


_STRING = {"type": "string", "minLength": 1}

#: This module's part of ``/api/v1/openapi.json``.
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/explain": {
            "post": {
                "operationId": "explainCall",
                "summary": "What the current rules would do with a call (rules:explain or ui:read)",
                "description": "Evaluates the rules the engine routes with now; nothing is "
                "sent anywhere. Lookups answer only with `lookups`; any other is not provided.",
                "tags": ["rules"],
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["caller", "did"],
                                "additionalProperties": False,
                                "properties": {
                                    "caller": {**_STRING, "maxLength": 64},
                                    "did": {**_STRING, "maxLength": 64},
                                    "name": {"type": "string", "maxLength": 128},
                                    "at": {
                                        "type": "string",
                                        "description": '"YYYY-MM-DD HH:MM" in the rules\' '
                                        "zone (default: now)",
                                    },
                                    "lookups": {
                                        "type": "object",
                                        "description": "answers of lookups by name",
                                    },
                                },
                            },
                            "example": {"caller": "+7 916 123-45-67", "did": "74951234567"},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The decision, its trace, and the trace as text",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Explanation"}
                            }
                        },
                    },
                    **problem_responses(400, 403, 413, 503),
                },
            }
        }
    },
    "components": {
        "schemas": {
            "Explanation": {
                "type": "object",
                "required": ["decision", "trace", "other_did_rules", "index_skipped_rules", "text"],
                "properties": {
                    "decision": {
                        "type": "object",
                        "required": ["rules", "actions"],
                        "properties": {
                            "rules": {"type": "array", "items": {"type": "string"}},
                            "actions": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "trace": {
                        "type": "object",
                        "required": ["trigger", "rules"],
                        "properties": {
                            "trigger": {"type": "string"},
                            "rules": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "other_did_rules": {"type": "array", "items": {"type": "string"}},
                    "index_skipped_rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["rule", "keys"],
                            "properties": {
                                "rule": {"type": "string"},
                                "keys": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                    "text": {"type": "string"},
                },
            }
        }
    },
}
