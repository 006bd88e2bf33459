"""The plugins started as ``callrouter run`` starts them, for ``explain --ask``.

``explain --ask`` runs the plugins' lookups for real (1C's
``onec.responsible``), and a lookup needs what its plugin makes in
``callrouter_startup`` (the 1C plugin's HTTP client and cache); so the
plugins get their startup hook, and their ``callrouter_shutdown`` once the
call is explained. The engine they are given acts on nothing:

* shadow mode (``EngineAPI.shadow``): a plugin that keeps call history or
  uploads recordings leaves them alone (the 1C plugin sends 1C no history);
* an AMI that refuses every action, so nothing reaches Asterisk (a lookup
  that asks it, ``extension_state``, fails with that reason in the trace);
* a state directory of its own, removed afterwards: nothing the service
  keeps is read or changed;
* timed jobs are accepted and never run; no call is tracked.

What the plugins log while they run is printed as one line each on stderr,
without a traceback (``callrouter explain: warning: ...``, as every one-shot
command's log: router/commands/_logging.py): an explanation is for an
administrator's terminal.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.ami.facade import AMI
from router.calls import CallTracker
from router.engine_view import CallsView, EngineView
from router.errors import LookupUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.protocol import Action, ActionResult
    from router.config import Config
    from router.hookspecs import EngineAPI
    from router.plugins import Plugins

__all__ = ["NOT_SENT", "started"]

#: Why an action a plugin sends while explaining fails.
NOT_SENT = "not sent: callrouter explain sends Asterisk nothing"


class _NoAsterisk:
    """The AMI's sender underneath: every action is refused, none is written."""

    async def request(self, action: Action, *, check: bool = True) -> ActionResult:
        raise LookupUnavailable(f"{NOT_SENT} ({action.name})")


def _no_job(*_args: Any, **_kwargs: Any) -> None:
    """``EngineAPI.schedule``: an explanation ends before any job would run."""


def _no_watch(_listener: Callable[..., Any]) -> Callable[[], None]:
    return lambda: None


@contextlib.asynccontextmanager
async def started(plugins: Plugins, config: Config) -> AsyncIterator[EngineAPI]:
    """``plugins`` (configured, registered) started on an engine that acts on
    nothing, and shut down on the way out, whatever happened in between."""
    with tempfile.TemporaryDirectory(prefix="callrouter-explain-") as state:
        api = EngineView(
            ami=AMI(_NoAsterisk()),
            calls=CallsView(CallTracker()),
            config=config,
            state_dir=lambda: Path(state),
            schedule=_no_job,
            may_ask=lambda _call, _lookup: True,
            shadow=lambda: True,
            watch=_no_watch,
            decision=lambda _linkedid: None,
            connected=lambda: False,
        )
        await plugins.startup(api)
        try:
            yield api
        finally:
            await plugins.shutdown(api)
