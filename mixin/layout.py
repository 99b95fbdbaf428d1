"""Where the generated files live, relative to the repository root."""

from __future__ import annotations

DASHBOARDS_DIR = "grafana/dashboards"
DATASOURCE_PROVISIONING = "grafana/provisioning/datasources/kpi-exporter.yaml"
DASHBOARD_PROVISIONING = "grafana/provisioning/dashboards/kpi-exporter.yaml"
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
RECORDING_RULES = "prometheus/rules/kpi-exporter-rules.yml"
RECORDING_RULE_TESTS_DIR = "prometheus/tests"
ALERT_RULES = "alerts/kpi-exporter-alerts.yml"
ALERT_TESTS_DIR = "alerts/tests"
ALERTMANAGER_CONFIG = "alerts/alertmanager.yml"
RUNBOOKS = "docs/runbooks.md"

# Directories whose every file the generator writes; a file there it no longer writes is
# stale and removed by `make generate`.
OWNED_DIRS = (DASHBOARDS_DIR, RECORDING_RULE_TESTS_DIR, ALERT_TESTS_DIR, "prometheus/rules")
