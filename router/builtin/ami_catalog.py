"""Built-in plugin: validate rules' ``ami:`` actions against the AMI catalog.

A rule ``ami: {action: DBPutt}`` is reported at load time with a
did-you-mean, instead of failing on the first call.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.ami.catalog import load_catalog
from router.hookspecs import hookimpl
from router.rules.registry import Registry


def validate_ami(name: str, params: Mapping[str, object]) -> None:
    """Raise AMIValidationError when the catalog refuses the action or a parameter."""
    spec = load_catalog().action(name)
    spec.validate({k: str(v) for k, v in params.items()})


@hookimpl
def callrouter_register(registry: Registry) -> None:
    registry.set_ami_validator(validate_ami)
