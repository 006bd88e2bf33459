"""The AMI a plugin gets: ``send`` and the typed action methods, nothing else.

The AJAM client also logs in, long-polls events and closes the session;
a plugin calling ``login``, ``wait_event`` or ``aclose`` would break the
engine's one session and its one event stream. :class:`AMI` wraps anything
that can carry out one encoded action (the client, a test double) and
exposes only what is safe to share: the generated :class:`AMIActions` API
(one ``async`` method per catalog action, validated) and ``send`` for actions
the catalog does not know. It imports neither asyncio nor an HTTP library.

The session is the engine's, whatever the method: an action that manages the
session it is sent on (``Events``, ``Filter``, ``WaitEvent``, ``Logoff``,
``Login``, ``Challenge``; :mod:`router.ami.own_session`) and a ``UserEvent``
named ``CallRouter...`` are refused before anything is sent, as the HTTP API
and rules refuse them. On the sandbox a plugin's ``events(event_mask="off")``
silenced the engine's stream: every call took its default route, and the
engine blamed manager.conf (issue 16).
"""

from __future__ import annotations

from typing import Protocol

from router.ami.actions import AMIActions
from router.ami.own_session import session_action_problem
from router.ami.protocol import Action, ActionResult
from router.errors import AMIValidationError

__all__ = ["AMI", "ActionSender"]


class ActionSender(Protocol):
    """What :class:`AMI` needs underneath: carry out one encoded action."""

    async def request(self, action: Action, *, check: bool = True) -> ActionResult: ...


class AMI(AMIActions[ActionResult]):
    """``await ami.setvar(channel=..., variable=..., value=...)``, ``await ami.send(...)``.

    Every method returns an :class:`~router.ami.protocol.ActionResult`
    (``.response``, ``.items``, ``.ok``); ``check=False`` on ``send`` returns a
    ``Response: Error`` instead of raising :class:`router.AMIActionError`.
    A list's ``.unread_items`` says how many items it lacks (each skipped for
    a line over the parser's bound): when it is not 0, an item missing from
    ``.items`` proves nothing.
    """

    __slots__ = ("_sender",)

    def __init__(self, sender: ActionSender) -> None:
        self._sender = sender

    async def request(self, action: Action, *, check: bool = True) -> ActionResult:
        """One encoded action (what every typed method ends in).

        Raises :class:`router.AMIValidationError` for an action that would act
        on the engine's own session (module docstring), before it is sent.
        """
        problem = session_action_problem(action.name) or next(
            (
                found
                for key, value in action.params
                if (found := session_action_problem(action.name, {key: value})) is not None
            ),
            None,
        )
        if problem is not None:
            raise AMIValidationError(f"{problem}; a plugin may not send it on the engine's session")
        return await self._sender.request(action, check=check)

    def __repr__(self) -> str:
        return f"AMI({type(self._sender).__name__})"
