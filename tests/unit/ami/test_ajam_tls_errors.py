"""AJAM over https: a failed handshake says what to fix, as the TCP client's
does. It said ``Login: connection broke to https://...: [SSL:
CERTIFICATE_VERIFY_FAILED] ...``, as if a working connection had dropped."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIConnectionError
from tests.unit import tls_files
from tests.unit.tls_files import Certificate


async def bad_request(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Without TLS: what an Asterisk HTTP port sends a ClientHello back.
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    writer.close()


def listening(context: ssl.SSLContext | None) -> contextlib.AbstractAsyncContextManager[int]:
    return tls_files.listening(context, bad_request)


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
    self_signed: Certificate,
) -> None:
    async with listening(self_signed.server_context()) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk")
    assert message.startswith(
        f"cannot log in to https://127.0.0.1:{port}/asterisk as 'router': "
        "TLS: [SSL: CERTIFICATE_VERIFY_FAILED]"
    )
    assert (
        'the certificate is not trusted: for a private CA, set verify = "/path/ca.pem"' in message
    )


async def test_a_certificate_for_another_name_says_so(self_signed: Certificate) -> None:
    async with listening(self_signed.server_context()) as port:
        message = await login_error(
            f"https://localhost:{port}/asterisk", verify=str(self_signed.cert)
        )
    assert "Hostname mismatch" in message
    assert "trusted but not for this host name" in message
    assert "http.conf's tlscertfile" in message


async def test_a_certificate_for_a_name_reached_by_address_says_so(
    name_only: Certificate,
) -> None:
    """https://127.0.0.1 to a certificate for a name, that very certificate as
    verify: OpenSSL says "IP address mismatch", and the hint said the CA file
    had not signed it, sending the administrator after the wrong setting."""
    async with listening(name_only.server_context()) as port:
        message = await login_error(
            f"https://127.0.0.1:{port}/asterisk", verify=str(name_only.cert)
        )
    assert "IP address mismatch" in message
    assert "trusted but not for this IP address" in message
    assert "http.conf's tlscertfile" in message
    assert "not signed by" not in message


async def test_a_ca_file_that_does_not_vouch_for_the_certificate_is_named(
    self_signed: Certificate, other_ca: Path
) -> None:
    """verify names a CA file that did not sign http.conf's certificate: the
    hint said to set verify, which was set."""
    other = other_ca
    async with listening(self_signed.server_context()) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk", verify=str(other))
    assert f"not signed by the CA file given as verify ({str(other)!r}" in message
    assert "http.conf's tlscertfile" in message
    assert "set verify" not in message


async def test_https_to_a_plain_http_port_says_it_does_not_speak_tls() -> None:
    async with listening(None) as port:
        message = await login_error(f"https://127.0.0.1:{port}/asterisk")
    assert "TLS: " in message
    assert "this port does not speak TLS: use http:// there" in message
