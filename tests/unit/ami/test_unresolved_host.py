"""A url whose host name does not resolve says which name and where it is written.

The bare ``[Errno -2] Name or service not known`` named neither, on every
transport (httpx wraps the resolver's error twice, so the hint looks down the
exception's chain). The resolver is replaced so the test needs no DNS.
"""

from __future__ import annotations

import socket
from typing import Any, Literal

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.hints import unresolved_hint
from router.ami.tcp import TCPClient
from router.errors import AMIConnectionError

HOST = "pbx-typo.example"


@pytest.fixture
def no_such_host(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.usefixtures("no_such_host")
@pytest.mark.parametrize(
    ("url", "http_client"),
    [
        (f"tcp://{HOST}:5038", "native"),
        (f"tls://{HOST}:5039", "native"),
        (f"http://{HOST}:8088/", "native"),
        (f"http://{HOST}:8088/", "httpx"),
        (f"https://{HOST}:8089/", "httpx"),
    ],
)
async def test_an_unknown_host_name_is_named_with_where_to_fix_it(
    url: str, http_client: Literal["native", "httpx"]
) -> None:
    settings = ClientSettings(
        url=url, username="router", secret="x", connect_timeout=2, http_client=http_client
    )
    client: TCPClient | AJAMClient = (
        TCPClient(settings) if url.startswith(("tcp", "tls")) else AJAMClient(settings)
    )
    try:
        with pytest.raises(AMIConnectionError) as caught:
            await client.login()
    finally:
        await client.aclose()
    text = str(caught.value)
    assert text.startswith(
        f"cannot log in to {url.split('/')[0]}//{HOST}:{url.split(':')[2].strip('/')} as "
        "'router': cannot connect: "
    )
    assert f"no address is known for the host name {HOST!r}" in text
    assert "router.toml [asterisk] url, or --url" in text
    assert f"getent hosts {HOST}" in text


def test_a_resolver_that_does_not_answer_is_told_apart() -> None:
    exc = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    hint = unresolved_hint(RuntimeError("wrapped"), "tcp://pbx:5038")
    assert hint == ""
    wrapped = OSError("outer")
    wrapped.__cause__ = exc
    hint = unresolved_hint(wrapped, "tcp://pbx:5038")
    assert "'pbx' could not be looked up now (the resolver did not answer)" in hint
    assert "getent hosts pbx" in hint


def test_other_connect_failures_get_no_resolver_hint() -> None:
    assert unresolved_hint(ConnectionRefusedError(111, "refused"), "tcp://pbx:5038") == ""
