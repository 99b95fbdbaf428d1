"""docs/metrics.md is exactly what the generator writes, and names every metric a running
exporter serves."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from exporter import metricsdoc
from tests.helpers import ROOT, ProcessExporter

DOC = ROOT / "docs" / "metrics.md"


def test_checked_in_metrics_doc_matches_the_generator():
    assert DOC.read_text() == metricsdoc.render(), \
        "docs/metrics.md is out of date: run `make generate`"


def test_command_writes_and_checks(tmp_path):
    out = tmp_path / "metrics.md"
    cmd = [sys.executable, "-m", "exporter.metricsdoc", "--out", str(out)]
    assert subprocess.run(cmd + ["--check"], cwd=ROOT, capture_output=True,
                          timeout=120).returncode == 1  # missing
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and out.read_text() == DOC.read_text(), r.stderr
    assert subprocess.run(cmd + ["--check"], cwd=ROOT, timeout=120).returncode == 0
    out.write_text(out.read_text().replace("kpi_exporter_records_received_total", "x"))
    r = subprocess.run(cmd + ["--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "make generate" in r.stderr


def _families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        m = re.match(r"^# TYPE (\S+) (\S+)$", line)
        if m:
            name, kind = m.groups()
            names.add(name + {"counter": "_total", "info": "_info"}.get(kind, ""))
    return names


def test_every_metric_a_running_exporter_serves_is_documented(process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("windows:\n  breakdowns:\n    - {attribute: app.tier, label: tier}\n")
    e: ProcessExporter = process_factory("--config", str(config),
                                         "--state-dir", str(tmp_path / "data"))
    events = [{"eventName": name, "attributes": [
        {"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]} for name, attrs in (
        ("app.page_view", {"url.path": "/", "user.id": "u", "session.id": "s", "app.tier": "pro"}),
        ("app.feature_used", {"app.feature": "f", "app.action": "a"}),
        ("app.conversion", {"app.conversion.type": "purchase"}),
        ("ai.recommendation.generated", {"gen_ai.request.model": "m"}),
        ("ai.recommendation.response", {"gen_ai.request.model": "m",
                                        "ai.recommendation.outcome": "accepted"}),
        ("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "relevance",
                                      "gen_ai.evaluation.score.label": "pass"}),
    )]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": events}]}]}).encode()
    assert e.post("/v1/logs", body).ok
    # OpenMetrics names families without _total / _info: add them back as in the doc
    served = _families(e.scrape(Accept="application/openmetrics-text; version=1.0.0").text)
    assert {"kpi_exporter_records_received_total", "app_page_views_total",
            "app_active_users_by_tier", "process_cpu_seconds_total"} <= served
    documented = set(re.findall(r"^\| `([a-z_<>]+)` \|", DOC.read_text(), re.M))
    generic = {n.replace("_by_tier", "_by_<label>") for n in served}
    missing = sorted(n for n in generic if n not in documented)
    assert missing == [], f"served but not in docs/metrics.md: {missing}"
