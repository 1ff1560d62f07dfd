"""deploy/dashboards/fluxgate.json stays in step with /metrics: every metric a
query uses is a family control/metrics.py exports, every label it groups or
filters by is one that family has, and each topic the dashboard is for has a
panel. A renamed metric or label fails here, not as an empty panel in Grafana."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from control.metrics import ERROR_LABELS, FAMILIES, REQUEST_LABELS, UPSTREAM_LABELS

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "dashboards" / "fluxgate.json"

# Labels of each family the dashboard may use (control/metrics.py); `le` is the
# histograms' bucket label.
LABELS = {
    "fluxgate_requests": set(REQUEST_LABELS),
    "fluxgate_request_duration_seconds": set(REQUEST_LABELS) | {"le"},
    "fluxgate_request_size_bytes": set(REQUEST_LABELS),
    "fluxgate_response_size_bytes": set(REQUEST_LABELS),
    "fluxgate_upstream_request_duration_seconds": set(UPSTREAM_LABELS) | {"le"},
    "fluxgate_retries": set(UPSTREAM_LABELS),
    "fluxgate_upstream_connection_errors": set(ERROR_LABELS),
    "fluxgate_workers": {"state"},
    "fluxgate_worker_restarts": {"reason"},
    "fluxgate_worker_requests": {"worker"},
    "fluxgate_config_errors": {"kind", "reason"},
    "fluxgate_rebuild_seconds": {"le"},
}
# Labels Prometheus adds to every series it scrapes (one per gateway pod).
TARGET_LABELS = {"instance", "job"}

METRIC = re.compile(r"\bfluxgate_[a-z0-9_]+")
SUFFIX = re.compile(r"_(total|bucket|sum|count)$")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b(fluxgate_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
TOPICS = ("fluxgate_requests_total", "fluxgate_request_duration_seconds_bucket",
          "fluxgate_upstream_connection_errors_total", "fluxgate_workers", "fluxgate_table_age_seconds")


def family(name: str) -> str:
    return SUFFIX.sub("", name)


def panels(items: list[dict]):
    """Every panel, those inside rows (collapsed rows keep theirs) too."""
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exprs(dashboard) -> list[str]:
    """Every PromQL expression: panel targets and template-variable queries."""
    out = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


def argument(expr: str, end: int) -> str:
    """The parenthesised argument that starts right after ``end`` (``sum by (x) (ARG)``);
    the whole expression when the grouping comes after it (``sum(ARG) by (x)``)."""
    rest = expr[end:].lstrip()
    if not rest.startswith("("):
        return expr
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i + 1]
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def test_dashboard_is_a_grafana_dashboard_of_prometheus_panels(dashboard):
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"gateway", "route"} <= set(variables)
    graphs = [p for p in panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(graphs) >= 8
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in graphs:
        assert p["title"] and p["gridPos"]["w"] > 0 and p["gridPos"]["h"] > 0
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"{p['title']}: no queries"
        for t in p["targets"]:
            assert t["refId"] and t["expr"].strip(), p["title"]
            assert t.get("datasource", p["datasource"])["uid"] == "${datasource}", p["title"]


def test_dashboard_uses_only_metric_families_the_gateway_exports(exprs):
    used = {family(name) for expr in exprs for name in METRIC.findall(expr)}
    assert used, "no fluxgate_ metric in any query"
    assert not used - set(FAMILIES), f"not exported by control/metrics.py: {sorted(used - set(FAMILIES))}"


def test_dashboard_groups_and_filters_only_by_labels_the_family_has(exprs):
    for expr in exprs:
        for match in GROUPING.finditer(expr):
            labels = {x.strip() for x in match.group(1).split(",") if x.strip()}
            for name in {family(n) for n in METRIC.findall(argument(expr, match.end()))}:
                assert name in LABELS or not labels - TARGET_LABELS, f"add {name}'s labels to LABELS"
                unknown = labels - LABELS.get(name, set()) - TARGET_LABELS
                assert not unknown, f"{expr!r}: {name} has no label {sorted(unknown)}"
        for name, matchers in SELECTOR.findall(expr):
            labels = set(MATCHER.findall(matchers))
            unknown = labels - LABELS.get(family(name), set()) - TARGET_LABELS
            assert not unknown, f"{expr!r}: {family(name)} has no label {sorted(unknown)}"
        for name, label in re.findall(r"label_values\(\s*(fluxgate_[a-z0-9_]+)[^,]*,\s*(\w+)\s*\)", expr):
            assert label in LABELS.get(family(name), set()), f"{expr!r}: {family(name)} has no label {label}"


def test_dashboard_covers_requests_latency_upstream_errors_workers_and_table_age(exprs):
    for topic in TOPICS:
        assert any(re.search(rf"\b{topic}\b", e) for e in exprs), f"no panel queries {topic}"
    quantiles = [e for e in exprs if "fluxgate_request_duration_seconds_bucket" in e]
    for q in ("0.5", "0.99"):
        assert any(f"histogram_quantile({q}," in e and re.search(r"by \(le, route\)", e) for e in quantiles), \
            f"no p{q} latency per route"
