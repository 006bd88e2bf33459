"""The documented least-privilege manager user on the real Asterisk (issue 11 item 8):
what the engine needs passes, a missing class is a privilege error on a session
that stays logged in, and the sandbox's user is the one the docs describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIPrivilegeError
from router.sandbox import Sandbox

REPO = Path(__file__).parents[2]


def documented_write_line() -> str:
    text = (REPO / "docs" / "asterisk.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^write = [a-z,]+$", text, re.MULTILINE)
    return line


def test_the_sandbox_router_user_is_the_documented_one() -> None:
    conf = (REPO / "router" / "sandbox" / "conf" / "manager.conf").read_text(encoding="utf-8")
    section = conf.split("[router]", 1)[1].split("\n[", 1)[0]
    assert documented_write_line() in section.splitlines()


async def test_documented_user_gets_a_privilege_error_and_keeps_its_session(
    sandbox: Sandbox,
) -> None:
    settings = ClientSettings(
        url=sandbox.url, username="router", secret=sandbox.users().get("router", sandbox.secret)
    )
    async with AJAMClient(settings) as client:
        for _ in range(2):
            with pytest.raises(AMIPrivilegeError) as caught:
                await client.send("DBPut", {"Family": "callrouter", "Key": "mode", "Val": "night"})
        assert str(caught.value) == (
            "DBPut: Permission denied: the manager user 'router' "
            "needs write class system (manager.conf)"
        )
        assert client.session_generation == 1  # no re-login, so no event-stream gap
        # What the shipped rules and the engine do instead is allowed.
        await client.send("Setvar", {"Variable": "CALLROUTER_MODE", "Value": "night"})
        value = await client.send("Getvar", {"Variable": "CALLROUTER_MODE"})
        assert value.response.get("Value") == "night"
        await client.send(
            "UserEvent", {"UserEvent": "CallRouterLive", "Instance": "t"}, validate=False
        )
        assert client.session_generation == 1
