"""callrouter: route Asterisk calls with declarative rules and plugins.

This module is the public API a plugin may import; everything else is internal.
"""

from __future__ import annotations

from router.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionError,
    AMIError,
    AMIProtocolError,
    AMITimeoutError,
    AMIValidationError,
    CallRouterError,
    ConfigError,
    LookupUnavailable,
    PluginError,
    RuleError,
    RuleValidationError,
    SandboxError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AMIActionError",
    "AMIAuthenticationError",
    "AMIConnectionError",
    "AMIError",
    "AMIProtocolError",
    "AMITimeoutError",
    "AMIValidationError",
    "CallRouterError",
    "ConfigError",
    "LookupUnavailable",
    "PluginError",
    "RuleError",
    "RuleValidationError",
    "SandboxError",
    "__version__",
]
