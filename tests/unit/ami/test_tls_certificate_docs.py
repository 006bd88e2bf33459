"""docs/asterisk.md's recipe for AMI over TLS's certificate, run as written
(its paths moved into the test's folder): callrouter's ``tls://`` client
trusts the certificate it makes, with ``verify`` naming that very file, for
the name it was made for and no other. The Russian twin shows the same
commands. An administrator trial found the docs gave none (issue 16)."""

from __future__ import annotations

import asyncio
import re
import shlex
import ssl
import subprocess
from pathlib import Path

import pytest

from router.ami.client import ClientSettings
from router.ami.tcp import tcp_ssl_context
from tests.unit import tls_files
from tests.unit.tls_files import Certificate

REPO = Path(__file__).resolve().parents[3]
KEYS = "/etc/asterisk/keys/"


def recipe(page: Path) -> list[str]:
    """The shell block of ``page`` that holds the ``openssl req`` command, as
    its commands (continuation lines joined)."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "openssl req -x509" in b and KEYS in b]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_russian_page_shows_the_same_commands() -> None:
    assert recipe(REPO / "docs" / "ru" / "asterisk.md") == recipe(REPO / "docs" / "asterisk.md")


async def handshake(port: int, name: str, ca: Path) -> None:
    context = tcp_ssl_context(
        ClientSettings(url=f"tls://{name}:{port}", username="router", secret="s", verify=str(ca))
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name)
    writer.close()


def run_recipe(commands: list[str], folder: Path) -> Certificate:
    """The page's commands with its key folder moved to ``folder``."""
    for command in commands:
        argv = shlex.split(command.replace(KEYS, f"{folder}/"))
        if argv[0] == "chown":
            continue  # no asterisk user here; the mode below is what keeps the key
        subprocess.run(argv, check=True, capture_output=True)
    return Certificate(folder / "asterisk.pem", folder / "asterisk.key")


async def test_the_documented_certificate_is_trusted_for_its_name(tmp_path: Path) -> None:
    commands = recipe(REPO / "docs" / "asterisk.md")
    made = await asyncio.to_thread(run_recipe, commands, tmp_path)
    assert made.key.stat().st_mode & 0o077 == 0
    # The name the page says to replace: the url's host.
    assert "pbx.example.com" in " ".join(commands)
    async with tls_files.listening(made.server_context()) as port:
        await handshake(port, "pbx.example.com", made.cert)  # the copy `verify` names
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, "other.example.com", made.cert)
