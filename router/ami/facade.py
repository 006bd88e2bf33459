"""The AMI a plugin gets: ``send`` and the typed action methods, nothing else.

The AJAM client also logs in, long-polls events and closes the session;
a plugin calling ``login``, ``wait_event`` or ``aclose`` would break the
engine's one session and its one event stream. :class:`AMI` wraps anything
that can carry out one encoded action (the client, a test double) and
exposes only what is safe to share: the generated :class:`AMIActions` API
(one ``async`` method per catalog action, validated) and ``send`` for actions
the catalog does not know. It imports neither asyncio nor an HTTP library.
"""

from __future__ import annotations

from typing import Protocol

from router.ami.actions import AMIActions
from router.ami.protocol import Action, ActionResult

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
        """One encoded action (what every typed method ends in)."""
        return await self._sender.request(action, check=check)

    def __repr__(self) -> str:
        return f"AMI({type(self._sender).__name__})"
