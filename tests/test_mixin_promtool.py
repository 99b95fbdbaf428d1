"""The rule files, their unit tests and the Alertmanager config, checked by the real
promtool and amtool (a missing binary fails these tests: scripts/install-system-deps.sh
installs them)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import generate, layout
from mixin.config import CONFIG, LatencySLO
from tests.helpers import ROOT


def tool(name: str) -> str:
    """The path of a Prometheus tool; fails (never skips) when it is not installed."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-system-deps.sh (Debian "
                    f"packages prometheus and prometheus-alertmanager)")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


RULE_FILES = [layout.RECORDING_RULES, layout.ALERT_RULES]
TEST_FILES = sorted(str(p.relative_to(ROOT)) for d in (layout.RECORDING_RULE_TESTS_DIR,
                                                      layout.ALERT_TESTS_DIR)
                    for p in (ROOT / d).glob("*.yml"))


@pytest.mark.parametrize("rule_file", RULE_FILES)
def test_promtool_check_rules(rule_file):
    r = run(tool("promtool"), "check", "rules", rule_file)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_check_config_loads_both_rule_files():
    r = run(tool("promtool"), "check", "config", layout.PROMETHEUS_CONFIG)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 rule files found" in r.stdout


def test_there_are_unit_tests_for_rules_and_alerts():
    assert any(f.startswith(layout.RECORDING_RULE_TESTS_DIR) for f in TEST_FILES)
    assert sum(f.startswith(layout.ALERT_TESTS_DIR) for f in TEST_FILES) >= 2


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_promtool_unit_tests_pass(test_file):
    r = run(tool("promtool"), "test", "rules", test_file)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in _yaml(ROOT / layout.ALERT_RULES)["groups"] for r in g["rules"]]


def _alert_checks() -> list[dict[str, Any]]:
    out = []
    for p in sorted((ROOT / layout.ALERT_TESTS_DIR).glob("*.yml")):
        for group in _yaml(p)["tests"]:
            out += group.get("alert_rule_test", [])
    return out


def test_every_alert_rule_fires_in_one_case_and_stays_silent_in_another():
    checks = _alert_checks()
    rules = _alert_rules()
    assert len(rules) >= 15
    for rule in rules:
        name = rule["alert"]
        static = rule["labels"]
        mine = [c for c in checks if c["alertname"] == name]
        fires = [c for c in mine if any(
            static.items() <= a["exp_labels"].items() for a in c.get("exp_alerts") or [])]
        silent = [c for c in mine if not c.get("exp_alerts")]
        assert fires, f"no test where {name} {static} fires"
        assert silent, f"no test where {name} stays silent"


def test_every_recording_rule_has_an_expression_test():
    recorded = {r["record"] for g in _yaml(ROOT / layout.RECORDING_RULES)["groups"]
                for r in g["rules"]}
    tested = " ".join(e["expr"] for p in (ROOT / layout.RECORDING_RULE_TESTS_DIR).glob("*.yml")
                      for group in _yaml(p)["tests"] for e in group.get("promql_expr_test", []))
    assert sorted(r for r in recorded if r not in tested) == []


def test_unit_tests_fail_when_a_threshold_in_the_rules_is_wrong(tmp_path):
    """The tests are not vacuous: the error-rate alert with a threshold ten times too high
    fails its firing case."""
    for d in ("alerts", "prometheus"):
        shutil.copytree(ROOT / d, tmp_path / d)
    rules = tmp_path / layout.ALERT_RULES
    text = rules.read_text()
    wrong = text.replace("job_model:ai_model_error_rate:ratio > 0.05",
                         "job_model:ai_model_error_rate:ratio > 0.5")
    assert wrong != text
    rules.write_text(wrong)
    r = run(tool("promtool"), "test", "rules", f"{layout.ALERT_TESTS_DIR}/ai-alerts.test.yml",
            cwd=tmp_path)
    assert r.returncode != 0
    assert "KpiAiModelErrorRateHigh fires" in r.stdout + r.stderr


def test_unit_tests_follow_edited_thresholds(tmp_path):
    """Editing mixin/config.py keeps every generated unit test passing: the tests are built
    around the thresholds, not around today's numbers."""
    cfg = dataclasses.replace(
        CONFIG, ai_error_rate_max=0.1, ai_accuracy_min=0.6, rejected_ratio_max=0.05,
        unmatched_ratio_max=0.8, ai_error_rate_for="20m", ai_drop_for="2h", dau_drop=0.3,
        conversion_drop=0.1, ai_acceptance_drop=0.4, service_quiet_for="1h",
        genai_preferred_source="spans", genai_daily_budget_usd=25, genai_budget_for="30m",
        latency_slo=LatencySLO(threshold_seconds=2.5, objective=0.995))
    generate.write(tmp_path, cfg)
    rules = (tmp_path / layout.ALERT_RULES).read_text()
    assert "job_model:ai_model_error_rate:ratio > 0.1" in rules
    recording = (tmp_path / layout.RECORDING_RULES).read_text()
    assert 'le="2.5"' in recording
    assert "job:gen_ai_cost_usd:increase1d > 25" in rules
    # spans preferred: the span series gate the choice
    assert "rate(gen_ai_span_operation_duration_seconds_count" in recording.split(
        "and on (job, service_name, model)")[1].split("or on")[0]
    for test_file in sorted((tmp_path / layout.ALERT_TESTS_DIR).glob("*.yml")) + sorted(
            (tmp_path / layout.RECORDING_RULE_TESTS_DIR).glob("*.yml")):
        r = run(tool("promtool"), "test", "rules", str(test_file.relative_to(tmp_path)),
                cwd=tmp_path)
        assert r.returncode == 0, f"{test_file.name}:\n{r.stdout}{r.stderr}"


def test_amtool_check_config():
    r = run(tool("amtool"), "check-config", layout.ALERTMANAGER_CONFIG)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 inhibit rules" in r.stdout and "3 receivers" in r.stdout


ROUTES = [
    ({"severity": "critical", "alertname": "KpiExporterDown"}, "kpi-page"),
    ({"severity": "critical", "alertname": "KpiAiLatencyErrorBudgetBurn"}, "kpi-page"),
    ({"severity": "warning", "alertname": "KpiAiModelErrorRateHigh"}, "kpi-ticket"),
    ({"severity": "info", "alertname": "KpiExporterRecordsUnmatched"}, "kpi-info"),
    ({"alertname": "SomethingWithoutSeverity"}, "kpi-ticket"),
]


@pytest.mark.parametrize("labels,receiver", ROUTES)
def test_amtool_routes_by_severity(labels, receiver):
    args = [f"{k}={v}" for k, v in labels.items()]
    r = run(tool("amtool"), "config", "routes", "test",
            f"--config.file={layout.ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    others = [n for n in ("kpi-page", "kpi-ticket", "kpi-info") if n != receiver]
    r = run(tool("amtool"), "config", "routes", "test",
            f"--config.file={layout.ALERTMANAGER_CONFIG}", f"--verify.receivers={others[0]}",
            *args)
    assert r.returncode != 0, f"{labels} also routed to {others[0]}: {r.stdout}"


def test_every_severity_the_alerts_use_has_a_route():
    severities = {r["labels"]["severity"] for r in _alert_rules()}
    routed = {ls["severity"] for ls, _ in ROUTES if "severity" in ls}
    assert severities == routed == {"critical", "warning", "info"}
