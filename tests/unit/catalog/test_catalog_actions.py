"""The typed method layer: one method per action, Python values in, AMI headers out."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from router.ami.actions import ACTION_METHODS, AMIActions
from router.ami.catalog import encode_action, encode_value, load_catalog
from router.errors import AMIValidationError


@dataclass(frozen=True)
class FakeMessage:
    fields: tuple[tuple[str, str], ...] = (("Response", "Success"),)

    def get(self, key: str) -> str | None:
        return dict(self.fields).get(key)

    def items(self) -> tuple[tuple[str, str], ...]:
        return self.fields


@dataclass(frozen=True)
class FakeResult:
    response: FakeMessage = field(default_factory=FakeMessage)
    items: tuple[FakeMessage, ...] = ()
    complete: bool = True


class Recorder(AMIActions[FakeResult]):
    """Stands in for the AJAM client: records what would go on the wire."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def request(self, action: Any, *, check: bool = True) -> FakeResult:
        self.sent.append(action)
        return FakeResult()


def test_every_catalog_action_has_an_async_method() -> None:
    catalog = load_catalog()
    assert set(ACTION_METHODS) == set(catalog.actions)
    for spec in catalog:
        method = getattr(AMIActions, spec.method, None)
        assert callable(method), spec.name
        assert inspect.iscoroutinefunction(method), spec.name
        assert method.__doc__
        assert spec.synopsis.split()[0] in method.__doc__
        signature = inspect.signature(method)
        required = {
            n
            for n, p in signature.parameters.items()
            if p.default is inspect.Parameter.empty and n != "self"
        }
        assert required == {p.python_name for p in spec.required}, spec.name
        assert all(
            p.kind is inspect.Parameter.KEYWORD_ONLY
            for n, p in signature.parameters.items()
            if n != "self"
        )


def test_method_names_do_not_shadow_client_methods() -> None:
    assert {"send", "request", "action", "login", "wait_event"}.isdisjoint(ACTION_METHODS.values())
    assert ACTION_METHODS["Login"] == "ami_login"
    assert ACTION_METHODS["DAHDIDNDon"] == "dahdi_dnd_on"


async def test_originate_with_variables() -> None:
    ami = Recorder()
    await ami.originate(
        channel="Local/74952293042@incoming",
        context="incoming",
        exten="74952293042",
        priority=1,
        async_=True,
        timeout=30000,
        variable={"A": "1", "B": 2},
        action_id="cr-1",
    )
    (action,) = ami.sent
    assert action.name == "Originate"
    assert action.action_id == "cr-1"
    assert action.params == (
        ("Channel", "Local/74952293042@incoming"),
        ("Exten", "74952293042"),
        ("Context", "incoming"),
        ("Priority", "1"),
        ("Timeout", "30000"),
        ("Variable", "A=1"),
        ("Variable", "B=2"),
        ("Async", "true"),
    )


async def test_redirect() -> None:
    ami = Recorder()
    await ami.redirect(
        channel="Local/1@incoming-00000001;2", context="managers", exten="101", priority=1
    )
    assert ami.sent[0].params == (
        ("Channel", "Local/1@incoming-00000001;2"),
        ("Exten", "101"),
        ("Context", "managers"),
        ("Priority", "1"),
    )
    assert ami.sent[0].action_id is None


async def test_queue_status_returns_the_client_result() -> None:
    ami = Recorder()
    result = await ami.queue_status(queue="sales")
    assert result.complete
    assert (ami.sent[0].name, ami.sent[0].params) == ("QueueStatus", (("Queue", "sales"),))


async def test_invalid_call_fails_before_sending() -> None:
    ami = Recorder()
    with pytest.raises(AMIValidationError, match="needs Exten"):
        await ami.originate(channel="Local/1@x")
    with pytest.raises(AMIValidationError, match="did you mean"):
        await ami.send("Redirect", {"Channel": "x", "Exten": "1", "Contxt": "y", "Priority": 1})
    assert ami.sent == []


async def test_raw_send_for_actions_newer_than_the_catalog() -> None:
    ami = Recorder()
    await ami.send("FutureAction", {"Flag": True, "Items": ["a", "b"]}, validate=False)
    assert ami.sent[0].name == "FutureAction"
    assert ami.sent[0].params == (("Flag", "true"), ("Items", "a"), ("Items", "b"))


async def test_send_canonicalises_name_and_headers() -> None:
    ami = Recorder()
    await ami.send("hangup", {"channel": "PJSIP/1-0001", "cause": 16})
    assert (ami.sent[0].name, ami.sent[0].params) == (
        "Hangup",
        (("Channel", "PJSIP/1-0001"), ("Cause", "16")),
    )


async def test_user_event_extra_headers() -> None:
    ami = Recorder()
    await ami.user_event(user_event="RouteRequest", headers={"Caller": "+74951234567"})
    assert ami.sent[0].params == (("UserEvent", "RouteRequest"), ("Caller", "+74951234567"))


def test_value_conversion() -> None:
    reload_members = load_catalog().action("QueueReload").param("Members")
    assert reload_members is not None
    assert encode_value(True) == "true"
    assert encode_value(False) == "false"
    assert encode_value(True, reload_members[0]) == "yes"
    assert encode_value(30000) == "30000"
    assert encode_value(1.5) == "1.5"
    assert encode_value({"A": 1, "B": True}) == ["A=1", "B=true"]
    assert encode_value(["x", 2]) == ["x", "2"]
    assert encode_value("Local/1@x") == "Local/1@x"


def test_action_id_in_params_moves_to_the_action() -> None:
    encoded = encode_action("Ping", {"ActionID": "7"})
    assert encoded == ("Ping", (), "7")
    with pytest.raises(AMIValidationError, match="two different ActionIDs"):
        encode_action("Ping", {"ActionID": "7"}, action_id="8")
