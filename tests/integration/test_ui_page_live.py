"""The live page in a real browser against the API alone: no Asterisk, no engine.

What the page does across a restart or an upgrade of callrouter, which
tests/integration/test_ui_live.py (the whole engine on the sandbox) cannot
stage: the API app over a test kit's :class:`StubEngine`, served by
:class:`ApiServer` on a port of its own, stopped and started again as
callrouter is, with Debian's chromium driven by Playwright as there.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import pytest_asyncio

from router.api.app import build_app
from router.api.context import ApiContext
from router.api.live import LiveRing
from router.api.server import ApiServer
from router.api.settings import ApiSettings, TokenSettings
from router.api.ui import STATIC
from router.cli import main
from router.metrics import Metrics
from router.sandbox import free_port
from router.testing import StubEngine
from tests.integration.test_ui_live import chromium

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="function")]

TOKEN = "cr_page-test-token"
NARROW = "cr_page-test-narrow"
STRINGS = json.loads((STATIC / "strings.json").read_text(encoding="utf-8"))


def _token(name: str, text: str, allow: tuple[str, ...], extensions: tuple[str, ...]) -> Any:
    return TokenSettings(
        name=name,
        digest=hashlib.sha256(text.encode()).digest(),
        allow=allow,
        extensions=extensions,
        rate=1000,
        burst=1000,
    )


SETTINGS = ApiSettings(
    tokens=MappingProxyType(
        {
            "wallboard": _token("wallboard", TOKEN, ("ui:read",), ("*",)),
            "desk": _token("desk", NARROW, ("ui:read",), ("101",)),
        }
    )
)


class Callrouter:
    """The API on one port, stopped and started again as a restart does: each
    start is a new process's app over the same state folder (the sessions'
    key kept there)."""

    def __init__(self, state: Path) -> None:
        self.port = free_port()
        self.stub = StubEngine(state_dir=state)
        self.ring: LiveRing | None = None
        self.server: ApiServer | None = None
        #: What the API counted (callrouter_api_requests_total: what reached it).
        self.metrics = Metrics(event_names=())

    async def start(self) -> None:
        self.ring = LiveRing(self.stub)
        settings = ApiSettings(port=self.port, host="127.0.0.1", tokens=SETTINGS.tokens)
        self.server = ApiServer(
            build_app(ApiContext(self.stub, settings, live=self.ring, metrics=self.metrics)),
            settings,
        )
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            assert self.ring is not None
            self.ring.end_waits()  # as the engine does: the page's stream ends at once
            await self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ui/"


@pytest_asyncio.fixture
async def callrouter() -> AsyncIterator[Callrouter]:
    with tempfile.TemporaryDirectory(prefix="callrouter-page-") as state:
        running = Callrouter(Path(state))
        await running.start()
        try:
            yield running
        finally:
            await running.stop()
            await running.stub.aclose()


@pytest_asyncio.fixture
async def page() -> AsyncIterator[Any]:
    async with chromium() as context:
        yield context.pages[0] if context.pages else await context.new_page()


async def sign_in(page: Any, text: str = TOKEN) -> None:
    await page.fill("#token", text)
    await page.click("#login-form button[type=submit]")


async def badge(page: Any, text: str) -> None:
    """Wait until the badge says ``text``, exactly ("ready" is not "not ready")."""
    exact = re.compile(f"^{re.escape(text)}$")
    await page.locator("#health-state", has_text=exact).wait_for(timeout=10_000)


async def test_after_a_restart_the_page_reconnects_without_a_sign_in(
    callrouter: Callrouter, page: Any
) -> None:
    """Issue 16: the session key lived only in memory, so every restart of
    callrouter (a change of router.toml, an upgrade) showed every open page its
    sign-in form. The key is kept in state_dir: the page says "connection
    lost" while callrouter is down, then is live again by itself."""
    en = STRINGS["en"]
    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await sign_in(page)
    await page.locator("#live").wait_for(state="visible", timeout=10_000)
    await badge(page, en["health_ready"])

    await callrouter.stop()
    await badge(page, en["health_lost"])
    assert await page.locator("#login").is_hidden()

    await callrouter.start()
    await badge(page, en["health_ready"])
    assert await page.locator("#login").is_hidden()
    assert await page.locator("#live").is_visible()


async def test_after_sign_out_all_the_badge_says_sign_in_not_connection_lost(
    callrouter: Callrouter, page: Any
) -> None:
    """A session's trial of issue 16: callrouter restarted under an open page
    with a new key (``callrouter ui sign-out-all``); the page showed its sign-in
    form with the badge still saying "connection lost, reconnecting…", which
    was no longer true. The badge says what is: lost while callrouter cannot be
    reached (the form not shown then), sign-in needed with the form, ready once
    signed in."""
    en = STRINGS["en"]
    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await badge(page, en["health_signed_out"])  # not "connecting…" for ever
    await sign_in(page)
    await page.locator("#live").wait_for(state="visible", timeout=10_000)
    await badge(page, en["health_ready"])

    await callrouter.stop()
    await badge(page, en["health_lost"])
    # Unreachable is no sign-out: the form waits for callrouter's word.
    assert await page.locator("#login").is_hidden()
    assert main(["ui", "sign-out-all", "--state-dir", str(callrouter.stub.state_dir)]) == 0

    await callrouter.start()
    await page.locator("#login").wait_for(state="visible", timeout=15_000)
    await badge(page, en["health_signed_out"])
    assert en["health_lost"] not in (await page.text_content("#health") or "")
    await page.click("#lang-ru")
    await badge(page, STRINGS["ru"]["health_signed_out"])
    await page.click("#lang-en")
    await sign_in(page)
    await badge(page, en["health_ready"])


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("cr_no-such-token", "login_refused_token"),
        (NARROW, "login_refused_extensions"),
    ],
    ids=["unknown", "narrowed"],
)
async def test_a_refused_sign_in_is_told_in_the_pages_language_only(
    callrouter: Callrouter, page: Any, token: str, reason: str
) -> None:
    """A session's trial of issue 16: on the Russian page a refused sign-in read
    "Вход отклонён: unknown token", the server's English detail inside the
    page's Russian. The reason is the page's own words, in its language, and
    follows a switch of language."""
    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await page.click("#lang-ru")
    await sign_in(page, token)
    ru = STRINGS["ru"]
    error = page.locator("#login-error")
    await page.wait_for_function("document.getElementById('login-error').textContent !== ''")
    told = await error.text_content()
    assert told == f"{ru['login_failed']}: {ru[reason]}"
    assert "token" not in (told or "").replace("extensions", "")  # no server English
    await page.click("#lang-en")
    en = STRINGS["en"]
    assert await error.text_content() == f"{en['login_failed']}: {en[reason]}"


async def test_a_call_state_the_pages_strings_lack_reads_as_words_never_as_a_key(
    callrouter: Callrouter, page: Any
) -> None:
    """A session's trial of issue 16: a page open across an upgrade showed
    ``state_deciding`` for a call, a state its strings.json (loaded with the
    page, from the older callrouter) did not know, until reloaded. The page
    fetches the server's strings again and shows their words; while it cannot,
    the state's own name ("deciding"), never the key."""
    old = {
        lang: {k: v for k, v in words.items() if k != "state_deciding"}
        for lang, words in STRINGS.items()
    }
    served: list[str] = []

    async def older_strings(route: Any) -> None:
        # The first fetch is the page's start (the older callrouter's file);
        # with ``always`` every fetch is, as a server that lacks the word too.
        served.append(route.request.url)
        if len(served) == 1 or always:
            await route.fulfill(status=200, content_type="application/json", body=json.dumps(old))
        else:
            await route.continue_()

    always = True
    await page.route("**/ui/static/strings.json*", older_strings)  # ?v=: its version
    callrouter.stub.calls.inbound_call(linkedid="1714557600.9")
    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await page.click("#lang-ru")
    await sign_in(page)
    state = page.locator("#calls li .state")
    await state.first.wait_for(timeout=10_000)
    assert await state.first.text_content() == "deciding"
    # Fetched again once since the stream's hello, not at every render.
    assert len(served) == 2

    # The newer callrouter's strings.json has the word: the page shows it.
    always = False
    served.clear()
    await page.reload()
    await page.locator("#calls li .state").first.wait_for(timeout=10_000)
    await page.locator("#calls li .state", has_text=STRINGS["ru"]["state_deciding"]).wait_for(
        timeout=10_000
    )
    assert "state_" not in (await page.text_content("#calls") or "")
    assert len(served) == 2  # the page's start (the older file), then the server's


async def test_a_load_without_a_cookie_asks_for_no_file_the_browser_has(
    callrouter: Callrouter, page: Any
) -> None:
    """A load without a valid cookie counts against its client address's
    anonymous rate. Each morning (the cookie gone) every operator's browser
    asked for the page's files again, 5 of a load's 6 requests, so operators
    behind one NAT address opening the page at once were refused past 8. The
    files are named by their version and kept: the page and its session
    check are all such a load asks for (issue 16)."""

    def asked() -> dict[str, float]:
        found: dict[str, float] = {}
        for family in callrouter.metrics.registry.collect():
            if family.name == "callrouter_api_requests":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        operation = sample.labels["operation"]
                        found[operation] = found.get(operation, 0) + sample.value
        return found

    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await sign_in(page)
    await page.locator("#live").wait_for(state="visible", timeout=10_000)
    first = asked()
    assert first["ui:static"] >= 3  # the first load: the files, once
    await page.context.clear_cookies()  # the next morning: the session is over
    await page.goto("about:blank")
    await page.goto(callrouter.url)
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await badge(page, STRINGS["en"]["health_signed_out"])
    then = asked()
    assert then["ui:static"] == first["ui:static"]  # none asked again
    assert then["ui:page"] == first["ui:page"] + 1
