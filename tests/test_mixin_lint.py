"""The generated dashboards and rules follow the mixin conventions, the linter catches each
kind of violation, and every metric the monitoring reads is one the exporter serves."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from exporter.sessions.metrics import VisitMetrics
from exporter.web_analytics import WebAnalyticsConfig
from mixin import alerts, layout, lint
from mixin.config import CONFIG
from tests.helpers import ROOT, ProcessExporter
from tests.redis_server import RedisServer


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text())
            for p in sorted((ROOT / layout.DASHBOARDS_DIR).glob("*.json"))}


def _yaml(rel: str) -> Any:
    return yaml.safe_load((ROOT / rel).read_text())


def _runbooks() -> str:
    return (ROOT / layout.RUNBOOKS).read_text()


def test_dashboards_follow_the_conventions():
    dashboards = _dashboards()
    assert len(dashboards) == 5
    assert lint.lint_dashboards(dashboards, CONFIG.dashboard_tag) == []


def test_alert_rules_follow_the_conventions():
    assert lint.lint_alert_rules(_yaml(layout.ALERT_RULES), CONFIG.alert_prefix, _runbooks(),
                                 layout.RUNBOOKS) == []


def test_recording_rules_follow_the_conventions():
    assert lint.lint_recording_rules(_yaml(layout.RECORDING_RULES)) == []


def test_every_alert_has_its_own_runbook_section():
    names = {r["alert"] for g in _yaml(layout.ALERT_RULES)["groups"] for r in g["rules"]}
    anchors = lint.github_anchors(_runbooks())
    assert {n.lower() for n in names} <= anchors
    for name in names:
        section = _runbooks().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**What it means.**", "**How to check.**", "**What to do.**"):
            assert part in section, f"{name}: runbook section lacks {part}"


def test_dashboards_cover_what_the_brief_asks_for():
    d = _dashboards()
    titles = {name: {p["title"] for p in lint.panels(doc)} for name, doc in d.items()}
    exprs = {name: " ".join(t["expr"] for _, t in lint.panel_targets(doc))
             for name, doc in d.items()}
    product, business = d["kpi-product-analytics.json"], d["kpi-business.json"]
    assert product["time"]["from"] == "now-24h" and product["refresh"]
    top_row = [p for p in product["panels"] if p["gridPos"]["y"] == 1]
    assert {p["type"] for p in top_row} == {"stat"} and len(top_row) == 4
    assert "topk(5," in exprs["kpi-product-analytics.json"]
    assert {"Feature usage", "Page views by route", "Events by event"} <= titles[
        "kpi-product-analytics.json"]
    for window in ("1d", "7d", "30d"):
        assert f'window="{window}"' in exprs["kpi-business.json"]
    assert "offset 1w" in exprs["kpi-business.json"]
    assert any(p["type"] == "stat" for p in lint.panels(business))
    ai = d["kpi-ai-performance.json"]
    assert "model" in {v["name"] for v in ai["templating"]["list"]}
    assert any(p["type"] == "heatmap" for p in lint.panels(ai))
    error = next(p for p in lint.panels(ai) if p["title"] == "Error rate by model")
    steps = error["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": CONFIG.ai_error_rate_max} in steps
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, " in exprs["kpi-ai-performance.json"]
    # latency panels draw exemplars (from the scraped histograms, not recording rules) and
    # link to the traces data source named by the traces variable
    latency = [p for p in lint.panels(ai)
               if p["title"] in ("Latency p50 / p95 / p99", "GenAI operation traces")]
    assert len(latency) == 2
    for panel in latency:
        assert [t.get("exemplar", False) for t in panel["targets"]] == [True, False, False]
        assert all("_bucket{" in t["expr"] for t in panel["targets"])
        assert "${traces}" in panel["links"][0]["url"]
    traces = next(v for v in ai["templating"]["list"] if v["name"] == "traces")
    assert traces["type"] == "textbox" and traces["query"] == CONFIG.traces_datasource_uid
    web = d["kpi-web-analytics.json"]
    top_row = [p for p in web["panels"] if p["gridPos"]["y"] == 1]
    assert [p["title"] for p in top_row] == ["Unique visitors (24h)", "Visits", "Pageviews",
                                             "Views per visit", "Bounce rate", "Visit duration"]
    for p in top_row:  # each against the period before
        assert p["type"] == "stat" and len(p["targets"]) == 2
        assert "offset" in p["targets"][1]["expr"]
    assert {"Visitors and visits", "Top pages", "Entry pages", "Exit pages", "Sources",
            "Campaigns", "Devices", "Browsers", "Operating systems", "Countries",
            "Goals"} <= titles["kpi-web-analytics.json"]
    for rule in ("app_sessions_bounced:ratio_rate1h", "app_session_page_views:mean_rate1h",
                 "app_session_duration_seconds:mean_rate1h",
                 "app_session_duration_seconds:p50_rate1h"):
        assert rule in exprs["kpi-web-analytics.json"]
    health = exprs["kpi-exporter-health.json"]
    for metric in ("kpi_exporter_state_saves_total", "kpi_exporter_state_save_duration_seconds",
                   "kpi_exporter_metric_overflow_updates_total", "kpi_exporter_records_rejected_total",
                   "kpi_exporter_records_unmatched_total"):
        assert metric in health


# ---- the linter finds each kind of problem ------------------------------------------------

def _first_panel(d: dict[str, Any]) -> dict[str, Any]:
    return next(lint.panels(d))


DASHBOARD_BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no unit": (lambda d: _first_panel(d)["fieldConfig"]["defaults"].pop("unit"),
                "needs a unit"),
    "no description": (lambda d: _first_panel(d).pop("description"), "needs a description"),
    "fixed rate window": (lambda d: _first_panel(d)["targets"][0].update(
        expr=_first_panel(d)["targets"][0]["expr"].replace("$__rate_interval", "5m")),
        "not [5m]"),
    "period total over time": (lambda d: _first_panel(d)["targets"][0].update(
        expr=_first_panel(d)["targets"][0]["expr"].replace("$__rate_interval", "$__range")),
        "not [$__range]"),
    "DS_PROMETHEUS": (lambda d: _first_panel(d).update(
        datasource={"type": "prometheus", "uid": "${DS_PROMETHEUS}"}), "DS_PROMETHEUS"),
    "no uid": (lambda d: d.pop("uid"), "stable uid"),
    "datasource label": (lambda d: d["templating"]["list"][0].update(label="Datasource"),
                         "'Data source'"),
    "no instance variable": (lambda d: d["templating"].update(list=[
        v for v in d["templating"]["list"] if v["name"] != "instance"]), "'instance'"),
    "no links": (lambda d: d.update(links=[]), "link to the other dashboards"),
    "ignores job": (lambda d: _first_panel(d)["targets"][0].update(
        expr=_first_panel(d)["targets"][0]["expr"].replace('job=~"$job", ', "")),
        "ignores the job variable"),
}


@pytest.mark.parametrize("breakage", sorted(DASHBOARD_BREAKAGES))
def test_dashboard_lint_catches(breakage):
    d = copy.deepcopy(_dashboards()["kpi-product-analytics.json"])
    assert "$__rate_interval" in _first_panel(d)["targets"][0]["expr"]
    change, message = DASHBOARD_BREAKAGES[breakage]
    change(d)
    problems = lint.lint_dashboard(d, CONFIG.dashboard_tag)
    assert any(message in p for p in problems), problems


def test_dashboard_lint_catches_a_shared_uid():
    d = _dashboards()
    d["copy.json"] = copy.deepcopy(d["kpi-business.json"])
    assert any("more than one dashboard" in p for p in lint.lint_dashboards(d, CONFIG.dashboard_tag))


ALERT_BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "lower case": (lambda r: r.update(alert="kpiExporterDown"), "CamelCase"),
    "no prefix": (lambda r: r.update(alert="ExporterDown"), "CamelCase"),
    "severity": (lambda r: r["labels"].update(severity="page"), "severity must be one of"),
    "templated summary": (lambda r: r["annotations"].update(summary="{{ $labels.job }} down"),
                          "summary must be static"),
    "static description": (lambda r: r["annotations"].update(description="Down."),
                           "should be templated"),
    "no description": (lambda r: r["annotations"].pop("description"), "needs a description"),
    "runbook anchor": (lambda r: r["annotations"].update(
        runbook_url="https://docs.example.com/docs/runbooks.md#nosuchalert"), "has no section"),
    "relative runbook": (lambda r: r["annotations"].update(
        runbook_url="docs/runbooks.md#" + r["alert"].lower()), "must be an absolute"),
    "runbook elsewhere": (lambda r: r["annotations"].update(runbook_url="https://example.com"),
                          "must point at a section"),
    "no for": (lambda r: r.pop("for"), "needs a for"),
}


@pytest.mark.parametrize("breakage", sorted(ALERT_BREAKAGES))
def test_alert_lint_catches(breakage):
    doc = _yaml(layout.ALERT_RULES)
    rule = doc["groups"][0]["rules"][0]
    change, message = ALERT_BREAKAGES[breakage]
    change(rule)
    problems = lint.lint_alert_rules(doc, CONFIG.alert_prefix, _runbooks(), layout.RUNBOOKS)
    assert any(message in p for p in problems), problems


def test_recording_rule_lint_catches_bad_and_duplicate_names():
    doc = _yaml(layout.RECORDING_RULES)
    rules = doc["groups"][0]["rules"]
    rules.append(dict(rules[0]))
    rules.append({"record": "acceptance_rate", "expr": "1"})
    problems = lint.lint_recording_rules(doc)
    assert any("recorded twice" in p for p in problems)
    assert any("acceptance_rate: recording rule names" in p for p in problems)


# ---- the metrics exist --------------------------------------------------------------------

_SELECTOR_NAME = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def _served_names(tmp_path: Path) -> set[str]:
    """Sample names a real `kpi-exporter serve` (windows and state on; with the memory and
    with a shared Redis store) can expose, from the families it announces and the built-in
    rules."""
    e = ProcessExporter(["--state-dir", str(tmp_path / "state")])
    try:
        text = e.scrape().text
    finally:
        e.close()
    redis_server = RedisServer(tmp_path / "redis")
    try:
        e = ProcessExporter(["--state-dir", str(tmp_path / "shared-state"), "--windows-store",
                             redis_server.url], env={"KPI_EXPORTER_SALT": "s" * 32})
        try:
            text += e.scrape().text
        finally:
            e.close()
    finally:
        redis_server.stop()
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            base, kind = m.groups()
            names |= {base, base + "_total"} if kind == "counter" else {base}
            if kind == "histogram":
                names |= {base + "_bucket", base + "_count", base + "_sum"}
    rules = yaml.safe_load((ROOT / "exporter/defaults/rules.yaml").read_text())["rules"]
    for r in rules:
        names.add(r["metric"])
        if r["type"] == "histogram":
            names |= {r["metric"] + s for s in ("_bucket", "_count", "_sum")}
    for d in VisitMetrics(WebAnalyticsConfig()).definitions.values():  # once visits start and close
        names.add(d.name)
        if d.type == "histogram":
            names |= {d.name + s for s in ("_bucket", "_count", "_sum")}
    return names


def test_every_metric_the_monitoring_reads_is_served(tmp_path):
    served = _served_names(tmp_path)
    recorded = {r["record"] for g in _yaml(layout.RECORDING_RULES)["groups"] for r in g["rules"]}
    exprs = [t["expr"] for d in _dashboards().values() for _, t in lint.panel_targets(d)]
    for rel in (layout.RECORDING_RULES, layout.ALERT_RULES):
        exprs += [r["expr"] for g in _yaml(rel)["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in _SELECTOR_NAME.findall(e)}
    assert "app_active_users" in used and "kpi_exporter_state_saves_total" in used
    unknown = sorted(used - served - recorded - {"up"})
    assert unknown == [], f"not served by the exporter nor recorded: {unknown}"


def test_latency_slo_threshold_is_a_bucket_bound():
    slo = CONFIG.latency_slo
    rules = yaml.safe_load((ROOT / "exporter/defaults/rules.yaml").read_text())["rules"]
    buckets = next(r["buckets"] for r in rules if r["metric"] == slo.metric)
    assert slo.threshold_seconds in buckets


def test_runbooks_name_panels_that_exist():
    titles = {p["title"] for d in _dashboards().values() for p in lint.panels(d)}
    for a in alerts.alerts():
        for text in (a.runbook.check, a.runbook.action):
            for ref in re.findall(r"(?<!\*)\*([^*]+)\*(?!\*)", text):
                assert ref in titles, f"{a.name}: the runbook names a panel {ref!r} that no dashboard has"
