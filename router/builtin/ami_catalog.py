"""Built-in plugin: validate rules' ``ami:`` actions and ``on: event`` names
against the AMI catalog.

A rule ``ami: {action: DBPutt}`` or ``on: event Hangupp`` is reported at load
time with a did-you-mean, instead of failing on the first call (or never
firing).
"""

from __future__ import annotations

from collections.abc import Mapping

from router.ami.catalog import load_catalog
from router.ami.event_filter import API_EVENTS, CORE_EVENTS
from router.hookspecs import hookimpl
from router.rules.registry import Registry


def validate_ami(name: str, params: Mapping[str, object]) -> None:
    """Raise AMIValidationError when the catalog refuses the action or a parameter."""
    spec = load_catalog().action(name)
    spec.validate({k: str(v) for k, v in params.items()})


@hookimpl
def callrouter_register(registry: Registry) -> None:
    registry.set_ami_validator(validate_ami)
    # The catalog's events, and those the engine reads that it leaves out (Newexten).
    registry.set_event_names({*load_catalog().events, *CORE_EVENTS, *API_EVENTS})
