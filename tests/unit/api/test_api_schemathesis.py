"""schemathesis fuzzes every operation of the served OpenAPI document, in process.

The document is the one ``/api/v1/openapi.json`` serves, so whatever endpoint
module exists when this runs (AMI, calls, forwarding, events) is fuzzed, over
the test kit's StubEngine on the replay Asterisk and an in-memory event feed.
Checks: no 5xx, and every response (status, content type, headers, body)
conforms to the document, authentication is never ignored, an undocumented
method gets 405 with the right ``Allow``. Not checked: whether the document
spells out every rule the endpoints enforce (schemathesis's
positive_data_acceptance / negative_data_rejection): a valid-looking
``"from": ""`` refused with a 400 naming the field is correct behaviour.
A fixed seed and example budget keep it repeatable
and under about a minute in ``make test``.

Requests carry a token allowed everything for every extension, so the fuzzer
gets past authentication into the endpoints' own validation; a call's ``id``
is pinned to a live call of extension 101 (with ``[recordings]`` on), so the
hang-up, transfer and recording operations read their bodies rather than
answer 404 for a made-up id (a ``legs`` of ``[]`` was a 500 there); a long-poll's
``timeout`` is pinned to 0 when the fuzzer picked a valid one (waiting out
a valid timeout proves nothing here and would cost minutes).

The app is built at import, in every pytest-xdist worker (each collects this
module), so its state and rules live in one :data:`SCRATCH` folder removed when
the worker's interpreter exits, after the last of its tests (``atexit``).
"""

from __future__ import annotations

import atexit
import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from router.api.app import OPENAPI_PATH, build_app
from router.api.auth import hash_token
from router.api.context import ApiContext
from router.api.feed import EventFeed
from router.api.settings import OPERATIONS, ApiSettings, TokenSettings
from router.plugin_registry import plugin_registry
from router.recordings.settings import RecordingSettings
from router.rules.ruleset import load_rules
from router.testing import StubEngine, make_config, make_event

TOKEN = "cr_schemathesis-fuzzing-token"
RULES = """\
version: 1
rules:
  - name: owner
    on: call
    lookup: {owner: onec.responsible(caller.number)}
    when: owner.found and owner.manager.extension
    do: [{redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}}]
  - name: fallback
    on: call
    do: [{redirect: {context: test-queue, exten: fallback}}]
"""
#: Examples per operation: a dozen operations in about half a minute on one core.
EXAMPLES = 100
#: The live call every ``{id}`` names: extension 101 talks on it.
LIVE = "1714557700.7"
#: The app's state folder, its recordings folder and the rules file, for the
#: life of this process (the app serves them until the last test of the worker).
SCRATCH = tempfile.TemporaryDirectory(prefix="callrouter-fuzz-")
atexit.register(SCRATCH.cleanup)


def api_app() -> Any:
    """The app over a stub engine and a feed with events in it (built at import:
    schemathesis collects one test per operation from the document)."""
    everything = TokenSettings(
        name="fuzz",
        digest=bytes.fromhex(hash_token(TOKEN).removeprefix("sha256:")),
        allow=(*OPERATIONS, "ami:*"),
        extensions=("*",),
        rate=1e6,
        burst=1_000_000,
    )
    tmp = Path(SCRATCH.name) / "state"
    tmp.mkdir()
    (tmp / "monitor").mkdir()
    recordings = RecordingSettings(
        dir="/var/spool/asterisk/monitor",
        local_dir=tmp / "monitor",
        public_url="https://cr.example:8089",
        url_ttl=300,
    )
    config = dataclasses.replace(make_config(state_dir=tmp), recordings=recordings)
    stub = StubEngine(state_dir=tmp, config=config)
    stub.replay.inbound_call(caller="+79161234567", did="74950000001")
    stub.calls.inbound_call(linkedid=LIVE)
    stub.calls.feed(
        make_event(
            "Newchannel",
            Channel="PJSIP/101-00000002",
            Uniqueid="1714557700.8",
            Linkedid=LIVE,
            ChannelStateDesc="Up",
        )
    )
    feed = EventFeed()  # in memory: nothing to close
    feed.publish("ringing", "101", {"caller": "+79161234567"})
    feed.publish("presence", "102", {"dnd": True})
    # The rules POST /api/v1/explain evaluates: the 1C plugin's lookup and a fallback.
    rules = Path(SCRATCH.name) / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    ruleset = load_rules([rules], plugin_registry(timezone="Europe/Moscow"))
    context = ApiContext(
        stub, ApiSettings(tokens={"fuzz": everything}), feed, rules=lambda: ruleset
    )
    return build_app(context)


schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, api_app())
#: A stream is read up to its first message, then the check moves on.
schema.config.max_stream_events = 1
_EXTENSION = re.compile(r"[0-9A-Za-z#+_.-]{1,40}")


def _valid_number(value: object, high: float) -> bool:
    try:
        return 0 <= float(str(value)) <= high
    except ValueError:
        return False


def _quick(case: Any) -> None:
    """A call's ``id`` pinned to :data:`LIVE`; valid feed reads made to answer
    at once, invalid ones left as generated.

    A long-poll with a valid ``timeout`` waits it out, and a stream only ends
    when a message comes: the first is pinned to ``timeout=0``, the second
    starts at the oldest event of an extension that has one.
    """
    path = case.operation.path
    if case.path_parameters and "id" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "id": LIVE}
    if not path.startswith("/api/v1/events"):
        return
    query = dict(case.query or {})
    if _valid_number(query.get("timeout", 0), 60):
        query["timeout"] = 0
    if path.endswith("/stream"):
        if _valid_number(query.get("cursor", 0), 2**63):
            query["cursor"] = 0
        if _EXTENSION.fullmatch(str(query.get("extension", "101"))):
            query["extension"] = "101"
        case.headers = {k: v for k, v in (case.headers or {}).items() if k != "Last-Event-ID"}
    case.query = query


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    _quick(case)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
