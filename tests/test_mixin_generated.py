"""The checked-in monitoring files are exactly what the generator emits, and the generator's
command line writes, checks and cleans them."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from mixin import generate, layout
from mixin.config import CONFIG
from tests.helpers import ROOT


def test_pinned_dashboard_sdk_is_the_installed_one():
    # The dashboards' JSON depends on the SDK's version; a different one shows up as drift.
    pin = re.search(r'"grafana-foundation-sdk==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml must pin grafana-foundation-sdk exactly (==)"
    # PEP 440 reads the published "v0.0.21" as 0.0.21
    assert metadata.version("grafana-foundation-sdk").lstrip("v") == pin.group(1).lstrip("v")


def test_checked_in_files_match_the_generator():
    stale = generate.drift(ROOT)
    assert stale == [], f"out of date, run `make generate`: {stale}"


def test_generator_emits_every_kind_of_file():
    files = generate.files()
    assert len([p for p in files if p.startswith(layout.DASHBOARDS_DIR)]) == 5
    for path in (layout.DATASOURCE_PROVISIONING, layout.DASHBOARD_PROVISIONING,
                 layout.PROMETHEUS_CONFIG, layout.RECORDING_RULES, layout.ALERT_RULES,
                 layout.ALERTMANAGER_CONFIG, layout.RUNBOOKS):
        assert path in files
    assert any(p.startswith(layout.ALERT_TESTS_DIR) for p in files)
    assert any(p.startswith(layout.RECORDING_RULE_TESTS_DIR) for p in files)


def test_command_line_writes_checks_and_removes_stale_files(tmp_path):
    cmd = [sys.executable, "-m", "mixin.generate", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for rel, text in generate.files().items():
        assert (tmp_path / rel).read_text() == text
    assert subprocess.run(cmd + ["--check"], cwd=ROOT, timeout=120).returncode == 0

    edited = tmp_path / layout.DASHBOARDS_DIR / "kpi-business.json"
    edited.write_text(edited.read_text().replace("Daily active users", "DAU!"))
    stale = tmp_path / layout.DASHBOARDS_DIR / "old-dashboard.json"
    stale.write_text("{}")
    r = subprocess.run(cmd + ["--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "kpi-business.json" in r.stderr and "old-dashboard.json" in r.stderr

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not stale.exists()
    assert "DAU!" not in edited.read_text()


def test_thresholds_come_from_the_config():
    cfg = dataclasses.replace(CONFIG, ai_error_rate_max=0.12, rejected_ratio_max=0.03,
                              exporter_selector='job="kpi"', datasource_uid="my-prom")
    files = generate.files(cfg)
    alerts = yaml.safe_load(files[layout.ALERT_RULES])
    rule = next(r for g in alerts["groups"] for r in g["rules"]
                if r["alert"] == "KpiAiModelErrorRateHigh")
    assert rule["expr"].endswith("> 0.12")
    assert "above 12%" in rule["annotations"]["description"]
    assert 'job="kpi"' in files[layout.RECORDING_RULES]
    assert 'job="kpi-exporter"' not in files[layout.RECORDING_RULES]
    ai = json.loads(files[f"{layout.DASHBOARDS_DIR}/kpi-ai-performance.json"])
    steps = [s for p in ai["panels"] for s in
             p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])]
    assert {"color": "red", "value": 0.12} in steps
    prometheus = yaml.safe_load(files[layout.PROMETHEUS_CONFIG])
    assert prometheus["scrape_configs"][0]["job_name"] == "kpi"
    ds = yaml.safe_load(files[layout.DATASOURCE_PROVISIONING])
    assert ds["datasources"][0]["uid"] == "my-prom"
    assert "(threshold 3%)" in files[layout.ALERT_RULES]


def test_runbook_urls_are_absolute_and_built_from_the_configured_base():
    rules = [r for g in yaml.safe_load(generate.files()[layout.ALERT_RULES])["groups"]
             for r in g["rules"]]
    assert rules and all(r["annotations"]["runbook_url"] ==
                         f"{CONFIG.runbook_base_url}#{r['alert'].lower()}" for r in rules)
    assert CONFIG.runbook_base_url.startswith("https://")
    base = "https://wiki.example.org/ops/kpi/runbooks.md"
    files = generate.files(dataclasses.replace(CONFIG, runbook_base_url=base))
    urls = {r["annotations"]["runbook_url"]
            for g in yaml.safe_load(files[layout.ALERT_RULES])["groups"] for r in g["rules"]}
    assert f"{base}#kpiexporterdown" in urls and all(u.startswith(base + "#") for u in urls)
    assert f"{base}#kpiexporterdown" in files[next(p for p in files
                                                   if p.startswith(layout.ALERT_TESTS_DIR))]
    for bad in ("docs/runbooks.md", "/docs/runbooks.md", "https://x.example/runbooks.md#top"):
        with pytest.raises(ValueError, match="runbook_base_url must be an absolute"):
            generate.files(dataclasses.replace(CONFIG, runbook_base_url=bad))


def test_provisioning_points_grafana_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((ROOT / layout.DATASOURCE_PROVISIONING).read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["uid"] == CONFIG.datasource_uid
    provider = yaml.safe_load((ROOT / layout.DASHBOARD_PROVISIONING).read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == CONFIG.grafana_dashboards_path
    prometheus = yaml.safe_load((ROOT / layout.PROMETHEUS_CONFIG).read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["localhost:9464"]
    base = ROOT / "prometheus"
    for rule_file in prometheus["rule_files"]:
        assert (base / rule_file).resolve().is_file()
