"""callrouter-onec: who is this caller's responsible manager, as 1C:Enterprise knows them.

The pieces are usable on their own so that the plugin hooks (which arrive with
the engine) stay thin: :mod:`.phone` decides what is looked up, :mod:`.client`
speaks the HTTP contract, :mod:`.cache` keeps routing inside its latency
budget, :mod:`.history` delivers call events without ever blocking a call, and
:mod:`.double` stands in for 1C in tests and the demo.
"""

from __future__ import annotations

from callrouter_onec.cache import BreakerTicket, CircuitBreaker, ResponsibleCache
from callrouter_onec.client import OneCClient, OneCSettings
from callrouter_onec.errors import OneCBadRequest, OneCError, OneCUnavailable
from callrouter_onec.history import CallRecord, HistoryQueue, HistorySender, build_event
from callrouter_onec.models import Client, Contact, EventAck, Manager, Ping, Responsible
from callrouter_onec.phone import RUSSIA, CountryRules, PhoneNumber, normalize

__version__ = "0.2.0.dev0"

__all__ = [
    "RUSSIA",
    "BreakerTicket",
    "CallRecord",
    "CircuitBreaker",
    "Client",
    "Contact",
    "CountryRules",
    "EventAck",
    "HistoryQueue",
    "HistorySender",
    "Manager",
    "OneCBadRequest",
    "OneCClient",
    "OneCError",
    "OneCSettings",
    "OneCUnavailable",
    "PhoneNumber",
    "Ping",
    "Responsible",
    "ResponsibleCache",
    "build_event",
    "normalize",
]
