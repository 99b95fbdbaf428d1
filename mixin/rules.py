"""Prometheus recording rules: the derived KPIs dashboards and alerts read, under names
of the form ``level:metric:operations`` (https://prometheus.io/docs/practices/rules/).

Every rule keeps ``job`` so several exporter deployments stay apart, and sums over
instances so replicas add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixin.config import CONFIG, Config

__all__ = ["build", "sel", "le_label", "SLO_WINDOWS", "WEB_WINDOWS", "Names", "GenAiSeries",
           "GENAI"]

# The windows the web analytics figures are recorded over.
WEB_WINDOWS = ("1h", "1d")

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
    genai_source_ops = "job_service_model:gen_ai_client_operations:rate5m"
    genai_ops = "job_model:gen_ai_client_operations:rate5m"
    genai_errors = "job_model:gen_ai_client_operation_errors:rate5m"
    genai_error_ratio = "job_model:gen_ai_client_operation_errors:ratio_rate5m"
    genai_tokens = "job_model_type:gen_ai_client_token_usage:rate5m"
    genai_ttft_buckets = "job_model_le:gen_ai_server_time_to_first_token_seconds_bucket:rate5m"
    genai_first_chunk_buckets = (
        "job_model_le:gen_ai_client_operation_time_to_first_chunk_seconds_bucket:rate5m")
    genai_tpot_buckets = "job_model_le:gen_ai_server_time_per_output_token_seconds_bucket:rate5m"
    genai_finish_reasons = "job_model_reason:gen_ai_finish_reasons:ratio_rate5m"
    genai_cost_service_1h = "job_service_model_type:gen_ai_cost_usd:increase1h"
    genai_cost_type_1h = "job_model_type:gen_ai_cost_usd:increase1h"
    genai_cost_1h = "job_model:gen_ai_cost_usd:increase1h"
    genai_cost_feature_1h = "job_model_feature:gen_ai_cost_usd:increase1h"
    genai_cost_model_1d = "job_model:gen_ai_cost_usd:increase1d"
    genai_cost_1d = "job:gen_ai_cost_usd:increase1d"
    genai_successful_1h = "job_model:gen_ai_client_successful_operations:increase1h"
    genai_cost_per_success = "job_model:gen_ai_cost_usd_per_successful_operation:ratio1h"
    evaluation_pass = "job_evaluation:gen_ai_evaluation_pass:ratio_rate5m"
    received = "job_signal:kpi_exporter_records_received:rate5m"

    @staticmethod
    def visits(window: str) -> str:
        """Visits closed per second over ``window`` (1h, 1d), per service."""
        return f"job_service:app_sessions_closed:rate{window}"

    @staticmethod
    def bounce_rate(window: str) -> str:
        """Bounced over closed visits over ``window``, per service."""
        return f"job_service:app_sessions_bounced:ratio_rate{window}"

    @staticmethod
    def views_per_visit(window: str) -> str:
        """Page views per closed visit over ``window``, per service."""
        return f"job_service:app_session_page_views:mean_rate{window}"

    @staticmethod
    def visit_duration(window: str, stat: str = "mean") -> str:
        """Mean or median (``p50``) duration of the visits closed over ``window``."""
        return f"job_service:app_session_duration_seconds:{stat}_rate{window}"
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


@dataclass(frozen=True)
class GenAiSeries:
    """One GenAI figure as both sources report it: from metric points and from spans."""

    metric: str
    span: str

    def of(self, source: str) -> str:
        return self.metric if source == "metrics" else self.span


class GENAI:
    """The GenAI series pairs the recording rules choose between."""

    duration = GenAiSeries("gen_ai_client_operation_duration_seconds",
                           "gen_ai_span_operation_duration_seconds")
    tokens = GenAiSeries("gen_ai_client_token_usage", "gen_ai_span_token_usage")
    cost = GenAiSeries("gen_ai_client_cost_usd_total", "gen_ai_span_cost_usd_total")
    ttft = GenAiSeries("gen_ai_server_time_to_first_token_seconds",
                       "gen_ai_span_server_time_to_first_token_seconds")
    first_chunk = GenAiSeries("gen_ai_client_operation_time_to_first_chunk_seconds",
                              "gen_ai_span_time_to_first_chunk_seconds")
    tpot = GenAiSeries("gen_ai_server_time_per_output_token_seconds",
                       "gen_ai_span_server_time_per_output_token_seconds")


GENAI_SOURCES = ("metrics", "spans")
# The step at which the hourly and daily GenAI figures choose their source.
_GENAI_STEP = "5m"
_SECONDS = {"5m": 300, "1h": 3600, "1d": 86400}
# What a GenAI source is chosen for: one service's calls of one model.
GENAI_KEY = "job, service_name, model"


def _genai_sources(cfg: Config) -> tuple[str, str]:
    """(preferred, fallback) source."""
    if cfg.genai_preferred_source not in GENAI_SOURCES:
        raise ValueError(f"mixin/config.py: genai_preferred_source must be one of "
                         f"{', '.join(GENAI_SOURCES)}, got {cfg.genai_preferred_source!r}")
    first = cfg.genai_preferred_source
    return first, next(s for s in GENAI_SOURCES if s != first)


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def _genai_sum(cfg: Config, func: str, series: str, window: str, by: str,
               *matchers: str) -> str:
    """``func(series[window])`` of the exporter's job, summed by ``by`` with the model label
    copied from gen_ai_request_model."""
    inner = _model_from_genai(f"{func}({series}{sel(cfg, *matchers)}[{window}])")
    return f"sum by ({by}) (\n  {inner}\n)"


def _genai_live(cfg: Config, histogram: str, window: str) -> str:
    """The (job, service, model)s with observations of ``histogram`` in ``window``."""
    return _genai_sum(cfg, "rate", f"{histogram}_count", window, GENAI_KEY) + " > 0"


def _genai_choose(cfg: Config, series: GenAiSeries, func: str, window: str, extra: str = "",
                  matchers: tuple[str, ...] = (), by: str | None = "job, model",
                  gate: GenAiSeries = GENAI.duration, label_source: bool = False) -> str:
    """One figure of a (job, service, model) from one source: the preferred source where
    its ``gate`` histogram (the operations, by default) has observations in the window, else
    the other source, else the preferred one's (zero) series. Then summed by ``by`` plus
    ``extra`` (``by`` None: kept per service, with a ``source`` label when ``label_source``).

    So a call is never counted twice, sampled spans never stand in for metric points that
    exist, and a source that went quiet (its series stay in the exporter) hands over."""
    first, second = _genai_sources(cfg)
    group = GENAI_KEY + (f", {extra}" if extra else "")
    live = _genai_live(cfg, gate.of(first), window)

    def part(source: str) -> str:
        expr = _genai_sum(cfg, func, series.of(source), window, group, *matchers)
        if label_source:
            expr = f'label_replace(\n{_indent(expr)},\n  "source", "{source}", "", ""\n)'
        return expr

    on = f"on ({GENAI_KEY})"
    chosen = (f"(\n{_indent(part(first))}\n  and {on}\n{_indent(live)}\n)\n"
              f"or {on}\n"
              f"(\n{_indent(part(second))}\n  unless {on}\n{_indent(live)}\n)\n"
              f"or {on}\n"
              f"{part(first)}")
    if by is None:
        return chosen + "\n"
    out_by = by + (f", {extra}" if extra else "")
    return f"sum by ({out_by}) (\n{_indent(chosen)}\n)\n"


def _genai_over_time(cfg: Config, series: GenAiSeries, window: str, extra: str = "",
                     matchers: tuple[str, ...] = (), by: str | None = "job, model") -> str:
    """What ``series`` (a counter) grew by over ``window`` (an hour, a day), each (job,
    service, model) counted from the source chosen for each 5-minute step in it, not for the
    whole window: a service that turns its metric points on or off mid-window is counted
    from its spans up to the switch and from its points after it (at most one step from the
    other source), instead of losing the part before or after for up to a day.

    The steps fall on multiples of 5 minutes: the completed ones of the window, plus the
    current one so far (its chosen rate times the seconds since it began), scaled to the
    window's length."""
    seconds = _SECONDS[window]
    steps = _genai_choose(cfg, series, "increase", _GENAI_STEP, extra, matchers, by=None)
    current = _genai_choose(cfg, series, "rate", _GENAI_STEP, extra, matchers, by=None)
    # a second short of the window, so that it holds as many steps as the window has
    # (Prometheus 2 takes both ends of a range)
    done = (f"sum_over_time(\n  (\n{_indent(steps, '    ')}\n  )"
            f"[{seconds - 1}s:{_GENAI_STEP}]\n)")
    elapsed = f"(time() % {_SECONDS[_GENAI_STEP]})"
    now = f"(\n{_indent(current)}\n) * {elapsed}"
    per_service = (f"(\n{_indent(done)}\n  +\n{_indent(now)}\n  or\n{_indent(done)}\n"
                   f"  or\n{_indent(now)}\n)\n* {seconds} / ({seconds} + {elapsed})")
    if by is None:
        return per_service + "\n"
    out_by = by + (f", {extra}" if extra else "")
    return f"sum by ({out_by}) (\n{_indent(per_service)}\n)\n"


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
    results = "gen_ai_evaluation_results_total"
    rules.append(_rule(Names.evaluation_pass, _share(
        f"rate({results}{sel(cfg, PASSED)}[5m])",
        f"rate({results}{sel(cfg)}[5m])", "job, gen_ai_evaluation_name")))
    return rules


def genai_rules(cfg: Config) -> list[dict[str, Any]]:
    """GenAI operations, errors, latency, tokens and streaming detail, each (job, service,
    model) counted from one source (see :func:`_genai_choose`)."""
    d = GENAI.duration
    rules = [
        _rule(Names.genai_source_ops, _genai_choose(cfg, suffix(d, "_count"), "rate", "5m",
                                                    by=None, label_source=True)),
        _rule(Names.genai_ops, f"sum by (job, model) ({Names.genai_source_ops})\n"),
        _rule(Names.genai_errors, _genai_choose(cfg, suffix(d, "_count"), "rate", "5m",
                                                matchers=(HAS_ERROR,))),
        _rule(Names.genai_error_ratio,
              f"(\n  {Names.genai_errors}\n  or\n  0 * {Names.genai_ops}\n)\n"
              f"/\n{Names.genai_ops}\n"),
        _rule(Names.genai_buckets, _genai_choose(cfg, suffix(d, "_bucket"), "rate", "5m", "le")),
    ]
    for q, v in QUANTILES.items():
        rules.append(_rule(Names.genai_duration(q),
                           f"histogram_quantile({v}, {Names.genai_buckets})\n"))
    rules.append(_rule(Names.genai_tokens, _genai_choose(
        cfg, suffix(GENAI.tokens, "_sum"), "rate", "5m", "gen_ai_token_type")))
    for name, series in ((Names.genai_ttft_buckets, GENAI.ttft),
                         (Names.genai_first_chunk_buckets, GENAI.first_chunk),
                         (Names.genai_tpot_buckets, GENAI.tpot)):
        # a latency distribution: the source that has one, whatever counts the operations
        rules.append(_rule(name, _genai_choose(cfg, suffix(series, "_bucket"), "rate", "5m",
                                               "le", gate=series)))
    reasons = "gen_ai_span_finish_reasons_total"
    rules.append(_rule(Names.genai_finish_reasons, _model_share(
        cfg, reasons, "gen_ai_response_finish_reason")))
    return rules


def genai_cost_rules(cfg: Config) -> list[dict[str, Any]]:
    """What GenAI usage cost per hour and day, by model, token type and feature, and per
    successful operation; each (job, service, model) from one source."""
    cost = GENAI.cost
    d = GENAI.duration
    key = GENAI_KEY
    service_cost = f"sum by ({key}) ({Names.genai_cost_service_1h})"
    span_by_feature = _genai_sum(cfg, "increase", cost.span, "1h", f"{key}, app_feature")
    span_total = _genai_sum(cfg, "increase", cost.span, "1h", key)
    return [
        _rule(Names.genai_cost_service_1h, _genai_over_time(cfg, cost, "1h",
                                                            "gen_ai_token_type", by=None)),
        _rule(Names.genai_cost_type_1h,
              f"sum by (job, model, gen_ai_token_type) ({Names.genai_cost_service_1h})\n"),
        _rule(Names.genai_cost_1h, f"sum by (job, model) ({Names.genai_cost_service_1h})\n"),
        # Metric points carry no app.feature: a service's cost of a model is split over
        # features by the share each has of that service's span cost of the model (sampled
        # spans keep the shares), and is "unknown" where it has no span cost.
        _rule(Names.genai_cost_feature_1h,
              f"sum by (job, model, app_feature) (\n"
              f"  {service_cost}\n  * on ({key}) group_right ()\n  (\n"
              f"{_indent(span_by_feature, '    ')}\n    / on ({key}) group_left ()\n"
              f"    (\n{_indent(span_total, '      ')}\n      > 0\n    )\n  )\n"
              f"  or on ({key})\n"
              f'  label_replace({service_cost}, "app_feature", "unknown", "", "")\n)\n'),
        _rule(Names.genai_cost_model_1d, _genai_over_time(cfg, cost, "1d")),
        _rule(Names.genai_cost_1d, f"sum by (job) ({Names.genai_cost_model_1d})\n"),
        _rule(Names.genai_successful_1h, _genai_over_time(cfg, suffix(d, "_count"), "1h",
                                                          matchers=('error_type=""',))),
        _rule(Names.genai_cost_per_success,
              f"{Names.genai_cost_1h}\n/\n({Names.genai_successful_1h} > 0)\n"),
    ]


def suffix(series: GenAiSeries, end: str) -> GenAiSeries:
    """The ``_count``, ``_sum`` or ``_bucket`` samples of a histogram pair."""
    return GenAiSeries(series.metric + end, series.span + end)


def _model_share(cfg: Config, counter: str, label: str) -> str:
    """Each ``label`` value's share of a span counter per model: each service's shares
    (which sampling keeps) weighted by its operations, so services sampled at different
    rates mix right."""
    key = GENAI_KEY
    part = _genai_sum(cfg, "rate", counter, "5m", f"{key}, {label}")
    whole = _genai_sum(cfg, "rate", counter, "5m", key)
    ops = f"sum by ({key}) ({Names.genai_source_ops})"
    share = (f"{part}\n/ on ({key}) group_left ()\n(\n{_indent(whole)}\n  > 0\n)")
    return (f"sum by (job, model, {label}) (\n  {ops}\n  * on ({key}) group_right ()\n"
            f"  (\n{_indent(share, '    ')}\n  )\n)\n"
            f"/ on (job, model) group_left ()\n"
            f"(\n  sum by (job, model) (\n    {ops}\n    and on ({key})\n"
            f"{_indent(whole, '    ')}\n  )\n  > 0\n)\n")


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


def web_rules(cfg: Config) -> list[dict[str, Any]]:
    """Visits, bounce rate, views per visit and visit duration (mean and median), per service,
    from the exact visit counters; replicas add up."""
    by = "job, service_name"
    rules = []
    for w in WEB_WINDOWS:
        closed = f"rate(app_sessions_closed_total{sel(cfg)}[{w}])"
        rules.append(_rule(Names.visits(w), f"sum by ({by}) ({closed})\n"))
        rules.append(_rule(Names.bounce_rate(w), _share(
            f"rate(app_sessions_bounced_total{sel(cfg)}[{w}])", closed, by)))
        for metric, name in (("app_session_page_views", Names.views_per_visit(w)),
                             ("app_session_duration_seconds", Names.visit_duration(w))):
            rules.append(_rule(name, f"sum by ({by}) (rate({metric}_sum{sel(cfg)}[{w}]))\n/\n"
                                     f"sum by ({by}) (rate({metric}_count{sel(cfg)}[{w}]))\n"))
        rules.append(_rule(Names.visit_duration(w, "p50"), (
            f"histogram_quantile(0.5, sum by ({by}, le) "
            f"(rate(app_session_duration_seconds_bucket{sel(cfg)}[{w}])))\n")))
    return rules


def build(cfg: Config = CONFIG) -> dict[str, Any]:
    """The recording rule file, as a document for YAML."""
    return {"groups": [
        {"name": "kpi-exporter.rules", "rules": exporter_rules(cfg)},
        {"name": "kpi-exporter-ai.rules", "rules": ai_rules(cfg)},
        {"name": "kpi-exporter-genai.rules", "rules": genai_rules(cfg)},
        {"name": "kpi-exporter-genai-cost.rules", "rules": genai_cost_rules(cfg)},
        {"name": "kpi-exporter-slo.rules", "rules": slo_rules(cfg)},
        {"name": "kpi-exporter-web.rules", "rules": web_rules(cfg)},
    ]}
