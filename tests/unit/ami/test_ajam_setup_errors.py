"""AJAM's login errors name the http.conf and manager.conf settings that
cause them, including the switch that turns the whole thing off: an
administrator with ``enabled = no`` in http.conf was told to check
``bindaddr`` and ``bindport`` (both right), and one with manager.conf
``enabled = no`` only ``webenabled`` (checked on Asterisk 22.10.1: the first
refuses the connection, the second answers 404, as a wrong prefix does)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIAuthenticationError, AMIConnectionError


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def login_error(url: str) -> str:
    client = AJAMClient(ClientSettings(url=url, username="router", secret="s3cret", verify=False))
    try:
        with pytest.raises(AMIConnectionError) as caught:
            await client.login()
    finally:
        await client.aclose()
    return str(caught.value)


async def test_a_refused_http_port_names_http_conf_enabled() -> None:
    url = f"http://127.0.0.1:{closed_port()}/asterisk"
    message = await login_error(url)
    assert message == (
        f"cannot log in to {url} as 'router': cannot connect: connection refused (nothing "
        "listens there): Asterisk's HTTP server is http.conf [general] enabled = yes, "
        "bindaddr and bindport (8088) with its prefix; asterisk -rx 'http show status' "
        "says whether it is enabled and where"
    )


async def test_a_refused_https_port_names_tlsenable() -> None:
    message = await login_error(f"https://127.0.0.1:{closed_port()}/asterisk")
    assert "Asterisk's HTTPS server is http.conf [general] tlsenable = yes and tlsbindaddr" in (
        message
    )
    assert "bindport (8088)" not in message


async def test_a_404_names_manager_conf_enabled_and_webenabled() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        message = await login_error(f"http://127.0.0.1:{port}/asterisk")
    finally:
        server.close()
        await server.wait_closed()
    assert "HTTP 404 at /asterisk/rawman: check the url prefix (http.conf 'prefix')" in message
    assert "manager.conf [general] has enabled = yes and webenabled = yes" in message


async def answering(status: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize("auth", ["cookie", "digest"])
async def test_a_403_names_the_acls_that_answer_it(auth: str) -> None:
    """ "denied by an ACL" named none: http.conf's path restrictions answer
    403 before any login, and with Digest so does the user's deny/permit
    (main/manager.c, auth_http_callback)."""
    server = await answering(b"403 Forbidden")
    port = server.sockets[0].getsockname()[1]
    client = AJAMClient(
        ClientSettings(
            url=f"http://127.0.0.1:{port}/asterisk", username="router", secret="s", auth=auth
        )
    )
    try:
        with pytest.raises(AMIAuthenticationError) as caught:
            await client.login()
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    message = str(caught.value)
    assert "Asterisk answered HTTP 403: denied by an ACL: http.conf's path restrictions" in (
        message
    )
    assert "asterisk -rx 'http show status' lists them) do not permit this host" in message
    assert ("manager.conf [router] deny/permit" in message) is (auth == "digest")
