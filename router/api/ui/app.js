// The live page: one Server-Sent Events stream (/ui/stream) and the explain box.
// Every value from a call (caller, name, DID, lookup answers) is untrusted: it
// only ever reaches the page as textContent, never as markup.
"use strict";

(() => {
  const MAX_DECISIONS = 100;
  const $ = (id) => document.getElementById(id);
  let strings = { en: {}, ru: {} };
  let lang = "en";
  let source = null;
  let calls = [];
  let callsAt = 0;
  let health = null;
  // What the badge says while it has no health to show: "connecting" (before the
  // stream's first message), "live" (the health shown), "lost" (the stream broke,
  // callrouter unreachable), "signed-out" (the sign-in form is shown: the session
  // expired, the user signed out, or `callrouter ui sign-out-all` made a new key;
  // a restart alone keeps it).
  let link = "connecting";
  // The last sign-in refusal ({status, data}), told again in a new language.
  let refused = null;
  let decisions = [];
  let lastExplain = null;
  const opened = new Set();
  // Whether strings.json may be older than the server: set as the stream
  // (re)connects, since the callrouter behind it may be a newer one (an
  // upgrade while the page was open); cleared by the one fetch it allows.
  let stringsStale = false;

  // The words for a key neither language has: a newer callrouter sent a value
  // this page's strings.json never knew (a call state, an outcome). The page
  // fetches the server's strings.json once and shows them; until then, and if
  // even those lack it, the value itself in words ("fell-through": "fell
  // through"), never the key ("state_deciding").
  const VALUE_KEY = /^(?:state|outcome|status|action|check)_(.+)$/;

  function unknownKey(key) {
    if (stringsStale) {
      stringsStale = false;
      fetch("/ui/static/strings.json", { cache: "no-store" })
        .then((response) => (response.ok ? response.json() : null))
        .then((fresh) => {
          if (fresh && fresh.en && fresh.ru) {
            strings = fresh;
            applyLanguage();
          }
        })
        .catch(() => {});
    }
    const named = VALUE_KEY.exec(key);
    return (named ? named[1] : key).replace(/[_-]+/g, " ").trim();
  }

  function words(key) {
    return (strings[lang] || {})[key] ?? strings.en[key] ?? unknownKey(key);
  }

  function t(key, params) {
    let text = words(key);
    for (const [name, value] of Object.entries(params || {})) {
      text = text.split(`{${name}}`).join(String(value));
    }
    return text;
  }

  // t() with parts: each {name} of the text becomes its part (value() nodes).
  function tParts(key, parts) {
    const text = words(key);
    return text.split(/(\{\w+\})/).map((piece) => {
      const name = /^\{(\w+)\}$/.exec(piece);
      return name && name[1] in parts ? parts[name[1]] : piece;
    });
  }

  // Controls and the characters that reorder or hide what follows them (bidi
  // embeddings, overrides and isolates: "Trojan Source"), as the logs escape
  // them (router/logsafe.py). Raw, a U+202E in a caller's name or a 1C answer
  // showed the rest of its line backwards: the redirect's "exten=101" as
  // "101=netxe". Shown as \u202e, they change nothing around them.
  const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

  function visible(text) {
    return String(text).replace(UNSAFE, (char) => {
      const code = char.charCodeAt(0);
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    });
  }

  // An element with our own text (t(), numbers we format): never a value
  // from a call, which goes through value() into a part of line().
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = visible(text);
    return node;
  }

  // One untrusted value (a caller's number or name, a DID, a 1C answer's
  // text; a message quoting them: quotedMessage) in its own bidi isolate. Right-to-left
  // letters (Hebrew, Arabic) need no control character to reorder the
  // neutral characters and digits beside them: a 1C name ending a lookup's
  // answer showed the lookup's "0.0 ms" left of the name, inside the answer.
  // In a <bdi> the value takes its own direction and moves nothing outside.
  function value(text) {
    const node = document.createElement("bdi");
    node.textContent = visible(text ?? "");
    return node;
  }

  // A message quoting untrusted values (a rule's detail: "exten 'שרה' is not
  // a safe dialplan location"; a lookup's error with 1C's body), isolated whole
  // as value() does, and each value it quotes in an isolate of its own inside:
  // in one <bdi> for the whole message, right-to-left letters in a value
  // reordered the message's own words and quotes around them. The server
  // sends the message cut at its quoted values (router/api/text.py
  // quoted_parts): strings are the message's text, {quote, value} a value.
  // Without parts (nothing quoted, or a long text), the message is one value.
  function quotedMessage(text, parts) {
    if (!Array.isArray(parts)) return value(text);
    const node = document.createElement("bdi");
    for (const part of parts) {
      if (typeof part === "string") {
        node.append(visible(part));
      } else if (part && typeof part === "object") {
        const quote = visible(part.quote ?? "");
        node.append(quote, value(part.value), quote);
      }
    }
    return node;
  }

  // An element of parts: strings are ours, values come as value() nodes
  // (or lists of parts, as jsonParts and actionParts give).
  function line(tag, cls, ...parts) {
    const node = el(tag, cls);
    for (const part of parts.flat(Infinity)) {
      node.append(typeof part === "string" ? visible(part) : part);
    }
    return node;
  }

  // JSON as the page shows a lookup's answer, each string (key or value) a
  // value() of its own: the answer is 1C's, every text in it untrusted.
  function jsonParts(data) {
    if (typeof data === "string") return [value(json(data))];
    if (Array.isArray(data)) {
      const items = data.map(jsonParts);
      return ["[", items.flatMap((item, i) => (i ? [",", item] : [item])), "]"];
    }
    if (data && typeof data === "object") {
      const items = Object.entries(data).map(([key, item]) => [value(json(key)), ":", jsonParts(item)]);
      return ["{", items.flatMap((item, i) => (i ? [",", item] : [item])), "}"];
    }
    return [json(data)];
  }

  function ms(value) {
    return typeof value === "number" ? value.toFixed(1) : "–";
  }

  function json(value) {
    try {
      return JSON.stringify(value);
    } catch (_) {
      return String(value);
    }
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString(lang);
  }

  // -- language ---------------------------------------------------------------

  function applyLanguage() {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    for (const code of ["ru", "en"]) {
      $(`lang-${code}`).classList.toggle("active", code === lang);
    }
    renderHealth();
    renderRefusal();
    renderCalls();
    renderDecisions();
    if (lastExplain) renderExplain(lastExplain);
  }

  function setLanguage(code) {
    lang = code;
    localStorage.setItem("callrouter.lang", code);
    applyLanguage();
  }

  // -- health -----------------------------------------------------------------

  const BADGE = {
    connecting: ["unknown", "health_unknown"],
    lost: ["not-ready", "health_lost"],
    "signed-out": ["signed-out", "health_signed_out"],
  };

  function renderHealth() {
    const badge = $("health");
    if (link !== "live" || !health) {
      const [cls, key] = BADGE[link] || BADGE.connecting;
      badge.className = `badge ${cls}`;
      $("health-state").textContent = t(key);
      return;
    }
    // Warnings (a manager user without write = reporting) leave it ready:
    // told beside the reasons, never as not ready.
    const warnings = health.warnings || [];
    const warned = health.ready && warnings.length > 0;
    badge.className = `badge ${health.ready ? "ready" : "not-ready"}${warned ? " warned" : ""}`;
    $("health-state").textContent = t(
      health.ready ? (warned ? "health_ready_warned" : "health_ready") : "health_not_ready",
    );
    const checks = $("checks");
    checks.replaceChildren();
    for (const [name, ok] of Object.entries(health.checks || {})) {
      const item = el("li", ok ? "ok" : "bad", `${ok ? "✓" : "✗"} ${t(`check_${name}`)}`);
      checks.append(item);
    }
    const facts = [t("facts", { rules: health.rules ?? "–", errors: health.rule_errors ?? "–" })];
    if (health.shadow) facts.push(t("shadow"));
    $("health-facts").textContent = facts.join("; ");
    const reasons = $("reasons");
    reasons.replaceChildren(
      ...(health.reasons || []).map((text) => line("li", "error", value(text))),
      ...warnings.map((text) => line("li", "warning", t("warning"), value(text))),
    );
  }

  function connectionLost() {
    link = "lost";
    renderHealth();
  }

  // -- calls ------------------------------------------------------------------

  function renderCalls() {
    const list = $("calls");
    const elapsed = callsAt ? (Date.now() - callsAt) / 1000 : 0;
    list.replaceChildren();
    for (const call of calls) {
      const item = el("li", `call state-${call.state}`);
      item.dataset.call = call.call;
      const who = line("span", "who", value(call.caller || "?"));
      if (call.caller_name) who.append(line("span", "name", " (", value(call.caller_name), ")"));
      item.append(who, line("span", "to", ` ${t("to")} `, value(call.did || "?")));
      const facts = el("span", "facts");
      facts.append(
        el("span", "state", t(`state_${call.state}`)),
        el("span", "age", t("seconds", { n: Math.round(call.age_s + elapsed) })),
        call.rule ? line("span", "rule", `${t("rule")} `, value(call.rule)) : el("span", "rule", t("no_rule")),
      );
      item.append(facts);
      list.append(item);
    }
    $("calls-count").textContent = String(calls.length);
    $("calls-empty").hidden = calls.length > 0;
  }

  // -- decisions and traces ---------------------------------------------------

  function renderRules(trace, into) {
    into.append(el("h4", null, t("rules_tried")));
    if (!trace || !trace.rules || trace.rules.length === 0) {
      into.append(el("p", "muted", t("no_rules_tried")));
      return;
    }
    const list = el("ol", "rules");
    for (const rule of trace.rules) {
      const item = el("li", `rule status-${rule.status}`);
      const head = el("div", "rule-head");
      head.append(
        line("span", "rule-name", value(rule.rule)),
        line("span", "rule-location", " [", value(rule.location), "] "),
        line("span", "rule-status", t(`status_${rule.status}`), rule.stage ? [" (", value(rule.stage), ")"] : []),
      );
      item.append(head);
      if (rule.detail) item.append(line("div", "rule-detail", quotedMessage(rule.detail, rule.detail_parts)));
      if (rule.lookups && rule.lookups.length) {
        const lookups = el("ul", "lookups");
        for (const lookup of rule.lookups) {
          const answer = lookup.error
            ? tParts("lookup_failed", { error: quotedMessage(lookup.error, lookup.error_parts) })
            : jsonParts(lookup.value);
          const entry = el("li", lookup.error ? "lookup failed" : "lookup");
          entry.append(
            line("span", "lookup-call", value(lookup.call || lookup.name)),
            line("span", "lookup-value", " = ", answer),
            el("span", "lookup-ms", ` ${ms(lookup.ms)} ms${lookup.reused ? `, ${t("reused")}` : ""}`),
          );
          lookups.append(entry);
        }
        item.append(lookups);
      }
      if (rule.actions && rule.actions.length) {
        item.append(line("div", "rule-actions", listParts(rule.actions.map(actionParts))));
      }
      list.append(item);
    }
    into.append(list);
  }

  // "a, b, c" of parts.
  function listParts(items) {
    return items.flatMap((item, i) => (i ? [", ", item] : [item]));
  }

  // redirect(context=callrouter-dial, exten=101): a template fills the values
  // in from a lookup (1C's card), so each is a value() of its own.
  function actionParts(action) {
    const params = Object.entries(action.params || {}).map(([k, v]) => [value(k), "=", value(v)]);
    return [value(action.kind), "(", listParts(params), ")"];
  }

  function renderActions(actions, into) {
    into.append(el("h4", null, t("actions")));
    if (!actions || actions.length === 0) {
      into.append(el("p", "muted", t("no_actions")));
      return;
    }
    const list = el("ul", "actions");
    for (const action of actions) {
      const item = el("li", `action action-${action.status}`);
      item.append(
        line("span", "action-kind", value(action.kind)),
        el("span", "action-status", `: ${t(`action_${action.status}`)}`),
        el("span", "action-ms", ` ${ms(action.ms)} ms`),
      );
      if (action.detail) item.append(line("div", "action-detail", quotedMessage(action.detail, action.detail_parts)));
      list.append(item);
    }
    into.append(list);
  }

  function decisionItem(entry) {
    const item = el("li", `decision outcome-${entry.outcome}`);
    item.dataset.id = String(entry.id);
    item.dataset.call = entry.call;
    const details = el("details");
    details.open = opened.has(entry.id);
    details.addEventListener("toggle", () => {
      if (details.open) opened.add(entry.id);
      else opened.delete(entry.id);
    });
    const summary = el("summary");
    const who = line("span", "who", value(entry.caller || "?"));
    if (entry.caller_name) who.append(line("span", "name", " (", value(entry.caller_name), ")"));
    summary.append(
      el("time", "at", clock(entry.at)),
      who,
      line("span", "to", ` ${t("to")} `, value(entry.did || "?")),
      entry.rule ? line("span", "rule", value(entry.rule)) : el("span", "rule", t("no_rule")),
      el("span", `outcome outcome-${entry.outcome}`, t(`outcome_${entry.outcome}`)),
    );
    details.append(summary);
    const body = el("div", "trace");
    if (entry.trace) body.append(line("p", "trigger", `${t("trigger")}: `, value(entry.trace.trigger)));
    body.append(
      el(
        "p",
        "timing muted",
        t("timing", { evaluate: ms(entry.evaluate_ms), total: ms(entry.total_ms), left: ms(entry.deadline_left_ms) }),
      ),
    );
    renderRules(entry.trace, body);
    renderActions(entry.actions, body);
    details.append(body);
    item.append(details);
    return item;
  }

  function renderDecisions() {
    const list = $("decisions");
    list.replaceChildren(...decisions.slice().reverse().map(decisionItem));
    $("decisions-empty").hidden = decisions.length > 0;
  }

  function addDecision(entry) {
    decisions.push(entry);
    if (decisions.length > MAX_DECISIONS) decisions = decisions.slice(-MAX_DECISIONS);
    const list = $("decisions");
    list.prepend(decisionItem(entry));
    while (list.children.length > MAX_DECISIONS) list.lastElementChild.remove();
    $("decisions-empty").hidden = true;
  }

  // -- the stream -------------------------------------------------------------

  function setCalls(list) {
    calls = list;
    callsAt = Date.now();
    renderCalls();
  }

  function openStream() {
    if (source) source.close();
    source = new EventSource("/ui/stream");
    source.addEventListener("hello", (message) => {
      const data = JSON.parse(message.data);
      stringsStale = true;
      link = "live";
      health = data.health;
      renderHealth();
      // A reconnect of the same callrouter: add only what is new, so an open
      // trace stays open. Lower ids than ours: callrouter restarted, start over.
      const last = decisions.length ? decisions[decisions.length - 1].id : 0;
      const newest = data.decisions.length ? data.decisions[data.decisions.length - 1].id : 0;
      if (newest < last) {
        decisions = data.decisions;
        renderDecisions();
      } else {
        for (const entry of data.decisions) if (entry.id > last) addDecision(entry);
      }
      setCalls(data.calls);
    });
    source.addEventListener("decision", (message) => addDecision(JSON.parse(message.data)));
    source.addEventListener("calls", (message) => setCalls(JSON.parse(message.data)));
    source.addEventListener("health", (message) => {
      health = JSON.parse(message.data);
      renderHealth();
    });
    source.addEventListener("error", () => {
      connectionLost();
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        reconnect();
      }
    });
  }

  // The stream was refused (the session ended, or callrouter is still starting
  // after a restart and answers 503): the sign-in form only when callrouter says
  // the session is over; "lost" and again in 3 s while it cannot say.
  async function reconnect() {
    const state = await session();
    if (link === "signed-out" || source) return; // signed out meanwhile, or back
    if (state === null) setTimeout(reconnect, 3000);
    else if (!state.signed_in) showLogin();
    else if ($("live").hidden) showLive();
    else setTimeout(openStream, 3000);
  }

  // -- sign-in ----------------------------------------------------------------

  // {signed_in: ...} as callrouter says it; null when it cannot say (unreachable,
  // starting: 503), which is no sign-out.
  async function session() {
    try {
      const response = await fetch("/ui/session", { credentials: "same-origin" });
      if (!response.ok) return null;
      const state = await response.json();
      return state && typeof state.signed_in === "boolean" ? state : null;
    } catch (_) {
      return null;
    }
  }

  function showLogin() {
    if (source) source.close();
    source = null;
    link = "signed-out";
    renderHealth();
    $("login").hidden = false;
    $("live").hidden = true;
    $("logout").hidden = true;
    $("token").focus();
  }

  function showLive() {
    link = "connecting";
    refused = null;
    renderHealth();
    $("login").hidden = true;
    $("live").hidden = false;
    $("logout").hidden = false;
    openStream();
  }

  // {ok, status, data}; status 0 when callrouter could not be reached.
  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Callrouter-UI": "1" },
        body: JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, status: 0, data: {} };
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    return { ok: response.ok, status: response.status, data: data || {} };
  }

  // Why the sign-in was refused, in the page's language: the server's detail is
  // English, and quoted inside a Russian sentence it read half and half.
  function refusalParts(status, data) {
    if (status === 401) return [t("login_refused_token")];
    if (status === 403 && typeof data.missing_permission === "string") {
      return tParts("login_refused_permission", { permission: value(data.missing_permission) });
    }
    if (status === 403) return [t("login_refused_extensions")];
    if (status === 429) return [t("login_refused_rate")];
    if (status === 400) return [t("login_refused_input")];
    if (status === 0) return [t("login_unreachable")];
    return [t("login_refused_status", { status })];
  }

  function renderRefusal() {
    const box = $("login-error");
    if (!refused) {
      box.textContent = "";
      return;
    }
    const reason = refusalParts(refused.status, refused.data);
    box.replaceChildren(line("span", null, `${t("login_failed")}: `, reason));
  }

  async function login(event) {
    event.preventDefault();
    const field = $("token");
    const { ok, status, data } = await post("/ui/login", { token: field.value });
    field.value = "";
    refused = ok ? null : { status, data };
    renderRefusal();
    if (ok) showLive();
  }

  async function logout() {
    await post("/ui/logout", {});
    showLogin();
  }

  // -- explain ----------------------------------------------------------------

  function renderExplain(result) {
    const box = $("explain-result");
    box.replaceChildren();
    const decision = result.decision;
    const head = el("p", "explain-decision");
    head.append(el("strong", null, `${t("decision")}: `));
    if (decision.rules.length) {
      head.append(line("span", "rule", listParts(decision.rules.map(value))));
      head.append(line("span", "explain-actions", " → ", listParts(decision.actions.map(actionParts))));
    } else {
      head.append(el("span", "muted", t("decision_none")));
    }
    box.append(head, line("p", "trigger", `${t("trigger")}: `, value(result.trace.trigger)));
    renderRules(result.trace, box);
    if (result.other_did_rules.length) {
      const rules = listParts(result.other_did_rules.map(value));
      box.append(line("p", "muted", tParts("other_did_rules", { rules })));
    }
  }

  async function explain(event) {
    event.preventDefault();
    $("explain-error").textContent = "";
    const body = { caller: $("ex-caller").value, did: $("ex-did").value };
    if ($("ex-at").value.trim()) body.at = $("ex-at").value.trim();
    const lookups = $("ex-lookups").value.trim();
    if (lookups) {
      try {
        body.lookups = JSON.parse(lookups);
      } catch (_) {
        $("explain-error").textContent = t("bad_json");
        return;
      }
    }
    const { ok, data } = await post("/ui/explain", body);
    if (!ok) {
      $("explain-error").replaceChildren(visible(`${t("explain_failed")}: `), value(data.detail || ""));
      return;
    }
    lastExplain = data;
    renderExplain(data);
  }

  // -- start ------------------------------------------------------------------

  async function start() {
    // Versioned as the page's other files: a browser keeps it until callrouter's change.
    const response = await fetch(`/ui/static/strings.json?v=${encodeURIComponent(document.documentElement.dataset.v || "")}`);
    strings = await response.json();
    const saved = localStorage.getItem("callrouter.lang");
    lang = saved in strings ? saved : document.documentElement.lang in strings ? document.documentElement.lang : "en";
    $("lang-ru").addEventListener("click", () => setLanguage("ru"));
    $("lang-en").addEventListener("click", () => setLanguage("en"));
    $("logout").addEventListener("click", logout);
    $("login-form").addEventListener("submit", login);
    $("explain-form").addEventListener("submit", explain);
    applyLanguage();
    setInterval(renderCalls, 1000);
    const state = await session();
    if (state === null) {
      // Unreachable or starting: no sign-in form for a session that may be good.
      connectionLost();
      setTimeout(reconnect, 3000);
    } else if (state.signed_in) showLive();
    else showLogin();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
