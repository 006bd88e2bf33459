"""Which client serves an ``[asterisk] url``: AJAM or native TCP AMI.

Kept apart from both clients so that neither imports the other (the TCP
client reuses the AJAM client's settings and error helpers; nothing goes the
other way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from router.ami.client import AJAMClient, ClientSettings, ajam_ssl_context
from router.ami.tcp import TCPClient, tcp_ssl_context
from router.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from router.ami.transport import Transport

__all__ = ["AMIClient", "load_tls_files", "open_client"]

#: Either client: the engine, the CLI and the test kit take both alike.
AMIClient: TypeAlias = AJAMClient | TCPClient


def open_client(
    settings: ClientSettings,
    *,
    transport: Transport | httpx.AsyncBaseTransport | None = None,
    named: Callable[[str], str] | None = None,
) -> AMIClient:
    """The client the url asks for: AJAM for ``http(s)://``, native AMI for ``tcp://``/``tls://``.

    Both offer what the engine uses (``login``, ``request``, ``send``,
    ``wait_event``, ``session_generation``, ``set_events``, ``aclose``) with
    one error contract, so the engine, the event stream and reconcile do not
    know which carries them. ``transport`` is AJAM's test seam; the native
    client has its own socket and refuses one. ``named(key)`` puts the key's
    line (or its flag) before a TLS file's error (:func:`load_tls_files`):
    ``run`` and ``ami`` said ``[asterisk] verify: ...`` with no file or line.
    """
    if named is not None:
        load_tls_files(settings, named=named)
    if settings.native:
        if transport is not None:
            raise ConfigError(f"{settings.url}: a tcp:// or tls:// url takes no HTTP transport")
        return TCPClient(settings)
    return AJAMClient(settings, transport=transport)


def load_tls_files(settings: ClientSettings, *, named: Callable[[str], str] | None = None) -> None:
    """Load the TLS files the url's client would (``verify``'s CA file,
    ``client_cert``, ``client_key``), as it would, and raise its ConfigError;
    no client, no connection. ``callrouter check`` without ``--asterisk``
    opens none, so a ``verify`` file that is no PEM showed only at ``run``;
    ``named(key)`` puts the key's line and name before the message
    (:meth:`router.config.Config.named`)."""
    scheme = settings.url.partition("://")[0].lower()
    if scheme == "tls":
        tcp_ssl_context(settings, named=named)
    elif scheme == "https":
        ajam_ssl_context(settings, named=named)
