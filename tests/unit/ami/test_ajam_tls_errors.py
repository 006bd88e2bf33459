"""AJAM over https: a failed handshake says what to fix, as the TCP client's
does. It said ``Login: connection broke to https://...: [SSL:
CERTIFICATE_VERIFY_FAILED] ...``, as if a working connection had dropped."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIConnectionError


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert, key = tmp_path / "ajam.pem", tmp_path / "ajam.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


@contextlib.asynccontextmanager
async def listening(context: ssl.SSLContext | None) -> AsyncIterator[int]:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Without TLS: what an Asterisk HTTP port sends a ClientHello back.
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def login_error(url: str, verify: bool | str = True) -> str:
    client = AJAMClient(ClientSettings(url=url, username="router", secret="s3cret", verify=verify))
    try:
        with pytest.raises(AMIConnectionError) as caught:
            await client.login()
    finally:
        await client.aclose()
    message = str(caught.value)
    assert "s3cret" not in message
    return message


async def test_an_untrusted_certificate_names_the_verify_setting(
    cert: tuple[Path, ssl.SSLContext],
) -> None:
    async with listening(cert[1]) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk")
    assert message.startswith(
        f"cannot log in to https://127.0.0.1:{port}/asterisk as 'router': "
        "TLS: [SSL: CERTIFICATE_VERIFY_FAILED]"
    )
    assert (
        'the certificate is not trusted: for a private CA, set verify = "/path/ca.pem"' in message
    )


async def test_a_certificate_for_another_name_says_so(cert: tuple[Path, ssl.SSLContext]) -> None:
    async with listening(cert[1]) as port:
        message = await login_error(f"https://localhost:{port}/asterisk", verify=str(cert[0]))
    assert "Hostname mismatch" in message
    assert "trusted but not for this host name" in message
    assert "http.conf's tlscertfile" in message


def name_only_cert(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for the name ``localhost`` only, no address."""
    cert, key = folder / "named.pem", folder / "named.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


async def test_a_certificate_for_a_name_reached_by_address_says_so(tmp_path: Path) -> None:
    """https://127.0.0.1 to a certificate for a name, that very certificate as
    verify: OpenSSL says "IP address mismatch", and the hint said the CA file
    had not signed it, sending the administrator after the wrong setting."""
    cert, context = name_only_cert(tmp_path)
    async with listening(context) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk", verify=str(cert))
    assert "IP address mismatch" in message
    assert "trusted but not for this IP address" in message
    assert "http.conf's tlscertfile" in message
    assert "not signed by" not in message


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA file that vouches for another certificate than the server's."""
    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=other", "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return other


async def test_a_ca_file_that_does_not_vouch_for_the_certificate_is_named(
    cert: tuple[Path, ssl.SSLContext], other_ca: Path
) -> None:
    """verify names a CA file that did not sign http.conf's certificate: the
    hint said to set verify, which was set."""
    other = other_ca
    async with listening(cert[1]) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk", verify=str(other))
    assert f"not signed by the CA file given as verify ({str(other)!r}" in message
    assert "http.conf's tlscertfile" in message
    assert "set verify" not in message


async def test_https_to_a_plain_http_port_says_it_does_not_speak_tls() -> None:
    async with listening(None) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk")
    assert "TLS: " in message
    assert "this port does not speak TLS: use http:// there" in message
