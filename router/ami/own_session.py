"""AMI actions that act on the session they are sent on, not on Asterisk.

The HTTP API's ``POST /api/v1/ami/{action}`` and a rule's ``ami`` action are
sent on the engine's own AMI session: the AJAM cookie, or the TCP connection,
whose events route every call. An action that manages a session therefore
manages callrouter's, whoever asked for it:

* ``WaitEvent`` takes the events queued for the engine's own ``WaitEvent``
  loop (one per session: the second kicks the first, which comes back empty),
  so the engine misses them and logs a lost event stream; sent in a loop (a 1C
  developer's way of "reading events"), it keeps routing blind. Seen on the
  sandbox's Asterisk 22.10, 2026-12-05.
* ``Logoff`` ends the session: callrouter logs in again, and the calls in
  between are reconciled from a gap (2026-12-05).
* ``Events`` replaces the session's event mask and ``Filter`` adds a filter
  the session keeps until it logs in again: either can hide the ``UserEvent``
  that asks for a routing decision.
* ``Login`` and ``Challenge`` belong to the client's own login.

A ``UserEvent`` named ``CallRouter...`` is refused too, though it manages
no session: the names are callrouter's own (``CallRouterRequest``, the
dialplan's routing request; ``CallRouterLive``, the live-instance
heartbeat; ``CallRouterCheck``, ``check --asterisk``'s probe). Sent through
AMI, a request is ignored (``router.ami.message.sent_by_channel``) and a
heartbeat not signed with the instances' key is too (router/liveguard.py),
so the refusal says why at once rather than leaving the sender puzzled.

These are refused before anything is sent (:func:`session_action_problem`),
for every token and every rule: they can do nothing useful on a session that
is not the caller's. ``callrouter ami`` logs in with a session of its own,
so there they go out as asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["OWN_USER_EVENTS", "SESSION_ACTIONS", "session_action_problem"]

#: Action (lower case) -> what it would do to callrouter's own session.
SESSION_ACTIONS: Final[dict[str, str]] = {
    "waitevent": (
        "it would take the events callrouter's own WaitEvent loop waits for "
        "(one WaitEvent per session), and calls would go unrouted"
    ),
    "logoff": "it would end callrouter's own AMI session, losing events until it logs in again",
    "events": (
        "it would change which events callrouter's own AMI session receives, "
        "and could hide the ones that route calls"
    ),
    "filter": (
        "it would add an event filter to callrouter's own AMI session, kept until it "
        "logs in again, which could hide the events that route calls"
    ),
    "login": "callrouter logs its own AMI session in itself",
    "challenge": "callrouter logs its own AMI session in itself",
}


#: The prefix of the UserEvent names callrouter sends or listens for itself.
OWN_USER_EVENTS: Final = "callrouter"


def session_action_problem(name: str, params: Mapping[str, object] | None = None) -> str | None:
    """Why ``name`` (with ``params``) may not be sent on callrouter's own
    session, or None."""
    reason = SESSION_ACTIONS.get(name.lower())
    if reason is None:
        if name.lower() == "userevent" and params is not None:
            return _own_user_event(params)
        return None
    return f"{name} acts on the AMI session it is sent on, which is callrouter's own: {reason}"


def _own_user_event(params: Mapping[str, object]) -> str | None:
    for key, value in params.items():
        if key.lower() == "userevent" and str(value).strip().lower().startswith(OWN_USER_EVENTS):
            return (
                f"UserEvent {str(value)[:64]!r}: the UserEvent names starting with "
                "CallRouter are callrouter's own (its routing requests, live-instance "
                "heartbeats and check's probe); sent through AMI one would be ignored"
            )
    return None
