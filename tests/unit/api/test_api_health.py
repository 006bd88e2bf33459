"""/healthz, /readyz and /metrics on the API app (router/api/health.py, metrics.py).

In process over the test kit's StubEngine, like the rest of the API tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.ami.catalog import load_catalog
from router.api.ami import UNKNOWN_OPERATION
from router.api.app import build_app, build_starting_app, openapi_document
from router.api.auth import hash_token, new_token
from router.api.context import ApiContext
from router.api.settings import OPERATIONS, ApiSettings, TokenSettings
from router.errors import ConfigError
from router.health import Health, readiness
from router.metrics import LABEL_CAP, Metrics
from router.testing import StubEngine, config_from_toml
from tests.unit.waiting import DEADLINE, eventually

SCRAPER = new_token()
OTHER = new_token()


def token(name: str, text: str, allow: tuple[str, ...]) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=allow,
        extensions=("*",),
        rate=1000,
        burst=1000,
    )


TOKENS = {
    "prometheus": token("prometheus", SCRAPER, ("metrics:read",)),
    "desk": token("desk", OTHER, ("ami:Ping",)),
}


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


def client(ctx: ApiContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(ctx)), base_url="http://api.test"
    )


def values(text: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric
    }


async def test_healthz_is_200_while_serving(stub: StubEngine) -> None:
    async with client(ApiContext(stub, ApiSettings(tokens=TOKENS))) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_while_starting_health_says_so_and_every_other_path_is_503(
    stub: StubEngine,
) -> None:
    """The app the listener serves before the engine's login (issue 16)."""
    waiting = "waiting for Asterisk at http://pbx:8088/asterisk: connection refused"
    health = readiness(
        logged_in=False,
        stream_current=False,
        rule_problems=0,
        rules=3,
        serving=False,
        phase="starting",
        waiting_for=waiting,
    )
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), health=lambda: health, metrics=Metrics())
    app = build_starting_app(ctx, lambda: waiting)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        alive = await http.get("/healthz")
        ready = await http.get("/readyz")
        scraped = await http.get("/metrics")
        others = [
            await http.post("/api/v1/ami/Ping", headers={"Authorization": f"Bearer {OTHER}"}),
            await http.get("/api/v1/openapi.json"),
            await http.delete("/api/v1/calls/1"),
        ]
    assert alive.status_code == 200
    assert alive.json() == {"status": "alive", "phase": "starting", "detail": waiting}
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [
        f"{waiting}; calls take the dialplan's default route meanwhile",
        "not serving: callrouter is starting",
    ]
    assert scraped.status_code == 200
    for other in others:
        assert other.status_code == 503
        assert other.headers["content-type"] == "application/problem+json"
        assert other.headers["retry-after"] == "5"
        assert other.json()["detail"] == f"callrouter is starting ({waiting}); retry shortly"
        assert other.json()["phase"] == "starting"


def test_every_operation_documents_what_any_path_may_answer() -> None:
    """While starting every API path is 503 (above), and a foreign Host is 421
    on every path: the document said so for some operations only, so a client
    built from it (the 1C module is one, by hand) met an undocumented 503 from
    ``GET /calls`` or the document itself (issue 16)."""
    document = openapi_document()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert {"421", "503"} <= set(operation["responses"]), (method, path)
            if path != "/api/v1/openapi.json":  # the one that needs no token
                assert {"401", "429"} <= set(operation["responses"]), (method, path)


async def test_readyz_is_503_with_the_reasons_until_ready(stub: StubEngine) -> None:
    state: dict[str, Health] = {
        "now": readiness(
            logged_in=False, stream_current=False, rule_problems=0, rules=3, serving=True
        )
    }
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), health=lambda: state["now"])
    async with client(ctx) as http:
        refused = await http.get("/readyz")
        state["now"] = readiness(
            logged_in=True, stream_current=True, rule_problems=0, rules=3, serving=True
        )
        ready = await http.get("/readyz")
    assert refused.status_code == 503
    assert refused.json() == {
        "status": "not ready",
        "phase": "running",
        "reasons": ["not logged in to Asterisk (see the log for the AMI error)"],
        "checks": {
            "asterisk": False,
            "event_stream": False,
            "user_events": True,
            "privileges": True,
            "rules": True,
            "serving": True,
        },
        "rules": 3,
        "role": "live",
    }
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def _ready(role: str, live_instance: str = "") -> Health:
    return readiness(
        logged_in=True,
        stream_current=True,
        rule_problems=0,
        rules=3,
        serving=True,
        role=role,
        live_instance=live_instance,
    )


async def test_readyz_says_the_role_and_role_live_is_200_only_to_the_one_routing(
    stub: StubEngine,
) -> None:
    """hnew31's trial: a standby instance (another one live on the same
    Asterisk) and a --shadow one both answered 200 with nothing telling them
    from the one routing, while operations.md said 200 means "can route now".
    A healthy standby stays 200 (its API serves); the body says its role, and
    ``?role=live`` is 503 unless this instance routes (Patroni's /primary)."""
    state = {"now": _ready("standby", "instance 3f2a9c1d on host pbx")}
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), health=lambda: state["now"])
    answers: dict[str, list[tuple[int, str, str | None]]] = {}
    async with client(ctx) as http:
        for now in ("standby", "shadow", "live"):
            state["now"] = _ready(now, "instance 3f2a9c1d on host pbx" if now == "standby" else "")
            answers[now] = []
            for query in ("", "?role=live", "?role=standby", "?role=shadow"):
                got = await http.get(f"/readyz{query}")
                body = got.json()
                answers[now].append((got.status_code, body["role"], body.get("live_instance")))
            head = await http.head("/readyz?role=live")
            assert head.status_code == answers[now][1][0]
        state["now"] = readiness(
            logged_in=False, stream_current=True, rule_problems=0, rules=3, serving=True
        )
        down = await http.get("/readyz?role=live")
        wrong = await http.get("/readyz?role=primary")
    standby = "instance 3f2a9c1d on host pbx"
    assert answers == {
        "standby": [
            (200, "standby", standby),
            (503, "standby", standby),
            (200, "standby", standby),
            (503, "standby", standby),
        ],
        "shadow": [
            (200, "shadow", None),
            (503, "shadow", None),
            (503, "shadow", None),
            (200, "shadow", None),
        ],
        "live": [
            (200, "live", None),
            (200, "live", None),
            (503, "live", None),
            (503, "live", None),
        ],
    }
    assert down.status_code == 503  # live, but not ready
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == (
        "query parameter 'role': expected one of live, standby, shadow, got 'primary'"
    )


async def test_a_misspelt_readyz_parameter_is_400_not_a_bare_readyz(stub: StubEngine) -> None:
    """``/readyz?rol=live`` on a standby answered 200, as a bare /readyz: a balancer
    configured with the typo sent traffic to the instance that does not route.
    It is now refused naming the parameter, as the event feed's are (issue 16)."""
    state = _ready("standby", "instance 3f2a9c1d on host pbx")
    async with client(ApiContext(stub, ApiSettings(tokens=TOKENS), health=lambda: state)) as http:
        typo = await http.get("/readyz?rol=live")
        head = await http.head("/readyz?rol=live")
        fine = await http.get("/readyz?role=standby")
    assert typo.status_code == 400, typo.text
    assert typo.json()["field"] == "rol"
    assert typo.json()["did_you_mean"] == "role"
    assert head.status_code == 400
    assert fine.status_code == 200


async def test_a_monitors_cache_buster_is_ignored_by_the_health_endpoints(
    stub: StubEngine,
) -> None:
    """Issue 16: `/readyz?_=1733456789` answered 400: monitoring tools add a
    query string of their own to defeat caches, and the monitor read callrouter
    as down. A parameter that is no misspelt ``role`` is ignored; one named
    like it, or whose value is a role (``?mode=live``), is still refused."""
    state = _ready("standby", "instance 3f2a9c1d on host pbx")
    async with client(ApiContext(stub, ApiSettings(tokens=TOKENS), health=lambda: state)) as http:
        busted = await http.get("/readyz?_=1733456789&nocache=1")
        head = await http.head("/readyz?_=1733456789")
        role = await http.get("/readyz?role=live&_=1733456789")
        alive = await http.get("/healthz?_=1733456789")
        meant = await http.get("/readyz?mode=live")
        cased = await http.get("/readyz?Role=live")
    assert busted.status_code == 200, busted.text
    assert busted.json()["role"] == "standby"
    assert head.status_code == 200
    assert role.status_code == 503, role.text  # the role still asked: not the one routing
    assert alive.status_code == 200, alive.text
    assert meant.status_code == 400, meant.text
    assert meant.json()["detail"] == ("unknown query parameter 'mode' (this endpoint reads role)")
    assert cased.status_code == 400, cased.text
    assert cased.json()["did_you_mean"] == "role"


async def test_readyz_names_the_live_instance_only_with_details(stub: StubEngine) -> None:
    """The instance standing by names the one that routes (its host): a
    detail, like the reasons, for a listener others reach."""
    health = _ready("standby", "instance 3f2a9c1d on host pbx")
    settings = ApiSettings(tokens=TOKENS, host="0.0.0.0")
    async with client(ApiContext(stub, settings, health=lambda: health)) as http:
        bare = (await http.get("/readyz")).json()
        told = (await http.get("/readyz", headers={"Authorization": f"Bearer {OTHER}"})).json()
    assert bare["role"] == told["role"] == "standby"
    assert "live_instance" not in bare
    assert told["live_instance"] == "instance 3f2a9c1d on host pbx"


def test_the_status_line_says_the_role() -> None:
    """systemd's STATUS= said `routing calls (3 rules)` for a standby and a
    shadow instance too."""
    assert _ready("live").status_line() == "routing calls (3 rules)"
    assert (
        _ready("standby", "instance 3f2a9c1d on host pbx").status_line()
        == "standing by: instance 3f2a9c1d on host pbx is live (3 rules)"
    )
    assert _ready("shadow").status_line() == "shadow: routing nothing (3 rules)"


def test_the_status_line_counts_one_rule_and_one_problem_in_the_singular() -> None:
    """hcli31's trial: a first install with one rule showed `routing calls
    (1 rules)` in systemctl status, and one bad rule `1 problems in the rules`."""
    one = readiness(logged_in=True, stream_current=True, rule_problems=0, rules=1, serving=True)
    assert one.status_line() == "routing calls (1 rule)"
    bad = readiness(logged_in=True, stream_current=True, rule_problems=1, rules=1, serving=True)
    assert bad.status_line() == "not ready: 1 problem in the rules or plugins (callrouter check)"


async def test_metrics_needs_no_token_by_default_and_counts_requests(stub: StubEngine) -> None:
    metrics = Metrics(event_names=())
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), metrics=metrics)
    async with client(ctx) as http:
        ping = await http.post("/api/v1/ami/Ping", headers={"Authorization": f"Bearer {OTHER}"})
        await http.post("/api/v1/ami/Ping")  # no token: 401
        response = await http.get("/metrics")
        again = await http.get("/metrics")
    assert ping.status_code == 200
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    counted = values(again.text, "callrouter_api_requests_total")
    assert counted[(("operation", "ami:Ping"), ("status", "200"))] == 1
    assert counted[(("operation", "ami:Ping"), ("status", "401"))] == 1
    assert counted[(("operation", "metrics:read"), ("status", "200"))] == 1  # the first scrape


async def test_a_queue_gauges_reader_is_called_off_the_event_loop(stub: StubEngine) -> None:
    """``QueueGauge.set_function``'s reader runs where ``/metrics`` renders:
    a worker thread, not the event loop (docs/plugins.md said the loop, so a
    plugin's reader of state the loop changes must be safe to call beside it)."""
    metrics = Metrics(event_names=())
    called_on: list[int] = []

    def read() -> tuple[int, float | None]:
        called_on.append(threading.get_ident())
        return 3, None

    metrics.queue("onec_history").set_function(read)
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), metrics=metrics)
    async with client(ctx) as http:
        scraped = await http.get("/metrics")
    assert values(scraped.text, "callrouter_queue_depth") == {(("queue", "onec_history"),): 3.0}
    assert called_on
    assert threading.get_ident() not in called_on


async def test_scrapes_that_come_while_one_renders_share_its_rendering(
    stub: StubEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 (an attacker's trial): every scrape rendered in a thread of its
    own, so a client asking for /metrics (no token) over eight connections kept
    six threads rendering and the loop that routes calls waited behind them for
    the interpreter: calls routed 100-250 ms late, not ~10 ms. One renders at a
    time; the scrapes that come meanwhile answer with its rendering."""
    metrics = Metrics(event_names=())
    rendered: list[int] = []
    release = threading.Event()

    def render(given: Metrics) -> bytes:
        assert given is metrics
        rendered.append(threading.get_ident())
        release.wait(DEADLINE)
        return b"# rendered %d\n" % len(rendered)

    monkeypatch.setattr("router.api.metrics.exposition", render)
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), metrics=metrics)
    app = build_app(ctx)
    scopes: list[dict[str, Any]] = []

    async def seen(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await app(scope, receive, send)

    def in_handler() -> int:
        audits = [scope.get("state", {}).get("audit") for scope in scopes]
        return sum(1 for audit in audits if getattr(audit, "operation", "") == "metrics:read")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=seen), base_url="http://api.test"
    ) as http:
        scrapes = [asyncio.create_task(http.get("/metrics")) for _ in range(5)]
        # Every scrape has reached the handler (it names its operation, then
        # waits for a rendering with no pause between) while the first renders.
        await eventually(lambda: in_handler() == 5, "five scrapes in the handler")
        await eventually(lambda: rendered, "a rendering")
        release.set()
        answers = await asyncio.gather(*scrapes)
        assert len(rendered) == 1
        assert {(a.status_code, a.text) for a in answers} == {(200, "# rendered 1\n")}
        # The next scrape renders anew.
        after = await http.get("/metrics")
    assert after.text == "# rendered 2\n"
    assert len(rendered) == 2


async def test_made_up_ami_paths_cannot_fill_the_operation_label(stub: StubEngine) -> None:
    """Before: ``ami:<path as sent>`` was the label, set before the token was
    checked, so 210 tokenless requests for made-up actions filled the label's cap
    (200) and every real request after them counted as ``operation="other"``."""
    metrics = Metrics(event_names=())
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS), metrics=metrics)
    async with client(ctx) as http:
        for i in range(LABEL_CAP + 10):
            junk = await http.post(f"/api/v1/ami/junk{i}")  # no token
            assert junk.status_code == 401
        typo = await http.post("/api/v1/ami/junk", headers={"Authorization": f"Bearer {OTHER}"})
        # Any spelling of a known action is the catalog's: one label, not one per case.
        shouted = await http.post("/api/v1/ami/PING")
        ping = await http.post("/api/v1/ami/ping", headers={"Authorization": f"Bearer {OTHER}"})
        scrape = await http.get("/metrics")
    assert (typo.status_code, shouted.status_code, ping.status_code) == (404, 401, 200)
    counted = values(scrape.text, "callrouter_api_requests_total")
    assert counted == {
        (("operation", UNKNOWN_OPERATION), ("status", "401")): LABEL_CAP + 10,
        (("operation", UNKNOWN_OPERATION), ("status", "404")): 1,
        (("operation", "ami:Ping"), ("status", "401")): 1,
        (("operation", "ami:Ping"), ("status", "200")): 1,
    }


def test_every_operation_label_fits_under_the_cap() -> None:
    """The labels are the catalog's actions and the fixed operations, nothing a
    request spells: all of them fit under the cap, so none is ever "other"."""
    fixed = len(OPERATIONS) + 16  # ui:*, healthz, readyz, openapi, ami:unknown, "-"
    assert len(load_catalog()) + fixed < LABEL_CAP


async def test_metrics_auth_asks_for_metrics_read(stub: StubEngine) -> None:
    ctx = ApiContext(
        stub, ApiSettings(tokens=TOKENS, metrics_auth=True), metrics=Metrics(event_names=())
    )
    async with client(ctx) as http:
        anonymous = await http.get("/metrics")
        other = await http.get("/metrics", headers={"Authorization": f"Bearer {OTHER}"})
        scraper = await http.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
        health = await http.get("/healthz")  # never behind a token
    assert anonymous.status_code == 401
    assert other.status_code == 403
    assert other.json()["missing_permission"] == "metrics:read"
    assert scraper.status_code == 200
    assert "# TYPE callrouter_decisions_total counter" in scraper.text
    assert health.status_code == 200


def test_the_service_endpoints_stay_out_of_the_api_document() -> None:
    paths = openapi_document()["paths"]
    assert not {"/metrics", "/healthz", "/readyz"} & set(paths)


def test_metrics_auth_is_read_and_checked(tmp_path: Path) -> None:
    config = config_from_toml(tmp_path, "[api]\nmetrics_auth = true\n")
    assert config.api is not None
    assert config.api.metrics_auth is True
    with pytest.raises(ConfigError, match=r"\[api\] metrics_auth: expected true or false"):
        config_from_toml(tmp_path, '[api]\nmetrics_auth = "yes"\n')


def _starting_health(waiting: str) -> Health:
    return readiness(
        logged_in=False,
        stream_current=False,
        rule_problems=0,
        rules=3,
        serving=False,
        phase="starting",
        waiting_for=waiting,
        privileges="Asterisk refuses the manager user 'router' Redirect",
    )


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        (ApiSettings(tokens=TOKENS, host="0.0.0.0"), {None: False, OTHER: True, "bad": False}),
        (ApiSettings(tokens=TOKENS, host="::1"), {None: True, OTHER: True, "bad": True}),
        (
            ApiSettings(tokens=TOKENS, host="0.0.0.0", health_details="always"),
            {None: True, OTHER: True, "bad": True},
        ),
        (
            ApiSettings(tokens=TOKENS, health_details="never"),
            {None: False, OTHER: False, "bad": False},
        ),
    ],
)
async def test_health_details_are_told_as_health_details_says(
    stub: StubEngine, settings: ApiSettings, shown: dict[str | None, bool]
) -> None:
    """Issue 16: /healthz, /readyz and the starting app's 503 told anyone who
    reached the listener Asterisk's URL, its error and the manager user. On a
    listener others reach (or with ``never``) a request without a valid token
    learns the phase and which checks fail, not why."""
    waiting = "waiting for Asterisk at http://10.0.0.5:8088/asterisk: connection refused"
    health = _starting_health(waiting)
    ctx = ApiContext(stub, settings, health=lambda: health, metrics=Metrics())
    transport = httpx.ASGITransport(app=build_starting_app(ctx, lambda: waiting))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for bearer, told in shown.items():
            headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
            alive = await http.get("/healthz", headers=headers)
            ready = await http.get("/readyz", headers=headers)
            other = await http.get("/api/v1/calls", headers=headers)
            assert alive.status_code == 200
            assert ready.status_code == 503
            assert other.status_code == 503
            assert ready.json()["checks"]["asterisk"] is False
            assert ready.json()["checks"]["privileges"] is False
            assert ready.json()["phase"] == "starting"
            texts = (alive.text, ready.text, other.text)
            for text in texts:
                assert ("10.0.0.5" in text) is told, (bearer, text)
                assert ("'router'" in text) is (told and text is ready.text), (bearer, text)
            assert ("reasons" in ready.json()) is told
            assert other.json()["detail"].startswith("callrouter is starting")


def test_health_details_is_read_and_checked(tmp_path: Path) -> None:
    assert config_from_toml(tmp_path, "[api]\n").api.details == "always"  # type: ignore[union-attr]
    remote = config_from_toml(tmp_path, '[api]\nlisten = "0.0.0.0:8089"\n').api
    assert remote is not None
    assert remote.details == "when_authorized"
    chosen = config_from_toml(
        tmp_path, '[api]\nlisten = "0.0.0.0:8089"\nhealth_details = "always"\n'
    ).api
    assert chosen is not None
    assert chosen.details == "always"
    with pytest.raises(
        ConfigError,
        match=r"\[api\] health_details: unknown value 'when-authorized'; "
        r"did you mean 'when_authorized'\?",
    ):
        config_from_toml(tmp_path, '[api]\nhealth_details = "when-authorized"\n')


async def test_running_readyz_tells_the_reasons_only_to_a_token_off_loopback(
    stub: StubEngine,
) -> None:
    """Issue 16, in normal operation: the privileges reason names the manager
    user, and ``/readyz`` on ``listen = "0.0.0.0:..."`` told it to anyone.
    Any valid token (whatever it may do) is told; a wrong one is not, and
    still gets the answer rather than a 401: a health check must answer."""
    health = readiness(
        logged_in=True,
        stream_current=True,
        rule_problems=0,
        rules=3,
        serving=True,
        privileges="Asterisk refuses the manager user 'pbxrouter' Redirect (write = call)",
    )
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS, host="0.0.0.0"), health=lambda: health)
    async with client(ctx) as http:
        anyone = await http.get("/readyz")
        wrong = await http.get("/readyz", headers={"Authorization": "Bearer cr_wrong"})
        scraper = await http.get("/readyz", headers={"Authorization": f"Bearer {SCRAPER}"})
    for answer in (anyone, wrong):
        assert answer.status_code == 503
        assert "pbxrouter" not in answer.text
        assert answer.json() == {
            "status": "not ready",
            "phase": "running",
            "checks": {**dict.fromkeys(health.checks, True), "privileges": False},
            "rules": 3,
            "role": "live",
        }
    assert scraper.status_code == 503
    assert scraper.json()["reasons"] == [health.reasons[0]]


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_operations_page_shows_the_roles_as_answered(page: str) -> None:
    """docs/operations.md (+ru): the status lines and the standby's body are
    what the code says for 12 rules."""
    text = (Path(__file__).parents[3] / "docs" / page).read_text(encoding="utf-8")
    flat = " ".join(text.split())
    live = "instance 3f2a9c1d on host pbx"
    for role, shown in (("live", ""), ("standby", live), ("shadow", "")):
        health = readiness(
            logged_in=True,
            stream_current=True,
            rule_problems=0,
            rules=12,
            serving=True,
            role=role,
            live_instance=shown,
        )
        assert f"`{health.status_line()}`" in flat, role
    body = dict(_ready("standby", live).to_dict(), checks="...", rules=12)
    shown = json.dumps(body, separators=(",", ":")).replace('"checks":"..."', '"checks":{...}')
    assert shown in text
    assert "/readyz?role=live" in text


async def test_readyz_gives_a_privilege_warning_ready_and_only_with_details(
    stub: StubEngine,
) -> None:
    """Issue 16: a manager user without ``write = reporting`` routes calls
    (ready, 200) but loses the listing after a gap: ``warnings`` says so, told
    as the reasons are (it names the manager user)."""
    warning = "Asterisk refuses the manager user 'pbxrouter' CoreStatus (write = reporting)"
    health = readiness(
        logged_in=True,
        stream_current=True,
        rule_problems=0,
        rules=3,
        serving=True,
        privilege_warning=warning,
    )
    assert health.ready
    assert health.checks["privileges"] is True
    ctx = ApiContext(stub, ApiSettings(tokens=TOKENS, host="0.0.0.0"), health=lambda: health)
    async with client(ctx) as http:
        anyone = await http.get("/readyz")
        told = await http.get("/readyz", headers={"Authorization": f"Bearer {SCRAPER}"})
    assert anyone.status_code == told.status_code == 200
    assert "warnings" not in anyone.json()
    assert "pbxrouter" not in anyone.text
    assert told.json()["warnings"] == [warning]
    plain = readiness(logged_in=True, stream_current=True, rule_problems=0, rules=3, serving=True)
    assert "warnings" not in plain.to_dict()


async def test_a_scrape_whose_client_left_leaves_the_shared_rendering_to_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hreview48: the scrapes waiting for one rendering share its future. The
    first scrape's client leaving (its task cancelled, as uvicorn cancels a
    request whose connection closed) must not cancel that rendering under
    the scrapes still waiting for it: they answer with it."""
    from router.api.metrics import _Rendering

    metrics = Metrics(event_names=())
    started = threading.Event()
    release = threading.Event()

    def render(given: Metrics) -> bytes:
        started.set()
        release.wait(DEADLINE)
        return b"# rendered\n"

    monkeypatch.setattr("router.api.metrics.exposition", render)
    rendering = _Rendering(metrics)
    gone = asyncio.create_task(rendering.latest())
    await asyncio.to_thread(started.wait, DEADLINE)
    staying = asyncio.create_task(rendering.latest())
    await asyncio.sleep(0)  # the second is waiting on the same rendering
    gone.cancel()
    release.set()
    assert await staying == b"# rendered\n"
    with pytest.raises(asyncio.CancelledError):
        await gone
