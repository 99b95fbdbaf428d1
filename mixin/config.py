"""The one place to tune the kpi-exporter monitoring mixin: selectors, thresholds, windows.

Edit the defaults of :class:`Config` below, then run ``make generate`` (``python -m
mixin.generate``) to rewrite the dashboards, recording rules, alerts, their promtool tests,
the Alertmanager example and the runbooks. Commit the generated files with the edit; the
test suite fails when the checked-in files differ from what the generator emits.

Ratios are fractions (0.05 is 5%). Durations are Prometheus durations ("5m", "1h").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Config", "LatencySLO", "CONFIG"]


@dataclass(frozen=True)
class LatencySLO:
    """A latency objective on a histogram the exporter serves, alerted on with
    multiwindow, multi-burn-rate rules (the Google SRE workbook, chapter 5)."""

    # Histogram (base name, without _bucket) and the label that names the model.
    metric: str = "ai_model_latency_seconds"
    # An observation slower than this is a failure. It must be one of the histogram's bucket
    # bounds (exporter/defaults/rules.yaml), because the rules read the bucket at this bound.
    threshold_seconds: float = 1.0
    # Fraction of observations that must be at or under the threshold over 30 days.
    objective: float = 0.99


@dataclass(frozen=True)
class Config:
    """Selectors and thresholds of every dashboard, recording rule and alert."""

    # ---- where the exporter is ------------------------------------------------------------
    # Label matchers that select the exporter's scrape job, in recording rules and alerts.
    # Equality matchers only, one of them on job (the example prometheus.yml scrapes under
    # that job name and the promtool tests label their input with these labels).
    exporter_selector: str = 'job="kpi-exporter"'
    # Address the example prometheus.yml scrapes and how often.
    exporter_target: str = "localhost:9464"
    exporter_scrape_interval: str = "5s"
    # Address of Alertmanager in the example prometheus.yml.
    alertmanager_target: str = "localhost:9093"
    # Exemplars Prometheus keeps (a circular buffer, about 100 bytes each, all series
    # together); it keeps them only when started with --enable-feature=exemplar-storage.
    max_exemplars: int = 100000

    # ---- dashboards -----------------------------------------------------------------------
    # Tag on every dashboard; the dashboards link to each other through it.
    dashboard_tag: str = "kpi-exporter"
    # Folder Grafana's file provider puts the dashboards in.
    grafana_folder: str = "KPI exporter"
    # Uid and URL of the provisioned Prometheus data source. Grafana expands $VAR and ${VAR}
    # from its own environment when it reads a provisioning file, so one file serves Grafana
    # in a container (PROMETHEUS_URL=http://host.docker.internal:9090) and from a package
    # (PROMETHEUS_URL=http://localhost:9090). A literal URL works too.
    datasource_uid: str = "kpi-prometheus"
    # Default of the dashboards' `traces` variable: the uid of the Tempo or Jaeger data
    # source the latency panels link to (each dashboard's variable can be changed in Grafana).
    traces_datasource_uid: str = "tempo"
    datasource_url: str = "${PROMETHEUS_URL}"
    # Where Grafana reads the dashboard files (mount grafana/dashboards there).
    grafana_dashboards_path: str = "/var/lib/grafana/dashboards/kpi-exporter"
    dashboard_refresh: str = "1m"

    # ---- alerts: common -------------------------------------------------------------------
    # Every alert name starts with this.
    alert_prefix: str = "Kpi"
    # Absolute URL where docs/runbooks.md is served; each alert's runbook_url is this plus
    # "#<alert name in lower case>". Alertmanager and Grafana show it as a link outside this
    # repository, so it must be absolute (http:// or https://). Set it to where your team
    # reads the runbooks: your fork's file in Git hosting, or an internal docs site.
    runbook_base_url: str = "https://github.com/kpi-exporter/kpi-exporter/blob/main/docs/runbooks.md"

    # ---- alerts: the exporter itself ------------------------------------------------------
    exporter_down_for: str = "5m"
    # No records received at all for this long (the exporter is up but nothing reaches it).
    no_records_for: str = "15m"
    # Share of received records rejected (unusable values, malformed requests), per signal.
    rejected_ratio_max: float = 0.01
    rejected_for: str = "15m"
    # Share of received records that no rule mapped, per signal. Spans and metric points
    # that no rule wants count here, hence the high default and the info severity.
    unmatched_ratio_max: float = 0.5
    unmatched_for: str = "30m"
    # Any update going to a metric's overflow series (its series cap was reached).
    overflow_for: str = "10m"
    # State snapshots failing (a restart would lose counts).
    state_save_failing_for: str = "15m"
    # A replica's shared KPI window store or open-visit store (Redis, Valkey) not answering.
    window_store_down_for: str = "5m"
    # The web config file (or a certificate it names) changed and does not load.
    web_config_failing_for: str = "10m"

    # ---- alerts: AI models ----------------------------------------------------------------
    # Error rate a model reports (ai.model.performance) or GenAI spans show.
    ai_error_rate_max: float = 0.05
    ai_error_rate_for: str = "10m"
    # Accuracy a model reports.
    ai_accuracy_min: float = 0.8
    ai_accuracy_for: str = "30m"
    # Relative drop against the same time last week that counts as "dropping" (0.1 = 10%).
    ai_accuracy_drop: float = 0.1
    ai_acceptance_drop: float = 0.2
    ai_drop_for: str = "1h"
    latency_slo: LatencySLO = field(default_factory=LatencySLO)

    # ---- GenAI ------------------------------------------------------------------------------
    # An app may report each GenAI call twice, as a span and as gen_ai.client.* metric
    # points. The recording rules count each (job, service, model) from one source: this one
    # when it has any operations in the window, else the other. "metrics" (the default)
    # is never thinned by trace sampling; "spans" carry cache reads and app.feature, so it
    # prices cached tokens exactly, but is only right when no span is sampled away.
    genai_preferred_source: str = "metrics"
    # GenAI spend (USD) over the trailing 24 hours, all models of a job, above which the
    # budget alert fires.
    genai_daily_budget_usd: float = 100.0
    genai_budget_for: str = "15m"

    # ---- alerts: product and business -----------------------------------------------------
    # Relative drop of daily active users / 1-day conversion rate against the same hour
    # last week.
    dau_drop: float = 0.2
    conversion_drop: float = 0.2
    business_drop_for: str = "1h"
    # A service that sent events within service_seen_window but none for service_quiet_for.
    service_seen_window: str = "1d"
    service_quiet_for: str = "30m"
    service_silent_for: str = "5m"


    def runbook_url(self, alert: str) -> str:
        """The absolute link to an alert's section of the runbooks."""
        if not re.match(r"^https?://[^/\s#]+/\S*$", self.runbook_base_url) or \
                "#" in self.runbook_base_url:
            raise ValueError("mixin/config.py: runbook_base_url must be an absolute http(s) URL "
                             "of docs/runbooks.md without a #fragment, such as "
                             "'https://git.example.com/you/kpi-exporter/blob/main/docs/runbooks.md'"
                             f", got {self.runbook_base_url!r}")
        return f"{self.runbook_base_url}#{alert.lower()}"

    def selector_labels(self) -> dict[str, str]:
        """The labels exporter_selector matches."""
        pairs = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', self.exporter_selector))
        if "job" not in pairs or re.search(r"=~|!=|!~", self.exporter_selector):
            raise ValueError("mixin/config.py: exporter_selector must be equality matchers "
                             "with one on job, such as 'job=\"kpi-exporter\"'")
        return pairs


CONFIG = Config()
