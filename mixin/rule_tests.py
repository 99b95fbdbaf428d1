"""promtool unit tests for the recording rules and alerts.

They are generated with the thresholds of mixin/config.py, so that editing a threshold keeps
them meaningful: each alert gets input past its threshold, where it must fire (with the exact
labels and annotations), and input on the safe side or not long enough, where it must stay
silent. promtool evaluates the real rule files; nothing here re-implements PromQL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from mixin import alerts as alert_rules
from mixin import layout, rules
from mixin.alerts import Alert, alerts
from mixin.config import CONFIG, Config
from mixin.rules import SLO_WINDOWS, Names, le_label
from mixin.templating import render

__all__ = ["alert_test_files", "recording_rule_test_files", "minutes"]

WEEK = 7 * 24 * 60
# Week-over-week tests need a week of input; sampled every 5 minutes (inside the 5-minute
# lookback) and evaluated every 15 to keep promtool quick.
WOW_STEP = 5
WOW_EVALUATION = 15
INSTANCE = "exporter-1:9464"


def minutes(duration: str) -> int:
    """A Prometheus duration of whole minutes ("90s" is refused) in minutes."""
    total = 0
    units = {"m": 1, "h": 60, "d": 1440, "w": WEEK}
    matched = "".join(f"{n}{u}" for n, u in re.findall(r"(\d+)([mhdw])", duration))
    if matched != duration or not matched:
        raise ValueError(f"duration {duration!r} in mixin/config.py: use whole minutes, hours, "
                         f"days or weeks (5m, 1h, 1d)")
    for n, u in re.findall(r"(\d+)([mhdw])", duration):
        total += int(n) * units[u]
    return total


def _num(v: float) -> str:
    return f"{v:.10g}"


class Values:
    """promtool's expanding notation for one series, built segment by segment."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.last: float | None = None

    def hold(self, value: float, samples: int) -> "Values":
        """``samples`` samples of a constant value (a gauge)."""
        self.parts.append(_num(value) if samples == 1 else f"{_num(value)}x{samples - 1}")
        self.last = value
        return self

    def ramp(self, step: float, samples: int) -> "Values":
        """``samples`` samples of a counter growing by ``step`` per sample, continuing from
        the previous segment (from 0 for the first)."""
        start = 0.0 if self.last is None else self.last + step
        if step == 0:
            self.parts.append(f"{_num(start)}x{samples - 1}")
        else:
            self.parts.append(f"{_num(start)}+{_num(step)}x{samples - 1}")
        self.last = start + step * (samples - 1)
        return self

    def gap(self, samples: int) -> "Values":
        """``samples`` steps without a sample."""
        self.parts.append("_" if samples == 1 else f"_x{samples}")  # "_xN": N missing samples
        return self

    def __str__(self) -> str:
        return " ".join(self.parts)


def base_labels(cfg: Config) -> dict[str, str]:
    """The labels exporter_selector matches, for the test series."""
    return cfg.selector_labels()


def series(metric: str, labels: dict[str, str], values: Values) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": str(values)}


def _find(cfg: Config, name: str, rule_labels: dict[str, str]) -> Alert:
    found = [a for a in alerts(cfg) if a.name == name
             and all(a.labels.get(k) == v for k, v in rule_labels.items())]
    if len(found) != 1:
        raise LookupError(f"{len(found)} alert rules named {name} with labels {rule_labels}")
    return found[0]


def fired(cfg: Config, name: str, labels: dict[str, str], value: float,
          rule_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The exp_alerts entry of alert ``name`` firing for a series with ``labels`` whose
    expression value is ``value``."""
    a = _find(cfg, name, rule_labels or {})
    rule = a.rule(cfg)
    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {
            "summary": a.summary,
            "description": render(a.description, labels, value),
            "runbook_url": rule["annotations"]["runbook_url"],
        },
    }


@dataclass
class Case:
    """One promtool test group: input series and what to expect when."""

    name: str
    series: list[dict[str, str]]
    alerts: list[dict[str, Any]] = field(default_factory=list)
    exprs: list[dict[str, Any]] = field(default_factory=list)
    interval: str = "1m"

    def expect(self, at_min: int, alertname: str, *exp: dict[str, Any]) -> "Case":
        self.alerts.append({"eval_time": f"{at_min}m", "alertname": alertname,
                            "exp_alerts": list(exp)})
        return self

    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "interval": self.interval,
                             "input_series": self.series}
        if self.alerts:
            d["alert_rule_test"] = self.alerts
        if self.exprs:
            d["promql_expr_test"] = self.exprs
        return d


def above(threshold: float) -> float:
    """A ratio past a maximum (and at most 1)."""
    return threshold * 2 if threshold < 0.5 else (1 + threshold) / 2


def below(threshold: float) -> float:
    """A ratio safely under a maximum, or past a minimum."""
    return threshold / 2


def _ratio_cases(cfg: Config, alert: str, numerator: str, denominator: str,
                 extra: dict[str, str], threshold: float, for_: str) -> list[Case]:
    """An alert on numerator / denominator counters above ``threshold``."""
    b = base_labels(cfg)
    inst = {**b, "instance": INSTANCE}
    out_labels = {"job": b["job"], "signal": extra["signal"]}
    wait = minutes(for_) + 5
    cases = []
    for label, share in (("fires", above(threshold)), ("silent", below(threshold))):
        total = 400.0
        c = Case(f"{alert} {label} at {share:.4g}", [
            series(denominator, {**inst, "signal": extra["signal"]}, Values().ramp(total, wait + 10)),
            series(numerator, {**inst, **extra}, Values().ramp(total * share, wait + 10)),
        ])
        if label == "fires":
            c.expect(wait, alert, fired(cfg, alert, out_labels, share))
            c.expect(minutes(for_) - 1, alert)  # pending, not firing yet
        else:
            c.expect(wait, alert)
        cases.append(c)
    return cases


def exporter_cases(cfg: Config) -> list[Case]:
    """The exporter's own alerts."""
    p = cfg.alert_prefix
    b = base_labels(cfg)
    inst = {**b, "instance": INSTANCE}
    by_instance = {"job": b["job"], "instance": INSTANCE}
    received = "kpi_exporter_records_received_total"
    down_for = minutes(cfg.exporter_down_for)
    no_records = minutes(cfg.no_records_for)
    cases = [
        Case(f"{p}ExporterDown fires after {cfg.exporter_down_for} of failed scrapes", [
            series("up", inst, Values().hold(1, 6).hold(0, down_for + 10)),
        ]).expect(6 + down_for - 1, f"{p}ExporterDown")
          .expect(6 + down_for + 1, f"{p}ExporterDown", fired(cfg, f"{p}ExporterDown", inst, 0)),
        Case(f"{p}ExporterDown stays silent while scrapes succeed", [
            series("up", inst, Values().hold(1, down_for + 20)),
        ]).expect(down_for + 10, f"{p}ExporterDown"),
        Case(f"{p}ExporterNoRecords fires when the records stop", [
            series("up", inst, Values().hold(1, no_records + 40)),
            series(received, {**inst, "signal": "log"},
                   Values().ramp(10, 11).ramp(0, no_records + 30)),
        ]).expect(15 + no_records + 2, f"{p}ExporterNoRecords",
                  fired(cfg, f"{p}ExporterNoRecords", by_instance, 0)),
        Case(f"{p}ExporterNoRecords fires when nothing was ever received", [
            series("up", inst, Values().hold(1, no_records + 20)),
        ]).expect(no_records + 5, f"{p}ExporterNoRecords",
                  fired(cfg, f"{p}ExporterNoRecords", inst, 1)),
        Case(f"{p}ExporterNoRecords stays silent while records arrive", [
            series("up", inst, Values().hold(1, no_records + 40)),
            series(received, {**inst, "signal": "log"}, Values().ramp(10, no_records + 40)),
        ]).expect(no_records + 30, f"{p}ExporterNoRecords"),
    ]
    cases += _ratio_cases(cfg, f"{p}ExporterRecordsRejected", "kpi_exporter_records_rejected_total",
                          received, {"signal": "log", "reason": "non_numeric_value"},
                          cfg.rejected_ratio_max, cfg.rejected_for)
    cases += _ratio_cases(cfg, f"{p}ExporterRecordsUnmatched",
                          "kpi_exporter_records_unmatched_total", received, {"signal": "span"},
                          cfg.unmatched_ratio_max, cfg.unmatched_for)
    overflow_for = minutes(cfg.overflow_for)
    metric = {**inst, "metric": "app_page_views_total"}
    overflow = "kpi_exporter_metric_overflow_updates_total"
    cases += [
        Case(f"{p}ExporterSeriesOverflow fires while updates overflow", [
            series(overflow, metric, Values().ramp(60, overflow_for + 20)),
        ]).expect(overflow_for + 5, f"{p}ExporterSeriesOverflow",
                  fired(cfg, f"{p}ExporterSeriesOverflow",
                        {"job": b["job"], "instance": INSTANCE,
                         "metric": "app_page_views_total"}, 1.0)),
        Case(f"{p}ExporterSeriesOverflow stays silent without overflow updates", [
            series(overflow, metric, Values().hold(0, overflow_for + 20)),
        ]).expect(overflow_for + 5, f"{p}ExporterSeriesOverflow"),
    ]
    saves_for = minutes(cfg.state_save_failing_for)
    saves = "kpi_exporter_state_saves_total"
    cases += [
        Case(f"{p}ExporterStateSavesFailing fires while saves fail", [
            series(saves, {**inst, "outcome": "success"}, Values().ramp(1, saves_for + 30)),
            series(saves, {**inst, "outcome": "failure"}, Values().ramp(1, saves_for + 30)),
        ]).expect(saves_for + 5, f"{p}ExporterStateSavesFailing",
                  fired(cfg, f"{p}ExporterStateSavesFailing", by_instance, 15)),
        Case(f"{p}ExporterStateSavesFailing stays silent while saves succeed", [
            series(saves, {**inst, "outcome": "success"}, Values().ramp(1, saves_for + 30)),
        ]).expect(saves_for + 5, f"{p}ExporterStateSavesFailing"),
    ]
    cases += _zero_for_cases(cfg, f"{p}ExporterWindowStoreDown", "kpi_exporter_window_store_up",
                             cfg.window_store_down_for, inst, "without the store",
                             "through a short outage and while the store answers")
    cases += _zero_for_cases(cfg, f"{p}ExporterSessionStoreDown", "kpi_exporter_session_store_up",
                             cfg.window_store_down_for, inst, "without the visit store",
                             "through a short outage and while the visit store answers")
    cases += _zero_for_cases(cfg, f"{p}ExporterWebConfigReloadFailed",
                             "kpi_exporter_web_config_last_reload_successful",
                             cfg.web_config_failing_for, inst, "of refused loads",
                             "when the file is fixed in time")
    return cases


def _zero_for_cases(cfg: Config, alert: str, gauge: str, for_: str, labels: dict[str, str],
                    firing: str, silent: str) -> list[Case]:
    """An alert on a 0/1 gauge at 0 for ``for_``: it fires after that long at 0, and stays
    silent when the gauge is back at 1 a little earlier."""
    n = minutes(for_)
    return [
        Case(f"{alert} fires after {for_} {firing}", [
            series(gauge, labels, Values().hold(1, 6).hold(0, n + 10)),
        ]).expect(6 + n - 1, alert)
          .expect(6 + n + 1, alert, fired(cfg, alert, labels, 0)),
        Case(f"{alert} stays silent {silent}", [
            series(gauge, labels, Values().hold(1, 6).hold(0, n - 1).hold(1, n + 10)),
        ]).expect(6 + n - 1, alert)
          .expect(6 + 2 * n, alert),
    ]


def ai_cases(cfg: Config) -> list[Case]:
    """Model error rate, GenAI error ratio, accuracy and the latency burn rates."""
    p = cfg.alert_prefix
    b = base_labels(cfg)
    inst = {**b, "instance": INSTANCE}
    model = {"job": b["job"], "model": "m-1"}
    cases = []
    wait = minutes(cfg.ai_error_rate_for) + 5
    for label, v in (("fires", above(cfg.ai_error_rate_max)),
                     ("silent", below(cfg.ai_error_rate_max))):
        c = Case(f"{p}AiModelErrorRateHigh {label} at {v:.4g}", [
            series("ai_model_error_rate_ratio", {**inst, "model": "m-1"}, Values().hold(v, wait + 10)),
        ])
        if label == "fires":
            c.expect(wait, f"{p}AiModelErrorRateHigh",
                     fired(cfg, f"{p}AiModelErrorRateHigh", model, v))
        else:
            c.expect(wait, f"{p}AiModelErrorRateHigh")
        cases.append(c)
    duration = "gen_ai_client_operation_duration_seconds_count"
    span = {**inst, "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
            "gen_ai_request_model": "m-1"}
    for label, share in (("fires", above(cfg.ai_error_rate_max)),
                         ("silent", below(cfg.ai_error_rate_max))):
        c = Case(f"{p}GenAiErrorRateHigh {label} at {share:.4g}", [
            series(duration, span, Values().ramp(40 * (1 - share), wait + 10)),
            series(duration, {**span, "error_type": "timeout"}, Values().ramp(40 * share, wait + 10)),
        ])
        if label == "fires":
            c.expect(wait, f"{p}GenAiErrorRateHigh", fired(cfg, f"{p}GenAiErrorRateHigh", model, share))
        else:
            c.expect(wait, f"{p}GenAiErrorRateHigh")
        cases.append(c)
    wait = minutes(cfg.ai_accuracy_for) + 5
    for label, v in (("fires", below(cfg.ai_accuracy_min)), ("silent", (1 + cfg.ai_accuracy_min) / 2)):
        c = Case(f"{p}AiAccuracyLow {label} at {v:.4g}", [
            series("ai_model_accuracy_ratio", {**inst, "model": "m-1"}, Values().hold(v, wait + 10)),
        ])
        if label == "fires":
            c.expect(wait, f"{p}AiAccuracyLow", fired(cfg, f"{p}AiAccuracyLow", model, v))
        else:
            c.expect(wait, f"{p}AiAccuracyLow")
        cases.append(c)
    return cases + slo_cases(cfg) + budget_cases(cfg)


def _genai_labels(service: str, model: str, **extra: str) -> dict[str, str]:
    return {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
            "gen_ai_request_model": model, "service_name": service, **extra}


def _cost_labels(service: str, model: str, token_type: str = "input",
                 feature: str = "unknown") -> dict[str, str]:
    return {"gen_ai_provider_name": "openai", "gen_ai_request_model": model,
            "gen_ai_token_type": token_type, "app_feature": feature, "service_name": service}


def budget_cases(cfg: Config) -> list[Case]:
    """The daily GenAI budget: spend above it fires, below it stays silent. The spend is
    counted from the preferred source of a service that sends both (the other one reports a
    tenth of it, like sampled spans, and must not add up)."""
    p = cfg.alert_prefix
    name = f"{p}GenAiDailyCostOverBudget"
    b = base_labels(cfg)
    inst = {**b, "instance": INSTANCE}
    budget = cfg.genai_daily_budget_usd
    wait = minutes(cfg.genai_budget_for)
    first, second = rules.GENAI.cost.of(cfg.genai_preferred_source), rules.GENAI.cost.of(
        "spans" if cfg.genai_preferred_source == "metrics" else "metrics")
    count = rules.GENAI.duration.of(cfg.genai_preferred_source) + "_count"
    ramp_for = 50  # minutes until the spend crosses the threshold, in the firing case
    at = ramp_for + wait + 10
    cases = []
    for label, step in (("fires", budget / ramp_for), ("silent", budget / (2 * at))):
        c = Case(f"{name} {label} at {step * at:.4g} USD in {at} minutes", [
            series(count, {**inst, **_genai_labels("chat-app", "m-1")},
                   Values().ramp(10, at + 10)),
            series(first, {**inst, **_cost_labels("chat-app", "m-1")},
                   Values().ramp(step, at + 10)),
            series(second, {**inst, **_cost_labels("chat-app", "m-1")},
                   Values().ramp(step / 10, at + 10)),
        ])
        if label == "fires":
            c.expect(ramp_for + wait - 5, name)  # over budget, but pending
            c.expect(at, name, fired(cfg, name, {"job": b["job"]}, step * at))
        else:
            c.expect(at, name)
        cases.append(c)
    return cases


def slo_cases(cfg: Config) -> list[Case]:
    """Each burn-rate window pair fires at its own error share and not below it; a short
    spike alone pages nobody."""
    p = cfg.alert_prefix
    name = f"{p}AiLatencyErrorBudgetBurn"
    b = base_labels(cfg)
    slo = cfg.latency_slo
    budget = 1 - slo.objective
    if 14.4 * budget >= 1:
        raise ValueError("mixin/config.py: latency_slo.objective must be above 0.93; below it "
                         "the 14.4x burn rate cannot be reached")
    inst = {**b, "instance": INSTANCE, "model": "m-1"}
    model = {"job": b["job"], "model": "m-1"}
    good = f"{slo.metric}_bucket"
    good_labels = {**inst, "le": le_label(slo.threshold_seconds)}
    count = f"{slo.metric}_count"
    per_min = 1000.0

    def steady(error_share: float, samples: int) -> list[dict[str, str]]:
        return [series(good, good_labels, Values().ramp(per_min * (1 - error_share), samples)),
                series(count, inst, Values().ramp(per_min, samples))]

    def burn(long: str, share: float) -> dict[str, Any]:
        return fired(cfg, name, model, share, {"long": long})

    fast = min(1.0, 2 * 14.4 * budget)
    day = 4.5 * budget
    three_days = 2 * budget
    # an hour at the fast share, then ten minutes clean: the share over all 70 minutes
    recovered = 1 - (per_min * (1 - fast) * 60 + per_min * 10) / (per_min * 70)
    return [
        Case(f"{name} pages at {fast:.4g} slow observations", steady(fast, 40))
        .expect(10, name, burn("1h", fast))
        .expect(20, name, burn("1h", fast), burn("6h", fast)),
        Case(f"{name} opens a ticket at {day:.4g} slow observations (1d/2h)", steady(day, 100))
        .expect(50, name)
        .expect(90, name, burn("1d", day)),
        Case(f"{name} opens a ticket at {three_days:.4g} slow observations (3d/6h)",
             steady(three_days, 210))
        .expect(90, name)
        .expect(200, name, burn("3d", three_days)),
        Case(f"{name} stops paging once the short window recovers", [
            series(good, good_labels, Values().ramp(per_min * (1 - fast), 61).ramp(per_min, 15)),
            series(count, inst, Values().ramp(per_min, 76)),
        ]).expect(70, name, burn("6h", recovered), burn("1d", recovered)),
        Case(f"{name} stays silent within budget", steady(budget / 2, 210))
        .expect(200, name),
        Case(f"{name} stays silent for a short spike", [
            series(good, good_labels, Values().ramp(per_min, 121).ramp(0, 10)),
            series(count, inst, Values().ramp(per_min, 131)),
        ]).expect(124, name),
    ]


def week_over_week_cases(cfg: Config) -> list[Case]:
    """Accuracy, acceptance, daily active users and conversion rate against last week: one
    group where all four drop, one where they hold, one without last week's data. The input
    runs a week and two and a half hours at 5-minute steps; WOW_EVALUATION apart."""
    p = cfg.alert_prefix
    b = base_labels(cfg)
    inst = {**b, "instance": INSTANCE}
    model = {"job": b["job"], "model": "m-1"}
    week = WEEK // WOW_STEP
    after = 30

    def at(m: int) -> int:
        # promtool checks alerts at evaluation steps
        return m // WOW_EVALUATION * WOW_EVALUATION

    drops, holds, fresh = (
        Case(f"Week over week: accuracy, acceptance, DAU and conversion rate {kind}", [],
             interval=f"{WOW_STEP}m")
        for kind in ("drop", "hold", "start this week"))

    def gauge(alert: str, metric: str, labels: dict[str, str], out: dict[str, str],
              before: float, drop: float, for_: str) -> None:
        now = before * (1 - drop) * 0.9
        drops.series.append(series(metric, labels, Values().hold(before, week).hold(now, after)))
        holds.series.append(series(metric, labels, Values().hold(before, week + after)))
        fresh.series.append(series(metric, labels, Values().gap(week).hold(now, after)))
        when = at(WEEK + minutes(for_) + 30)
        drops.expect(at(WEEK + minutes(for_) - 10), alert)
        drops.expect(when, alert, fired(cfg, alert, out, now))
        holds.expect(when, alert)
        fresh.expect(when, alert)

    gauge(f"{p}AiAccuracyDropping", "ai_model_accuracy_ratio", {**inst, "model": "m-1"},
          model, 0.95, cfg.ai_accuracy_drop, cfg.ai_drop_for)
    gauge(f"{p}DailyActiveUsersDropping", "app_active_users", {**inst, "window": "1d"},
          {"job": b["job"]}, 1000, cfg.dau_drop, cfg.business_drop_for)
    gauge(f"{p}ConversionRateDropping", "app_conversion_rate_ratio", {**inst, "window": "1d"},
          {"job": b["job"]}, 0.05, cfg.conversion_drop, cfg.business_drop_for)

    alert = f"{p}AiAcceptanceRateDropping"
    responses = "ai_recommendation_responses_total"
    before = 0.75
    now = before * (1 - cfg.ai_acceptance_drop) * 0.5
    n = 100.0
    accepted = {**inst, "model": "m-1", "outcome": "accepted"}
    rejected = {**inst, "model": "m-1", "outcome": "rejected"}
    drops.series += [
        series(responses, accepted, Values().ramp(n * before, week).ramp(n * now, after)),
        series(responses, rejected, Values().ramp(n * (1 - before), week).ramp(n * (1 - now), after)),
    ]
    holds.series += [
        series(responses, accepted, Values().ramp(n * before, week + after)),
        series(responses, rejected, Values().ramp(n * (1 - before), week + after)),
    ]
    fresh.series += [
        series(responses, accepted, Values().gap(week).ramp(n * now, after)),
        series(responses, rejected, Values().gap(week).ramp(n * (1 - now), after)),
    ]
    # the 1h acceptance window must first fill with this week's lower share
    when = at(WEEK + minutes(cfg.ai_drop_for) + 60)
    drops.expect(at(WEEK + 30), alert)
    drops.expect(when, alert, fired(cfg, alert, model, now))
    holds.expect(when, alert)
    fresh.expect(when, alert)
    return [drops, holds, fresh]


def product_cases(cfg: Config) -> list[Case]:
    """A service that stopped sending events."""
    p = cfg.alert_prefix
    alert = f"{p}ServiceStoppedSending"
    b = base_labels(cfg)
    labels = {**b, "instance": INSTANCE, "event": "app.page_view", "service_name": "checkout"}
    quiet = minutes(cfg.service_quiet_for)
    silent_for = minutes(cfg.service_silent_for)
    sending = 60
    at = sending + quiet + silent_for + 5
    return [
        Case(f"{alert} fires when a service goes quiet", [
            series("app_events_total", labels, Values().ramp(10, sending + 1).ramp(0, at)),
        ]).expect(sending + quiet - 5, alert)
          .expect(at, alert, fired(cfg, alert, {"job": b["job"], "service_name": "checkout"},
                                   10 * sending)),
        Case(f"{alert} stays silent while the service sends", [
            series("app_events_total", labels, Values().ramp(10, at + 10)),
        ]).expect(at, alert),
    ]


def _file(cfg: Config, rule_files: list[str], cases: list[Case],
          evaluation_interval: str) -> dict[str, Any]:
    # promtool evaluates groups in random order unless told; recording groups first lets the
    # alerts see the values recorded at the same step, as they would a moment later in
    # Prometheus.
    order = [g["name"] for g in rules.build(cfg)["groups"]]
    if any(f.endswith(os.path.basename(layout.ALERT_RULES)) for f in rule_files):
        order += [g["name"] for g in alert_rules.build(cfg)["groups"]]
    return {"rule_files": rule_files, "evaluation_interval": evaluation_interval,
            "group_eval_order": order, "tests": [c.doc() for c in cases]}


def alert_test_files(cfg: Config = CONFIG) -> dict[str, dict[str, Any]]:
    """promtool test files for the alerts, by path."""
    here = layout.ALERT_TESTS_DIR
    rule_files = [os.path.relpath(layout.RECORDING_RULES, here),
                  os.path.relpath(layout.ALERT_RULES, here)]
    return {
        f"{here}/exporter-alerts.test.yml": _file(cfg, rule_files, exporter_cases(cfg), "1m"),
        f"{here}/ai-alerts.test.yml": _file(cfg, rule_files, ai_cases(cfg), "1m"),
        f"{here}/product-alerts.test.yml": _file(cfg, rule_files, product_cases(cfg), "1m"),
        f"{here}/week-over-week-alerts.test.yml": _file(
            cfg, rule_files, week_over_week_cases(cfg), f"{WOW_EVALUATION}m"),
    }


# ---- recording rules ------------------------------------------------------------------------

def _approx(expr: str) -> str:
    # promtool compares floats exactly; rounding to 4 decimals states the value the rule
    # must compute without depending on the last bit of a division.
    return f"round(({expr}) * 10000) / 10000"


def _sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"labels": f"{{{body}}}", "value": value}


def recording_rule_cases(cfg: Config) -> list[Case]:
    """Every recording rule against input with a known answer."""
    b = base_labels(cfg)
    a = {**b, "instance": "exporter-1:9464"}
    a2 = {**b, "instance": "exporter-2:9464"}
    job = {"job": b["job"]}
    n = 30

    def expr(rule: str, *samples: dict[str, Any], at: int = 10) -> dict[str, Any]:
        return {"expr": _approx(rule), "eval_time": f"{at}m", "exp_samples": list(samples)}

    def m(model: str) -> dict[str, str]:
        return {**job, "model": model}

    responses = "ai_recommendation_responses_total"
    ai = Case("AI derived KPIs", [
        # acceptance: m-1 accepts 3 of 4 (two replicas), m-2 never accepts
        series(responses, {**a, "model": "m-1", "outcome": "accepted"}, Values().ramp(2, n)),
        series(responses, {**a2, "model": "m-1", "outcome": "accepted"}, Values().ramp(1, n)),
        series(responses, {**a, "model": "m-1", "outcome": "rejected"}, Values().ramp(1, n)),
        series(responses, {**a, "model": "m-2", "outcome": "rejected"}, Values().ramp(2, n)),
        # reported error rate and accuracy, averaged over replicas
        series("ai_model_error_rate_ratio", {**a, "model": "m-1"}, Values().hold(0.02, n)),
        series("ai_model_error_rate_ratio", {**a2, "model": "m-1"}, Values().hold(0.04, n)),
        series("ai_model_accuracy_ratio", {**a, "model": "m-1"}, Values().hold(0.9, n)),
        series("ai_model_accuracy_ratio", {**a2, "model": "m-1"}, Values().hold(0.8, n)),
        # every latency observation between 0.25s and 0.5s, split over two replicas
        *[series("ai_model_latency_seconds_bucket", {**inst, "model": "m-1", "le": le},
                 Values().ramp(0 if le in ("0.1", "0.25") else 50, n))
          for inst in (a, a2) for le in ("0.1", "0.25", "0.5", "1.0", "+Inf")],
        *[series("ai_model_latency_seconds_count", {**inst, "model": "m-1"}, Values().ramp(50, n))
          for inst in (a, a2)],
        # GenAI spans: every operation between 0.32s and 0.64s; 1 in 10 a timeout
        *[series("gen_ai_client_operation_duration_seconds_bucket",
                 {**a, "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
                  "gen_ai_request_model": "m-1", "le": le},
                 Values().ramp(0 if le in ("0.16", "0.32") else 90, n))
          for le in ("0.16", "0.32", "0.64", "+Inf")],
        series("gen_ai_client_operation_duration_seconds_count",
               {**a, "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
                "gen_ai_request_model": "m-1"}, Values().ramp(90, n)),
        series("gen_ai_client_operation_duration_seconds_count",
               {**a, "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
                "gen_ai_request_model": "m-1", "error_type": "timeout"}, Values().ramp(10, n)),
        series("gen_ai_client_operation_duration_seconds_count",
               {**a, "gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
                "gen_ai_request_model": "m-2"}, Values().ramp(5, n)),
        # evaluations: relevance passes 3 of 4, toxicity never passes
        series("gen_ai_evaluation_results_total",
               {**a, "gen_ai_evaluation_name": "relevance", "gen_ai_evaluation_score_label": "pass"},
               Values().ramp(3, n)),
        series("gen_ai_evaluation_results_total",
               {**a, "gen_ai_evaluation_name": "relevance", "gen_ai_evaluation_score_label": "fail"},
               Values().ramp(1, n)),
        series("gen_ai_evaluation_results_total",
               {**a, "gen_ai_evaluation_name": "toxicity", "gen_ai_evaluation_score_label": "fail"},
               Values().ramp(1, n)),
    ])
    ai.exprs = [
        expr(Names.acceptance_5m, _sample(m("m-1"), 0.75), _sample(m("m-2"), 0)),
        expr(Names.acceptance_1h, _sample(m("m-1"), 0.75), _sample(m("m-2"), 0)),
        expr(Names.error_rate, _sample(m("m-1"), 0.03)),
        expr(Names.accuracy, _sample(m("m-1"), 0.85)),
        expr(Names.latency_buckets, *[_sample({**m("m-1"), "le": le}, v) for le, v in (
            ("0.1", 0), ("0.25", 0), ("0.5", 100 / 60), ("1.0", 100 / 60), ("+Inf", 100 / 60))]),
        expr(Names.latency("p50"), _sample(m("m-1"), 0.375)),
        expr(Names.latency("p95"), _sample(m("m-1"), 0.4875)),
        expr(Names.latency("p99"), _sample(m("m-1"), 0.4975)),
        expr(Names.genai_buckets, *[_sample({**m("m-1"), "le": le}, round(v, 4)) for le, v in (
            ("0.16", 0), ("0.32", 0), ("0.64", 90 / 60), ("+Inf", 90 / 60))]),
        expr(Names.genai_duration("p50"), _sample(m("m-1"), 0.48)),
        expr(Names.genai_duration("p95"), _sample(m("m-1"), 0.624)),
        expr(Names.genai_duration("p99"), _sample(m("m-1"), 0.6368)),
        expr(Names.genai_ops, _sample(m("m-1"), round(100 / 60, 4)),
             _sample(m("m-2"), round(5 / 60, 4))),
        expr(Names.genai_errors, _sample(m("m-1"), round(10 / 60, 4))),
        expr(Names.genai_error_ratio, _sample(m("m-1"), 0.1), _sample(m("m-2"), 0)),
        expr(Names.evaluation_pass,
             _sample({**job, "gen_ai_evaluation_name": "relevance"}, 0.75),
             _sample({**job, "gen_ai_evaluation_name": "toxicity"}, 0)),
    ]
    for e in ai.exprs:
        for s in e["exp_samples"]:
            s["value"] = round(s["value"], 4)

    slo = cfg.latency_slo
    slo_case = Case("Latency SLO error ratios: 1 in 4 observations over the threshold", [
        series(f"{slo.metric}_bucket", {**a, "model": "m-1", "le": le_label(slo.threshold_seconds)},
               Values().ramp(75, n)),
        series(f"{slo.metric}_count", {**a, "model": "m-1"}, Values().ramp(100, n)),
    ])
    slo_case.exprs = [expr(Names.slo_errors(w), _sample(m("m-1"), 0.25)) for w in SLO_WINDOWS]

    p = "kpi_exporter_records_"
    exporter = Case("Exporter records: received, rejected and unmatched shares per signal", [
        series(f"{p}received_total", {**a, "signal": "log"}, Values().ramp(300, n)),
        series(f"{p}received_total", {**a2, "signal": "log"}, Values().ramp(100, n)),
        series(f"{p}rejected_total", {**a, "signal": "log", "reason": "non_numeric_value"},
               Values().ramp(8, n)),
        series(f"{p}rejected_total", {**a, "signal": "log", "reason": "non_finite_value"},
               Values().ramp(12, n)),
        series(f"{p}unmatched_total", {**a2, "signal": "log"}, Values().ramp(40, n)),
    ])
    exporter.exprs = [
        expr(Names.received, _sample({**job, "signal": "log"}, round(400 / 60, 4))),
        expr(Names.rejected_ratio, _sample({**job, "signal": "log"}, 0.05)),
        expr(Names.unmatched_ratio, _sample({**job, "signal": "log"}, 0.1)),
    ]
    # visits of one service over two replicas, sampled every 10 minutes for 26 hours (the
    # 1d windows fill): 100 visits close per sample, 40 of them bounces; 250 page views (2.5
    # per visit); every visit lasts between 60s and 120s, 3000s in all (30s on average)
    w = {"service_name": "shop"}
    api = {"service_name": "api"}
    dur = "app_session_duration_seconds"
    samples = 160
    web = Case("Web analytics: visits, bounce rate, views per visit, visit duration", [
        series("app_sessions_closed_total", {**a, **w, "source": "Google"},
               Values().ramp(60, samples)),
        series("app_sessions_closed_total", {**a2, **w, "source": "Direct / None"},
               Values().ramp(40, samples)),
        series("app_sessions_bounced_total", {**a, **w, "source": "Google"},
               Values().ramp(40, samples)),
        series("app_session_page_views_sum", {**a, **w}, Values().ramp(150, samples)),
        series("app_session_page_views_sum", {**a2, **w}, Values().ramp(100, samples)),
        series("app_session_page_views_count", {**a, **w}, Values().ramp(60, samples)),
        series("app_session_page_views_count", {**a2, **w}, Values().ramp(40, samples)),
        series(f"{dur}_sum", {**a, **w}, Values().ramp(3000, samples)),
        series(f"{dur}_count", {**a, **w}, Values().ramp(100, samples)),
        *[series(f"{dur}_bucket", {**a, **w, "le": le},
                 Values().ramp(0 if le in ("0.0", "60.0") else 100, samples))
          for le in ("0.0", "60.0", "120.0", "+Inf")],
        # a service whose visits never bounce: its bounce rate is 0, not missing
        series("app_sessions_closed_total", {**a, **api}, Values().ramp(20, samples)),
    ], interval="10m")
    at = 25 * 60
    web.exprs = []
    for window in ("1h", "1d"):
        web.exprs += [
            expr(Names.visits(window), _sample({**job, **w}, round(100 / 600, 4)),
                 _sample({**job, **api}, round(20 / 600, 4)), at=at),
            expr(Names.bounce_rate(window), _sample({**job, **w}, 0.4),
                 _sample({**job, **api}, 0), at=at),
            expr(Names.views_per_visit(window), _sample({**job, **w}, 2.5), at=at),
            expr(Names.visit_duration(window), _sample({**job, **w}, 30), at=at),
            expr(Names.visit_duration(window, "p50"), _sample({**job, **w}, 90), at=at),
        ]
    return [exporter, ai, slo_case, genai_case(cfg), genai_switch_case(cfg), web]


def genai_case(cfg: Config) -> Case:
    """Each GenAI call counted once: a service sending spans (sampled, a tenth of its calls)
    and metric points, a service sending only spans, one whose metric points stopped while
    its spans go on, and one that went quiet. 80 minutes of input, evaluated at 70 so the
    1-hour windows are full."""
    b = base_labels(cfg)
    a = {**b, "instance": "exporter-1:9464"}
    job = {"job": b["job"]}
    n, at = 80, 70
    metrics_first = cfg.genai_preferred_source == "metrics"
    g = rules.GENAI
    c = Case("GenAI: each call counted once per service and model", [])

    def add(metric: str, labels: dict[str, str], values: Values) -> None:
        c.series.append(series(metric, {**a, **labels}, values))

    def both(pair: rules.GenAiSeries, end: str, labels: dict[str, str], per_min: float) -> None:
        # chat-app: every call as metric points, a tenth of them as spans
        add(pair.metric + end, labels, Values().ramp(per_min, n))
        add(pair.span + end, labels, Values().ramp(per_min / 10, n))

    def op(service: str, model: str, error: str = "") -> dict[str, str]:
        return _genai_labels(service, model, error_type=error)

    # chat-app, m-1: 8 calls a minute succeed, 2 fail, all between 0.32s and 0.64s (its
    # sampled spans: between 0.64s and 1.28s, so a mix-up shows in the percentiles)
    both(g.duration, "_count", op("chat-app", "m-1"), 8)
    both(g.duration, "_count", op("chat-app", "m-1", "InternalServerError"), 2)
    for le, m_val, s_val in (("0.32", 0, 0), ("0.64", 10, 0), ("1.28", 10, 1), ("+Inf", 10, 1)):
        add(g.duration.metric + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(m_val, n))
        add(g.duration.span + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(s_val, n))
    both(g.tokens, "_sum", {**op("chat-app", "m-1"), "gen_ai_token_type": "input"}, 168)
    both(g.tokens, "_sum", {**op("chat-app", "m-1"), "gen_ai_token_type": "output"}, 56)
    add(g.cost.metric, _cost_labels("chat-app", "m-1", "input"), Values().ramp(0.42, n))
    add(g.cost.metric, _cost_labels("chat-app", "m-1", "output"), Values().ramp(0.56, n))
    # its spans: a third of the cost is search, two thirds chat; 3 in 4 stop, 1 in 4 length
    add(g.cost.span, _cost_labels("chat-app", "m-1", "input", "search"), Values().ramp(0.03, n))
    add(g.cost.span, _cost_labels("chat-app", "m-1", "input", "chat"), Values().ramp(0.06, n))
    reasons = "gen_ai_span_finish_reasons_total"
    for reason, per_min in (("stop", 0.6), ("length", 0.2)):
        add(reasons, _genai_labels("chat-app", "m-1", gen_ai_response_finish_reason=reason),
            Values().ramp(per_min, n))
    # streaming detail: chat-app's time to first token from both sources (its spans all
    # under 0.1s), its time to first chunk only on spans, its time per token only as points
    for le, m_val, s_val in (("0.1", 0, 1), ("0.25", 10, 1), ("+Inf", 10, 1)):
        add(g.ttft.metric + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(m_val, n))
        add(g.ttft.span + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(s_val, n))
    for histogram, per_min in ((g.ttft.metric, 10), (g.ttft.span, 1),
                               (g.first_chunk.span, 1), (g.tpot.metric, 10)):
        add(histogram + "_count", op("chat-app", "m-1"), Values().ramp(per_min, n))
    for le, v in (("0.16", 1), ("0.32", 1), ("+Inf", 1)):
        add(g.first_chunk.span + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(v, n))
    for le, v in (("0.05", 10), ("+Inf", 10)):
        add(g.tpot.metric + "_bucket", {**op("chat-app", "m-1"), "le": le},
            Values().ramp(v, n))
    # agent, m-1: spans only, 5 calls a minute, all stop, its first chunks at 0.16-0.32s
    add(g.duration.span + "_count", op("agent", "m-1"), Values().ramp(5, n))
    for le, v in (("0.32", 0), ("0.64", 5), ("1.28", 5), ("+Inf", 5)):
        add(g.duration.span + "_bucket", {**op("agent", "m-1"), "le": le}, Values().ramp(v, n))
    add(g.tokens.span + "_sum", {**op("agent", "m-1"), "gen_ai_token_type": "input"},
        Values().ramp(50, n))
    add(g.tokens.span + "_sum", {**op("agent", "m-1"), "gen_ai_token_type": "output"},
        Values().ramp(10, n))
    add(g.cost.span, _cost_labels("agent", "m-1", "input", "planner"), Values().ramp(0.3, n))
    add(reasons, _genai_labels("agent", "m-1", gen_ai_response_finish_reason="stop"),
        Values().ramp(5, n))
    for le, v in (("0.16", 0), ("0.32", 5), ("+Inf", 5)):
        add(g.first_chunk.span + "_bucket", {**op("agent", "m-1"), "le": le},
            Values().ramp(v, n))
    add(g.first_chunk.span + "_count", op("agent", "m-1"), Values().ramp(5, n))
    # legacy, m-2: its metric points stopped long ago (the series stay), its spans go on;
    # quiet, m-3: metric points only, and no calls
    add(g.duration.metric + "_count", op("legacy", "m-2"), Values().hold(100, n))
    add(g.cost.metric, _cost_labels("legacy", "m-2"), Values().hold(1, n))
    add(g.duration.span + "_count", op("legacy", "m-2"), Values().ramp(3, n))
    add(g.cost.span, _cost_labels("legacy", "m-2"), Values().ramp(0.09, n))
    add(g.duration.metric + "_count", op("quiet", "m-3"), Values().hold(50, n))

    # chat-app is counted from its metric points, or (spans preferred) from its sampled spans
    k = 1.0 if metrics_first else 0.1
    chat_cost = (0.42 + 0.56) if metrics_first else 0.09
    chat_ok, chat_err = 8 * k, 2 * k
    m1_ops = (chat_ok + chat_err + 5) / 60
    m1_cost_1h = chat_cost * 60 + 0.3 * 60

    def m(model: str, **extra: str) -> dict[str, str]:
        return {**job, "model": model, **extra}

    def expr(rule: str, *samples: dict[str, Any]) -> dict[str, Any]:
        return {"expr": _approx(rule), "eval_time": f"{at}m",
                "exp_samples": [dict(s, value=round(s["value"], 4)) for s in samples]}

    src = cfg.genai_preferred_source
    c.exprs = [
        expr(Names.genai_source_ops,
             _sample(m("m-1", service_name="chat-app", source=src), (chat_ok + chat_err) / 60),
             _sample(m("m-1", service_name="agent", source="spans"), 5 / 60),
             _sample(m("m-2", service_name="legacy", source="spans"), 3 / 60),
             _sample(m("m-3", service_name="quiet", source="metrics"), 0)),
        expr(f'{Names.genai_ops}{{model!="m-3"}}', _sample(m("m-1"), m1_ops),
             _sample(m("m-2"), 3 / 60)),
        expr(Names.genai_errors, _sample(m("m-1"), chat_err / 60)),
        expr(f'{Names.genai_error_ratio}{{model!="m-3"}}',
             _sample(m("m-1"), chat_err / 60 / m1_ops), _sample(m("m-2"), 0)),
        expr(f'{Names.genai_buckets}{{model="m-1"}}', *[
            _sample(m("m-1", le=le), v / 60) for le, v in zip(
                ("0.32", "0.64", "1.28", "+Inf"),
                (0, 15, 15, 15) if metrics_first else (0, 5, 6, 6))]),
        # the median call: the 7.5th of 15 in the 0.32-0.64s bucket, or the 3rd of 6
        expr(f'{Names.genai_duration("p50")}{{model="m-1"}}',
             _sample(m("m-1"), 0.32 + 0.32 * (7.5 / 15 if metrics_first else 3 / 5))),
        expr(Names.genai_ttft_buckets, *[
            _sample(m("m-1", le=le), v / 60) for le, v in zip(
                ("0.1", "0.25", "+Inf"), (0, 10, 10) if metrics_first else (1, 1, 1))]),
        # a distribution a source lacks comes from the other one, whatever counts the calls
        expr(Names.genai_first_chunk_buckets, *[
            _sample(m("m-1", le=le), v / 60) for le, v in zip(
                ("0.16", "0.32", "+Inf"), (1, 6, 6))]),
        expr(Names.genai_tpot_buckets, *[
            _sample(m("m-1", le=le), v / 60) for le, v in zip(("0.05", "+Inf"), (10, 10))]),
        expr(Names.genai_tokens,
             _sample(m("m-1", gen_ai_token_type="input"), (168 * k + 50) / 60),
             _sample(m("m-1", gen_ai_token_type="output"), (56 * k + 10) / 60)),
        expr(Names.genai_finish_reasons,
             _sample(m("m-1", gen_ai_response_finish_reason="stop"),
                     ((chat_ok + chat_err) * 0.75 + 5) / ((chat_ok + chat_err) + 5)),
             _sample(m("m-1", gen_ai_response_finish_reason="length"),
                     (chat_ok + chat_err) * 0.25 / ((chat_ok + chat_err) + 5))),
        expr(Names.genai_cost_service_1h, *(
            [_sample(m("m-1", service_name="chat-app", gen_ai_token_type="input"), 0.42 * 60),
             _sample(m("m-1", service_name="chat-app", gen_ai_token_type="output"), 0.56 * 60)]
            if metrics_first else
            [_sample(m("m-1", service_name="chat-app", gen_ai_token_type="input"), 0.09 * 60)]),
             _sample(m("m-1", service_name="agent", gen_ai_token_type="input"), 0.3 * 60),
             _sample(m("m-2", service_name="legacy", gen_ai_token_type="input"), 0.09 * 60)),
        expr(Names.genai_cost_type_1h, *(
            [_sample(m("m-1", gen_ai_token_type="input"), (0.42 + 0.3) * 60),
             _sample(m("m-1", gen_ai_token_type="output"), 0.56 * 60)] if metrics_first else
            [_sample(m("m-1", gen_ai_token_type="input"), (0.09 + 0.3) * 60)]),
             _sample(m("m-2", gen_ai_token_type="input"), 0.09 * 60)),
        expr(Names.genai_cost_1h, _sample(m("m-1"), m1_cost_1h), _sample(m("m-2"), 5.4)),
        expr(Names.genai_cost_feature_1h,
             _sample(m("m-1", app_feature="search"), chat_cost * 60 / 3),
             _sample(m("m-1", app_feature="chat"), chat_cost * 60 * 2 / 3),
             _sample(m("m-1", app_feature="planner"), 18),
             _sample(m("m-2", app_feature="unknown"), 5.4)),
        expr(Names.genai_cost_model_1d, _sample(m("m-1"), (chat_cost + 0.3) * at),
             _sample(m("m-2"), 0.09 * at)),
        expr(Names.genai_cost_1d, _sample(job, (chat_cost + 0.3 + 0.09) * at)),
        expr(f'{Names.genai_successful_1h}{{model!="m-3"}}',
             _sample(m("m-1"), (chat_ok + 5) * 60), _sample(m("m-2"), 3 * 60)),
        expr(Names.genai_cost_per_success,
             _sample(m("m-1"), m1_cost_1h / ((chat_ok + 5) * 60)),
             _sample(m("m-2"), 5.4 / 180)),
    ]
    return c


def genai_switch_case(cfg: Config) -> Case:
    """Services that change what they send: each call counted once over the hour and the
    day, from the source each 5 minutes of it had. Both make one call and spend 0.5 USD a
    minute for 80 minutes, reported as spans throughout; "starter" sends metric points too
    from minute 40 on (it turned them on), "stopper" only until minute 40 (turned off, its
    series stay). Evaluated at 70: 35 USD and 70 calls over the day, 30 USD and 60 calls over
    the hour, whichever source is preferred."""
    b = base_labels(cfg)
    a = {**b, "instance": "exporter-1:9464"}
    job = {"job": b["job"]}
    n, half, at = 80, 40, 70
    g = rules.GENAI
    c = Case("GenAI: a service that turns its metric points on or off is counted in full", [])

    def add(metric: str, labels: dict[str, str], values: Values) -> None:
        c.series.append(series(metric, {**a, **labels}, values))

    shapes = {
        "starter": lambda step: Values().gap(half).ramp(step, n - half),
        "stopper": lambda step: Values().ramp(step, half + 1).hold(step * half, n - half - 1),
    }
    for (service, points), model in zip(shapes.items(), ("m-4", "m-5")):
        op = _genai_labels(service, model, error_type="")
        add(g.duration.span + "_count", op, Values().ramp(1, n))
        add(g.cost.span, _cost_labels(service, model), Values().ramp(0.5, n))
        add(g.duration.metric + "_count", op, points(1))
        add(g.cost.metric, _cost_labels(service, model), points(0.5))

    def expr(rule: str, *samples: dict[str, Any]) -> dict[str, Any]:
        return {"expr": _approx(rule), "eval_time": f"{at}m",
                "exp_samples": [dict(s, value=round(s["value"], 4)) for s in samples]}

    models = ("m-4", "m-5")
    c.exprs = [
        expr(Names.genai_cost_model_1d, *[_sample({**job, "model": m}, 0.5 * at) for m in models]),
        expr(Names.genai_cost_1d, _sample(job, 2 * 0.5 * at)),
        expr(Names.genai_cost_1h, *[_sample({**job, "model": m}, 0.5 * 60) for m in models]),
        expr(Names.genai_successful_1h, *[_sample({**job, "model": m}, 60) for m in models]),
        expr(Names.genai_cost_per_success, *[_sample({**job, "model": m}, 0.5) for m in models]),
    ]
    return c


def recording_rule_test_files(cfg: Config = CONFIG) -> dict[str, dict[str, Any]]:
    """promtool test files for the recording rules, by path."""
    here = layout.RECORDING_RULE_TESTS_DIR
    return {f"{here}/kpi-exporter-rules.test.yml": _file(
        cfg, [os.path.relpath(layout.RECORDING_RULES, here)], recording_rule_cases(cfg), "1m")}
