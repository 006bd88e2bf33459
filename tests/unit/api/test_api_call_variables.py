"""Click-to-call ``variables`` cannot choose a dialplan location (docs/security.md rule 1).

Before: only CR, LF, NUL and commas were checked. A token for extension 101
sent ``{"__CALLROUTER_DEFAULT": "fallback", "__CALLROUTER_DID": "666",
"__CALLROUTER_DND_102": "1"}``; the inherited channel variables shadowed the
shipped dialplan's globals, and a transfer to 102 ran ``Goto(fallback,666,1)``
on the sandbox Asterisk. Now a request's variable names must be allowed by
``[api] call_variables`` (default ``CRM_*``), and names callrouter or Asterisk
reserve are refused (422, naming the variable) whatever that list says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from router.api.app import build_app
from router.api.auth import hash_token, new_token
from router.api.context import ApiContext
from router.api.dial_settings import (
    DEFAULT_CALL_VARIABLES,
    DialSettings,
    call_variable_problem,
    reserved_variable,
)
from router.api.settings import ApiSettings, TokenSettings
from router.errors import ConfigError
from router.testing import StubEngine, config_from_toml

DESK = new_token()
DIALING = DialSettings(variables=MappingProxyType({"CALL_SOURCE": "1c"}))
#: The attack of the review, as sent.
ATTACK = {
    "__CALLROUTER_DEFAULT": "fallback",
    "__CALLROUTER_DID": "666",
    "__CALLROUTER_DND_102": "1",
}

#: Names that choose a location, run something or steer Asterisk, in the spellings
#: a request could try (inherited, any case).
RESERVED = [
    *ATTACK,
    "CALLROUTER_OUTBOUND",
    "__CALLROUTER_FWD_102",
    "__callrouter_default",
    "_CallRouter_Wait",
    "CALLROUTER_RECORD",
    "CALLROUTER_NEXT",
    "TRANSFER_CONTEXT",
    "__FORWARD_CONTEXT",
    "GOTO_ON_BLINDXFR",
    "BLINDTRANSFER",
    "ATTENDEDTRANSFER",
    "ATTENDED_TRANSFER_COMPLETE_SOUND",
    "__DYNAMIC_FEATURES",
    "__FEATURES",
    "BRIDGE_FEATURES",
    "MACRO_CONTEXT",
    "GOSUB_RETVAL",
    "CONNECTED_LINE_SEND_SUB",
    "REDIRECTING_SEND_SUB_ARGS",
    "MONITOR_EXEC",
    "TOUCH_MIXMONITOR",
    "MIXMONITOR_FILENAME",
    "PARKINGDYNCONTEXT",
    "PARKINGLOT",
    "PICKUPMARK",
    "__SPYGROUP",
    "OUTBOUND_GROUP_ONCE",
    "LIMIT_WARNING_FILE",
    "AGIEXITONHANGUP",
    "QUEUE_PRIO",
    "CC_INTERFACES",
    "PJSIP_TRANSFER_HANDLING",
    "__SIPREFERREDBYHDR",
    "VM_CONTEXT",
    "EXITCONTEXT",
    "DIALSTATUS",
    "HANGUPCAUSE",
    "CALLERID",
    "ARG1",
    "ARGC",
    "UNIQUEID",
    "CHANNEL",
    "LANGUAGE",
    # A site's own location-like names, inside the allowed CRM_* too.
    "CRM_CONTEXT",
    "__CRM_EXTEN",
    "crm_goto",
    "CRM_STATUS",
]


def token(allow: tuple[str, ...] = ("calls:create",)) -> TokenSettings:
    return TokenSettings(
        name="desk101",
        digest=bytes.fromhex(hash_token(DESK).removeprefix("sha256:")),
        allow=allow,
        extensions=("101",),
        rate=1000,
        burst=1000,
    )


def client_for(stub: StubEngine, **dialing: Any) -> httpx.AsyncClient:
    api = ApiSettings(tokens={"desk101": token()}, dialing=dataclasses.replace(DIALING, **dialing))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(ApiContext(stub, api))),
        base_url="http://api.test",
    )


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


async def call(client: httpx.AsyncClient, variables: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/api/v1/calls",
        json={"from": "101", "to": "89164440001", "variables": variables},
        headers={"Authorization": f"Bearer {DESK}"},
    )


async def test_the_review_s_attack_is_422_naming_the_variable_and_nothing_is_sent(
    stub: StubEngine,
) -> None:
    async with client_for(stub) as client:
        response = await call(client, ATTACK)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "variables.__CALLROUTER_DEFAULT"
    assert problem["detail"].startswith("variables.__CALLROUTER_DEFAULT: reserved: callrouter's")
    assert not stub.replay.sent("Originate")


@pytest.mark.parametrize("name", RESERVED)
async def test_reserved_names_are_422_even_when_call_variables_allows_everything(
    stub: StubEngine, name: str
) -> None:
    async with client_for(stub, call_variables=("*",)) as client:
        response = await call(client, {name: "x"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"variables.{name}"
    assert "reserved" in response.json()["detail"]
    assert not stub.replay.sent("Originate")


async def test_only_names_call_variables_allows_pass(stub: StubEngine) -> None:
    async with client_for(stub) as client:  # the default: CRM_*
        order = await call(client, {"ORDER_ID": "1017"})
        crm = await call(client, {"CRM_DEAL": "1017", "__CRM_CLIENT": "ООО Ромашка"})
    assert order.status_code == 422
    assert order.json()["detail"] == ("variables.ORDER_ID: not in [api] call_variables (CRM_*)")
    assert crm.status_code == 201, crm.text
    [sent] = stub.replay.sent("Originate")
    assert sent.getall("Variable") == [
        "CALL_SOURCE=1c",
        "CRM_DEAL=1017",
        "__CRM_CLIENT=ООО Ромашка",
    ]
    async with client_for(stub, call_variables=("ORDER_ID",)) as client:
        order = await call(client, {"__ORDER_ID": "1017"})
        crm = await call(client, {"CRM_DEAL": "1017"})
    assert order.status_code == 201, order.text
    assert crm.status_code == 422
    async with client_for(stub, call_variables=()) as client:
        none = await call(client, {"CRM_DEAL": "1017"})
        empty = await call(client, {})
    assert none.json()["detail"] == "variables.CRM_DEAL: not in [api] call_variables (none)"
    assert empty.status_code == 201


async def test_a_request_cannot_change_router_toml_s_variables(stub: StubEngine) -> None:
    async with client_for(stub, call_variables=("*",)) as client:
        same = await call(client, {"CALL_SOURCE": "evil"})
        inherited = await call(client, {"__call_source": "evil"})
    assert [r.status_code for r in (same, inherited)] == [422, 422]
    assert "set by router.toml [api.variables]" in same.json()["detail"]
    assert not stub.replay.sent("Originate")


@pytest.mark.parametrize(
    "variables",
    [
        {"___CRM_X": "1"},  # three underscores: not Asterisk's inheritance
        {"_1CRM": "1"},
        {"__": "1"},
        {"CRM-X": "1"},
        {"CRM(X)": "1"},  # a function: Asterisk would call it
        {"CRM_" + "X" * 61: "1"},
        {"CRM_X": "a\tb"},
        {"CRM_X": "a\x1b[2Jb"},
        {"CRM_X": "a\x7fb"},
        {"CRM_X": "x" * 257},
        {"CRM_X": 1},
        {"CRM_X": "1", "__CRM_X": "2"},  # one variable, twice
        {f"CRM_{i}": "1" for i in range(33)},
    ],
)
async def test_malformed_names_values_and_counts_are_400(
    stub: StubEngine, variables: dict[str, Any]
) -> None:
    async with client_for(stub, call_variables=("*",)) as client:
        response = await call(client, variables)
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith("variables")
    assert not stub.replay.sent("Originate")


def test_bounds_that_still_pass() -> None:
    settings = dataclasses.replace(DIALING, call_variables=("*",))
    for name in ("CRM_DEAL", "_CRM_DEAL", "__CRM_DEAL", "ORDER_ID", "X", "CRM_" + "X" * 60):
        assert call_variable_problem(name, settings) is None, name
    assert reserved_variable("CRM_DEAL") is None


def test_call_variables_are_read_from_router_toml(tmp_path: Path) -> None:
    def api(text: str) -> DialSettings:
        config = config_from_toml(tmp_path, "[api]\n" + text)
        assert config.api is not None
        return config.api.dialing

    assert api("").call_variables == DEFAULT_CALL_VARIABLES == ("CRM_*",)
    assert api('call_variables = ["ORDER_ID", "CRM_*"]\n').call_variables == (
        "ORDER_ID",
        "CRM_*",
    )
    assert api("call_variables = []\n").call_variables == ()
    assert api('call_variables = ["*"]\n').call_variables == ("*",)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("TRANSFER_CONTEXT", "'TRANSFER_CONTEXT' is reserved (it steers transfers)"),
        ("CALLROUTER_*", "'CALLROUTER_*' is reserved (callrouter's dialplan reads it"),
        ("MY_CONTEXT", "is reserved (a name with CONTEXT may choose a dialplan location)"),
        ("_CRM_X", "expected a variable name"),
        ("CRM-X", "expected a variable name"),
        ("CRM*X", "expected a variable name"),
    ],
)
def test_bad_call_variables_are_refused_naming_the_key(
    tmp_path: Path, entry: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[api\] call_variables") as refused:
        config_from_toml(tmp_path, f'[api]\ncall_variables = ["{entry}"]\n')
    assert message in str(refused.value)
