"""Whether Asterisk lets the manager user send the actions callrouter's
features need, asked without touching a call.

Asterisk checks an action's write class before it reads the action's
headers, so an action that can do nothing shows the class: ``Permission
denied`` without it, a complaint about the headers with it (Asterisk 22: a
``Redirect`` of a channel no driver makes, ``Channel does not exist``; an
``Originate`` with no ``Channel``, ``Channel not specified``). Without
``write = call`` every call's ``Redirect`` is refused, so every call takes
its default route, and nothing said so before the first call.

``callrouter check --asterisk`` asks once (router/commands/preflight.py);
``callrouter run`` after each login (router.engine): Asterisk gives a
session the classes of its login, and a ``manager reload`` does not change
a live session's (seen on the sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from router.dialplan import INBOUND_CONTEXT
from router.errors import AMIPrivilegeError

if TYPE_CHECKING:
    from router.config import Config
    from router.rules.ruleset import RuleSet

__all__ = [
    "DIALPLAN",
    "FILTER",
    "ORIGINATE",
    "REDIRECT",
    "REPORTING",
    "Probe",
    "needed",
    "refused",
]

#: A channel name no channel driver makes: the ``Redirect`` probe moves nothing.
_NO_CHANNEL = "callrouter-check/no-such-channel"


class _Client(Protocol):
    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class Probe:
    """One action to try, and what is lost when Asterisk refuses it."""

    action: str
    #: The manager.conf ``write`` class that allows it.
    write_class: str
    #: What goes wrong without it, for the messages.
    lost: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


REDIRECT = Probe(
    "Redirect",
    "call",
    "no call is routed: each takes the dialplan's default route",
    MappingProxyType(
        {"Channel": _NO_CHANNEL, "Context": INBOUND_CONTEXT, "Exten": "s", "Priority": "1"}
    ),
)
#: No ``Channel``: Asterisk answers ``Channel not specified`` and dials nothing.
ORIGINATE = Probe(
    "Originate", "originate", "the API's click-to-call and the rules' originate actions fail"
)

#: ``CoreStatus`` (uptime and the like) is ``system`` or ``reporting`` alone,
#: as ``CoreShowChannels`` is, which lists the calls waiting after a gap:
#: ``callrouter check --asterisk`` asks it rather than listing every channel
#: of a busy PBX to learn the class.
REPORTING = Probe(
    "CoreStatus",
    "reporting",
    "the calls still waiting after a gap (a reconnect, an Asterisk restart) are not "
    "listed (CoreShowChannels) and take their default route, and the dialplan is not checked",
)

#: ``ShowDialPlan`` is ``config`` or ``reporting`` (router/ami/catalog.json), not
#: ``system``: a user with ``write = system`` and no ``reporting`` passes
#: :data:`REPORTING`'s ``CoreStatus`` and still cannot read the dialplan. A context
#: no dialplan has: Asterisk answers ``Did not find context`` and lists nothing.
DIALPLAN = Probe(
    "ShowDialPlan",
    "reporting",
    "the dialplan is not checked (the inbound context, the rules' redirect targets) at "
    "start, after each dialplan reload and by callrouter check --asterisk",
    MappingProxyType({"Context": "callrouter-check-no-such-context"}),
)

#: An operation Asterisk does not know (``Unknown operation``): adds no filter.
FILTER = Probe(
    "Filter",
    "system",
    "callrouter cannot filter event names itself",
    MappingProxyType({"Operation": "CallRouterCheck"}),
)


def needed(config: Config, rules: RuleSet) -> tuple[Probe, ...]:
    """The probes for what this configuration uses: ``Redirect`` always,
    ``Originate`` with ``[api]`` (click-to-call) or a rule's ``originate``."""
    originates = config.api is not None or any(
        action.kind == "originate" for rule in rules.rules for action in rule.actions
    )
    return (REDIRECT, ORIGINATE) if originates else (REDIRECT,)


async def refused(client: _Client, probe: Probe) -> bool:
    """Whether Asterisk refuses the user ``probe``'s action (its class
    missing); the client's other errors (a connection lost) propagate."""
    try:
        await client.action(probe.action, probe.params, check=False)
    except AMIPrivilegeError:
        return True
    return False
