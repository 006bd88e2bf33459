"""Errors of the 1C plugin, grafted onto callrouter's one tree.

Both are :class:`router.errors.LookupUnavailable`, so a rule that asks
``onec.responsible(...)`` falls through to its fallback whatever went wrong,
while the plugin itself can still tell "1C is down" (count it against the
circuit breaker, retry the event later) from "1C refused this input" (retrying
is pointless, and 1C is evidently up)::

    LookupUnavailable                      (router.errors)
    └── OneCError                          carries status, body (first 200 chars), url
        ├── OneCUnavailable                no usable answer: transport failure, timeout,
        │   │                              non-2xx, not JSON, wrong shape, circuit open
        │   └── OneCCutOff(LookupCutOff)   the call's deadline came before 1C's answer
        └── OneCBadRequest(ValueError)     400 with a JSON error code (invalid_phone, ...)
"""

from __future__ import annotations

from router import LookupCutOff, LookupUnavailable

__all__ = ["BODY_PREVIEW", "OneCBadRequest", "OneCCutOff", "OneCError", "OneCUnavailable"]

#: How much of an unusable body is kept: enough to recognise a 1C module error
#: or a proxy page in a log line, never a whole HTML page.
BODY_PREVIEW = 200


class OneCError(LookupUnavailable):
    """Base of the plugin's errors; keeps what an operator needs to diagnose 1C."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = "", url: str | None = None
    ) -> None:
        self.status = status
        self.body = body[:BODY_PREVIEW]
        self.url = url
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.detail]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.url:
            parts.append(self.url)
        if self.body:
            parts.append(f"body: {self.body!r}")
        return "; ".join(parts)


class OneCUnavailable(OneCError):
    """1C gave no usable answer; the caller takes its fallback."""


class OneCCutOff(OneCUnavailable, LookupCutOff):
    """The call's deadline came before 1C's answer (the request goes on, for the
    cache); as :class:`router.LookupCutOff`, the decision counts as late."""


class OneCBadRequest(OneCError, ValueError):
    """1C answered 400 with an error code: the input is wrong, 1C itself is fine."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = 400,
        body: str = "",
        url: str | None = None,
    ) -> None:
        self.code = code
        super().__init__(f"{code}: {message}", status=status, body=body, url=url)
