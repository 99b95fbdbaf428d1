"""Prometheus recording rules: the derived KPIs dashboards and alerts read, under names
of the form ``level:metric:operations`` (https://prometheus.io/docs/practices/rules/).

Every rule keeps ``job`` so several exporter deployments stay apart, and sums over
instances so replicas add up.
"""

from __future__ import annotations

from typing import Any

from mixin.config import CONFIG, Config

__all__ = ["build", "sel", "le_label", "SLO_WINDOWS", "Names"]

# The windows of the multiwindow, multi-burn-rate SLO alerts.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}

ACCEPTED = 'outcome="accepted"'
HAS_ERROR = 'error_type!=""'
PASSED = 'gen_ai_evaluation_score_label="pass"'


def sel(cfg: Config, *matchers: str) -> str:
    """A label selector: the exporter's job plus ``matchers``."""
    return "{" + ", ".join([cfg.exporter_selector, *matchers]) + "}"


def le_label(bound: float) -> str:
    """A bucket bound as the exporter writes it in ``le`` (prometheus_client's formatting:
    1 -> "1.0"); Prometheus 2 matches ``le`` as a string."""
    return repr(float(bound))


class Names:
    """Recording rule names, shared by the rules, alerts, dashboards and tests."""

    acceptance_5m = "job_model:ai_recommendation_acceptance:ratio_rate5m"
    acceptance_1h = "job_model:ai_recommendation_acceptance:ratio_rate1h"
    error_rate = "job_model:ai_model_error_rate:ratio"
    accuracy = "job_model:ai_model_accuracy:ratio"
    latency_buckets = "job_model_le:ai_model_latency_seconds_bucket:rate5m"
    genai_buckets = "job_model_le:gen_ai_client_operation_duration_seconds_bucket:rate5m"
    genai_ops = "job_model:gen_ai_client_operations:rate5m"
    genai_errors = "job_model:gen_ai_client_operation_errors:rate5m"
    genai_error_ratio = "job_model:gen_ai_client_operation_errors:ratio_rate5m"
    evaluation_pass = "job_evaluation:gen_ai_evaluation_pass:ratio_rate5m"
    received = "job_signal:kpi_exporter_records_received:rate5m"
    rejected_ratio = "job_signal:kpi_exporter_records_rejected:ratio_rate5m"
    unmatched_ratio = "job_signal:kpi_exporter_records_unmatched:ratio_rate5m"

    @staticmethod
    def latency(q: str) -> str:
        """``p50``, ``p95`` or ``p99`` of the latency models report, per model."""
        return f"job_model:ai_model_latency_seconds:{q}_rate5m"

    @staticmethod
    def genai_duration(q: str) -> str:
        """``p50``, ``p95`` or ``p99`` of GenAI operation durations (spans), per model."""
        return f"job_model:gen_ai_client_operation_duration_seconds:{q}_rate5m"

    @staticmethod
    def slo_errors(window: str) -> str:
        """Share of latency observations slower than the SLO threshold over ``window``."""
        return f"job_model:ai_model_latency_slo_errors:ratio_rate{window}"


def _share(numerator: str, denominator: str, by: str) -> str:
    # "or 0 * denominator" keeps the ratio at 0 for a group whose numerator series does not
    # exist yet (no accepted response so far), instead of leaving the group out.
    return (f"(\n  sum by ({by}) ({numerator})\n  or\n  0 * sum by ({by}) ({denominator})\n)\n"
            f"/\nsum by ({by}) ({denominator})\n")


def _model_from_genai(expr: str) -> str:
    # GenAI metrics name the model gen_ai_request_model; the derived KPIs call it model, as
    # the ai_* metrics do, so one dashboard variable filters both.
    return f'label_replace({expr}, "model", "$1", "gen_ai_request_model", "(.*)")'


def _rule(record: str, expr: str) -> dict[str, Any]:
    return {"record": record, "expr": expr if expr.count("\n") > 1 else expr.strip()}


def ai_rules(cfg: Config) -> list[dict[str, Any]]:
    """Acceptance, error rate, accuracy, latency percentiles, evaluation pass rate."""
    responses = "ai_recommendation_responses_total"
    rules = []
    for name, window in ((Names.acceptance_5m, "5m"), (Names.acceptance_1h, "1h")):
        rules.append(_rule(name, _share(
            f"rate({responses}{sel(cfg, ACCEPTED)}[{window}])",
            f"rate({responses}{sel(cfg)}[{window}])", "job, model")))
    rules.append(_rule(Names.error_rate,
                       f"avg by (job, model) (ai_model_error_rate_ratio{sel(cfg)})\n"))
    rules.append(_rule(Names.accuracy,
                       f"avg by (job, model) (ai_model_accuracy_ratio{sel(cfg)})\n"))
    rules.append(_rule(Names.latency_buckets,
                       f"sum by (job, model, le) (rate(ai_model_latency_seconds_bucket"
                       f"{sel(cfg)}[5m]))\n"))
    for q, v in QUANTILES.items():
        rules.append(_rule(Names.latency(q), f"histogram_quantile({v}, {Names.latency_buckets})\n"))
    duration = "gen_ai_client_operation_duration_seconds"
    rules.append(_rule(Names.genai_buckets, "sum by (job, model, le) (\n  " + _model_from_genai(
        f"rate({duration}_bucket{sel(cfg)}[5m])") + "\n)\n"))
    for q, v in QUANTILES.items():
        rules.append(_rule(Names.genai_duration(q),
                           f"histogram_quantile({v}, {Names.genai_buckets})\n"))
    rules.append(_rule(Names.genai_ops, "sum by (job, model) (\n  " + _model_from_genai(
        f"rate({duration}_count{sel(cfg)}[5m])") + "\n)\n"))
    rules.append(_rule(Names.genai_errors, "sum by (job, model) (\n  " + _model_from_genai(
        f"rate({duration}_count{sel(cfg, HAS_ERROR)}[5m])") + "\n)\n"))
    rules.append(_rule(Names.genai_error_ratio,
                       f"(\n  {Names.genai_errors}\n  or\n  0 * {Names.genai_ops}\n)\n"
                       f"/\n{Names.genai_ops}\n"))
    results = "gen_ai_evaluation_results_total"
    rules.append(_rule(Names.evaluation_pass, _share(
        f"rate({results}{sel(cfg, PASSED)}[5m])",
        f"rate({results}{sel(cfg)}[5m])", "job, gen_ai_evaluation_name")))
    return rules


def slo_rules(cfg: Config) -> list[dict[str, Any]]:
    """Share of observations slower than the SLO threshold, over every burn-rate window."""
    slo = cfg.latency_slo
    at_threshold = 'le="%s"' % le_label(slo.threshold_seconds)
    good = f"{slo.metric}_bucket{sel(cfg, at_threshold)}"
    total = f"{slo.metric}_count{sel(cfg)}"
    return [_rule(Names.slo_errors(w),
                  f"1 - (\n  sum by (job, model) (rate({good}[{w}]))\n  /\n"
                  f"  sum by (job, model) (rate({total}[{w}]))\n)\n")
            for w in SLO_WINDOWS]


def exporter_rules(cfg: Config) -> list[dict[str, Any]]:
    """What the exporter received, rejected and could not map, per signal."""
    p = "kpi_exporter_records_"
    received = f"sum by (job, signal) (rate({p}received_total{sel(cfg)}[5m]))"
    return [
        _rule(Names.received, received + "\n"),
        _rule(Names.rejected_ratio,
              f"sum by (job, signal) (rate({p}rejected_total{sel(cfg)}[5m]))\n/\n{received}\n"),
        _rule(Names.unmatched_ratio,
              f"sum by (job, signal) (rate({p}unmatched_total{sel(cfg)}[5m]))\n/\n{received}\n"),
    ]


def build(cfg: Config = CONFIG) -> dict[str, Any]:
    """The recording rule file, as a document for YAML."""
    return {"groups": [
        {"name": "kpi-exporter.rules", "rules": exporter_rules(cfg)},
        {"name": "kpi-exporter-ai.rules", "rules": ai_rules(cfg)},
        {"name": "kpi-exporter-slo.rules", "rules": slo_rules(cfg)},
    ]}
