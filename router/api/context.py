"""What every endpoint works with: the engine's API, the settings, the feed.

The endpoints reach the engine only through :class:`~router.hookspecs.EngineAPI`
(the plugins' contract), never the engine itself, so the API can be built and
fuzzed over the test kit's ``StubEngine`` and cannot touch the engine's
session, stream or tracker internals.

AMI work for a request is fenced twice so that a request never hangs on a dead
Asterisk: :meth:`ApiContext.require_asterisk` answers 503 at once when the
engine knows it is cut off, and :meth:`ApiContext.send` bounds each action by
``[api] ami_timeout`` (503 past it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request

from router.api.errors import ApiError
from router.api.settings import ApiSettings, TokenSettings
from router.api.text import mend_surrogates
from router.errors import (
    AMIActionError,
    AMIConnectionError,
    AMIError,
    AMIPrivilegeError,
    AMIValidationError,
)

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.catalog import AMIValue
    from router.ami.protocol import ActionResult
    from router.api.feed import EventFeed
    from router.api.live import LiveRing
    from router.calls import Call
    from router.health import Health
    from router.hookspecs import EngineAPI
    from router.metrics import Metrics
    from router.rules.ruleset import RuleSet

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_DIGITS",
    "ApiContext",
    "UnansweredAction",
    "decode_json",
    "read_json",
]

log = logging.getLogger("router.api")


class UnansweredAction(ApiError):
    """503 for an action sent that Asterisk did not answer within ``ami_timeout``.

    Unlike a refusal, the action may have been carried out (a loaded Asterisk
    answers late): a click-to-call keeps its Idempotency-Key for it, so a retry
    gets the call instead of placing a second one.
    """


@dataclass(slots=True)
class ApiContext:
    """One running API: built by the engine (or a test) and handed to ``build_app``."""

    engine: EngineAPI
    settings: ApiSettings
    feed: EventFeed | None = None
    #: The engine's metrics (``/metrics``, API request counts); None serves none.
    metrics: Metrics | None = None
    #: The engine's readiness (``/readyz``); None: ready whenever serving.
    health: Callable[[], Health] | None = None
    #: The live page's recent decisions and calls (router.api.live).
    live: LiveRing | None = None
    #: The rules the engine routes with now (the explain endpoint evaluates them).
    rules: Callable[[], RuleSet] | None = None
    #: The phones on a call now that its legs do not show, for the readers of a
    #: recording the API starts: the plugins' ``callrouter_present_extensions``
    #: (the recorder's: the legs sharing an Asterisk bridge with the call's, a leg
    #: of an older call bridged in before the recording began among them). None:
    #: the live legs alone.
    present: Callable[[Call], Awaitable[set[str]]] | None = None
    #: The extensions of a call the engine let go of that the API still shows
    #: (a click-to-call that ended: GET /calls/{id} answers it), by id; None for
    #: a call it does not know. router.api.calls sets it; the recording endpoints
    #: read it, so they answer such a call as ended, not as one never seen.
    ended_call: Callable[[str], set[str] | None] | None = None
    #: Whether a request's method and raw target ask for a recording by a link
    #: with a valid, unexpired signature (router.api.recordings sets it): the
    #: listener counts such a request in a bucket of that link's, not its
    #: address's ``[api] anonymous_rate`` (router.api.addresses). None: no request is.
    recording_link: Callable[[bytes, bytes], bool] | None = None
    #: The token whose valid session of the live page a request's raw
    #: ``Cookie`` header bears, or None (router.api.ui sets it: its sessions'
    #: own check): the listener counts the page's request against that token's
    #: rate (router.api.page_rate), not its address's ``[api] anonymous_rate``.
    #: None: no request does.
    ui_session: Callable[[bytes], TokenSettings | None] | None = None

    def require_asterisk(self) -> None:
        """503 now, not after a timeout, when the engine has lost Asterisk."""
        if not self.engine.connected:
            raise ApiError(
                503,
                "Asterisk is unreachable: callrouter is not logged in or its event "
                "stream is down; retry shortly",
                headers={"Retry-After": "1"},
            )

    async def send(
        self,
        name: str,
        params: Mapping[str, AMIValue | None] | None = None,
        *,
        validate: bool = True,
        action_id: str | None = None,
    ) -> ActionResult:
        """One AMI action for a request: bounded, and every failure an :class:`ApiError`.

        Asterisk's ``Response: Error`` is 409 (the PBX's state refused it, e.g.
        no such channel) with Asterisk's message; the AMI user's missing write
        class is 403; anything about reaching Asterisk is 503.
        """
        self.require_asterisk()
        try:
            async with asyncio.timeout(self.settings.ami_timeout):
                return await self.engine.ami.send(
                    name, params, validate=validate, action_id=action_id
                )
        except TimeoutError:
            raise UnansweredAction(
                503,
                f"Asterisk did not answer {name} within {self.settings.ami_timeout:g} s",
                headers={"Retry-After": "1"},
            ) from None
        except AMIValidationError as exc:
            raise ApiError(400, str(exc)) from None
        except AMIPrivilegeError as exc:
            raise ApiError(
                403,
                f"Asterisk refused {name} to callrouter's AMI user: {exc}",
                title="Forbidden by Asterisk",
            ) from None
        except AMIActionError as exc:
            raise ApiError(
                409,
                f"Asterisk refused {name}: {exc.response.get('Message') or 'no reason given'}",
                ami_response=exc.response.to_dict(),
            ) from None
        except (AMIConnectionError, OSError) as exc:
            raise ApiError(
                503, f"Asterisk is unreachable: {exc}", headers={"Retry-After": "1"}
            ) from None
        except AMIError as exc:
            log.warning("AMI %s for the API failed: %s", name, exc)
            raise ApiError(503, f"Asterisk answered {name} with something unusable") from None


#: Largest request body the API reads: an AMI action is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting of arrays and objects in a request body. The deepest body
#: the API reads is three levels; ``lookups`` stand for 1C answers, which the 1C
#: plugin refuses past 32 levels too. Far below the interpreter's recursion limit.
MAX_JSON_DEPTH = 32
#: Longest number in a request body: no field needs more, and ``int()`` of a
#: few thousand digits raises (or costs quadratic time).
MAX_NUMBER_DIGITS = 100

# Strings are dropped before brackets are counted ("[" in a name is text);
# escapes go first so the string pattern needs no alternation: both passes are
# linear whatever the body, an unterminated string included.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting_depth(body: bytes, stop: int) -> int:
    """The deepest bracket nesting of ``body`` outside strings; stops past ``stop``."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > stop:
                break
    return deepest


class _TooLong(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _TooLong(text)
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _TooLong(text)
    return float(text)


def _constant(name: str) -> object:
    raise ApiError(400, f"malformed JSON: {name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object of a request body; 400 naming a key it holds twice.

    ``json`` keeps the last of ``{"from": "101", "from": "102"}``; a proxy or a
    WAF in front may read the first, and so check another request than the one
    callrouter acts on (the token's extension, the idempotency fingerprint).
    Called for every object at every depth, once its members are read: linear
    in the body, which :data:`MAX_BODY_BYTES` bounds.
    """
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                # The key is the client's: cut, and a lone surrogate (valid
                # JSON, no text) mended so that the problem can be written.
                shown = mend_surrogates(key[:40])
                raise ApiError(
                    400,
                    f"malformed JSON: duplicate key {shown!r} in an object (send each member once)",
                    field=shown,
                )
            seen.add(key)
    return value


_BOM: Final = b"\xef\xbb\xbf"


def decode_json(body: bytes) -> object:
    """A request body's JSON value, within bounds; 400 saying what is wrong and where.

    Bounded before ``json`` sees it: nesting (:data:`MAX_JSON_DEPTH`), numbers
    (:data:`MAX_NUMBER_DIGITS`), no ``NaN`` or ``Infinity``, no key twice in
    one object (:func:`_object`). Without the bounds a
    body of ``[`` repeated, or one 5,000-digit number, raised ``RecursionError``
    or ``ValueError`` out of the parser: a 500 and a traceback for anyone.
    """
    # One leading UTF-8 byte order mark is skipped (RFC 8259 8.1 allows it): 1C's
    # HTTPЗапрос.УстановитьТелоИзСтроки writes one unless told
    # ИспользованиеByteOrderMark.НеИспользовать, and "Unexpected UTF-8 BOM
    # (decode using utf-8-sig)" told a 1C developer nothing they could act on.
    skipped = len(_BOM) if body.startswith(_BOM) else 0
    try:
        text = body[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        where = exc.start + skipped
        raise ApiError(400, f"malformed JSON: not UTF-8 at byte {where}", position=where) from None
    if _nesting_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ApiError(
            400, f"malformed JSON: arrays and objects nested deeper than {MAX_JSON_DEPTH} levels"
        )
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_real,
            parse_constant=_constant,
        )
    except _TooLong:
        raise ApiError(
            400, f"malformed JSON: a number longer than {MAX_NUMBER_DIGITS} characters"
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except RecursionError:  # pragma: no cover - the depth bound comes first
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    try:
        # "\\ud800" is valid JSON but no text: it could not be encoded for Asterisk.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            400, "malformed JSON: a lone surrogate (\\uD800-\\uDFFF) is not text"
        ) from None
    return value


async def read_json(request: Request, *, required: bool = False) -> dict[str, Any]:
    """The request's JSON object; 400 naming the problem and where it is.

    An empty body (or one of a UTF-8 byte order mark alone) is ``{}`` unless
    ``required``. The size is checked before parsing, so a huge body costs
    nothing but the read; the parse itself is bounded by :func:`decode_json`.
    """
    declared = request.headers.get("content-length", "")
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > MAX_BODY_BYTES)
    ):
        # Refused before a byte is read: a client that asked "Expect:
        # 100-continue" was told to send it all (the first read says
        # "100 Continue"), and one that declared gigabytes and sent nothing
        # was left waiting for the request deadline, unanswered (issue 16).
        raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
    # A byte order mark alone (1C writes one before an empty text too) is no body.
    if not body.removeprefix(_BOM).strip():
        if required:
            raise ApiError(400, "a JSON object is required in the request body")
        return {}
    value = decode_json(body)
    if not isinstance(value, dict):
        raise ApiError(400, f"expected a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"
