"""The executor: actions in order, Redirect confirmed by Newexten, hang-ups traced."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from router.ami.message import Event, Response
from router.ami.protocol import ActionResult
from router.builtin.actions import EXECUTE
from router.errors import AMIActionError
from router.executor import Executor
from router.rules.decision import Action


class FakeAMI:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, str] = {}
        self.on_send: Any = None

    async def send(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        action_id: str | None = None,
        validate: bool = True,
        check: bool = True,
    ) -> ActionResult:
        self.sent.append((name, dict(params or {})))
        if name in self.fail:
            raise AMIActionError(
                name, Response((("Response", "Error"), ("Message", self.fail[name])))
            )
        if self.on_send is not None:
            self.on_send(name, params)
        return ActionResult(Response((("Response", "Success"),)))


class Host:
    def __init__(self) -> None:
        self.ami = FakeAMI()
        self.notified: list[tuple[str, dict[str, str]]] = []

    async def execute(self, action: Action, call: Any) -> Any:
        return "done by plugin" if action.kind == "plugin_kind" else None

    async def notify(self, target: str, params: Mapping[str, str], call: Any) -> None:
        self.notified.append((target, dict(params)))


def executor_for(host: Host, **options: Any) -> Executor:
    """The executor on the host's AMI and plugins, with the built-in kinds."""
    return Executor(host.ami, host, kinds=EXECUTE, **options)


def newexten(channel: str, context: str) -> Event:
    return Event(
        (("Event", "Newexten"), ("Channel", channel), ("Context", context), ("Timestamp", "1000.5"))
    )


async def test_setvar_then_redirect_confirmed_by_newexten() -> None:
    host = Host()
    executor = executor_for(host, confirm_timeout=2)
    host.ami.on_send = lambda name, params: (
        asyncio.get_running_loop().call_later(
            0.01, executor.observe, newexten(params["Channel"], params["Context"])
        )
        if name == "Redirect"
        else None
    )
    actions = [
        Action.make("setvar", {"CRM_CLIENT": "ООО «Ромашка»"}),
        Action.make("redirect", {"context": "callrouter-dial", "exten": "101"}),
    ]
    outcomes = await executor.run(actions, None, "Local/1@in-0;2")
    assert [o.status for o in outcomes] == ["ok", "confirmed"]
    assert outcomes[1].event_timestamp == 1000.5
    assert host.ami.sent == [
        (
            "Setvar",
            {"Channel": "Local/1@in-0;2", "Variable": "CRM_CLIENT", "Value": "ООО «Ромашка»"},
        ),
        (
            "Redirect",
            {
                "Channel": "Local/1@in-0;2",
                "Context": "callrouter-dial",
                "Exten": "101",
                "Priority": "1",
            },
        ),
    ]
    assert executor.redirects == {"Local/1@in-0;2": 1}


async def test_redirect_without_newexten_is_unconfirmed() -> None:
    executor = executor_for(Host(), confirm_timeout=0.05)
    (outcome,) = await executor.run(
        [Action.make("redirect", {"context": "x", "exten": "1"})], None, "Local/1;2"
    )
    assert outcome.status == "unconfirmed"


async def test_newexten_elsewhere_does_not_confirm() -> None:
    host = Host()
    executor = executor_for(host, confirm_timeout=0.1)
    host.ami.on_send = lambda name, params: executor.observe(
        newexten(params["Channel"], "other-context")
    )
    (outcome,) = await executor.run(
        [Action.make("redirect", {"context": "x", "exten": "1"})], None, "Local/1;2"
    )
    assert outcome.status == "unconfirmed"


async def test_caller_hung_up_is_an_outcome_and_stops_the_rest() -> None:
    host = Host()
    host.ami.fail["Setvar"] = "Channel does not exist: Local/1;2"
    outcomes = await executor_for(host).run(
        [
            Action.make("setvar", {"A": "1"}),
            Action.make("redirect", {"context": "x", "exten": "1"}),
        ],
        None,
        "Local/1;2",
    )
    assert [o.status for o in outcomes] == ["channel-gone"]
    assert [name for name, _ in host.ami.sent] == ["Setvar"]


async def test_failed_action_does_not_stop_the_next_one() -> None:
    host = Host()
    host.ami.fail["Originate"] = "Originate failed"
    outcomes = await executor_for(host).run(
        [
            Action.make("originate", {"channel": "Local/1@x", "caller_id": "x <1>"}),
            Action.make("notify", {"plugin": "onec", "event": "missed"}),
        ],
        None,
        None,
    )
    assert [o.status for o in outcomes] == ["failed", "ok"]
    assert host.ami.sent[0] == (
        "Originate",
        {"Channel": "Local/1@x", "CallerID": "x <1>", "Async": "true"},
    )
    assert host.notified == [("onec", {"event": "missed"})]


@pytest.mark.parametrize(
    ("action", "status"),
    [
        (Action.make("hangup", {"cause": "21"}), "ok"),
        (Action.make("ami", {"action": "DBPut", "family": "f", "key": "k", "val": "v"}), "ok"),
        (Action.make("plugin_kind", {}), "ok"),
        (Action.make("nobody_owns_this", {}), "no-executor"),
    ],
)
async def test_other_kinds(action: Action, status: str) -> None:
    host = Host()
    (outcome,) = await executor_for(host).run([action], object(), "Local/1;2")  # type: ignore[arg-type]
    assert outcome.status == status


async def test_an_ami_action_on_callrouters_own_session_fails_unsent() -> None:
    """A rule's ``ami`` action goes out on the engine's own AMI session, so a
    WaitEvent there (its name filled in by a template, which the load cannot
    see) would take the engine's events: it fails, and nothing is sent."""
    host = Host()
    (outcome,) = await executor_for(host).run(
        [Action.make("ami", {"action": "waitevent", "timeout": "30"})], None, None
    )
    assert outcome.status == "failed"
    assert "callrouter's own" in outcome.detail
    assert host.ami.sent == []


async def test_a_templated_userevent_named_as_callrouters_own_fails_unsent() -> None:
    """The name may come from a template (a caller's or 1C's value), which
    the load cannot see: a forged routing request or heartbeat is not sent."""
    host = Host()
    (outcome,) = await executor_for(host).run(
        [Action.make("ami", {"action": "UserEvent", "userevent": "CALLROUTERrequest"})],
        None,
        None,
    )
    assert outcome.status == "failed"
    assert "callrouter's own" in outcome.detail
    assert host.ami.sent == []


def test_a_non_finite_confirmation_timestamp_is_no_timestamp() -> None:
    """A 'nan' Timestamp on the confirming Newexten must not make total_ms NaN (invalid JSON)."""
    from router.ami.message import Event
    from router.executor import event_timestamp as _timestamp

    for bad in ("nan", "inf", "-1", "1e308", "١٧٠٠٠٠٠٠٠٠.5", ""):
        assert _timestamp(Event((("Event", "Newexten"), ("Timestamp", bad)))) is None
    good = Event((("Event", "Newexten"), ("Timestamp", "1700000000.25")))
    assert _timestamp(good) == 1700000000.25


def test_every_built_in_kind_is_declared_and_executed_in_one_module() -> None:
    """Issue 12 item 4: built-ins are plugins end to end: the kinds the built-in
    actions plugin registers are exactly the kinds router/builtin/actions.py executes."""
    from router.builtin.actions import register
    from router.rules.registry import Registry

    registry = Registry()
    register(registry)
    assert set(registry.actions) == set(EXECUTE)


async def test_originate_headers_are_the_catalogs_spelling() -> None:
    """No header table of our own: any case of the header, or its Python name."""
    host = Host()
    await executor_for(host).run(
        [
            Action.make(
                "originate",
                {
                    "channel": "Local/1@x",
                    "application": "Playback",
                    "callerid": "x <1>",
                    "early_media": "true",
                    "OTHERCHANNELID": "o-1",
                },
            )
        ],
        None,
        None,
    )
    assert host.ami.sent == [
        (
            "Originate",
            {
                "Channel": "Local/1@x",
                "Application": "Playback",
                "CallerID": "x <1>",
                "EarlyMedia": "true",
                "OtherChannelId": "o-1",
                "Async": "true",
            },
        )
    ]


def test_the_feed_and_click_to_call_read_asterisk_time_the_same_way() -> None:
    """One reader of an event's Timestamp: a 'nan' is no time anywhere (it made JSON invalid)."""
    from router.ami.message import Event

    assert Event((("Event", "DialBegin"), ("Timestamp", "nan"))).timestamp is None
    assert Event((("Event", "DialBegin"), ("Timestamp", "12.5"))).timestamp == 12.5


class SlowAMI(FakeAMI):
    """Answers each action only when the test says so, as Asterisk answers a
    round trip later: what was written before any answer shows."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.written_before_answers: list[str] = []

    async def send(self, name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        if not self.answer.is_set():
            self.written_before_answers.append(f"{name} {dict(params or {}).get('Variable', '')}")
        await asyncio.sleep(0)  # the answer comes later, never in the writing step
        await self.answer.wait()
        return await super().send(name, params, **kw)


async def test_a_setvar_of_several_variables_writes_them_all_before_any_answer() -> None:
    """The owner rule sets CRM_CLIENT and CRM_MANAGER before its Redirect: each
    Setvar waited for Asterisk's answer before the next was written, so the
    Redirect came two round trips after the decision, not one."""
    host = Host()
    host.ami = SlowAMI()
    executor = executor_for(host, confirm_timeout=0.05)
    run = asyncio.ensure_future(
        executor.run(
            [Action.make("setvar", {"CRM_CLIENT": "Ромашка", "CRM_MANAGER": "Иванов"})],
            None,
            "Local/1@in-0;2",
        )
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert host.ami.written_before_answers == ["Setvar CRM_CLIENT", "Setvar CRM_MANAGER"]
    host.ami.answer.set()
    (outcome,) = await run
    assert (outcome.status, outcome.detail) == ("ok", "CRM_CLIENT, CRM_MANAGER")


async def test_a_setvar_failing_on_its_second_variable_is_that_failure() -> None:
    host = Host()
    failing = {"CRM_MANAGER"}
    sent: list[str] = []

    async def send(name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        variable = dict(params or {}).get("Variable", "")
        sent.append(variable)
        await asyncio.sleep(0.01 if variable == "CRM_CLIENT" else 0)
        if variable in failing:
            raise AMIActionError(
                name, Response((("Response", "Error"), ("Message", "Channel does not exist")))
            )
        return ActionResult(Response((("Response", "Success"),)))

    host.ami.send = send  # type: ignore[method-assign]
    (outcome,) = await executor_for(host).run(
        [Action.make("setvar", {"CRM_CLIENT": "x", "CRM_MANAGER": "y"})], None, "Local/1;2"
    )
    assert sent == ["CRM_CLIENT", "CRM_MANAGER"]
    assert (outcome.status, outcome.detail) == ("channel-gone", "Channel does not exist")


class OrderedSlowAMI(SlowAMI):
    """One TCP session: Asterisk runs what is written in turn."""

    actions_in_order = True


@pytest.mark.parametrize(("ami", "before"), [(OrderedSlowAMI, 2), (SlowAMI, 1)])
async def test_the_redirect_follows_its_setvar_without_waiting_on_one_ordered_session(
    ami: type[SlowAMI], before: int
) -> None:
    """Over TCP (``actions_in_order``) the Redirect is written right behind
    the Setvar, before Asterisk's answer to it: Asterisk runs them in turn,
    so the variable is set first, and the call waits one round trip less.
    Over AJAM (separate HTTP requests, run in any order) it waits."""
    host = Host()
    host.ami = ami()
    executor = executor_for(host, confirm_timeout=2)
    run = asyncio.ensure_future(
        executor.run(
            [
                Action.make("setvar", {"CRM_CLIENT": "Ромашка"}),
                Action.make("redirect", {"context": "callrouter-dial", "exten": "101"}),
            ],
            None,
            "Local/1@in-0;2",
        )
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert host.ami.written_before_answers == ["Setvar CRM_CLIENT", "Redirect "][:before]
    host.ami.answer.set()
    await asyncio.sleep(0.01)
    executor.observe(newexten("Local/1@in-0;2", "callrouter-dial"))
    outcomes = await run
    assert [(o.kind, o.status) for o in outcomes] == [("setvar", "ok"), ("redirect", "confirmed")]
    assert [name for name, _ in host.ami.sent] == ["Setvar", "Redirect"]


async def test_a_channel_gone_at_a_setvar_written_ahead_is_told_with_the_redirect() -> None:
    """On one ordered session the Redirect is out before the Setvar's answer
    says the channel is gone: both outcomes are told, in order (the Redirect
    failed as well: Asterisk ran it after the Setvar, on no channel)."""
    host = Host()
    host.ami = OrderedSlowAMI()
    host.ami.fail["Setvar"] = "Channel does not exist: Local/1;2"
    host.ami.fail["Redirect"] = "Channel does not exist: Local/1;2"
    host.ami.answer.set()  # the failures are raised before the answer waits

    outcomes = await executor_for(host, confirm_timeout=0.05).run(
        [
            Action.make("setvar", {"A": "1"}),
            Action.make("redirect", {"context": "x", "exten": "1"}),
        ],
        None,
        "Local/1;2",
    )
    assert [(o.kind, o.status) for o in outcomes] == [
        ("setvar", "channel-gone"),
        ("redirect", "channel-gone"),
    ]


async def test_a_setvar_answered_at_once_with_the_channel_gone_stops_the_rest() -> None:
    host = Host()

    class Gone(FakeAMI):
        actions_in_order = True

    host.ami = Gone()
    host.ami.fail["Setvar"] = "Channel does not exist: Local/1;2"
    outcomes = await executor_for(host).run(
        [
            Action.make("setvar", {"A": "1"}),
            Action.make("redirect", {"context": "x", "exten": "1"}),
        ],
        None,
        "Local/1;2",
    )
    assert [o.status for o in outcomes] == ["channel-gone"]
    assert [name for name, _ in host.ami.sent] == ["Setvar"]


async def test_asterisks_refusal_is_quoted_in_part_and_escaped() -> None:
    """A peer's 10 kB Message with ESC, BEL and a bidi override went into the
    outcome as it came, and from there into every decision line and trace."""
    host = Host()
    host.ami.fail["Originate"] = "\x1b[31mno\x07\u202e" + "M" * 10240
    outcomes = await executor_for(host).run(
        [Action.make("originate", {"channel": "Local/1@x", "caller_id": "x <1>"})], None, None
    )
    assert outcomes[0].status == "failed"
    assert outcomes[0].detail.startswith("\\x1b[31mno\\x07\\u202eMMM")
    assert outcomes[0].detail.endswith("M…")
    assert len(outcomes[0].detail) < 300


@pytest.mark.parametrize("action", ["Setvar", "Hangup"])
async def test_asterisks_no_such_channel_is_a_caller_gone_too(action: str) -> None:
    """Asterisk 22 answers a Redirect to a hung-up channel ``Channel does not
    exist: ...``, but a Setvar or Hangup ``No such channel`` (manager.c). In the
    trial of issue 16 a caller who hung up while 1C answered logged ``setvar
    failed: No such channel`` (something broken, to whoever reads it), and the
    Redirect was sent after it to the same gone channel."""
    host = Host()
    host.ami.fail[action] = "No such channel"
    first = (
        Action.make("setvar", {"A": "1"})
        if action == "Setvar"
        else Action.make("hangup", {"cause": "21"})
    )
    outcomes = await executor_for(host).run(
        [first, Action.make("redirect", {"context": "x", "exten": "1"})], None, "Local/1;2"
    )
    assert [(o.status, o.detail) for o in outcomes] == [("channel-gone", "No such channel")]
    assert [name for name, _ in host.ami.sent] == [action]
