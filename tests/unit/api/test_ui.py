"""The live page's routes in process: the session cookie, the CSP, the files, the stream.

The page is served by the same ASGI app as the API (httpx's ASGI transport,
the test kit's StubEngine). What only a browser can show (the page renders a
caller's ``<script>`` as text, no console errors) is
tests/integration/test_ui_live.py; here: what the server promises.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.api import ui as ui_module
from router.api.app import build_app
from router.api.auth import hash_token
from router.api.context import ApiContext
from router.api.live import LiveRing
from router.api.session import COOKIE, MAX_REVOKED, MAX_SESSION, Sessions
from router.api.settings import ApiSettings, TokenSettings
from router.api.ui import CSP, STATIC, pick_language
from router.plugin_registry import plugin_registry
from router.rules.ruleset import RuleSet, load_rules
from router.testing import StubEngine, make_decision, make_trace

VIEWER = "cr_viewer-token"
SCRIPT = "cr_script-token"
OTHER = "cr_other-token"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
RULES = """\
version: 1
rules:
  - name: owner
    priority: 50
    on: call
    lookup:
      owner: onec.responsible(caller.number)
    when: owner.found and owner.manager.extension
    do:
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
  - name: fallback
    on: call
    do:
      - redirect: {context: test-queue, exten: fallback}
"""


def token(name: str, text: str, allow: tuple[str, ...]) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=allow,
        extensions=("*",),
        rate=1000,
        burst=1000,
    )


TOKENS = (
    token("viewer", VIEWER, ("ui:read",)),
    token("script", SCRIPT, ("rules:explain",)),
    token("other", OTHER, ("events:read", "ami:*")),
)


def settings(**changes: Any) -> ApiSettings:
    return ApiSettings(tokens={t.name: t for t in TOKENS}, **changes)


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    loaded = load_rules([path], plugin_registry(timezone="Europe/Moscow"))
    assert not loaded.errors, loaded.errors
    return loaded


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


@pytest.fixture
def ring(stub: StubEngine) -> LiveRing:
    return LiveRing(stub)


@pytest.fixture
async def client(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(ApiContext(stub, settings(), live=ring, rules=lambda: ruleset))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        yield http


async def sign_in(client: httpx.AsyncClient, text: str = VIEWER) -> httpx.Response:
    return await client.post("/ui/login", json={"token": text}, headers={"X-Callrouter-UI": "1"})


def frames(body: str) -> list[tuple[str, Any]]:
    """The SSE messages of a stream body: (event, data)."""
    found = []
    for block in body.split("\n\n"):
        kind = re.search(r"^event: (.+)$", block, re.M)
        data = re.search(r"^data: (.+)$", block, re.M)
        if kind and data:
            found.append((kind.group(1), json.loads(data.group(1))))
    return found


# -- the page and its files -----------------------------------------------------------


async def test_page_is_served_with_a_strict_csp_in_the_preferred_language(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/ui/", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP
    assert "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP
    assert "unsafe-eval" not in CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert re.search(r'<html lang="ru" data-v="[0-9a-f]{16}">', response.text)
    english = await client.get("/ui/", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert re.search(r'<html lang="en" data-v="[0-9a-f]{16}">', english.text)
    redirected = await client.get("/ui")
    assert redirected.status_code == 307
    assert redirected.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("ru", "ru"),
        ("en-US,en;q=0.9,ru;q=0.8", "en"),
        ("ru;q=0.8,en;q=0.5", "ru"),
        ("de,fr;q=0.9", "en"),
        ("uk, ru;q=0.9, en;q=0.1", "ru"),
        ("ru;q=abc,en;q=0.2", "en"),
    ],
)
def test_language_from_accept_language(header: str | None, language: str) -> None:
    assert pick_language(header) == language


async def test_the_page_files_load_nothing_from_elsewhere_and_run_no_inline_script(
    client: httpx.AsyncClient,
) -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    # Every script has a src on this listener; no inline handlers or styles (CSP).
    assert re.findall(r"<script\b[^>]*>", page) == [
        '<script src="/ui/static/app.js?v={{v}}" defer>'
    ]
    assert not re.search(r"\son[a-z]+\s*=", page)
    assert not re.search(r"\sstyle\s*=", page)
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}", text)
        assert urls in ([], ["http://www.w3.org"]), (path.name, urls)
        served = await client.get(f"/ui/static/{path.name}")
        if path.name == "index.html":
            assert served.status_code == 404
            continue
        assert served.status_code == 200, path.name
        assert served.content == path.read_bytes()
        assert served.headers["content-security-policy"] == CSP


async def test_a_pages_files_are_kept_by_the_browser_by_their_version(
    client: httpx.AsyncClient,
) -> None:
    """A load without a valid cookie counts against its address's anonymous
    rate, and each asked for all six requests (the files revalidated every
    time): seven operators behind one NAT address opening the page at once
    were refused some. The page names its files with their version, and a
    file asked for by it is kept for good; any other (no version, an older
    callrouter's) is revalidated (issue 16)."""
    page = (await client.get("/ui/")).text
    [version] = set(re.findall(r'data-v="([0-9a-f]{16})"', page))
    named = re.findall(r'(?:src|href)="(/ui/static/[a-z]+\.[a-z]+)\?v=([0-9a-f]+)"', page)
    assert sorted(url for url, _ in named) == [
        "/ui/static/app.js",
        "/ui/static/icon.svg",
        "/ui/static/style.css",
    ]
    assert {v for _, v in named} == {version}
    assert "{{" not in page
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert "/ui/static/strings.json?v=${" in script  # the start's fetch, by the same version
    for name in ("app.js", "icon.svg", "style.css", "strings.json"):
        kept = await client.get(f"/ui/static/{name}", params={"v": version})
        assert kept.status_code == 200, name
        assert kept.headers["cache-control"] == "max-age=31536000, immutable", name
        for other in ({}, {"v": "0" * 16}, {"v": version + "x"}):
            again = await client.get(f"/ui/static/{name}", params=other)
            assert again.headers["cache-control"] == "no-cache", (name, other)
            assert again.content == kept.content
    page_response = await client.get("/ui/")
    assert page_response.headers["cache-control"] == "no-store"  # the page: never kept


def test_the_files_version_changes_with_any_file(tmp_path: Path) -> None:
    for path in STATIC.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    before = ui_module._Files(tmp_path).version
    assert before == ui_module._Files(STATIC).version
    (tmp_path / "style.css").write_bytes((STATIC / "style.css").read_bytes() + b"\n")
    assert ui_module._Files(tmp_path).version != before


async def test_unknown_and_traversing_file_names_are_404(client: httpx.AsyncClient) -> None:
    for name in ("nope.js", "..%2Fui.py", "%2E%2E%2F%2E%2E%2Fconfig.py", "ui.py"):
        response = await client.get(f"/ui/static/{name}")
        assert response.status_code == 404, name


def test_the_script_never_writes_markup() -> None:
    """Callers' values reach the page as text: no API that parses a string as HTML."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
        "srcdoc",
        "createContextualFragment",
    ):
        assert sink not in script, sink
    assert "textContent" in script


def test_the_script_shows_controls_and_bidi_characters_as_the_logs_do() -> None:
    """Every text the page writes goes through ``visible``, whose characters are
    the logs' (router/logsafe.py): a U+202E in a caller's name or a 1C answer
    once showed the rest of a trace line backwards ("exten=101" as "101=netxe").
    The browser side is tests/integration/test_ui_live.py. The invisible
    characters the logs escape too (a zero-width space, a soft hyphen, tags:
    ``logsafe.INVISIBLE``) the page shows as they are: which text a page
    shows is a display decision (docs/security.md); they reorder nothing."""
    from router.logsafe import INVISIBLE, escape_controls

    script = (STATIC / "app.js").read_text(encoding="utf-8")
    found = re.search(r"const UNSAFE = /(\[[^\]]+\])/g;", script)
    assert found, "app.js has no UNSAFE character class"
    unsafe = re.compile(found.group(1))  # JavaScript's class syntax is Python's here
    for code in range(0x3000):
        char = chr(code)
        logged = escape_controls(char, keep_newlines=True) != char
        shown_raw = bool(INVISIBLE.fullmatch(char))
        assert bool(unsafe.fullmatch(char)) == (logged and not shown_raw), f"U+{code:04X}"
    # Outside text reaches the page only through el() or visible().
    assert "node.textContent = visible(text)" in script
    ours = ("visible(", "t(", '""', "String(calls.length)", "facts.join")
    for value in re.findall(r"\.textContent = (.+);", script):
        assert value.startswith(ours), value


def _calls(script: str, name: str) -> list[list[str]]:
    """The arguments of every call of ``name(...)`` in ``script``, split at
    their top-level commas (strings, templates and nesting skipped)."""
    found = []
    for start in re.finditer(rf"(?<!function )(?<![\w.]){name}\(", script):
        depth, args, current, i, quote = 1, [], "", start.end(), None
        while depth:
            char = script[i]
            if quote:
                if char == "\\":
                    current += char
                    i += 1
                    char = script[i]
                elif char == quote:
                    quote = None
            elif char in "\"'`":
                quote = char
            elif char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
            elif char == "," and depth == 1:
                args.append(current.strip())
                current = ""
                i += 1
                continue
            if depth:
                current += char
            i += 1
        args.append(current.strip())
        found.append(args)
    return found


def _strip_calls(text: str, names: tuple[str, ...]) -> str:
    """``text`` without the calls of ``names`` (their arguments are ours: keys
    of strings.json, numbers formatted)."""
    for name in names:
        while (match := re.search(rf"(?<![\w.]){name}\(", text)) is not None:
            depth, i = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            text = text[: match.start()] + "OURS" + text[i:]
    return text


def test_every_untrusted_value_is_written_into_its_own_bidi_isolate() -> None:
    """Issue 16: right-to-left letters (Hebrew, Arabic) in a caller's name or a
    1C answer need no control character to reorder the neutral characters and
    digits beside them: a 1C name ending in "{{" drew the lookup's "0.0 ms"
    inside the answer, left of the name. Each value goes through ``value()``
    into a ``<bdi>`` of its own; ``el()`` only ever writes our text. The
    browser side is tests/integration/test_ui_live.py."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    style = (STATIC / "style.css").read_text(encoding="utf-8")
    (value,) = re.findall(r"function value\(text\) \{(.*?)\n  \}", script, re.S)
    assert 'document.createElement("bdi")' in value
    assert "node.textContent = visible(" in value
    assert re.search(r"bdi \{[^}]*unicode-bidi: isolate", style)
    # el()'s text is ours: t() of a key, numbers we format, the time; no
    # field of a call, a decision, a trace, a lookup or an answer.
    texts = [args[2] for args in _calls(script, "el") if len(args) > 2]
    assert len(texts) > 15
    for text in texts:
        ours = _strip_calls(text, ("t", "ms", "clock", "Math.round"))
        fields = set(re.findall(r"\b[a-z_]\w*\.[a-z_]\w*", ours)) - {"lookup.reused"}
        assert not fields, f"el() writes {text}: put each value in value()"
        assert not re.fullmatch(r"[a-z_]\w*", ours) or ours == "OURS", text
    # line()'s strings are ours too; its values come as value() nodes.
    for args in _calls(script, "line"):
        for part in args[2:]:
            if part.startswith(("`", '"')):
                ours = _strip_calls(part, ("t",))
                assert not re.findall(r"\$\{(?!OURS)", ours), f"line() writes {part}"


def test_every_string_in_both_languages() -> None:
    from router.health import readiness

    strings = json.loads((STATIC / "strings.json").read_text(encoding="utf-8"))
    assert set(strings) == {"en", "ru"}
    assert set(strings["en"]) == set(strings["ru"])
    assert all(value.strip() for lang in strings.values() for value in lang.values())
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n="([a-z_-]+)"', page))
    used |= set(re.findall(r'\bt\("([a-z_-]+)"', script))
    assert used, "no strings found: the test no longer reads the page"
    assert used <= set(strings["en"]), used - set(strings["en"])
    # Keys built from a value (t(`state_${...}`)): every value the server sends.
    for prefix, values in {
        "state_": ("ringing", "routed", "answered", "ended"),
        "outcome_": ("executed", "shadow", "late", "fell-through", "failed", "caller-gone"),
        "status_": ("matched", "false", "lookup_failed", "error", "rejected", "skipped"),
        "check_": tuple(
            readiness(
                logged_in=True, stream_current=True, rule_problems=0, rules=0, serving=True
            ).checks
        ),
        "action_": (
            "ok",
            "confirmed",
            "unconfirmed",
            "channel-gone",
            "failed",
            "no-executor",
            "skipped",
            "planned",
        ),
    }.items():
        assert prefix in script
        for value in values:
            assert prefix + value in strings["en"], prefix + value


def test_no_english_string_puts_a_count_before_a_plural_noun() -> None:
    """hcli31's trial: the live page said `1 rules (0 with errors)` for the one
    rule of a first install; a count comes as `rules: 1`, which reads for any N."""
    strings = json.loads((STATIC / "strings.json").read_text(encoding="utf-8"))
    plural = re.compile(r"\}\s+(?!ms\b)\w+s\b")  # a unit (ms) is no noun
    counts = {key: text for key, text in strings["en"].items() if plural.search(text)}
    assert counts == {}


# -- signing in -----------------------------------------------------------------------


async def test_sign_in_sets_a_strict_httponly_cookie_that_is_not_the_token(
    client: httpx.AsyncClient,
) -> None:
    before = await client.get("/ui/session")
    assert before.status_code == 200
    assert before.json() == {"signed_in": False}
    response = await sign_in(client)
    assert response.status_code == 200, response.text
    assert response.json()["token"] == "viewer"
    cookie = response.headers["set-cookie"]
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith(f"{COOKIE}=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=3600"} <= set(attributes)
    assert "Secure" not in attributes  # no TLS on this listener
    assert VIEWER not in cookie
    assert VIEWER.removeprefix("cr_") not in cookie
    after = await client.get("/ui/session")
    assert after.json()["signed_in"] is True
    assert after.json()["token"] == "viewer"
    out = await client.post("/ui/logout", headers={"X-Callrouter-UI": "1"})
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert (await client.get("/ui/session")).json() == {"signed_in": False}


async def test_the_cookie_is_secure_behind_tls(tmp_path: Path) -> None:
    tls = settings(cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    value, session = Sessions(tls).issue(TOKENS[0])
    assert "; Secure" in Sessions(tls).cookie(value, session)


async def test_sign_in_refuses_bad_tokens_and_requests_not_from_the_page(
    client: httpx.AsyncClient,
) -> None:
    unknown = await sign_in(client, "cr_nobody")
    assert unknown.status_code == 401
    assert "set-cookie" not in unknown.headers
    lacking = await sign_in(client, OTHER)
    assert lacking.status_code == 403
    assert lacking.json()["missing_permission"] == "ui:read"
    assert "set-cookie" not in lacking.headers
    # rules:explain alone is for scripts, not the page.
    assert (await sign_in(client, SCRIPT)).status_code == 403
    # A cross-site form cannot add the page's header.
    plain = await client.post("/ui/login", json={"token": VIEWER})
    assert plain.status_code == 403
    assert "set-cookie" not in plain.headers
    # The token goes in the body only, never in a URL.
    query = await client.post(f"/ui/login?token={VIEWER}", headers={"X-Callrouter-UI": "1"})
    assert query.status_code == 400
    empty = await client.post("/ui/login", json={"token": ""}, headers={"X-Callrouter-UI": "1"})
    assert empty.status_code == 400
    assert empty.json()["field"] == "token"


async def test_sign_out_needs_the_page_header(client: httpx.AsyncClient) -> None:
    """Else another site's form could sign the page out (a cross-site POST)."""
    assert (await sign_in(client)).status_code == 200
    plain = await client.post("/ui/logout")
    assert plain.status_code == 403
    assert "x-callrouter-ui: 1" in plain.json()["detail"]
    assert "set-cookie" not in plain.headers
    assert (await client.get("/ui/session")).json()["signed_in"] is True
    out = await client.post("/ui/logout", headers={"X-Callrouter-UI": "1"})
    assert out.status_code == 200
    assert "Max-Age=0" in out.headers["set-cookie"]


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign out ends the session on the server: a copy of the cookie taken before
    (and of its renewal by a stream) is refused, and a stream open with it ends;
    before, only the signing-out browser forgot it, and a copy stayed valid for
    [api] ui_session and could be renewed for 12 hours."""
    import asyncio

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 30.0)
    monkeypatch.setattr("router.api.ui.HEALTH_EVERY", 0.05)
    app = build_app(ApiContext(stub, settings(), live=ring, rules=lambda: ruleset))

    def browser(cookie: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api.test",
            cookies={COOKIE: cookie} if cookie else None,
        )

    async with browser() as page, browser() as other:
        assert (await sign_in(page)).status_code == 200
        assert (await sign_in(other)).status_code == 200
        copy = page.cookies[COOKIE]
        # The stream is open once it waits on the ring for news (no clock: a
        # loaded machine may take longer than any sleep to get there).
        waiting = asyncio.Event()
        ring_wait = ring.wait

        async def wait(version: int, timeout: float) -> int:
            waiting.set()
            return await ring_wait(version, timeout)

        monkeypatch.setattr(ring, "wait", wait)
        async with browser(copy) as thief:
            # The copy's stream (renewing its cookie) is open when the owner signs out.
            watching = asyncio.create_task(thief.get("/ui/stream"))
            await asyncio.wait_for(waiting.wait(), 5)
            out = await page.post("/ui/logout", headers={"X-Callrouter-UI": "1"})
            assert out.status_code == 200
            stream = await asyncio.wait_for(watching, 5)
        assert stream.status_code == 200
        renewed = stream.cookies[COOKIE]
        assert stream.text.endswith("event: bye\ndata: {}\n\n")
        for value in (copy, renewed):
            async with browser(value) as again:
                assert (await again.get("/ui/session")).json() == {"signed_in": False}
                assert (await again.get("/ui/stream")).status_code == 401
        # Another browser's session of the same token goes on.
        assert (await other.get("/ui/session")).json()["signed_in"] is True
        assert (await sign_in(page)).status_code == 200
        assert (await page.get("/ui/session")).json()["signed_in"] is True


def test_signed_out_sessions_are_remembered_within_a_bound() -> None:
    """A token that signs in and out without end holds at most MAX_REVOKED ids;
    past that, every session of that token made until then ends (never one that
    was signed out comes back), and other tokens' sessions are untouched."""
    now = [1_000_000.0]
    two = ApiSettings(tokens={"viewer": TOKENS[0], "other": token("other", OTHER, ("ui:read",))})
    sessions = Sessions(two, clock=lambda: now[0])
    _, bystander = sessions.issue(two.tokens["other"])
    _, kept = sessions.issue(TOKENS[0])
    values = []
    for _ in range(MAX_REVOKED + 5):
        value, session = sessions.issue(TOKENS[0])
        sessions.revoke(session)
        assert sessions.check(value) is None
        values.append(value)
        assert sum(len(ids) for ids in sessions._revoked.values()) <= MAX_REVOKED
    assert all(sessions.check(value) is None for value in values)
    assert sessions.revoked(kept)
    assert not sessions.revoked(bystander)
    now[0] += 1
    fresh, _ = sessions.issue(TOKENS[0])
    assert sessions.check(fresh) is not None
    # A revoked id is forgotten once no renewal of it could be valid anyway.
    _, late = sessions.issue(TOKENS[0])
    sessions.revoke(late)
    now[0] += MAX_SESSION + 1
    sessions.revoke(sessions.issue(TOKENS[0])[1])
    assert late.sid not in sessions._revoked["viewer"]


async def test_a_token_narrowed_to_some_extensions_does_not_get_the_live_page(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet
) -> None:
    """The page shows every call and decision: a token that covers only 101 would
    see other extensions' callers, so it is refused at login, and a session of a
    token narrowed since is void."""
    desk = TokenSettings(
        name="desk",
        digest=bytes.fromhex(hash_token("cr_desk").removeprefix("sha256:")),
        allow=("ui:read",),
        extensions=("101",),
        rate=1000,
        burst=1000,
    )
    api = ApiSettings(tokens={t.name: t for t in (*TOKENS, desk)})
    app = build_app(ApiContext(stub, api, live=ring, rules=lambda: ruleset))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        refused = await sign_in(http, "cr_desk")
        assert refused.status_code == 403
        assert 'extensions = ["*"]' in refused.json()["detail"]
        assert "101" in refused.json()["detail"]
        assert "set-cookie" not in refused.headers
        assert (await http.get("/ui/stream")).status_code == 401
    # A session made while the token still covered everything dies with the change.
    wide = TokenSettings(
        name="desk", digest=desk.digest, allow=desk.allow, extensions=("*",), rate=1, burst=1
    )
    before = Sessions(ApiSettings(tokens={"desk": wide}))
    value, _ = before.issue(wide)
    assert before.check(value) is not None
    narrowed = Sessions(ApiSettings(tokens={"desk": desk}), key=before._key)
    assert narrowed.check(value) is None


def test_a_session_cookie_is_valid_only_with_the_payload_as_issued() -> None:
    """Issue 16: the MAC covers the session's fields, not the JSON carrying them,
    so the same fields in another JSON spelling (spaces, key order, an escape,
    an extra key, UTF-16) made another cookie value that was valid too."""
    sessions = Sessions(settings(), clock=lambda: 1_000_000.0)
    value, session = sessions.issue(TOKENS[0])
    payload, mac = value.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(fields) == {"n", "s", "i", "e"}
    name = fields["n"]
    texts = [
        json.dumps(fields),  # ", " and ": "
        json.dumps(dict(reversed(fields.items())), separators=(",", ":")),
        json.dumps({**fields, "x": 1}, separators=(",", ":")),
        json.dumps(fields, separators=(",", ":")).replace(
            f'"{name}"', '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '"'
        ),
    ]
    spellings = [t.encode() for t in texts]
    spellings.append(json.dumps(fields, separators=(",", ":")).encode("utf-16"))
    assert sessions.check(value) == session
    for spelling in spellings:
        respelled = base64.urlsafe_b64encode(spelling).rstrip(b"=").decode()
        assert respelled != payload
        assert sessions.check(f"{respelled}.{mac}") is None, spelling


def test_a_session_dies_when_forged_expired_or_its_token_changes() -> None:
    now = [1_000_000.0]
    sessions = Sessions(settings(), clock=lambda: now[0])
    value, session = sessions.issue(TOKENS[0])
    assert sessions.check(value) == session
    payload, mac = value.split(".")
    other = "B" if mac[0] == "A" else "A"
    assert sessions.check(f"{payload}.{other}{mac[1:]}") is None
    # Values that decode to the same bytes are still not the value we issued:
    # the MAC's last character carries two spare bits, and base64 skips
    # characters outside its alphabet (in the MAC and in the payload alike).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = alphabet[alphabet.index(mac[-1]) ^ 1]
    assert len(mac) == 43
    assert sessions.check(f"{payload}.{mac[:-1]}{spare}") is None
    assert sessions.check(f"{payload}.{mac[:5]}!{mac[5:]}") is None
    assert sessions.check(f"{payload[:5]}!{payload[5:]}.{mac}") is None
    assert sessions.check(value + "x") is None
    assert sessions.check("not a cookie") is None
    assert sessions.check("e30.e30") is None
    # Another process's key (a restart) signs other cookies.
    assert Sessions(settings()).check(value) is None
    # The token's name kept, its hash replaced in router.toml: the cookie is void.
    replaced = token("viewer", "cr_new-secret", ("ui:read",))
    moved = Sessions(ApiSettings(tokens={"viewer": replaced}), key=sessions._key)
    assert moved.check(value) is None
    # ui:read taken away: void.
    demoted = token("viewer", VIEWER, ("events:read",))
    assert Sessions(ApiSettings(tokens={"viewer": demoted}), key=sessions._key).check(value) is None
    # Expiry: ui_session after the last renewal, MAX_SESSION after the login.
    now[0] += 3599
    assert sessions.check(value) is not None
    now[0] += 2
    assert sessions.check(value) is None
    start = now[0]
    value, session = sessions.issue(TOKENS[0])
    while now[0] < start + MAX_SESSION - 1800:
        now[0] += 1800
        value, session = sessions.issue(TOKENS[0], issued=session.issued)
        assert sessions.check(value) is not None
    now[0] = start + MAX_SESSION
    assert sessions.check(value) is None


# -- the stream -----------------------------------------------------------------------


async def test_the_stream_needs_a_session(client: httpx.AsyncClient) -> None:
    response = await client.get("/ui/stream")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    client.cookies.set(COOKIE, "e30.e30")
    forged = await client.get("/ui/stream")
    assert forged.status_code == 401
    client.cookies.clear()
    # A bearer token is no session: the page's paths take the cookie only.
    bearer = await client.get("/ui/stream", headers={"Authorization": f"Bearer {VIEWER}"})
    assert bearer.status_code == 401


async def test_the_stream_sends_calls_decisions_with_traces_and_health(
    client: httpx.AsyncClient,
    stub: StubEngine,
    ring: LiveRing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.3)
    call = stub.calls.inbound_call(linkedid="1714557600.7", caller="79161234567", did="74951234567")
    call.caller_name = HOSTILE
    answer = {"found": True, "manager": {"extension": "101", "name": HOSTILE}}
    trace = make_trace(caller="79161234567", lookups={"onec.responsible": answer}, rule="owner")
    stub.decisions[call.linkedid] = {
        "rule": "owner",
        "rules": ["owner"],
        "caller": "79161234567",
        "did": "74951234567",
        "actions": [{"kind": "redirect", "status": "confirmed", "detail": "", "ms": 4.2}],
        "evaluate_ms": 1.5,
        "total_ms": 12.0,
        "deadline_left_ms": 2400.0,
    }
    ring.callrouter_decision(call, make_decision(("redirect", {"exten": "101"})), trace, "executed")
    await sign_in(client)
    response = await client.get("/ui/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["content-security-policy"] == CSP
    # Every (re)connect renews the session.
    assert "HttpOnly" in response.headers["set-cookie"]
    (kind, hello), *_ = frames(response.text)
    assert kind == "hello"
    assert hello["health"]["checks"] == {"asterisk": True, "rules": True}
    assert hello["health"]["rules"] == 2
    [shown] = hello["calls"]
    assert shown["caller_name"] == HOSTILE  # as data: the page renders it as text
    assert shown["rule"] == "owner"
    [decision] = hello["decisions"]
    assert decision["outcome"] == "executed"
    assert decision["actions"][0]["status"] == "confirmed"
    [rule] = decision["trace"]["rules"]
    assert rule["rule"] == "owner"
    assert rule["lookups"][0]["value"] == answer
    assert decision["caller_name"] == HOSTILE


async def test_a_lone_surrogate_in_a_trace_does_not_break_the_stream(
    client: httpx.AsyncClient,
    stub: StubEngine,
    ring: LiveRing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16 (an attacker's trial): ``"\\ud800"`` in a lookup's answer (valid
    JSON, no text) made the stream raise UnicodeEncodeError for every reader
    while the decision stayed among the recent ones; it shows as U+FFFD."""
    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.3)
    call = stub.calls.inbound_call(linkedid="1714557600.6", caller="79161234567", did="7495")
    answer = {"found": True, "client": {"name": "\ud800x"}, "\udc00": ["\ud800"]}
    trace = make_trace(caller="79161234567", lookups={"onec.responsible": answer}, rule="owner")
    ring.callrouter_decision(call, None, trace, "executed")
    await sign_in(client)
    response = await client.get("/ui/stream")
    assert response.status_code == 200
    (_, hello), *_ = frames(response.text)
    [decision] = hello["decisions"]
    value = decision["trace"]["rules"][0]["lookups"][0]["value"]
    assert value == {"found": True, "client": {"name": "\ufffdx"}, "\ufffd": ["\ufffd"]}


async def test_a_decision_taken_while_the_page_watches_reaches_it(
    client: httpx.AsyncClient,
    stub: StubEngine,
    ring: LiveRing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 1.0)
    await sign_in(client)
    call = stub.calls.inbound_call(linkedid="1714557600.8", caller="79161234567", did="74951234567")

    async def decide_soon() -> None:
        await asyncio.sleep(0.2)
        ring.callrouter_decision(call, None, None, "late")

    task = asyncio.create_task(decide_soon())
    response = await client.get("/ui/stream")
    await task
    kinds = [kind for kind, _ in frames(response.text)]
    assert kinds[0] == "hello"
    # A planned end: the browser is told to come back at once, not in 3 s.
    assert kinds[-1] == "bye"
    assert response.text.startswith("retry: 3000\n")
    assert "retry: 10\nevent: bye" in response.text
    assert "decision" in kinds
    assert "calls" in kinds
    late = next(data for kind, data in frames(response.text) if kind == "decision")
    assert late["outcome"] == "late"
    assert late["trace"] is None


async def test_open_pages_per_token_are_bounded(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.5)
    app = build_app(ApiContext(stub, settings(events_waiters=1), live=ring, rules=lambda: ruleset))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        await sign_in(http)
        first = asyncio.create_task(http.get("/ui/stream"))
        await asyncio.sleep(0.1)
        second = await http.get("/ui/stream")
        assert second.status_code == 429
        assert (await first).status_code == 200
        # The slot is given back when the stream ends.
        assert (await http.get("/ui/stream")).status_code == 200


async def test_a_head_of_the_stream_answers_headers_and_keeps_no_page_place(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 (an attacker's trial): HEAD /ui/stream ran the stream with its
    body going nowhere, holding one of the token's ``events_waiters`` places and
    the connection for STREAM_LIFETIME (five minutes): a few HEADs locked the
    live page out (429) as HEAD /api/v1/events/stream once did."""
    import asyncio

    app = build_app(ApiContext(stub, settings(events_waiters=1), live=ring, rules=lambda: ruleset))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        await sign_in(http)
        for _ in range(2):
            # (Not wait_for: the app runs in the request's task, and a stream
            # cut by its cancel answers as if it had ended.) Far longer than
            # any loaded machine takes to answer headers; the stream's own
            # lifetime (300 s) is far longer still.
            asked = asyncio.create_task(http.head("/ui/stream"))
            done, _ = await asyncio.wait({asked}, timeout=30)
            assert done, "the HEAD is still open"
            head = asked.result()
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
            assert head.headers["content-security-policy"] == CSP
            assert head.content == b""
        # The one place is free for the page itself.
        monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.2)
        page = await http.get("/ui/stream")
        assert page.status_code == 200
        assert frames(page.text)[0][0] == "hello"


def test_the_ring_keeps_the_last_decisions_and_cuts_huge_traces(stub: StubEngine) -> None:
    ring = LiveRing(stub, keep=3)
    call = stub.calls.inbound_call(linkedid="1714557600.9", caller="79161234567", did="7495")
    for _ in range(5):
        ring.callrouter_decision(call, None, None, "fell-through")
    assert [entry["id"] for entry in ring.decisions()] == [3, 4, 5]
    assert [entry["id"] for entry in ring.decisions(after=4)] == [5]
    huge = make_trace(lookups={"onec.responsible": {"blob": "x" * 100_000}})
    ring.callrouter_decision(call, None, huge, "executed")
    entry = ring.decisions()[-1]
    assert len(json.dumps(entry)) < 70_000
    assert entry["trace"]["rules"][0]["lookups"][0]["value"].startswith("(left out")


def test_the_quoted_parts_of_a_huge_trace_are_left_out(stub: StubEngine) -> None:
    """A message quoting many short values (a lookup's error echoing 1C's text) has
    parts many times its size: twenty such errors of 1,200 characters made an entry
    of 240 KB, past the 64 KiB the ring keeps, however its answers were cut.
    Over the bound the parts go (the page isolates each message whole, as before)."""
    from router.api.live import MAX_ENTRY
    from router.rules.decision import LookupTrace, RuleTrace

    ring = LiveRing(stub)
    call = stub.calls.inbound_call(linkedid="1714557600.7", caller="79161234567", did="7495")
    trace = make_trace()
    error = "HTTP 400; " + "'a' " * 300
    for number in range(20):
        rule = RuleTrace(f"rule{number}", "rules.yaml:1", "lookup_failed")
        rule.lookups.append(LookupTrace("owner", "onec.responsible('7916')", None, error=error))
        trace.rules.append(rule)
    ring.callrouter_decision(call, None, trace, "fell-through")
    entry = ring.decisions()[-1]
    assert len(json.dumps(entry, ensure_ascii=False)) <= MAX_ENTRY
    assert entry["trace"]["rules"][1]["lookups"][0]["error"] == error  # the text stays
    assert "error_parts" not in entry["trace"]["rules"][1]["lookups"][0]
    # A small one keeps its parts.
    small = make_trace()
    small.rules[0].detail = "exten 'x' is not a safe dialplan location"
    ring.callrouter_decision(call, None, small, "fell-through")
    assert "detail_parts" in ring.decisions()[-1]["trace"]["rules"][0]


async def test_the_ring_wakes_its_watchers(stub: StubEngine) -> None:
    import asyncio

    ring = LiveRing(stub)
    version = ring.version
    waiting = asyncio.create_task(ring.wait(version, timeout=5))
    await asyncio.sleep(0)
    call = stub.calls.inbound_call(linkedid="1714557600.10", caller="1", did="2")
    ring.callrouter_call_start(call)
    assert await asyncio.wait_for(waiting, 1) == version + 1
    # Nothing new: returns after the timeout with the same version.
    assert await ring.wait(ring.version, timeout=0.01) == ring.version


# -- explain --------------------------------------------------------------------------


async def test_explain_answers_with_the_decision_and_its_trace(client: httpx.AsyncClient) -> None:
    body = {
        "caller": "8 (916) 123-45-67",
        "did": "74951234567",
        "at": "2026-12-01 12:00",
        "lookups": {"onec.responsible": {"found": True, "manager": {"extension": "101"}}},
    }
    for text in (SCRIPT, VIEWER):
        response = await client.post(
            "/api/v1/explain", json=body, headers={"Authorization": f"Bearer {text}"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["decision"]["rules"] == ["owner"]
        assert answer["decision"]["actions"][0]["params"]["exten"] == "101"
        owner = answer["trace"]["rules"][0]
        assert (owner["rule"], owner["status"]) == ("owner", "matched")
        assert answer["trace"]["rules"][0]["lookups"][0]["value"]["found"] is True
        assert answer["trace"]["rules"][0]["lookups"][0]["source"] == "given"
        assert "owner" in answer["text"]
        assert "MATCHED" in answer["text"]
    # No answer given: the lookup is "not provided" and the fallback decides.
    plain = await client.post(
        "/api/v1/explain",
        json={"caller": "79161234567", "did": "74951234567"},
        headers={"Authorization": f"Bearer {SCRIPT}"},
    )
    assert plain.json()["decision"]["rules"] == ["fallback"]
    # ... and says so: the API never asks a plugin (docs/api.md).
    assert plain.json()["trace"]["rules"][0]["lookups"][0]["source"] == "not provided"


async def test_explain_refuses_tokens_without_the_permission_and_bad_fields(
    client: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {OTHER}"}
    lacking = await client.post("/api/v1/explain", json={"caller": "1", "did": "2"}, headers=auth)
    assert lacking.status_code == 403
    assert lacking.json()["missing_permission"] == "rules:explain"
    assert (
        await client.post("/api/v1/explain", json={"caller": "1", "did": "2"})
    ).status_code == 401
    auth = {"Authorization": f"Bearer {SCRIPT}"}
    cases = [
        ({"did": "2"}, "caller"),
        ({"caller": 5, "did": "2"}, "caller"),
        ({"caller": "1", "did": "2", "at": "tomorrow"}, "at"),
        ({"caller": "1", "did": "2", "lookups": []}, "lookups"),
        ({"caller": "1", "did": "2", "lookups": {"onec.responsibl": {}}}, "lookups"),
        ({"caller": "1", "did": "2", "colour": "red"}, "colour"),
        ({"caller": "1" * 65, "did": "2"}, "caller"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/explain", json=body, headers=auth)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["field"] == field
    typo = await client.post(
        "/api/v1/explain",
        json={"caller": "1", "did": "2", "lookups": {"onec.responsibl": {}}},
        headers=auth,
    )
    assert "did you mean 'onec.responsible'" in typo.json()["detail"]


async def test_explain_without_rules_is_503(stub: StubEngine) -> None:
    app = build_app(ApiContext(stub, settings()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        response = await http.post(
            "/api/v1/explain",
            json={"caller": "1", "did": "2"},
            headers={"Authorization": f"Bearer {SCRIPT}"},
        )
    assert response.status_code == 503


async def test_the_page_explains_with_its_cookie_and_header_only(client: httpx.AsyncClient) -> None:
    body = {"caller": HOSTILE[:60], "did": "74951234567"}
    assert (await client.post("/ui/explain", json=body)).status_code == 401
    await sign_in(client)
    without = await client.post("/ui/explain", json=body)
    assert without.status_code == 403
    response = await client.post("/ui/explain", json=body, headers={"X-Callrouter-UI": "1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"] == CSP
    # A hostile "number" is only data: normalized away, the fallback decides.
    assert response.json()["decision"]["rules"] == ["fallback"]


# -- settings -------------------------------------------------------------------------


def test_ui_session_and_the_permissions_are_read_from_router_toml(tmp_path: Path) -> None:
    from router.errors import ConfigError
    from router.testing import config_from_toml

    block = (
        f'[api]\nui_session = 600\n[api.tokens.wall]\nhash = "{hash_token(VIEWER)}"\n'
        'allow = ["ui:read", "rules:explain"]\nextensions = ["*"]\n'
    )
    api = config_from_toml(tmp_path, block).api
    assert api is not None
    assert api.ui_session == 600
    assert api.tokens["wall"].allow == ("ui:read", "rules:explain")
    default = config_from_toml(tmp_path, block.replace("ui_session = 600\n", "")).api
    assert default is not None
    assert default.ui_session == 3600
    with pytest.raises(ConfigError, match=r"\[api\] ui_session"):
        config_from_toml(tmp_path, block.replace("600", "10"))
    with pytest.raises(ConfigError, match="did you mean 'ui:read'"):
        config_from_toml(tmp_path, block.replace('"ui:read"', '"ui:reed"'))


async def test_the_ring_is_a_plugin_that_asks_only_for_the_events_it_reads(
    stub: StubEngine,
) -> None:
    """Registered like any plugin, it does not make the engine ask Asterisk for everything."""
    from router.api.live import open_live
    from router.plugins import Plugins
    from router.testing import make_event

    plugins = Plugins()
    ring = open_live(plugins, stub)
    [wanted] = await plugins.wanted_events()
    assert wanted is not None
    assert set(wanted) == {"Newchannel", "Newstate", "DialBegin", "DialEnd", "BridgeEnter"}
    call = stub.calls.inbound_call(linkedid="1714557600.11", caller="1", did="2")
    version = ring.version
    await plugins.event(make_event("Newstate", Linkedid=call.linkedid), call)
    assert ring.version == version + 1
    await plugins.event(make_event("VarSet", Linkedid=call.linkedid), call)
    assert ring.version == version + 1


async def test_the_health_summary_is_the_readiness_of_readyz(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.health import readiness

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.2)
    down = readiness(logged_in=False, stream_current=False, rule_problems=0, rules=2, serving=True)
    context = ApiContext(stub, settings(), live=ring, rules=lambda: ruleset, health=lambda: down)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(context)), base_url="http://api.test"
    ) as http:
        await sign_in(http)
        (kind, hello), *_ = frames((await http.get("/ui/stream")).text)
    assert kind == "hello"
    shown = hello["health"]
    assert shown["ready"] is False
    assert shown["checks"] == dict(down.checks)
    assert shown["checks"]["asterisk"] is False
    assert shown["reasons"] == list(down.reasons)
    assert "not logged in to Asterisk" in shown["reasons"][0]


async def test_the_health_summary_has_the_warnings_of_readyz_and_the_page_tells_them(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz's ``warnings`` (a manager user without ``write = reporting``:
    still ready) never reached the page: its health panel showed ready and
    nothing else. They come with the reasons now, and the page tells them as
    warnings beside the reasons, the badge still ready."""
    from router.health import readiness

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.2)
    warning = "Asterisk refuses the manager user 'router' CoreStatus (write = reporting missing)"
    warned = readiness(
        logged_in=True,
        stream_current=True,
        rule_problems=0,
        rules=2,
        serving=True,
        privilege_warning=warning,
    )
    assert warned.ready
    context = ApiContext(stub, settings(), live=ring, rules=lambda: ruleset, health=lambda: warned)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(context)), base_url="http://api.test"
    ) as http:
        await sign_in(http)
        (kind, hello), *_ = frames((await http.get("/ui/stream")).text)
    assert kind == "hello"
    shown = hello["health"]
    assert shown["ready"] is True
    assert shown["reasons"] == []
    assert shown["warnings"] == [warning]

    script = (STATIC / "app.js").read_text(encoding="utf-8")
    render = script[script.index("function renderHealth") : script.index("function connectionLost")]
    assert "health.warnings" in render
    # A line of their own, styled as a warning (not .error), its text a value().
    assert 'line("li", "warning", t("warning"), value(text))' in render
    assert '"health_ready_warned"' in render
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    assert ".reasons li.warning { color: var(--warn); }" in css


async def test_explain_answers_as_callrouter_explain_does(
    client: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One evaluation behind both: the same decision and the same trace."""
    from router.cli import main

    answer = {"found": True, "manager": {"extension": "101"}}
    monkeypatch.chdir(tmp_path)  # no router.toml here: the defaults, as the fixture's registry
    argv = ["explain", "--caller", "8 (916) 123-45-67", "--did", "74951234567"]
    argv += ["--at", "2026-12-01 12:00", "--tz", "Europe/Moscow", "--json"]
    argv += ["--rules", str(tmp_path / "rules.yaml"), "--lookup"]
    argv += [f"onec.responsible={json.dumps(answer)}"]
    import asyncio

    assert await asyncio.to_thread(main, argv) == 0  # the command runs its own loop
    printed = json.loads(capsys.readouterr().out)
    response = await client.post(
        "/api/v1/explain",
        json={
            "caller": "8 (916) 123-45-67",
            "did": "74951234567",
            "at": "2026-12-01 12:00",
            "lookups": {"onec.responsible": answer},
        },
        headers={"Authorization": f"Bearer {SCRIPT}"},
    )
    served = response.json()

    def comparable(body: dict[str, Any]) -> dict[str, Any]:
        body = json.loads(json.dumps(body))
        body["trace"].pop("elapsed_us")
        for rule in body["trace"]["rules"]:
            # Shown relative to the working directory when the rules were loaded.
            rule["location"] = Path(rule["location"]).name
            for lookup in rule["lookups"]:
                lookup.pop("ms")
        return {key: body[key] for key in ("decision", "trace", "other_did_rules")}

    assert comparable(served) == comparable(printed)
    assert served["decision"]["rules"] == ["owner"]


# -- messages quoting values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "action 'redirect': exten 'שרה' is not a safe dialplan location",
            [
                "action ",
                {"quote": "'", "value": "redirect"},
                ": exten ",
                {"quote": "'", "value": "שרה"},
                " is not a safe dialplan location",
            ],
        ),
        # repr's escapes stay in the value; an apostrophe inside a word opens nothing.
        (
            "the plugin's 'a\\'b' and \"it's\"",
            [
                "the plugin's ",
                {"quote": "'", "value": "a\\'b"},
                " and ",
                {"quote": '"', "value": "it's"},
            ],
        ),
        (
            "body: '\\u202eevil'; HTTP 500",
            ["body: ", {"quote": "'", "value": "\\u202eevil"}, "; HTTP 500"],
        ),
        ("timed out after 3703 ms", None),
        ("don't stop", None),
        ("b'x' x'y'", None),
        ("'x" + "y" * 5000 + "'", None),  # too long to split: isolated whole
    ],
)
def test_a_message_is_cut_at_the_values_it_quotes(text: str, parts: Any) -> None:
    from router.api.text import quoted_parts

    assert quoted_parts(text) == parts
    if parts is not None:
        joined = "".join(
            p if isinstance(p, str) else p["quote"] + p["value"] + p["quote"] for p in parts
        )
        assert joined == text


async def test_the_page_gets_messages_cut_at_their_quoted_values(
    client: httpx.AsyncClient,
    stub: StubEngine,
    ring: LiveRing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: a rule's detail, a lookup's error (1C's body) and an action's
    detail quote untrusted values, and the page put each such message in one
    ``<bdi>``: right-to-left letters in a value reordered the message's own words
    around it. The stream and the page's explain now send each message cut at
    its quoted values (``detail_parts``, ``error_parts``) for the page to isolate
    each value; the API's own explain is unchanged."""
    from router.rules.decision import LookupTrace

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.3)
    call = stub.calls.inbound_call(linkedid="1714557600.8", caller="79161234567", did="7495")
    trace = make_trace(caller="79161234567", rule="owner", status="rejected")
    rule = trace.rules[0]
    rule.detail = "action 'redirect': exten 'שרה' is not a safe dialplan location"
    rule.lookups.append(
        LookupTrace("owner", "onec.responsible('7916')", None, error="HTTP 500; body: 'שגיאה'")
    )
    stub.decisions[call.linkedid] = {
        "actions": [{"kind": "crm_tag", "status": "failed", "detail": "returned 'לא'", "ms": 1.0}],
    }
    ring.callrouter_decision(call, None, trace, "fell-through")
    await sign_in(client)
    (_, hello), *_ = frames((await client.get("/ui/stream")).text)
    [decision] = hello["decisions"]
    [shown] = decision["trace"]["rules"]
    assert shown["detail"] == rule.detail  # the text as before, beside its parts
    assert shown["detail_parts"][3] == {"quote": "'", "value": "שרה"}
    assert shown["lookups"][0]["error_parts"] == [
        "HTTP 500; body: ",
        {"quote": "'", "value": "שגיאה"},
    ]
    assert decision["actions"][0]["detail_parts"] == ["returned ", {"quote": "'", "value": "לא"}]

    answer = {"onec.responsible": {"found": True, "manager": {"extension": "שרה"}}}
    body = {"caller": "79161234567", "did": "74951234567", "lookups": answer}
    explained = await client.post("/ui/explain", json=body, headers={"X-Callrouter-UI": "1"})
    assert explained.status_code == 200, explained.text
    owner = explained.json()["trace"]["rules"][0]
    assert owner["status"] == "rejected"
    assert {"quote": "'", "value": "שרה"} in owner["detail_parts"]


def test_the_page_isolates_each_quoted_value_of_a_message() -> None:
    """The page side of the test above: a message with parts is a <bdi> whose
    quoted values are value() nodes; one without is one value() as before.
    The browser side is tests/integration/test_ui_live.py."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    (body,) = re.findall(r"function quotedMessage\(text, parts\) \{(.*?)\n  \}", script, re.S)
    assert "if (!Array.isArray(parts)) return value(text);" in body
    assert 'document.createElement("bdi")' in body
    assert "value(part.value)" in body
    assert "node.append(visible(part));" in body
    for use in (
        "rule.detail, rule.detail_parts",
        "lookup.error, lookup.error_parts",
        "action.detail, action.detail_parts",
    ):
        assert f"quotedMessage({use})" in script


async def test_a_change_of_health_reaches_the_page_at_once_not_at_the_next_heartbeat(
    stub: StubEngine, ring: LiveRing, ruleset: RuleSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asterisk restarted under a watching page: the page said "not ready" (and
    "ready" again) only with the next health heartbeat, up to 5 s late (3.5 s in
    the trial of issue 16). A change is sent at the stream's next look, which
    the ring's wait (timed out, nothing new) stands for here; an unchanged
    health waits for the heartbeat, set far away."""
    from router.health import readiness

    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.5)
    monkeypatch.setattr("router.api.ui.HEALTH_EVERY", 3600.0)
    up = readiness(logged_in=True, stream_current=True, rule_problems=0, rules=2, serving=True)
    down = readiness(logged_in=False, stream_current=False, rule_problems=0, rules=2, serving=True)
    now = [up]
    looks = 0
    ring_wait = ring.wait

    async def wait(version: int, timeout: float) -> int:
        nonlocal looks
        looks += 1
        if looks == 1:  # Asterisk goes away while the page watches
            now[0] = down
            return version
        return await ring_wait(version, timeout)

    monkeypatch.setattr(ring, "wait", wait)
    context = ApiContext(stub, settings(), live=ring, rules=lambda: ruleset, health=lambda: now[0])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(context)), base_url="http://api.test"
    ) as http:
        await sign_in(http)
        sent = frames((await http.get("/ui/stream")).text)
    assert sent[0][0] == "hello"
    assert sent[0][1]["health"]["ready"] is True
    healths = [data for kind, data in sent if kind == "health"]
    assert len(healths) == 1, healths  # the change, once; no heartbeat meanwhile
    assert healths[0]["ready"] is False
    assert "not logged in to Asterisk" in healths[0]["reasons"][0]


def test_the_calls_list_says_deciding_then_routed_then_ringing_as_the_phone_rings(
    stub: StubEngine, ring: LiveRing
) -> None:
    """In the trial of issue 16 a call said ``routed`` with ``no rule`` while 1C
    was still asked (then ``routed``, ``no rule`` again as it fell through), and
    ``routed`` for the 8 s its manager's phone rang unanswered: the page never
    said ``ringing`` of a ringing phone. Now: ``deciding`` until the decision,
    ``routed``, ``ringing`` while a phone it dialled rings, ``answered``."""
    from router.testing import make_event

    call = stub.calls.inbound_call(linkedid="1714557600.9", caller="79161234567", did="74951234567")
    [shown] = ring.calls()
    assert (shown["state"], shown["rule"]) == ("deciding", None)
    stub.decisions[call.linkedid] = {"rule": "owner", "rules": ["owner"]}
    ring.callrouter_decision(call, make_decision(("redirect", {"exten": "102"})), None, "executed")
    [shown] = ring.calls()
    assert (shown["state"], shown["rule"]) == ("routed", "owner")
    leg = {"Uniqueid": "1714557600.10", "Linkedid": call.linkedid}
    caller = call.waiting_channel or ""
    stub.calls.feed(
        make_event("Newchannel", Channel="PJSIP/102-00000001", ChannelStateDesc="Down", **leg)
    )
    # As Asterisk writes it: the caller's snapshot (its own Uniqueid), then the
    # dialled leg's as Dest* (an event naming the caller's channel under the
    # leg's Uniqueid is refused: router.calls.CallTracker.impostor).
    stub.calls.feed(
        make_event(
            "DialBegin",
            Channel=caller,
            Uniqueid=call.channels[caller].uniqueid,
            Linkedid=call.linkedid,
            DestChannel="PJSIP/102-00000001",
            DestUniqueid=leg["Uniqueid"],
        )
    )
    stub.calls.feed(
        make_event("Newstate", Channel="PJSIP/102-00000001", ChannelStateDesc="Ringing", **leg)
    )
    [shown] = ring.calls()
    assert (shown["state"], shown["rule"]) == ("ringing", "owner")
    # Nobody answered (the caller went on waiting): no phone rings, routed again.
    stub.calls.feed(make_event("Hangup", Channel="PJSIP/102-00000001", **leg))
    [shown] = ring.calls()
    assert shown["state"] == "routed"


def test_every_call_state_the_page_may_show_has_its_words_in_both_languages() -> None:
    strings = json.loads((STATIC / "strings.json").read_text(encoding="utf-8"))
    for language in ("en", "ru"):
        for state in ("ringing", "deciding", "routed", "answered", "ended"):
            assert f"state_{state}" in strings[language], (language, state)


def test_the_listeners_session_check_is_the_apps() -> None:
    """Before the app, the listener counts a request bearing a valid session
    against the rate of the session's token, not its address's
    (router.api.page_rate): it tells one by the app's own check over the
    cookie the app reads, and a forged, expired or signed-out cookie is no
    session (issue 16)."""
    now = [1_000_000.0]
    sessions = Sessions(settings(), clock=lambda: now[0])
    value, session = sessions.issue(TOKENS[0])
    token = TOKENS[0]
    assert sessions.token_of(f"{COOKIE}={value}".encode()) is token
    assert sessions.token_of(f"lang=ru; {COOKIE}={value}; theme=dark".encode()) is token
    # Several Cookie headers, joined by the listener: the last of ours wins, as in the app.
    assert sessions.token_of(f"{COOKIE}=forged; {COOKIE}={value}".encode()) is token
    assert sessions.token_of(f"{COOKIE}={value}; {COOKIE}=forged".encode()) is None
    other, _ = sessions.issue(TOKENS[0])
    assert sessions.token_of(f"{COOKIE}={other}".encode()) is token
    for cookie in (b"", b"lang=ru", f"x{COOKIE}={value}".encode(), f"{COOKIE}={value}x".encode()):
        assert sessions.token_of(cookie) is None, cookie
    sessions.revoke(session)
    assert sessions.token_of(f"{COOKIE}={value}".encode()) is None
    assert sessions.token_of(f"{COOKIE}={other}".encode()) is token  # only its own session
    now[0] += 3601
    assert sessions.token_of(f"{COOKIE}={other}".encode()) is None
