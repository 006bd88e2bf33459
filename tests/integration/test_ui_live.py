"""The live page in a real browser: Debian's chromium, driven by Playwright's client.

Sandbox Asterisk, the engine with ``[api]`` and the 1C double, as in
test_api_events_live.py: a call from a client of the double's demo data is
routed by ``onec.responsible`` to 101 (a Local phone that answers). The
browser signs in with a ``ui:read`` token, and the test checks what the
issue asks the page to show: the call appears within a second, its decision
expands into the trace (the rule, 1C's answer and its time, the redirect
confirmed by Asterisk), the explain box answers, the caller's hostile name is
text, the page fits a phone's width, and the browser logged no error or
warning. The screenshot goes to docs/img/live-page.png (linked from
docs/operations.md) and to build/artifacts/.

Playwright never downloads a browser here (``playwright install`` is not
run): it launches ``/usr/bin/chromium``, which ``make setup`` installs (or
this module, as root, when it is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from callrouter_onec.double import OneCDouble

from router.api.auth import hash_token
from router.config import Config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from router.testing import serving
from tests.integration._live import (
    ONEC_PASSWORD,
    admin_placer,
    example_dialplan_dialing,
    free_port,
    onec_api_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).parents[2]
SCREENSHOT = REPO / "docs" / "img" / "live-page.png"
ARTIFACTS = Path(os.environ.get("CALLROUTER_ARTIFACTS", REPO / "build" / "artifacts"))
CHROMIUM = Path("/usr/bin/chromium")
#: The flags the brief of issue 17 names: headless, no network of its own.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DID = "74951234567"
CALLER = "79161234567"  # the double's «Ромашка», manager Петров at 101
TOKEN = "cr_live-page-test-token"
#: A caller name that would run if the page ever wrote it as markup.
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
PHONES = """
; a phone that rings briefly, answers, talks a few seconds and hangs up
[test-phones]
exten => _X.,1,Wait(0.3)
 same => n,Answer()
 same => n,Wait(4)
 same => n,Hangup()
"""


def make_config(box: Sandbox, double: OneCDouble, state: Path, port: int) -> Config:
    tokens = (
        f'[api.tokens.wallboard]\nhash = "{hash_token(TOKEN)}"\n'
        'allow = ["ui:read"]\nextensions = ["*"]\nrate = 1000\n'
    )
    return onec_api_config(box, double, state, port, password=ONEC_PASSWORD, tokens=tokens)


def ensure_chromium() -> Path:
    """Debian's chromium: installed here as root when missing, as ``make setup`` does."""
    if not CHROMIUM.exists() and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env)
    if not CHROMIUM.exists():
        message = "Debian's chromium is missing: run `make setup` (or apt-get install chromium)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return CHROMIUM


async def first_page(browser: Any) -> Any:
    """The browser's page: the one chromium opened, or a new one."""
    return browser.pages[0] if browser.pages else await browser.new_page()


async def sign_in(page: Any, port: int) -> None:
    """Open the live page and sign in with the ``ui:read`` token, as a user does."""
    await page.goto(f"http://127.0.0.1:{port}/ui/")
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await page.fill("#token", TOKEN)
    await page.click("#login-form button[type=submit]")
    await page.locator("#live").wait_for(state="visible", timeout=10_000)


async def signed_in(browser: Any, port: int) -> Any:
    """The browser's page, signed in to the live page."""
    page = await first_page(browser)
    await sign_in(page, port)
    return page


@pytest.fixture(scope="module")
def ui_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(example_dialplan_dialing("test-phones") + PHONES)
    return sandbox


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(
    ui_sandbox: Sandbox,
    double: OneCDouble,
    port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Engine]:
    config = make_config(ui_sandbox, double, tmp_path_factory.mktemp("ui") / "state", port)
    async with serving(
        Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    ) as eng:
        yield eng


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(ui_sandbox: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(ui_sandbox, ignore_contexts=("callrouter-inbound",)) as p:
        yield p


@contextlib.asynccontextmanager
async def chromium(**options: Any) -> AsyncIterator[Any]:
    """Debian's chromium under Playwright, headless, in a throwaway profile, in
    English; ``options`` go to the context (a viewport, for one)."""
    from playwright.async_api import async_playwright

    executable = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="callrouter-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(executable),
                headless=True,
                args=FLAGS,
                locale="en-US",
                **options,
            )
            try:
                yield context
            finally:
                await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium(viewport={"width": 1280, "height": 900}) as context:
        yield context


async def test_the_live_page_shows_a_call_its_trace_and_explains(
    engine: Engine,
    port: int,
    placer: CallPlacer,
    browser: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The page's stream ends every few seconds here (5 minutes in service), so
    # the test also sees the browser reconnect, the cookie renewed, nothing lost.
    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 3.0)
    complaints: list[str] = []
    page = await first_page(browser)
    page.on(
        "console",
        lambda message: (
            complaints.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda error: complaints.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: complaints.append(f"request failed: {request.url} {request.failure}"),
    )

    await sign_in(page, port)
    await page.locator("#health.ready").wait_for(timeout=10_000)
    assert "ready" in (await page.text_content("#health-state") or "")
    cookies = await browser.cookies()
    [session] = [c for c in cookies if c["name"] == "callrouter_ui"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"
    assert TOKEN not in session["value"]

    # A call: it is on the page within a second of being placed.
    placed = time.monotonic()
    call = await placer.place(DID, CALLER, caller_name=HOSTILE, hold=20)
    shown = page.locator("#calls li", has_text=CALLER)
    await shown.first.wait_for(timeout=5_000)
    appeared = time.monotonic() - placed
    assert appeared <= 1.0, f"the call took {appeared:.2f} s to appear on the page"

    # Its decision: routed by the 1C rule, expandable into the trace.
    await placer.wait_all([call], timeout=15)
    assert call.destination == "callrouter-dial,101"
    first = page.locator("#decisions li.decision", has_text=CALLER).first
    await first.wait_for(timeout=5_000)
    decision = page.locator(f'#decisions li[data-id="{await first.get_attribute("data-id")}"]')
    summary = decision.locator("summary")
    assert "owner" in (await summary.text_content() or "")
    await summary.click()
    trace = decision.locator(".trace")
    await trace.wait_for(state="visible", timeout=2_000)
    text = await trace.text_content() or ""
    assert "owner" in text
    assert "onec.responsible" in text
    assert "Петров" in text  # 1C's answer, as the rules saw it
    assert "ms" in text
    await decision.locator(".action-confirmed").first.wait_for(timeout=2_000)
    assert "confirmed by Asterisk" in (await trace.text_content() or "")

    # The hostile name is text on the page, and nothing of it ran.
    names = await page.locator("#decisions .name").all_text_contents()
    assert any("<script>window.__pwned=1</script>" in name for name in names), names
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.locator("#decisions script, #calls script, #decisions img").count() == 0

    # The explain box: the current rules, with a lookup answer given, and without.
    await page.fill("#ex-caller", CALLER)
    await page.fill("#ex-did", DID)
    await page.fill(
        "#ex-lookups",
        '{"onec.responsible": {"found": true, "manager": {"extension": "102", "name": "Test"}}}',
    )
    await page.click("#explain-form button[type=submit]")
    result = page.locator("#explain-result .explain-decision")
    await result.wait_for(timeout=5_000)
    answer = await result.text_content() or ""
    assert "owner" in answer
    assert "exten=102" in answer
    await page.fill("#ex-lookups", "")
    await page.click("#explain-form button[type=submit]")
    await page.locator("#explain-result .explain-decision", has_text="fallback").wait_for(
        timeout=5_000
    )
    await page.fill(
        "#ex-lookups",
        '{"onec.responsible": {"found": true, "manager": {"extension": "101", "name": "Петров"}}}',
    )
    await page.click("#explain-form button[type=submit]")
    await page.locator("#explain-result .explain-decision", has_text="owner").wait_for(
        timeout=5_000
    )

    # The screenshot the docs link to: the trace open, the explain answered.
    for folder in (ARTIFACTS, SCREENSHOT.parent):
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    shutil.copyfile(SCREENSHOT, ARTIFACTS / "live-page.png")

    # Russian, from the switch.
    await page.click("#lang-ru")
    assert await page.text_content("#decisions-panel h2") == "Решения"
    assert await page.evaluate("document.documentElement.lang") == "ru"
    await page.click("#lang-en")

    # A phone's width: one column, nothing wider than the screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.wait_for_timeout(200)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    await page.screenshot(path=str(ARTIFACTS / "live-page-phone.png"), full_page=True)

    # Streams ended and the browser reconnected meanwhile: still live, still signed in.
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.wait_for_timeout(3_500)
    again = time.monotonic()
    second = await placer.place(DID, CALLER, caller_name="Second", hold=20)
    await page.locator("#calls li", has_text="Second").first.wait_for(timeout=5_000)
    assert time.monotonic() - again <= 1.0
    await placer.wait_all([second], timeout=15)
    await page.locator("#decisions li.decision", has_text="Second").first.wait_for(timeout=5_000)
    # The first call's trace, opened before the reconnects, is still open.
    assert await decision.locator("details").get_attribute("open") is not None

    await placer.hangup_all()
    assert complaints == []


async def test_a_bidi_override_in_a_callers_name_is_shown_not_obeyed(
    engine: Engine, port: int, placer: CallPlacer, browser: Any
) -> None:
    # U+202E (right-to-left override) in a caller's name, or in a 1C answer,
    # once showed the rest of its line backwards: the trace's redirect
    # "exten=101" read "101=netxe", and a name could make a number or a rule
    # read as another. The page shows such characters as \u202e, as the logs do.
    page = await signed_in(browser, port)
    name = "\u202eevil\u2066x\u200f\x1b[31m"
    call = await placer.place(DID, CALLER, caller_name=name, hold=20)
    await page.locator("#calls li", has_text="evil").first.wait_for(timeout=5_000)
    await placer.wait_all([call], timeout=15)
    decision = page.locator("#decisions li.decision", has_text="evil").first
    await decision.wait_for(timeout=5_000)
    shown = await decision.locator(".name").text_content() or ""
    assert "\\u202eevil\\u2066x\\u200f\\x1b[31m" in shown, shown
    text = await page.evaluate("document.getElementById('live').textContent")
    assert not set(text) & {"\u202e", "\u2066", "\u200f", "\x1b"}, "a raw bidi or control character"
    await placer.hangup_all()


async def test_a_warning_of_readyz_is_shown_beside_the_reasons_not_as_not_ready(
    engine: Engine, port: int, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /readyz's warnings (a manager user without write = reporting: still
    # ready) never reached the page. The probe's own sentence stands in for
    # the sandbox's user, which has the class.
    from router.privilege_watch import PRIVILEGE_MISSING
    from router.privileges import REPORTING

    warning = PRIVILEGE_MISSING.format(
        user="router", action="CoreStatus", cls="reporting", lost=REPORTING.lost
    )
    monkeypatch.setattr(engine.privileges, "reporting_refused", warning)
    assert engine.health().ready
    page = await signed_in(browser, port)
    shown = page.locator("#reasons li.warning")
    await shown.wait_for(timeout=10_000)
    assert await shown.text_content() == "warning: " + warning
    assert await page.locator("#reasons li.error").count() == 0
    await page.locator("#health.ready.warned").wait_for(timeout=2_000)
    assert await page.text_content("#health-state") == "ready, with warnings"
    color = await shown.evaluate("(node) => getComputedStyle(node).color")
    assert color == "rgb(138, 90, 0)", color  # --warn, not the reasons' --bad
    await page.screenshot(path=str(ARTIFACTS / "live-page-warning.png"), full_page=True)
    await page.click("#lang-ru")
    assert await page.text_content("#health-state") == "готов, есть предупреждения"
    assert (await shown.text_content() or "").startswith("предупреждение: ")
    await page.click("#lang-en")


#: Every text node under the live page holding a right-to-left letter: its
#: parent, whether that is a <bdi>, and the parent's whole text.
RTL_NODES = """(root) => {
  const found = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (/[\\u0590-\\u08ff]/.test(node.data)) {
      const parent = node.parentElement;
      found.push([parent.tagName, getComputedStyle(parent).unicodeBidi, parent.textContent]);
    }
  }
  return found;
}"""

#: Where a lookup's time ("0.0 ms") is drawn, against the 1C name before it.
TIME_AND_NAME = """([line, name]) => {
  const box = (text, start, end) => {
    const range = document.createRange();
    range.setStart(text, start);
    range.setEnd(text, end);
    return range.getBoundingClientRect();
  };
  const texts = [];
  const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) texts.push(node);
  const named = texts.find((node) => node.data.includes(name));
  const timed = texts.find((node) => /\\d ms/.test(node.data));
  const at = named.data.indexOf(name);
  const digits = timed.data.search(/\\d/);
  const drawn = box(named, at, at + name.length);
  const time = box(timed, digits, digits + 1);
  return {nameRight: drawn.right, nameBottom: drawn.bottom, time: time.left, timeTop: time.top};
}"""


async def test_right_to_left_letters_in_a_name_or_1c_answer_reorder_nothing_around_them(
    engine: Engine, port: int, placer: CallPlacer, browser: Any
) -> None:
    # Hebrew or Arabic letters need no control character to reorder the
    # neutral characters and digits beside them. Each value from a call or
    # 1C is now a <bdi> of its own.
    page = await signed_in(browser, port)
    caller_name = "אבי כהן 7"
    call = await placer.place(DID, CALLER, caller_name=caller_name, hold=20)
    await page.locator("#calls li", has_text="אבי").first.wait_for(timeout=5_000)
    await placer.wait_all([call], timeout=15)
    decision = page.locator("#decisions li.decision", has_text="אבי").first
    await decision.wait_for(timeout=5_000)
    await decision.locator("summary").click()

    # A 1C name with "{{" of its own: the answer's closing braces after it
    # pair with those, and nothing strong is left between the name and the
    # lookup's time ("0.0 ms"), which was drawn inside the answer, left of
    # the name (a lookup answering plain text, "name" 0.0 ms, did the same).
    manager = "שרה לוי{{"
    answer = {"onec.responsible": {"found": True, "manager": {"extension": "101", "name": manager}}}
    await page.set_viewport_size({"width": 1920, "height": 900})
    await page.fill("#ex-caller", CALLER)
    await page.fill("#ex-did", DID)
    await page.fill("#ex-lookups", json.dumps(answer, ensure_ascii=False))
    await page.click("#explain-form button[type=submit]")
    await page.locator("#explain-result .explain-decision", has_text="owner").wait_for(
        timeout=5_000
    )

    # Every right-to-left text sits alone in a bidi isolate: nothing of ours,
    # no other value, in it.
    found = await page.evaluate(RTL_NODES, await page.query_selector("#live"))
    assert found, "no right-to-left text on the page"
    for tag, bidi, text in found:
        assert tag == "BDI", (tag, text)
        assert bidi == "isolate", (bidi, text)
        assert text.strip('"') in (caller_name, manager), text
    # And where it shows: the lookup's time stays right of 1C's name.
    lookup = await page.query_selector("#explain-result li.lookup")
    assert lookup is not None
    drawn = await page.evaluate(TIME_AND_NAME, [lookup, manager])
    # (on the name's line, or a line below it when the answer wraps)
    assert (
        drawn["timeTop"] >= drawn["nameBottom"] - 1 or drawn["time"] >= drawn["nameRight"] - 0.5
    ), drawn
    await placer.hangup_all()


#: Each right-to-left text of a rule's detail: its parent's tag and text, and
#: the tag and text of the isolate around that (the message's own <bdi>).
DETAIL_RTL = """(root) => {
  const found = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (/[\\u0590-\\u08ff]/.test(node.data)) {
      const parent = node.parentElement;
      const outer = parent.parentElement;
      found.push([parent.tagName, parent.textContent, outer.tagName, outer.textContent]);
    }
  }
  return found;
}"""


async def test_a_value_quoted_in_a_rules_detail_is_isolated_on_its_own(
    engine: Engine, port: int, browser: Any
) -> None:
    # Issue 16: a message quoting an untrusted value (a rule's detail: "exten
    # 'שרה' is not a safe dialplan location") was one <bdi> whole, so the
    # value's right-to-left letters could reorder the message's own words and
    # quotes. Each quoted value is now a <bdi> of its own, inside the message's.
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(f"http://127.0.0.1:{port}/ui/")
    await page.locator("#login").wait_for(state="visible", timeout=10_000)
    await page.fill("#token", TOKEN)
    await page.click("#login-form button[type=submit]")
    await page.locator("#live").wait_for(state="visible", timeout=10_000)
    extension = "שרה 5"
    answer = {"onec.responsible": {"found": True, "manager": {"extension": extension}}}
    await page.fill("#ex-caller", CALLER)
    await page.fill("#ex-did", DID)
    await page.fill("#ex-lookups", json.dumps(answer, ensure_ascii=False))
    await page.click("#explain-form button[type=submit]")
    detail = page.locator("#explain-result .rule-detail").first
    await detail.wait_for(timeout=5_000)
    message = await detail.text_content() or ""
    assert f"exten '{extension}' is not a safe dialplan location" in message, message
    found = await page.evaluate(DETAIL_RTL, await detail.element_handle())
    assert found, "no right-to-left text in the rule's detail"
    for tag, text, outer, whole in found:
        assert (tag, text) == ("BDI", extension)  # the value alone in its isolate
        assert outer == "BDI"  # inside the message's own isolate
        assert whole == message
    # The message's words after the value are drawn after it, not inside it.
    drawn = await detail.evaluate(
        """(line) => {
          const rtl = (n) => /[\\u0590-\\u08ff]/.test(n.textContent);
          const value = [...line.querySelectorAll("bdi bdi")].find(rtl);
          const box = value.getBoundingClientRect();
          const texts = [];
          const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
          for (let node = walker.nextNode(); node; node = walker.nextNode()) texts.push(node);
          const after = texts.find((node) => node.data.startsWith(" is not"));
          const range = document.createRange();
          range.setStart(after, 1);
          range.setEnd(after, 3);
          return {valueRight: box.right, isLeft: range.getBoundingClientRect().left};
        }"""
    )
    assert drawn["isLeft"] >= drawn["valueRight"] - 0.5, drawn
