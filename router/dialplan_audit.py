"""Asking Asterisk's loaded dialplan whether callrouter can work with it.

Two things there lose calls with nothing in any log: an inbound context that
breaks the contract (router/dialplan_lint.py), and a rule that redirects to
a context or extension the dialplan lacks, which Asterisk accepts and then
hangs the call up ("Redirect successful", both legs gone: measured on Asterisk
22.10). ``ShowDialPlan`` (``write = reporting``, the documented user's) shows
both without touching a call. ``callrouter check --asterisk`` prints the
findings; the engine logs them at start and after each rules reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from router.dialplan import INBOUND_CONTEXT, shown
from router.dialplan_lint import Finding, Item, lint_inbound
from router.errors import AMIActionError, AMIError, AMIPrivilegeError
from router.rules.ruleset import RedirectTarget

__all__ = ["audit_dialplan"]

#: Redirect targets looked up at most (one ShowDialPlan each).
_MAX_TARGETS = 200


class _Listing(Protocol):
    @property
    def items(self) -> Sequence[Item]: ...


class DialplanAMI(Protocol):
    """What the audit needs of a client (either transport's)."""

    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> _Listing: ...


async def audit_dialplan(
    client: DialplanAMI, targets: Sequence[RedirectTarget] = (), built: int = 0
) -> list[Finding]:
    """The inbound context's verdict, then the targets' (``built`` more are
    made per call and cannot be looked up)."""
    findings = await _dialplan(client)
    if targets or built:
        findings.extend(await _targets(client, targets, built))
    return findings


async def _dialplan(client: DialplanAMI) -> list[Finding]:
    try:
        listing = await client.action("ShowDialPlan", {"Context": INBOUND_CONTEXT})
    except AMIPrivilegeError:
        return [
            Finding(
                "advice",
                "the dialplan could not be read (ShowDialPlan needs write = reporting): "
                f"check [{INBOUND_CONTEXT}] by hand",
            )
        ]
    except AMIActionError:
        return lint_inbound([])  # "Did not find context": none loaded
    except AMIError as exc:
        return [Finding("fail", f"the dialplan could not be read: {exc}")]
    return lint_inbound(listing.items)


async def _has(client: DialplanAMI, context: str, exten: str | None) -> bool | None:
    """Whether the dialplan has ``context`` (and ``exten`` in it, matched as
    Asterisk matches patterns); None when it cannot be read."""
    params = {"Context": context} if exten is None else {"Context": context, "Extension": exten}
    try:
        await client.action("ShowDialPlan", params)
    except AMIPrivilegeError:
        return None  # the dialplan check above says so
    except AMIActionError:
        return False  # "Did not find context ..." / "... extension ..."
    except AMIError:
        return None
    return True


async def _targets(
    client: DialplanAMI, targets: Sequence[RedirectTarget], built: int
) -> list[Finding]:
    """Each place the rules send calls to, asked of the dialplan once."""
    findings: list[Finding] = []
    answers: dict[tuple[str, str | None], bool | None] = {}
    for target in targets[:_MAX_TARGETS]:
        key = (target.context, target.exten)
        if key not in answers:
            answers[key] = await _has(client, *key)
            if answers[key] is False and target.exten is not None:
                # Say which is missing: the context, or the extension in it.
                answers[(target.context, None)] = await _has(client, target.context, None)
        if answers[key] is not False:
            continue
        context = shown(target.context)
        if target.exten is None or answers.get((target.context, None)) is False:
            missing = (
                f"context {context}, which Asterisk's dialplan does not have: Asterisk "
                "accepts the Redirect and hangs the call up"
            )
        else:
            missing = (
                f"extension {shown(target.exten)} of context {context}, which has no "
                "such extension: Asterisk accepts the Redirect and hangs the call up "
                "(or sends it to that context's i extension)"
            )
        findings.append(
            Finding("fail", f"{target.location}: rule {target.rule!r} redirects to {missing}")
        )
    if any(value is None for value in answers.values()):
        findings.append(Finding("advice", "the rules' redirect targets could not all be looked up"))
    elif not findings:
        places = len({(t.context, t.exten) for t in targets})
        more = f" ({built} more {'is' if built == 1 else 'are'} built per call)" if built else ""
        findings.append(
            Finding(
                "ok",
                f"the rules redirect to {places} place{'s' if places != 1 else ''} "
                f"Asterisk's dialplan has{more}",
            )
        )
    return findings
