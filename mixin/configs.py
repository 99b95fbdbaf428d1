"""Example server configurations: prometheus.yml, alertmanager.yml and Grafana
provisioning, kept in step with the rules, alerts and dashboards they load."""

from __future__ import annotations

import os
from typing import Any

from mixin import layout
from mixin.alerts import alerts
from mixin.config import CONFIG, Config

__all__ = ["prometheus_config", "alertmanager_config", "datasource_provisioning",
           "dashboard_provisioning", "RECEIVERS"]

# Receiver per severity. The URLs are placeholders for your webhook endpoints (a chat
# bridge, an incident tool); replace them, or swap webhook_configs for another integration.
RECEIVERS = {"critical": "kpi-page", "warning": "kpi-ticket", "info": "kpi-info"}


def prometheus_config(cfg: Config = CONFIG) -> dict[str, Any]:
    """Scrape the exporter, load the rule files, send alerts to Alertmanager, keep exemplars
    (with --enable-feature=exemplar-storage)."""
    here = os.path.dirname(layout.PROMETHEUS_CONFIG)
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        # exemplars of the latency histograms: trace ids Grafana links to
        "storage": {"exemplars": {"max_exemplars": cfg.max_exemplars}},
        "rule_files": [os.path.relpath(layout.RECORDING_RULES, here),
                       os.path.relpath(layout.ALERT_RULES, here)],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [cfg.alertmanager_target]}]}]},
        "scrape_configs": [{
            "job_name": cfg.selector_labels()["job"],
            "scrape_interval": cfg.exporter_scrape_interval,
            "static_configs": [{"targets": [cfg.exporter_target]}],
        }],
    }


def alertmanager_config(cfg: Config = CONFIG) -> dict[str, Any]:
    """A routing tree by severity, grouping per alert and job, inhibitions, webhooks."""
    p = cfg.alert_prefix
    exporter_outage = [f"{p}ExporterDown", f"{p}ExporterNoRecords"]
    names = {a.name for a in alerts(cfg)}
    assert set(exporter_outage) <= names, "inhibition names an alert that does not exist"
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": RECEIVERS["warning"],
            "group_by": ["alertname", "job"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"receiver": RECEIVERS["critical"], "matchers": ['severity="critical"'],
                 "group_wait": "10s", "repeat_interval": "1h"},
                {"receiver": RECEIVERS["warning"], "matchers": ['severity="warning"']},
                {"receiver": RECEIVERS["info"], "matchers": ['severity="info"'],
                 "repeat_interval": "24h"},
            ],
        },
        "inhibit_rules": [
            # While the exporter is down or starved, what its data says is not news.
            {"source_matchers": [f'alertname=~"{"|".join(exporter_outage)}"'],
             "target_matchers": ['component="data"'], "equal": ["job"]},
            # A page for a model's latency budget makes the ticket for it redundant.
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
             "equal": ["alertname", "job", "model"]},
        ],
        "receivers": [
            {"name": name, "webhook_configs": [
                {"url": f"http://127.0.0.1:5001/{name}", "send_resolved": True}]}
            for name in RECEIVERS.values()
        ],
    }


def datasource_provisioning(cfg: Config = CONFIG) -> dict[str, Any]:
    """The Prometheus data source, with the fixed uid the dashboards default to."""
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": cfg.datasource_uid, "type": "prometheus",
        "access": "proxy", "url": cfg.datasource_url, "isDefault": True,
        # Grafana derives $__rate_interval from this; keep it at the exporter's scrape
        # interval.
        "jsonData": {"timeInterval": cfg.exporter_scrape_interval, "httpMethod": "POST"},
    }]}


def dashboard_provisioning(cfg: Config = CONFIG) -> dict[str, Any]:
    """A file provider for grafana/dashboards (mounted at grafana_dashboards_path)."""
    return {"apiVersion": 1, "providers": [{
        "name": "kpi-exporter", "folder": cfg.grafana_folder, "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": cfg.grafana_dashboards_path, "foldersFromFilesStructure": False},
    }]}
