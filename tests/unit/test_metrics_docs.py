"""The metrics reference, the Zabbix template and the Grafana dashboard name
exactly the metrics callrouter serves (the reference with their types and labels).

What is served is collected the way an engine does it: the core families of
router/metrics.py plus what every shipped plugin (the built-ins, the 1C plugin,
the example) adds through ``callrouter_metrics``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from router.metrics import Metrics, families
from router.plugins import Plugins

#: Engines here load installed plugins: one a plugin author installed (with
#: callrouter_call_start, its own metric families) changes what is asserted.
pytestmark = pytest.mark.usefixtures("only_shipped_plugins")

REPO = Path(__file__).parents[2]
PAGES = {
    REPO / "docs" / "operations.md": "### Metrics reference",
    REPO / "docs" / "ru" / "operations.md": "### Справочник метрик",
}
ZABBIX = REPO / "examples" / "zabbix" / "callrouter.yaml"
GRAFANA = REPO / "examples" / "grafana" / "callrouter.json"
_NAME = re.compile(r"\bcallrouter_[a-z0-9_]+")


async def served() -> Metrics:
    metrics = Metrics()
    await Plugins.load(entry_points=True).metrics(metrics)
    return metrics


def reference(page: Path, heading: str) -> dict[str, tuple[str, str]]:
    """name -> (type, labels) from the table under ``heading``."""
    text = page.read_text(encoding="utf-8")
    section = text.split(heading + "\n", 1)[1].split("\n#", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`callrouter_"):
            name = cells[0].strip("`")
            assert name not in rows, f"{page.name}: {name} listed twice"
            rows[name] = (cells[1], cells[2])
    return rows


def exposed_names(metrics: Metrics) -> set[str]:
    """Every sample name a scrape can show (``_bucket``, ``_count`` ... included)."""
    names: set[str] = set()
    for name, kind in families(metrics):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


@pytest.mark.parametrize("page", list(PAGES), ids=lambda p: str(p.relative_to(REPO)))
async def test_the_reference_lists_exactly_the_served_families(page: Path) -> None:
    documented = reference(page, PAGES[page])
    registered = dict(families(await served()))
    assert set(documented) == set(registered), (
        f"{page.relative_to(REPO)}: missing {sorted(set(registered) - set(documented))}, "
        f"not served {sorted(set(documented) - set(registered))}"
    )
    for name, (kind, _) in documented.items():
        assert kind == registered[name], f"{name} is a {registered[name]}, not a {kind}"


def served_labels(metrics: Metrics) -> dict[str, set[str]]:
    """name -> the label names of its samples: a family with labels declares
    them (``labelnames``), one read when scraped shows them on its samples."""
    metrics.event_counts["Newchannel"] = 1  # else callrouter_events has no sample
    labels: dict[str, set[str]] = {}
    for collector in list(metrics.registry._collector_to_names):
        name = getattr(collector, "_name", None)
        if name is not None:  # prometheus_client's Counter, Gauge, Histogram
            kind = getattr(collector, "_type", "")
            exposed = name + ("_total" if kind == "counter" else "")
            labels[exposed] = set(getattr(collector, "_labelnames", ()))
            continue
        for family in collector.collect():
            exposed = family.name + ("_total" if family.type == "counter" else "")
            names = labels.setdefault(exposed, set())
            for sample in family.samples:
                names |= set(sample.labels) - {"le"}
    return labels


@pytest.mark.parametrize("page", list(PAGES), ids=lambda p: str(p.relative_to(REPO)))
async def test_the_reference_names_each_family_s_labels(page: Path) -> None:
    """The labels column is what a query can group by: a label renamed in the
    code and not in the table (or the other way round) breaks a dashboard."""
    served_by = served_labels(await served())
    wrong = []
    for name, (_, column) in reference(page, PAGES[page]).items():
        documented = {label.strip().strip("`") for label in column.split(",")} - {"-"}
        if documented != served_by[name]:
            wrong.append(
                f"{name}: documented {sorted(documented)}, served {sorted(served_by[name])}"
            )
    assert not wrong, f"{page.relative_to(REPO)}: " + "; ".join(wrong)


def test_both_languages_document_the_same_labels() -> None:
    english, russian = (reference(page, heading) for page, heading in PAGES.items())
    assert english == russian


def zabbix_metric_names() -> set[str]:
    template = yaml.safe_load(ZABBIX.read_text(encoding="utf-8"))
    names: set[str] = set()
    for tpl in template["zabbix_export"]["templates"]:
        for item in tpl["items"]:
            for step in item.get("preprocessing", []):
                if step["type"] in ("PROMETHEUS_PATTERN", "PROMETHEUS_TO_JSON"):
                    names |= set(_NAME.findall(step["parameters"][0]))
    return names


async def test_the_zabbix_template_uses_only_served_metrics() -> None:
    template = yaml.safe_load(ZABBIX.read_text(encoding="utf-8"))
    export = template["zabbix_export"]
    assert str(export["version"]) in ("6.0", "7.0")
    [tpl] = export["templates"]
    master = [i for i in tpl["items"] if i["type"] == "HTTP_AGENT"]
    assert len(master) == 1
    assert master[0]["url"] == "{$CALLROUTER.URL}/metrics"
    dependent = [i for i in tpl["items"] if i["type"] == "DEPENDENT"]
    assert dependent
    assert all(i["master_item"]["key"] == master[0]["key"] for i in dependent)
    keys = {i["key"] for i in tpl["items"]}
    for item in tpl["items"]:
        for trigger in item.get("triggers", []):
            # a trigger names its own item (Zabbix 6 nests triggers in items)
            assert item["key"] in trigger["expression"], trigger["name"]
    for trigger in tpl.get("triggers", []):
        assert any(key in trigger["expression"] for key in keys), trigger["name"]
    used = zabbix_metric_names()
    assert used, "no Prometheus pattern found"
    assert used <= exposed_names(await served()), sorted(used - exposed_names(await served()))


async def test_the_grafana_dashboard_uses_only_served_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs
    used = {name for expr in exprs for name in _NAME.findall(expr)}
    exposed = exposed_names(await served())
    assert used <= exposed, sorted(used - exposed)
    # Every served family is on the dashboard or deliberately left to Zabbix/alerts.
    assert {"callrouter_decisions_total", "callrouter_fallthroughs_total"} <= used


#: Where each page tells what ``reused`` means: the decision line's paragraph,
#: the JSON ``lookups`` field and the two lookup metrics.
_REUSED_PLACES = {
    REPO / "docs" / "operations.md": (
        "After `lookups` come",
        "| `lookups` |",
        "| `callrouter_lookup_seconds` |",
        "| `callrouter_lookups_total` |",
    ),
    REPO / "docs" / "ru" / "operations.md": (
        "После `lookups` —",
        "| `lookups` |",
        "| `callrouter_lookup_seconds` |",
        "| `callrouter_lookups_total` |",
    ),
}
_EARLIER_RULE = {"operations.md": "earlier rule", "ru": "более ранн"}


@pytest.mark.parametrize("page", list(_REUSED_PLACES), ids=lambda p: p.parent.name)
def test_reused_is_described_as_an_earlier_rule_s_answer(page: Path) -> None:
    """A lookup is ``reused`` when an earlier rule of the same call asked it with the
    same arguments (router/rules/evaluate.py's memo; tests/unit/rules/test_rules_good.py,
    the deputy sharing the owner's 1C answer). The pages said "the prefetch had already
    asked", but 60 calls routed live through the 1C plugin, whose lookup the prefetch
    starts at Newchannel, never showed ``reused`` (issue 16)."""
    text = page.read_text(encoding="utf-8")
    words = _EARLIER_RULE["ru" if page.parent.name == "ru" else "operations.md"]
    for start in _REUSED_PLACES[page]:
        assert text.count(start) == 1, (page.name, start)
        place = text.split(start, 1)[1].split("\n\n", 1)[0].split("\n|", 1)[0]
        assert "reused" in place, (page.name, start)
        assert words in place, f"{page}: {start!r} does not say `reused` is {words!r}: {place}"


def test_the_lookup_time_help_says_what_is_left_out() -> None:
    """The ``callrouter_lookup_seconds`` HELP text, what a scrape shows, says the same."""
    metrics = Metrics()
    assert "earlier rule" in metrics.lookup_seconds._documentation
    assert "prefetch" not in metrics.lookup_seconds._documentation


#: The lead of the list of ``operation`` values under each reference's table.
_OPERATION_LISTS = {
    REPO / "docs" / "operations.md": "The `operation` label of `callrouter_api_requests_total` is",
    REPO / "docs" / "ru" / "operations.md": "Метка `operation` в `callrouter_api_requests_total`",
}


def _operation_values(node: ast.expr, constants: dict[str, str]) -> set[str]:
    """The labels an expression given as an operation can be (an f-string is
    ``ami:<Action>``, the only one the code builds: the catalog's spelling)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.JoinedStr):
        head = node.values[0]
        assert isinstance(head, ast.Constant), ast.unparse(node)
        assert head.value == "ami:", ast.unparse(node)
        return {"ami:<Action>"}
    if isinstance(node, ast.IfExp):
        return _operation_values(node.body, constants) | _operation_values(node.orelse, constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    raise AssertionError(f"an operation the test cannot read: {ast.unparse(node)}")


def operation_labels_in_code() -> dict[str, str]:
    """Every ``operation`` label router/api can count: value -> where.

    What an endpoint names through ``authorize(request, OPERATION)`` or the live
    page's ``require(request, OPERATION)``, or sets as ``audit.operation``; the
    audit's default (``-``: a request no endpoint took) and the label's cap
    (``other``) besides."""
    from router.api.auth import Audit
    from router.metrics import OTHER

    found = {Audit().operation: "router/api/auth.py", OTHER: "router/metrics.py"}
    for path in sorted((REPO / "router" / "api").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        given: list[ast.expr] = []
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("authorize", "require")
                and len(node.args) >= 2
            ):
                given.append(node.args[1])
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and target.attr == "operation":
                        given.append(node.value)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        given.extend(
                            value
                            for element, value in zip(target.elts, node.value.elts, strict=True)
                            if isinstance(element, ast.Attribute) and element.attr == "operation"
                        )
        for expression in given:
            if isinstance(expression, ast.Name) and expression.id not in constants:
                continue  # a parameter passed on (ui.py's require): its callers are read
            for value in _operation_values(expression, constants):
                found.setdefault(value, f"{path.relative_to(REPO)}:{expression.lineno}")
    return found


def documented_operation_labels(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    lead = _OPERATION_LISTS[page]
    assert lead in text, f"{page.name}: no list of the operation label's values"
    # The lead's paragraph, then the list: one item per line, its values before ": ".
    block = text.split(lead, 1)[1].split("\n\n", 2)[1]
    return [
        value
        for line in block.splitlines()
        if line.startswith("- ")
        for value in re.findall(r"`([^`]+)`", line.split(": ", 1)[0])
    ]


@pytest.mark.parametrize("page", list(_OPERATION_LISTS), ids=lambda p: p.parent.name)
def test_every_api_operation_label_the_code_can_count_is_documented(page: Path) -> None:
    """A session's trial of issue 16 scraped ``operation="starting"`` (every path
    but the health ones while callrouter waits for Asterisk), which the reference
    named nowhere; its examples ended with "...". The reference lists every value
    the code can count, and a value added to the code fails here until listed."""
    code = operation_labels_in_code()
    assert {"starting", "calls:create", "ami:<Action>", "ami:unknown", "-"} <= code.keys()
    listed = documented_operation_labels(page)
    assert len(listed) == len(set(listed)), f"{page.name}: a value listed twice"
    missing = {value: where for value, where in code.items() if value not in listed}
    assert missing == {}, f"{page.name}: operation labels the code counts, not listed"
    assert set(listed) <= code.keys(), f"{page.name}: listed, never counted"
