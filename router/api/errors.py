"""API failures as RFC 9457 problem details.

Every endpoint raises :class:`ApiError` for a failure it can name; the app
turns it into ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and extras a client can act on (``field``,
``missing_permission``, ``did_you_mean``, ``origin``...; every one is in
:data:`PROBLEM_SCHEMA`, which tests/unit/test_api_docs.py checks). One class rather than one per
status: the status is data a client switches on, not a Python type anyone
catches selectively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

from starlette.requests import HTTPConnection

from router.errors import CallRouterError
from router.suggest import closest

__all__ = [
    "ANY_PATH",
    "PROBLEM_SCHEMA",
    "PROBLEM_TYPE",
    "ApiError",
    "bad_parameter",
    "problem_body",
    "problem_responses",
    "refuse_repeated_query",
    "refuse_unknown_fields",
    "refuse_unknown_query",
    "single_header",
]

#: ``type`` of every problem: the page that explains the statuses.
PROBLEM_TYPE = "https://github.com/callrouter/callrouter/blob/main/docs/api.md#errors"


class ApiError(CallRouterError):
    """A request that failed for a reason the client should read.

    ``extra`` becomes extension members of the problem document (JSON
    values); ``headers`` go on the response (``Retry-After``, ``Allow``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def bad_parameter(
    name: str, expected: str, value: str | None = None, *, where: str = "query parameter"
) -> ApiError:
    """The 400 for a query parameter's (or a header's) value, in one shape on every
    endpoint: ``query parameter 'timeout': expected a number 0..60, got 'x'``.

    The value is the client's, cut to 40 characters; it is left out where it
    may be a credential (a link's ``sig``). ``field`` is the name.
    """
    detail = f"{where} {name!r}: expected {expected}"
    if value is not None:
        detail += f", got {value[:40]!r}"
    return ApiError(400, detail, field=name)


def refuse_unknown_query(names: Iterable[str], known: Iterable[str]) -> None:
    """A 400 naming the first query parameter the endpoint does not read.

    Where an endpoint reads query parameters, a misspelt one (``curser=``)
    is no error a client would notice: the read goes on without it (new
    events only, the default page size) and the 1C module that sent it never
    learns why it misses events.
    """
    allowed = tuple(known)
    for name in names:
        if name not in allowed:
            shown = name[:40]
            hint = closest(shown, allowed)
            detail = f"unknown query parameter {shown!r}" + (
                f"; did you mean {hint!r}?" if hint else ""
            )
            detail += f" (this endpoint reads {', '.join(allowed)})"
            if hint:
                raise ApiError(400, detail, field=shown, did_you_mean=hint)
            raise ApiError(400, detail, field=shown)


def refuse_repeated_query(names: Iterable[str], single: Iterable[str]) -> None:
    """A 400 naming the first of the ``single`` query parameters given twice.

    ``names`` are the query string's names in order, repeats included.
    Starlette's ``query_params.get`` reads the last of ``?extension=101&extension=102``;
    a proxy or a WAF in front may read the first, and so check another
    request than the one callrouter answers. Linear in the query string.
    """
    wanted = frozenset(single)
    seen: set[str] = set()
    for name in names:
        if name in wanted:
            if name in seen:
                raise ApiError(
                    400,
                    f"query parameter {name!r} given more than once (send it once)",
                    field=name,
                )
            seen.add(name)


def single_header(conn: HTTPConnection, name: str, shown: str) -> str | None:
    """The request's one ``name`` header (lowercase), or None; a 400 naming
    it (as ``shown``) when it came more than once.

    Starlette's ``headers.get`` reads the first of two, and a proxy or a WAF
    in front may read the last (or join them), and so check or log another
    token, cursor or range than the one callrouter acts on, as with a query
    parameter given twice (:func:`refuse_repeated_query`). Each header the
    API reads is read through here; ``Host`` is held to one by the HTTP
    layer (router/api/protocol.py).
    """
    values = conn.headers.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"header {shown!r} given more than once (send it once)", field=shown)
    return values[0] if values else None


def refuse_unknown_fields(body: Iterable[str], known: Iterable[str]) -> None:
    """A 400 naming the first member of a JSON body the endpoint does not read.

    Worded like :func:`refuse_unknown_query`, with the closest known name in
    ``did_you_mean`` (the 1C module turns it into "возможно, имелось в виду"):
    ``{"form": "101"}`` for ``from`` otherwise showed only the list. The name is
    the client's and is cut to 40 characters.
    """
    allowed = tuple(known)
    for name in body:
        if name not in allowed:
            shown = name[:40]
            hint = closest(shown, allowed)
            detail = f"{shown}: unknown field" + (f"; did you mean {hint!r}?" if hint else "")
            detail += f" (known: {', '.join(allowed)})"
            raise ApiError(400, detail, field=shown, did_you_mean=hint)


def problem_body(
    status: int, detail: str, *, title: str | None = None, **extra: object
) -> dict[str, object]:
    """The problem document; extras never overwrite the standard members."""
    body: dict[str, object] = {key: value for key, value in extra.items() if value is not None}
    body.update(
        type=PROBLEM_TYPE,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
    )
    return body


#: The problem document's schema; ``app.py`` puts it in every OpenAPI document.
PROBLEM_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the request field at fault (400)"},
        "missing_permission": {
            "type": "string",
            "description": "the operation the token lacks (403)",
        },
        "did_you_mean": {"type": "string", "description": "the closest known name (404, 400)"},
        "extension": {
            "type": "string",
            "description": "the extension the token may not act for or see (403)",
        },
        "line": {"type": "integer", "description": "where malformed JSON went wrong (400)"},
        "column": {"type": "integer", "description": "where malformed JSON went wrong (400)"},
        "position": {
            "type": "integer",
            "description": "the byte of a body that is not UTF-8 (400)",
        },
        "ami_response": {
            "type": "object",
            "description": "the fields of Asterisk's Response: Error (409)",
        },
        "phase": {
            "type": "string",
            "description": "starting: callrouter waits for Asterisk (503, with Retry-After)",
        },
        "origin": {
            "type": "string",
            "description": "who started the recording the API may not stop (409): "
            "rule, plugin or unknown",
        },
        "call_id": {
            "type": "string",
            "description": "the click-to-call Asterisk did not answer within ami_timeout "
            "(503): it may still be placed",
        },
        "state": {
            "type": "string",
            "description": "recording: the file asked for is still being recorded (409); "
            "it is served once the call ends or its recording stops. ended: the call "
            "(an ended click-to-call GET /calls/{id} still shows) has ended, so there is "
            "nothing to start or stop recording (409)",
        },
        "stopped_files": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the parts a recording's stop did stop before it failed (409, 503)",
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    400: "Bad request: the detail names the field and why (a JSON key or a query "
    "parameter given twice is one)",
    401: "No token, or not one of ours",
    403: "The token lacks the permission (missing_permission) or the extension",
    404: "No such resource; did_you_mean when one is close",
    405: "Method not allowed",
    409: "Asterisk refused the request in its current state",
    413: "Request body too large",
    421: "The Host header names a host this listener does not answer to ([api] allowed_hosts)",
    429: "Over the token's rate; see Retry-After",
    503: "Asterisk is unreachable or did not answer in time, or callrouter is starting "
    "(phase) or stopping; see Retry-After",
}

#: Statuses any path may answer, whatever the operation: a missing or unknown
#: token, a foreign Host, the token's rate, and 503 while callrouter starts
#: (before its login every path but the health ones is 503) or stops.
ANY_PATH = (401, 421, 429, 503)


def problem_responses(*statuses: int) -> dict[str, object]:
    """OpenAPI ``responses`` for these statuses, plus :data:`ANY_PATH` (any
    endpoint may answer them: a client generated from the document should
    expect a 503 from ``GET /calls`` while callrouter starts)."""
    wanted = sorted({*statuses, *ANY_PATH})
    out: dict[str, object] = {
        str(status): {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in wanted
    }
    return out
