"""The ``onec`` entry point of the ``callrouter`` group.

callrouter loads this module by its entry point and registers it with its
plugin manager. The hook implementations (the ``onec.responsible(number)``
lookup, prefetch at ``Newchannel``, the ``notify`` target for call events)
are written against the engine's hook specifications, which do not exist
yet, so this module deliberately registers nothing: loading it is harmless.

What the hooks will wire together is already here and tested on its own:
:class:`callrouter_onec.client.OneCClient` (the HTTP contract),
:class:`callrouter_onec.cache.ResponsibleCache` (the lookup on a latency
budget), :class:`callrouter_onec.history.HistoryQueue` and
:class:`callrouter_onec.history.HistorySender` (call history into 1C).
"""

from __future__ import annotations

__all__ = ["NAME"]

#: The plugin's name in rules (``onec.responsible``) and in callrouter's logs.
NAME = "onec"
