"""Alert rules, in the shape of the monitoring mixins: CamelCase names with one prefix,
``severity`` critical / warning / info, a static ``summary``, a templated ``description``,
a ``runbook_url`` into docs/runbooks.md and a ``for:`` on every alert.

Alerts carry ``component: exporter`` (the exporter itself) or ``component: data`` (what the
data says); Alertmanager inhibits the data alerts while the exporter is down or receives
nothing, since they would only echo that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mixin.config import CONFIG, Config
from mixin.rules import Names, sel

__all__ = ["Alert", "Runbook", "build", "alerts", "pct", "SEVERITIES"]

SEVERITIES = ("critical", "warning", "info")

NOT_SUCCESS = 'outcome!="success"'
ONE_DAY = 'window="1d"'

# The multiwindow, multi-burn-rate table of the SRE workbook for a 30-day budget:
# (long window, short window, burn rate, for, severity).
BURN_RATES = (
    ("1h", "5m", 14.4, "2m", "critical"),
    ("6h", "30m", 6.0, "15m", "critical"),
    ("1d", "2h", 3.0, "1h", "warning"),
    ("3d", "6h", 1.0, "3h", "warning"),
)


@dataclass(frozen=True)
class Runbook:
    """The runbook section of an alert: what it means, how to check, what to do."""

    meaning: str
    check: str
    action: str


@dataclass(frozen=True)
class Alert:
    """One alerting rule. Several rules may share a name (the burn-rate windows); they then
    differ by ``labels``."""

    name: str
    group: str
    expr: str
    for_: str
    severity: str
    component: str
    summary: str
    description: str
    runbook: Runbook
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self, cfg: Config) -> dict[str, Any]:
        """The rule as it goes into the rule file."""
        return {
            "alert": self.name,
            "expr": self.expr if self.expr.count("\n") > 1 else self.expr.strip(),
            "for": self.for_,
            "labels": {"severity": self.severity, "component": self.component, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": cfg.runbook_url(self.name),
            },
        }


def pct(ratio: float) -> str:
    """0.05 -> '5%', for thresholds written into descriptions."""
    return f"{ratio * 100:.4g}%"


def num(x: float) -> str:
    """A number for PromQL and prose without float noise (14.4 * 0.01 -> 0.144)."""
    return f"{x:.6g}"


def exporter_alerts(cfg: Config) -> list[Alert]:
    """The exporter is down, starved, losing records, out of series or not saving state."""
    p = cfg.alert_prefix
    g = "kpi-exporter.alerts"
    received = f"kpi_exporter_records_received_total{sel(cfg)}"
    return [
        Alert(
            f"{p}ExporterDown", g, f"up{sel(cfg)} == 0", cfg.exporter_down_for, "critical",
            "exporter", "The kpi-exporter cannot be scraped.",
            "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} "
            f"for {cfg.exporter_down_for}; no product or AI metrics are collected from it.",
            Runbook(
                "Prometheus cannot scrape the exporter's `/metrics`: the process is down, "
                "restarting, or unreachable. Every product, business and AI KPI from it is "
                "missing, so Alertmanager holds back the data alerts of the same job.",
                "Open Prometheus → Status → Targets and read the scrape error of the target. "
                "On the host: `curl -s localhost:9464/-/healthy` and `curl -s "
                "localhost:9464/metrics | head`; read the exporter's log (systemd: "
                "`journalctl -u kpi-exporter`).",
                "Start or restart the exporter (`kpi-exporter serve --config ...`); fix a "
                "config error it logs at start (`kpi-exporter check-config FILE` names the key). "
                "If it runs but cannot be reached, check the listen address "
                "(`server.metrics_listen`) and firewalls between Prometheus and it."),
        ),
        Alert(
            f"{p}ExporterNoRecords", g,
            f"sum by (job, instance) (rate({received}[5m])) == 0\nor\n(\n"
            f"  up{sel(cfg)} == 1\n  unless on (job, instance)\n  {received}\n)\n",
            cfg.no_records_for, "warning", "exporter",
            "The kpi-exporter receives no records.",
            "{{ $labels.instance }} of job {{ $labels.job }} is up but has received no OTLP "
            f"records for {cfg.no_records_for}.",
            Runbook(
                "The exporter answers scrapes but no log record, span or metric point has "
                "reached its OTLP endpoint: the apps stopped exporting, or their exports go "
                "somewhere else or fail before they arrive. KPIs freeze at their last values.",
                "On the Exporter health dashboard, look at *Ingest rate per signal* and "
                "*Requests by code* (401 or UNAUTHENTICATED means a bearer token is "
                "missing, 413 or RESOURCE_EXHAUSTED a body over `server.max_body_size`, 415 a "
                "wrong content type). In an app, check that its logs endpoint points at the "
                "exporter: port 4317 for gRPC, or port 4318 with "
                "`OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` a full URL ending in `/v1/logs` for "
                "HTTP (docs/sending.md), and look for export errors in the app's log.",
                "Point the apps' OTLP exporters at the exporter again (or the Collector in "
                "front of it); fix tokens or CORS origins (`server.auth`, `server.cors`) the "
                "requests are refused for."),
        ),
        Alert(
            f"{p}ExporterRecordsRejected", g,
            f"{Names.rejected_ratio} > {num(cfg.rejected_ratio_max)}", cfg.rejected_for,
            "warning", "exporter", "The kpi-exporter rejects records.",
            "{{ $value | humanizePercentage }} of the {{ $labels.signal }} records job "
            "{{ $labels.job }} received over 5m were rejected (threshold "
            f"{pct(cfg.rejected_ratio_max)}).",
            Runbook(
                "Records reached the exporter but could not be used: a value that is not a "
                "number, not finite or a negative counter increment, a malformed request, an "
                "unsupported metric point type. The rest of each batch was kept; the rejected "
                "records are missing from the KPIs.",
                "*Rejected records by reason* on the Exporter health dashboard names the "
                "reason (`kpi_exporter_records_rejected_total{reason=...}`). The OTLP "
                "response's `partial_success.error_message` quotes the first offending "
                "record; `kpi-exporter explain` shows how a sample record maps.",
                "Fix the app that sends the bad attribute (for example "
                "`ai.recommendation.confidence` as a string), or change the rule's `value` "
                "in your config so it reads a numeric attribute."),
        ),
        Alert(
            f"{p}ExporterRecordsUnmatched", g,
            f"{Names.unmatched_ratio} > {num(cfg.unmatched_ratio_max)}", cfg.unmatched_for,
            "info", "exporter", "Most records reaching the kpi-exporter match no rule.",
            "{{ $value | humanizePercentage }} of the {{ $labels.signal }} records job "
            "{{ $labels.job }} received over 5m matched no mapping rule (threshold "
            f"{pct(cfg.unmatched_ratio_max)}).",
            Runbook(
                "Most records of a signal match no rule, so they cost bandwidth and CPU and "
                "feed no metric. Often harmless (an app exports all its spans and only GenAI "
                "spans are mapped), sometimes a renamed event that silently stopped feeding "
                "its KPI.",
                "*Unmatched records by signal* on the Exporter health dashboard; run "
                "`kpi-exporter explain` with a sample record to see which rule it misses and "
                "why.",
                "Add or fix the rule for the events you want; filter out the rest before "
                "they are sent (the Collector's `filter` processor, or the app's exporter "
                "configuration); or raise `unmatched_ratio_max` in mixin/config.py when the "
                "share is expected."),
        ),
        Alert(
            f"{p}ExporterSeriesOverflow", g,
            "sum by (job, instance, metric) (rate(kpi_exporter_metric_overflow_updates_total"
            f"{sel(cfg)}[5m])) > 0", cfg.overflow_for, "warning", "exporter",
            "A kpi-exporter metric reached its series cap.",
            "Metric {{ $labels.metric }} on {{ $labels.instance }} has reached its series "
            "cap; {{ $value | humanize }} updates/s go to its overflow series "
            "(otel_metric_overflow=\"true\").",
            Runbook(
                "A mapped metric has as many series as its cap (`limits.max_series_per_metric`"
                " or the rule's `max_series`); updates for new label sets are counted in one "
                "series labelled `otel_metric_overflow=\"true\"`, so per-label breakdowns of "
                "that metric are incomplete.",
                "*Series per metric* and *Overflow updates per metric* on the Exporter health "
                "dashboard; `kpi_exporter_metric_series / kpi_exporter_metric_series_limit`. "
                "Look at the metric's label values in Prometheus for an unbounded one (ids, "
                "raw URLs instead of route templates, free text).",
                "Make the label bounded at the source (send `url.path` as a route template, "
                "not the raw path) or drop that label in the rule; raise the cap only when "
                "the label set is bounded and simply larger than the default."),
        ),
        Alert(
            f"{p}ExporterStateSavesFailing", g,
            "sum by (job, instance) (increase(kpi_exporter_state_saves_total"
            f"{sel(cfg, NOT_SUCCESS)}[15m])) > 0",
            cfg.state_save_failing_for, "warning", "exporter",
            "The kpi-exporter cannot save its state.",
            "{{ $labels.instance }} of job {{ $labels.job }} failed {{ $value | humanize }} "
            "state saves in the last 15m; a restart now would lose the counts since its last "
            "good save.",
            Runbook(
                "The periodic snapshot of the store and the KPI windows to the state directory "
                "fails. Nothing is lost while the exporter runs, but a restart would start "
                "from the last good snapshot: counters would go back and windows forget users.",
                "*State saves* and *State save duration* on the Exporter health dashboard; the "
                "exporter's log names the file and the error. Check free space, permissions "
                "and the mount of the state directory.",
                "Free space or fix permissions on the state directory (it needs write and "
                "rename in the directory itself); avoid restarting the exporter until a save "
                "succeeds."),
        ),
        Alert(
            f"{p}ExporterWindowStoreDown", g,
            f"kpi_exporter_window_store_up{sel(cfg)} == 0", cfg.window_store_down_for,
            "critical", "exporter", "The kpi-exporter cannot reach its KPI window store.",
            "{{ $labels.instance }} of job {{ $labels.job }} has not reached its shared KPI "
            f"window store (Redis or Valkey) for {cfg.window_store_down_for}; its window "
            "gauges are missing and events beyond its buffer are not counted in them.",
            Runbook(
                "The replica cannot write to or read from the Redis or Valkey that holds the "
                "KPI window sketches (`windows.store`), or the store was filled with another "
                "identity salt. Counters and histograms are unaffected, but "
                "`app_active_users`, `app_sessions` and `app_conversion_rate_ratio` are left "
                "out of `/metrics` (dashboards show no data rather than a wrong number), and "
                "once the replica's buffer (`windows.redis_buffer` events) is full, new events "
                "are not counted in the windows: "
                "`kpi_exporter_window_records_dropped_total{reason=\"store_unavailable\"}`.",
                "*Window store up* and *Window events dropped by reason* on the Exporter "
                "health dashboard; the exporter's log says what failed (connection refused, "
                "timeout, authentication, another salt). From the replica's host: "
                "`redis-cli -u \"$KPI_EXPORTER_WINDOWS_STORE\" ping`. Check the store's own "
                "health (memory, `maxmemory` evictions, failover in progress).",
                "Bring the store back, or fix the address or credentials in "
                "`windows.store` / `KPI_EXPORTER_WINDOWS_STORE`; the replicas reconnect on "
                "their own within seconds, send what they buffered and report the gauges "
                "again. If the log names another salt, give every replica the same "
                "`privacy.salt` / `KPI_EXPORTER_SALT` (docs/scaling.md)."),
        ),
        Alert(
            f"{p}ExporterSessionStoreDown", g,
            f"kpi_exporter_session_store_up{sel(cfg)} == 0", cfg.window_store_down_for,
            "critical", "exporter", "The kpi-exporter cannot use its shared open-visit store.",
            "{{ $labels.instance }} of job {{ $labels.job }} has not written to or closed "
            f"visits in its shared open-visit store (Redis or Valkey) for "
            f"{cfg.window_store_down_for}; no visit it saw is counted meanwhile.",
            Runbook(
                "The replica's updates of open visits or its claims of visits due are refused "
                "by the Redis or Valkey that holds them (the store of `windows.store`): the "
                "server is away, full, or the Redis user may not run the commands of the "
                "visit scripts while the window store works. Visits are not counted "
                "(`app_sessions_closed_total` and the other visit metrics stand still); their "
                "updates wait in the replica's buffer (`windows.redis_buffer`) and beyond it "
                "are dropped: "
                "`kpi_exporter_session_updates_dropped_total{reason=\"store_unavailable\"}`.",
                "`kpi_exporter_session_store_errors_total` by operation (write, close) and "
                "`kpi_exporter_session_store_buffered_updates`; the exporter's log says what "
                "failed (`the shared open-visit store failed`). A `NOPERM` or \"can't run this "
                "command\" error means the Redis user lacks a command: compare its rules "
                "with the user of docs/scaling.md.",
                "Bring the store back, free memory, or give the Redis user the commands "
                "docs/scaling.md lists; the replicas send what they buffered and close the "
                "visits due within seconds, each once."),
        ),
        Alert(
            f"{p}ExporterWebConfigReloadFailed", g,
            f"kpi_exporter_web_config_last_reload_successful{sel(cfg)} == 0",
            cfg.web_config_failing_for, "warning", "exporter",
            "The kpi-exporter cannot load its changed web config.",
            "{{ $labels.instance }} of job {{ $labels.job }} has refused its changed web "
            f"config file (TLS, basic auth) for {cfg.web_config_failing_for}; it keeps "
            "serving with the last one that loaded.",
            Runbook(
                "The web config file (`server.web_config_file`, `--web.config.file`) or a "
                "certificate, key or CA file it names changed and no longer loads: a renewed "
                "certificate that does not match its key, a file half written, a YAML error, "
                "a password that is not a bcrypt hash. The listeners keep the last good "
                "settings, so nothing breaks yet, but the renewal has not taken effect: the "
                "old certificate expires on its own date.",
                "The exporter's log has one line per refused load with the file, line and "
                "reason (`web config reload refused`). Run `kpi-exporter check-web-config "
                "FILE` on the host for the same answer; `openssl x509 -noout -dates -in "
                "CERT` shows a certificate's validity.",
                "Fix the file or put a matching certificate and key in place; the exporter "
                "notices within a second (no signal or restart needed), and "
                "`kpi_exporter_web_config_last_reload_successful` goes back to 1."),
        ),
    ]


def ai_alerts(cfg: Config) -> list[Alert]:
    """Model error rate, accuracy, acceptance and the latency SLO."""
    p = cfg.alert_prefix
    g = "kpi-exporter-ai.alerts"
    slo = cfg.latency_slo
    budget = 1 - slo.objective
    out = [
        Alert(
            f"{p}AiModelErrorRateHigh", g, f"{Names.error_rate} > {num(cfg.ai_error_rate_max)}",
            cfg.ai_error_rate_for, "warning", "data",
            "An AI model reports a high error rate.",
            "Model {{ $labels.model }} (job {{ $labels.job }}) reports an error rate of "
            "{{ $value | humanizePercentage }}, above " + pct(cfg.ai_error_rate_max) + ".",
            Runbook(
                "The error rate a model reports with `ai.model.performance` events "
                "(`ai_model_error_rate_ratio`, averaged over the exporter's replicas) is above "
                "the threshold.",
                "*Error rate by model* on the AI performance dashboard, filtered to the model; compare "
                "with the GenAI operation error rate from spans and with the model's latency. "
                "Look at the model provider's status and the app's error logs.",
                "Roll back a recent model or prompt change, fail over to another model or "
                "provider, or raise the issue with the model's owners."),
        ),
        Alert(
            f"{p}GenAiErrorRateHigh", g,
            f"{Names.genai_error_ratio} > {num(cfg.ai_error_rate_max)}",
            cfg.ai_error_rate_for, "warning", "data",
            "GenAI operations of a model fail often.",
            "{{ $value | humanizePercentage }} of the GenAI operations of model "
            "{{ $labels.model }} (job {{ $labels.job }}) failed over 5m, above "
            + pct(cfg.ai_error_rate_max) + ".",
            Runbook(
                "GenAI operations of this model end with an `error.type` (or, for spans, an "
                "error status) more often than the threshold. Each service's calls are "
                "counted once: from its `gen_ai.client.operation.duration` metric points when "
                "it sends them, else from its spans "
                "(`gen_ai_client_operation_duration_seconds_count` or "
                "`gen_ai_span_operation_duration_seconds_count`, `error_type!=\"\"` over "
                "all).",
                "The GenAI operations line of *Error rate by model* on the AI performance "
                "dashboard; group `gen_ai_client_operation_duration_seconds_count` (or the "
                "`gen_ai_span_` one, see *Source of GenAI figures*) by `error_type` and "
                "`gen_ai_provider_name` in Prometheus to see which error and which provider.",
                "Timeouts: raise the client timeout or reduce the request size; rate limits "
                "(429): lower concurrency or raise the quota; provider outage: fail over. "
                "Roll back a recent change if the errors started with it."),
        ),
        Alert(
            f"{p}AiAccuracyLow", g, f"{Names.accuracy} < {num(cfg.ai_accuracy_min)}",
            cfg.ai_accuracy_for, "warning", "data", "An AI model's accuracy is low.",
            "Model {{ $labels.model }} (job {{ $labels.job }}) reports an accuracy of "
            "{{ $value | humanizePercentage }}, below " + pct(cfg.ai_accuracy_min) + ".",
            Runbook(
                "The accuracy a model reports (`ai_model_accuracy_ratio`) is below the "
                "threshold.",
                "*Accuracy by model* and *Evaluation scores* on the AI performance dashboard; when "
                "did it fall, and did a deploy, a model version or the input mix change then?",
                "Roll back the model or prompt change; if the input data shifted, retrain or "
                "recalibrate; adjust `ai_accuracy_min` if the threshold no longer fits."),
        ),
        Alert(
            f"{p}AiAccuracyDropping", g,
            f"{Names.accuracy}\n< {num(1 - cfg.ai_accuracy_drop)} * ({Names.accuracy} offset 1w)\n",
            cfg.ai_drop_for, "warning", "data",
            "An AI model's accuracy dropped against last week.",
            "Model {{ $labels.model }} (job {{ $labels.job }}) reports an accuracy of "
            "{{ $value | humanizePercentage }}, more than " + pct(cfg.ai_accuracy_drop)
            + " below the same time last week.",
            Runbook(
                "The model's reported accuracy is more than the configured share below its "
                "value one week earlier, even if it is still above the absolute minimum.",
                "*Accuracy by model* on the AI performance dashboard over 14 days; compare the week "
                "with the previous one and look for the deploy or data change at the step.",
                "As for low accuracy: roll back, retrain or recalibrate; if the drop is an "
                "expected change, it clears after one hour of stable values."),
        ),
        Alert(
            f"{p}AiAcceptanceRateDropping", g,
            f"{Names.acceptance_1h}\n< {num(1 - cfg.ai_acceptance_drop)} * "
            f"({Names.acceptance_1h} offset 1w)\n",
            cfg.ai_drop_for, "warning", "data",
            "Users accept fewer AI recommendations than last week.",
            "Users accepted {{ $value | humanizePercentage }} of the recommendations of model "
            "{{ $labels.model }} (job {{ $labels.job }}) over the last hour, more than "
            + pct(cfg.ai_acceptance_drop) + " below the same hour last week.",
            Runbook(
                "The share of recommendation responses with outcome `accepted` over the last "
                "hour is well below the same hour one week earlier: recommendations got worse "
                "or reach the wrong users.",
                "*Acceptance rate by model* and *Responses by outcome* on the AI performance dashboard; "
                "is `rejected` or `modified` growing? Did the confidence distribution shift?",
                "Roll back the model, prompt or ranking change; check the recommendation "
                "types that lost most."),
        ),
    ]
    out.append(Alert(
        f"{p}GenAiDailyCostOverBudget", g,
        f"{Names.genai_cost_1d} > {num(cfg.genai_daily_budget_usd)}", cfg.genai_budget_for,
        "warning", "data", "GenAI spend over the last 24 hours is above the daily budget.",
        "Job {{ $labels.job }} spent {{ $value | humanize }} USD on GenAI calls over the "
        f"last 24 hours, above the daily budget of {num(cfg.genai_daily_budget_usd)} USD.",
        Runbook(
            "The cost of the GenAI token usage the apps reported over the trailing 24 hours, "
            "priced by the exporter (`genai.prices` of its config, else the genai-prices "
            "database it ships with), is above `genai_daily_budget_usd`. Each call is counted "
            "once: from metric points where a service sends them for a model, else from its "
            "spans.",
            "*Cost by model* and *Cost by feature* on the AI performance dashboard show which "
            "model and feature the money goes to; *Cost per successful operation* tells a "
            "traffic increase (flat) from costlier calls (rising: longer prompts, a pricier "
            "model, lost cache hits — see *Cost by token type*). `kpi_exporter_gen_ai_unpriced_"
            "tokens_total` lists models whose usage is not in the figure at all.",
            "A traffic spike or a runaway loop (an agent retrying, a batch job): stop or "
            "throttle it. A prompt or model change: roll it back or move the feature to a "
            "cheaper model. If the spend is expected, raise `genai_daily_budget_usd` in "
            "mixin/config.py and run `make generate`. Wrong prices: set the model's prices "
            "under `genai.prices` in the exporter's config (docs/ai.md)."),
    ))
    metric = slo.metric
    for long, short, factor, for_, severity in BURN_RATES:
        limit = num(factor * budget)
        out.append(Alert(
            f"{p}AiLatencyErrorBudgetBurn", g,
            f"{Names.slo_errors(long)} > {limit}\nand\n{Names.slo_errors(short)} > {limit}\n",
            for_, severity, "data",
            "An AI model burns its latency error budget too fast.",
            "{{ $value | humanizePercentage }} of the latency observations of model "
            "{{ $labels.model }} (job {{ $labels.job }}) over the last " + long + " were "
            f"slower than {num(slo.threshold_seconds)}s; the {pct(slo.objective)} objective's "
            f"error budget burns {num(factor)} times faster than it lasts for 30 days.",
            Runbook(
                f"More than the budgeted share of `{metric}` observations is slower than "
                f"{num(slo.threshold_seconds)}s, fast enough that the 30-day error budget of "
                f"the {pct(slo.objective)} objective runs out early: in about 2 days at 14.4x "
                "(1h/5m windows) and 5 days at 6x (6h/30m) — these page; at 3x (1d/2h) and 1x "
                "(3d/6h) it is a ticket. The labels `long` and `short` name the windows; both "
                "must exceed the burn rate, so the alert stops soon after the problem does.",
                "*Latency p50 / p95 / p99* and *Latency SLO burn rate* on the AI performance "
                "dashboard, filtered to the model; compare with *GenAI operation duration* "
                "and the error rate: timeouts often show up in both.",
                "Find what slowed the model: provider latency, larger prompts or outputs "
                "(*Token usage by model*), saturation of your own serving. Fail over, scale out or roll "
                "back; a ticket-severity burn can wait for working hours."),
            {"long": long, "short": short},
        ))
    return out


def product_alerts(cfg: Config) -> list[Alert]:
    """Daily active users and conversion rate against last week; services gone quiet."""
    p = cfg.alert_prefix
    g = "kpi-exporter-product.alerts"
    dau = f"app_active_users{sel(cfg, ONE_DAY)}"
    conv = f"app_conversion_rate_ratio{sel(cfg, ONE_DAY)}"
    events = f"app_events_total{sel(cfg)}"
    return [
        Alert(
            f"{p}DailyActiveUsersDropping", g,
            f"max by (job) ({dau})\n< {num(1 - cfg.dau_drop)} * max by (job) ({dau} offset 1w)\n",
            cfg.business_drop_for, "warning", "data",
            "Daily active users dropped against last week.",
            "Job {{ $labels.job }} counts {{ $value | humanize }} daily active users, more "
            f"than {pct(cfg.dau_drop)} below the same hour last week.",
            Runbook(
                "Unique users over the last day (`app_active_users{window=\"1d\"}`) are well "
                "below the same hour one week earlier.",
                "*Daily active users* and *DAU vs last week* on the Business KPIs dashboard; "
                "*Events by service* on the Product analytics dashboard shows whether one "
                "service stopped sending (then it is a telemetry problem, not a user one). "
                "Check for an app release, an outage or a tracking change (`user.id` no "
                "longer set).",
                "If telemetry broke, fix the app's instrumentation; if users really left, "
                "tell the product owners with the time the drop started."),
        ),
        Alert(
            f"{p}ConversionRateDropping", g,
            f"max by (job) ({conv})\n< {num(1 - cfg.conversion_drop)} * max by (job) ({conv} "
            "offset 1w)\n",
            cfg.business_drop_for, "warning", "data",
            "The conversion rate dropped against last week.",
            "Job {{ $labels.job }} has a 1-day conversion rate of "
            "{{ $value | humanizePercentage }}, more than " + pct(cfg.conversion_drop)
            + " below the same hour last week.",
            Runbook(
                "Conversions per session over the last day "
                "(`app_conversion_rate_ratio{window=\"1d\"}`) are well below the same hour one "
                "week earlier.",
                "*Conversion rate (1d)* and *Conversions by type* on the Business KPIs dashboard: "
                "did one conversion type stop (a broken checkout, a payment provider), or did "
                "sessions grow without conversions (a campaign bringing other visitors)?",
                "Fix the broken step of the funnel, or confirm with the product owners that "
                "the change is expected."),
        ),
        Alert(
            f"{p}ServiceStoppedSending", g,
            f"sum by (job, service_name) (increase({events}[{cfg.service_seen_window}])) > 0\n"
            "unless\n"
            f"sum by (job, service_name) (increase({events}[{cfg.service_quiet_for}])) > 0\n",
            cfg.service_silent_for, "warning", "data",
            "A service stopped sending events.",
            "Service {{ $labels.service_name }} sent {{ $value | humanize }} events to job "
            "{{ $labels.job }} in the last " + cfg.service_seen_window + " but none in the last "
            + cfg.service_quiet_for + ".",
            Runbook(
                "A service (`service.name` of its OpenTelemetry resource) that used to send "
                "events has sent none for a while, while the exporter still receives records "
                "from others.",
                "*Events by service* on the Product analytics dashboard; is the service "
                "running, was it redeployed with a different `service.name` or without the "
                "OTLP exporter, does its log show export errors?",
                "Restore the service's OTLP export; if it was renamed or retired, the alert "
                "clears once it falls out of the " + cfg.service_seen_window + " window."),
        ),
    ]


def alerts(cfg: Config = CONFIG) -> list[Alert]:
    """Every alert rule, in file order."""
    return exporter_alerts(cfg) + ai_alerts(cfg) + product_alerts(cfg)


def build(cfg: Config = CONFIG) -> dict[str, Any]:
    """The alert rule file, as a document for YAML."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for a in alerts(cfg):
        groups.setdefault(a.group, []).append(a.rule(cfg))
    return {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
