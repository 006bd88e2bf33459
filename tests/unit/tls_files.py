"""Certificates and a TLS listener for the unit tests, made with the openssl
command line in a test's own folder: a self-signed server certificate (for an
address, or for a name only), a CA file that vouches for another certificate
than the server's, an encrypted copy of a key.

The AMI (tls://), AJAM (https://), API and ``check --config`` tests each made
their own with the same ``openssl req`` call; the fixtures of tests/unit/ami
and the files of the other tests come from here."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

#: What a listener does with each connection; the default hangs up at once.
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Certificate(NamedTuple):
    """A certificate file and its key file (PEM, the key unencrypted)."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server's TLS context that presents this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed(
    folder: Path,
    stem: str = "server",
    *,
    name: str = "127.0.0.1",
    alt: str | None = "IP:127.0.0.1",
) -> Certificate:
    """``folder/stem.pem`` and ``folder/stem.key``: a self-signed certificate
    for the common name ``name`` and the subjectAltName ``alt`` (none if None),
    valid for a day."""
    cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
    extension = [] if alt is None else ["-addext", f"subjectAltName={alt}"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", *extension, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


def name_only(folder: Path) -> Certificate:
    """A self-signed certificate for the name ``localhost`` only, no address."""
    return self_signed(folder, "named", name="localhost", alt="DNS:localhost")


def other_ca(folder: Path) -> Path:
    """A CA file that vouches for another certificate than the server's."""
    return self_signed(folder, "other-ca", name="other", alt=None).cert


def encrypted_key(
    key: Path, out: Path, password: str, *, tool: str = "pkey", cipher: str = "-aes256"
) -> Path:
    """``out``: ``key`` encrypted with ``password`` (``openssl <tool> <cipher>``)."""
    subprocess.run(
        ["openssl", tool, "-in", str(key), cipher, "-passout", f"pass:{password}",
         "-out", str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


async def _hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def listening(
    context: ssl.SSLContext | None, answer: Answer = _hang_up
) -> AsyncIterator[int]:
    """The port of a loopback server (TLS with ``context``, plain without)
    running ``answer`` for each connection; closed on the way out."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
