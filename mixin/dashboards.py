"""Grafana dashboards, built with grafana-foundation-sdk.

Conventions (checked by tests/test_mixin_lint.py): a ``datasource`` variable labelled
"Data source" that every panel and variable uses, ``job`` and ``instance`` variables, a
stable uid, a unit and a description on every panel, ``$__rate_interval`` in every
rate()/increase() over time (``$__range`` in instant totals over the dashboard's period),
and a link menu to the other kpi-exporter dashboards (by tag).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

# The classic dashboard model (schema v1) is what Grafana's file provisioning loads on every
# version; the SDK nudges towards the v2 schema, which only newer Grafana reads.
warnings.filterwarnings("ignore", message="Prefer using dashboardv2.Dashboard instead",
                        category=DeprecationWarning)

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

from mixin.alerts import pct
from mixin.config import CONFIG, Config
from mixin.rules import Names

__all__ = ["build", "DASHBOARDS"]

DS = common.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Panel filters: raw exporter metrics carry job and instance; recording rules sum over
# instances and keep job.
INST = 'job=~"$job", instance=~"$instance"'
JOB = 'job=~"$job"'
MODEL = 'model=~"$model"'
GENAI_MODEL = 'gen_ai_request_model=~"$model"'

RI = "$__rate_interval"

# Explore on the traces data source whose uid the ``traces`` variable holds, over the time
# range of the panel (Grafana interpolates the variables in a panel link).
TRACES_EXPLORE = ('/explore?left={"datasource":"${traces}","queries":[{"refId":"A",'
                  '"datasource":{"uid":"${traces}"}}],"range":{"from":"${__from}",'
                  '"to":"${__to}"}}')

Panel = cogbuilder.Builder[dm.Panel]


def _q(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False,
       heatmap_format: bool = False, exemplar: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    if instant:
        target = target.instant()
    else:
        target = target.range()
    if heatmap_format:
        target = target.format(pm.PromQueryFormat.HEATMAP)
    if exemplar:
        target = target.exemplar(True)
    return target


def _targets(panel: Any, queries: list[tuple[str, str]], instant: bool = False,
             exemplars: bool = False) -> Any:
    for i, (expr, legend) in enumerate(queries):
        # exemplars of the first query only: every query of a latency panel reads the same
        # buckets, so each would draw the same exemplars again
        panel = panel.with_target(_q(expr, legend, chr(ord("A") + i), instant=instant,
                                     exemplar=exemplars and i == 0))
    return panel


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


def stat_panel(title: str, description: str, unit: str, expr: str, legend: str = "__auto",
               thresholds: dash.ThresholdsConfig | None = None, width: int = 6,
               decimals: float | None = None, instant: bool = False) -> stat.Panel:
    """A stat panel of the top row: the current value of one query."""
    p = (stat.Panel().title(title).description(description).unit(unit).datasource(DS)
         .height(4).span(width)
         .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .graph_mode(common.BigValueGraphMode.NONE if instant else common.BigValueGraphMode.AREA)
         .color_mode(common.BigValueColorMode.VALUE)
         .thresholds(thresholds or _thresholds((None, "text")))
         .with_target(_q(expr, legend, instant=instant)))
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def compared(panel: stat.Panel, change: str, better: str = "up") -> stat.Panel:
    """Adds the change against the previous period (query B, a ratio shown as a percentage,
    green when it moves the ``better`` way) next to a stat panel's value."""
    good, bad = ("green", "red") if better == "up" else ("red", "green")
    return (panel.with_target(_q(change, "vs previous period", "B", instant=True))
            .override_by_query("B", [
                dm.DynamicConfigValue(id_val="unit", value="percentunit"),
                dm.DynamicConfigValue(id_val="decimals", value=1),
                dm.DynamicConfigValue(id_val="displayName", value="vs previous period"),
                dm.DynamicConfigValue(id_val="thresholds", value={
                    "mode": "absolute",
                    "steps": [{"value": None, "color": bad}, {"value": 0, "color": good}]}),
            ]))


def ts_panel(title: str, description: str, unit: str, queries: list[tuple[str, str]],
             width: int = 12, height: int = 8, min_val: float | None = 0,
             max_val: float | None = None, thresholds: dash.ThresholdsConfig | None = None,
             stacked: bool = False, exemplars: bool = False) -> timeseries.Panel:
    """A time series panel over one or more queries (expr, legend). ``exemplars``: the
    panel also draws the exemplars of its histogram (trace ids of single observations),
    and links to the traces data source of the ``traces`` variable."""
    p = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DS)
         .height(height).span(width).fill_opacity(10).line_width(1).show_points(
             common.VisibilityMode.NEVER)
         .legend(common_b.VizLegendOptions().show_legend(True)
                 .display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))
         .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING)))
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    if thresholds is not None:
        p = p.thresholds(thresholds).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA))
    if stacked:
        p = p.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    if exemplars:
        p = p.links([dash.DashboardLink("Traces in this time range").type(
            dm.DashboardLinkType.LINK).url(TRACES_EXPLORE).target_blank(True).tooltip(
            "Explore the traces data source (dashboard variable traces) over the panel's "
            "time range; an exemplar's own link opens its trace")])
    return _targets(p, queries, exemplars=exemplars)


def bar_panel(title: str, description: str, unit: str, expr: str, legend: str,
              width: int = 12, height: int = 8) -> bargauge.Panel:
    """A horizontal bar gauge of an instant query (top-k lists)."""
    return (bargauge.Panel().title(title).description(description).unit(unit).datasource(DS)
            .height(height).span(width).min(0)
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .with_target(_q(expr, legend, instant=True)))


def heatmap_panel(title: str, description: str, unit: str, y_unit: str, expr: str,
                  width: int = 12, height: int = 8) -> heatmap.Panel:
    """A heatmap of a Prometheus histogram's bucket rates."""
    return (heatmap.Panel().title(title).description(description).unit(unit).datasource(DS)
            .height(height).span(width).calculate(False)
            .y_axis(heatmap.YAxisConfig().unit(y_unit).decimals(1))
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME)
                   .scheme("Oranges").fill("dark-orange").scale(hm.HeatmapColorScale.EXPONENTIAL)
                   .exponent(0.5).steps(64).reverse(False))
            .with_target(_q(expr, "{{le}}", heatmap_format=True)))


# ---- variables ------------------------------------------------------------------------------

def datasource_var() -> dash.DatasourceVariable:
    """The data source picker (file provisioning cannot resolve ${DS_PROMETHEUS} inputs)."""
    return dash.DatasourceVariable("datasource").label("Data source").type("prometheus")


def job_var() -> dash.QueryVariable:
    """The exporter's scrape job."""
    return (dash.QueryVariable("job").label("Job").datasource(DS)
            .description("Scrape job of the kpi-exporter.")
            .query("label_values(kpi_exporter_build_info, job)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(
                dm.VariableSort.ALPHABETICAL_ASC))


def instance_var() -> dash.QueryVariable:
    """The exporter replicas (recording-rule panels add the replicas up)."""
    return (dash.QueryVariable("instance").label("Instance").datasource(DS)
            .description("Exporter replicas; panels built on recording rules add all up.")
            .query('label_values(kpi_exporter_build_info{job=~"$job"}, instance)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def model_var() -> dash.QueryVariable:
    """AI models, from every series with a model label (the GenAI recording rules copy
    gen_ai_request_model into it)."""
    return (dash.QueryVariable("model").label("Model").datasource(DS)
            .description("AI model (gen_ai.request.model).")
            .query('label_values({job=~"$job", model!=""}, model)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def traces_var(cfg: Config) -> dash.TextBoxVariable:
    """The uid of the traces data source (Tempo, Jaeger) the latency panels link to."""
    return (dash.TextBoxVariable("traces").label("Traces data source uid")
            .description("uid of your Tempo or Jaeger data source: the latency panels' "
                         "links open it (docs/monitoring.md); the exemplars' own links come "
                         "from the Prometheus data source's exemplarTraceIdDestinations.")
            .default_value(cfg.traces_datasource_uid))


def service_var() -> dash.QueryVariable:
    """The services (service.name) that send page views and visits."""
    return (dash.QueryVariable("service").label("Service").datasource(DS)
            .description("The site or app (service.name) whose visits are shown.")
            .query('label_values(app_sessions_started_total{job=~"$job"}, service_name)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))


def _dashboard(cfg: Config, uid: str, title: str, description: str, time_from: str,
               model: bool = False) -> dash.Dashboard:
    d = (dash.Dashboard(title).uid(uid).description(description)
         .tags([cfg.dashboard_tag]).editable().time(time_from, "now")
         .refresh(cfg.dashboard_refresh).timezone(common.TimeZoneBrowser)
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .timepicker(dash.TimePicker().refresh_intervals(
             ["10s", "30s", "1m", "5m", "15m", "30m", "1h"]))
         .link(dash.DashboardLink("KPI dashboards").type(dm.DashboardLinkType.DASHBOARDS)
               .tags([cfg.dashboard_tag]).as_dropdown(True).include_vars(True)
               .keep_time(True).tooltip("The other kpi-exporter dashboards"))
         .with_variable(datasource_var()).with_variable(job_var())
         .with_variable(instance_var()))
    if model:
        d = d.with_variable(model_var()).with_variable(traces_var(cfg))
    return d


# ---- the dashboards -------------------------------------------------------------------------

def product_analytics(cfg: Config) -> dash.Dashboard:
    """Events, active users, sessions, features and pages."""
    events = f"app_events_total{{{INST}}}"
    per_min = f"sum(rate({events}[{RI}])) * 60"
    return (
        _dashboard(cfg, "kpi-product-analytics", "KPI exporter / Product analytics",
                   "What users do in the apps: events, active users, sessions, features, "
                   "pages.", "now-24h")
        .with_row(dash.Row("Overview"))
        .with_panel(stat_panel("Events per second", "Events of every kind received from the "
                               "apps per second, all services.", "cps",
                               f"sum(rate({events}[{RI}]))", "events/s"))
        .with_panel(stat_panel("Active users (5m)", "Unique users (user.id) with an event in "
                               "the last 5 minutes, estimated with HyperLogLog sketches.",
                               "short", f'max(app_active_users{{{INST}, window="5m"}})', "users",
                               decimals=0))
        .with_panel(stat_panel("Active users (1d)", "Unique users with an event in the last "
                               "day (daily active users).", "short",
                               f'max(app_active_users{{{INST}, window="1d"}})', "users",
                               decimals=0))
        .with_panel(stat_panel("Sessions (1d)", "Unique sessions (session.id) with an event "
                               "in the last day.", "short",
                               f'max(app_sessions{{{INST}, window="1d"}})', "sessions",
                               decimals=0))
        .with_row(dash.Row("Events"))
        .with_panel(ts_panel("Events per minute", "All events received per minute.", "cpm",
                             [(per_min, "events")]))
        .with_panel(ts_panel("Events by event", "Events per minute by event name "
                             "(event_name of the OpenTelemetry log record).", "cpm",
                             [(f"sum by (event) (rate({events}[{RI}])) * 60", "{{event}}")]))
        .with_panel(bar_panel("Top 5 events", "The five most frequent events right now, per "
                              "minute.", "cpm",
                              f"topk(5, sum by (event) (rate({events}[{RI}]))) * 60",
                              "{{event}}"))
        .with_panel(ts_panel("Events by service", "Events per minute by the service.name of "
                             "the sending app; a line falling to zero is a service that "
                             "stopped sending.", "cpm",
                             [(f"sum by (service_name) (rate({events}[{RI}])) * 60",
                               "{{service_name}}")]))
        .with_row(dash.Row("Features and pages"))
        .with_panel(ts_panel("Feature usage", "app.feature_used events per minute by feature "
                             "and action.", "cpm",
                             [(f"sum by (feature, action) (rate(app_feature_usage_total"
                               f"{{{INST}}}[{RI}])) * 60", "{{feature}} / {{action}}")]))
        .with_panel(ts_panel("Page views by route", "app.page_view events per minute by route "
                             "template (url.path).", "cpm",
                             [(f"sum by (route) (rate(app_page_views_total{{{INST}}}[{RI}]))"
                               " * 60", "{{route}}")]))
    )


def business_kpis(cfg: Config) -> dash.Dashboard:
    """Daily, weekly and monthly active users, sessions, conversion rate, week over week."""
    def users(window: str, offset: str = "") -> str:
        return f'max(app_active_users{{{INST}, window="{window}"}}{offset})'

    sessions = f'max(app_sessions{{{INST}, window="1d"}})'
    sessions_lw = f'max(app_sessions{{{INST}, window="1d"}} offset 1w)'
    conv = f'max(app_conversion_rate_ratio{{{INST}, window="1d"}})'
    conv_lw = f'max(app_conversion_rate_ratio{{{INST}, window="1d"}} offset 1w)'
    change = "Change against the same time one week earlier (offset 1w)."
    wow = _thresholds((None, "red"), (0, "green"))
    return (
        _dashboard(cfg, "kpi-business", "KPI exporter / Business KPIs",
                   "Daily, weekly and monthly active users, sessions and conversion rate, "
                   "with week-over-week change.", "now-7d")
        .with_row(dash.Row("Today"))
        .with_panel(stat_panel("Daily active users", "Unique users over the last day "
                               "(app_active_users, window 1d).", "short", users("1d"), "DAU",
                               width=4, decimals=0))
        .with_panel(stat_panel("Weekly active users", "Unique users over the last 7 days.",
                               "short", users("7d"), "WAU", width=4, decimals=0))
        .with_panel(stat_panel("Monthly active users", "Unique users over the last 30 days.",
                               "short", users("30d"), "MAU", width=4, decimals=0))
        .with_panel(stat_panel("Sessions (1d)", "Unique sessions over the last day.", "short",
                               sessions, "sessions", width=4, decimals=0))
        .with_panel(stat_panel("Conversion rate (1d)", "Conversions per session over the last "
                               "day (app_conversion_rate_ratio, window 1d).", "percentunit",
                               conv, "conversion rate", width=4))
        .with_panel(stat_panel("DAU / MAU", "Stickiness: the share of the month's users who "
                               "came back today.", "percentunit",
                               f"{users('1d')} / {users('30d')}", "DAU/MAU", width=4))
        .with_row(dash.Row("Week over week"))
        .with_panel(stat_panel("DAU vs last week", f"Daily active users. {change}",
                               "percentunit", f"{users('1d')} / {users('1d', ' offset 1w')} - 1",
                               "DAU change", thresholds=wow, width=8))
        .with_panel(stat_panel("Sessions vs last week", f"Sessions over the last day. {change}",
                               "percentunit", f"{sessions} / {sessions_lw} - 1",
                               "sessions change", thresholds=wow, width=8))
        .with_panel(stat_panel("Conversion rate vs last week", f"1-day conversion rate. {change}",
                               "percentunit", f"{conv} / {conv_lw} - 1", "conversion change",
                               thresholds=wow, width=8))
        .with_row(dash.Row("Trends"))
        .with_panel(ts_panel("Active users", "Daily, weekly and monthly active users over "
                             "time.", "short",
                             [(f'max by (window) (app_active_users{{{INST}, '
                               f'window=~"1d|7d|30d"}})', "{{window}}")]))
        .with_panel(ts_panel("DAU this week and last week", "Daily active users, and the same "
                             "curve shifted by one week.", "short",
                             [(users("1d"), "this week"),
                              (users("1d", " offset 1w"), "last week")]))
        .with_panel(ts_panel("Sessions this week and last week", "Sessions over the last day, "
                             "and the same curve shifted by one week.", "short",
                             [(sessions, "this week"), (sessions_lw, "last week")]))
        .with_panel(ts_panel("Conversion rate this week and last week", "1-day conversion "
                             "rate, and the same curve shifted by one week.", "percentunit",
                             [(conv, "this week"), (conv_lw, "last week")], max_val=1))
        .with_panel(ts_panel("Conversions by type", "app.conversion events per minute by "
                             "conversion type.", "cpm",
                             [(f"sum by (type) (rate(app_conversions_total{{{INST}}}[{RI}]))"
                               " * 60", "{{type}}")]))
        .with_panel(ts_panel("Active users (5m and 1h)", "Unique users over the last 5 "
                             "minutes and the last hour.", "short",
                             [(f'max by (window) (app_active_users{{{INST}, '
                               f'window=~"5m|1h"}})', "{{window}}")]))
    )


def ai_performance(cfg: Config) -> dash.Dashboard:
    """Model accuracy, latency, acceptance, errors, confidence, evaluations, tokens."""
    m = f"{{{JOB}, {MODEL}}}"
    err = cfg.ai_error_rate_max
    red = _thresholds((None, "green"), (err, "red"))
    slo = cfg.latency_slo
    genai = f"{{{INST}, {GENAI_MODEL}}}"
    budget = cfg.genai_daily_budget_usd
    first, second = ("metric points", "spans") if cfg.genai_preferred_source == "metrics" \
        else ("spans", "metric points")
    by = "gen_ai_request_model, gen_ai_token_type, le"
    token_buckets = " or ".join(
        f"sum by ({by}) (rate({h}_bucket{genai}[{RI}]))"
        for h in (("gen_ai_client_token_usage", "gen_ai_span_token_usage")
                  if cfg.genai_preferred_source == "metrics"
                  else ("gen_ai_span_token_usage", "gen_ai_client_token_usage")))

    def median_and_p95(buckets: str) -> list[tuple[str, str]]:
        return [(f"histogram_quantile({v}, {buckets}{m})", f"{{{{model}}}} {q}")
                for q, v in (("p50", 0.5), ("p95", 0.95))]

    def quantiles(name: Any, legend: str) -> list[tuple[str, str]]:
        return [(f"{name(q)}{m}", f"{{{{model}}}} {q}") for q in ("p50", "p95", "p99")]

    def raw_quantiles(histogram: str, by: str, selector: str) -> list[tuple[str, str]]:
        # from the histogram itself, not a recording rule: exemplars belong to the scraped
        # bucket series, and Prometheus keeps none for recorded ones
        return [(f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket"
                 f"{{{selector}}}[{RI}])))", f"{{{{{by}}}}} p{int(q * 100)}")
                for q in (0.5, 0.95, 0.99)]

    return (
        _dashboard(cfg, "kpi-ai-performance", "KPI exporter / AI performance",
                   "AI models: accuracy, latency, acceptance of recommendations, errors, "
                   "confidence, evaluations and token usage.", "now-24h", model=True)
        .with_row(dash.Row("Overview"))
        .with_panel(stat_panel("Accuracy", "Latest accuracy the models report "
                               "(ai.model.performance).", "percentunit",
                               f"{Names.accuracy}{m}", "{{model}}"))
        .with_panel(stat_panel("Latency p95", "95th percentile of the latency the models "
                               "report, over 5 minutes.", "s",
                               f"{Names.latency('p95')}{m}", "{{model}}"))
        .with_panel(stat_panel("Acceptance rate", "Share of recommendation responses that "
                               "accepted the recommendation, over 5 minutes.", "percentunit",
                               f"{Names.acceptance_5m}{m}", "{{model}}"))
        .with_panel(stat_panel("Error rate", f"Error rate the models report; red above "
                               f"{pct(err)}.", "percentunit", f"{Names.error_rate}{m}",
                               "{{model}}", thresholds=red))
        .with_row(dash.Row("Quality"))
        .with_panel(ts_panel("Accuracy by model", "Accuracy (0..1) each model reports.", "percentunit",
                             [(f"{Names.accuracy}{m}", "{{model}}")], max_val=1))
        .with_panel(ts_panel("Acceptance rate by model", "Accepted over all recommendation responses, "
                             "per model, over 5 minutes.", "percentunit",
                             [(f"{Names.acceptance_5m}{m}", "{{model}}")], max_val=1))
        .with_panel(ts_panel("Error rate by model", f"Error rate the models report, and the share of "
                             f"GenAI operations (spans) that failed. Red above {pct(err)}.",
                             "percentunit",
                             [(f"{Names.error_rate}{m}", "{{model}} reported"),
                              (f"{Names.genai_error_ratio}{m}", "{{model}} GenAI operations")],
                             thresholds=red))
        .with_panel(ts_panel("Responses by outcome", "Recommendation responses per minute by "
                             "outcome (accepted, rejected, modified).", "cpm",
                             [(f"sum by (model, outcome) (rate(ai_recommendation_responses_total"
                               f"{{{INST}, {MODEL}}}[{RI}])) * 60", "{{model}} {{outcome}}")],
                             stacked=True))
        .with_panel(heatmap_panel("Confidence distribution", "How confident the models were in "
                                  "their recommendations (ai.recommendation.confidence): "
                                  "recommendations per second in each confidence bucket.",
                                  "cps", "percentunit",
                                  f"sum by (le) (rate(ai_recommendation_confidence_bucket"
                                  f"{{{INST}, {MODEL}}}[{RI}]))"))
        .with_panel(ts_panel("Evaluation scores", "Pass rate of gen_ai.evaluation.result events "
                             "(score label pass over all) and the mean score, per evaluation. "
                             "Evaluation events carry no model, so the model filter does not "
                             "apply.", "percentunit",
                             [(f"{Names.evaluation_pass}{{{JOB}}}",
                               "{{gen_ai_evaluation_name}} pass rate"),
                              (f"sum by (gen_ai_evaluation_name) (rate(gen_ai_evaluation_score_sum"
                               f"{{{INST}}}[{RI}])) / sum by (gen_ai_evaluation_name) "
                               f"(rate(gen_ai_evaluation_score_count{{{INST}}}[{RI}]))",
                               "{{gen_ai_evaluation_name}} mean score")], max_val=1))
        .with_row(dash.Row("Latency"))
        .with_panel(ts_panel("Latency p50 / p95 / p99", "Percentiles of the inference latency "
                             "the models report (ai_model_latency_seconds). Exemplars (dots) "
                             "are single reports sent in a trace: hover for the trace id, "
                             "click to open the trace.", "s",
                             raw_quantiles("ai_model_latency_seconds", "model",
                                           f"{INST}, {MODEL}"), exemplars=True))
        .with_panel(ts_panel("Latency SLO burn rate", f"How fast each model spends the error "
                             f"budget of its latency objective ({pct(slo.objective)} under "
                             f"{slo.threshold_seconds:g}s): 1 lasts 30 days, 14.4 pages.",
                             "short",
                             [(f"{Names.slo_errors('1h')}{m} / {1 - slo.objective:.6g}",
                               "{{model}} 1h"),
                              (f"{Names.slo_errors('6h')}{m} / {1 - slo.objective:.6g}",
                               "{{model}} 6h")],
                             thresholds=_thresholds((None, "green"), (6, "orange"),
                                                    (14.4, "red"))))
        .with_panel(ts_panel("GenAI operation duration", "Percentiles of the duration of GenAI "
                             "client operations by model, over 5 minutes; each service counted "
                             "from its metric points, else its spans.",
                             "s", quantiles(Names.genai_duration, "model")))
        .with_panel(ts_panel("GenAI operation traces", "Percentiles of the duration of GenAI "
                             "operations reported as spans "
                             "(gen_ai_span_operation_duration_seconds), by model. Exemplars "
                             "(dots) are single operations: hover for the trace id, click to "
                             "open the trace.", "s",
                             raw_quantiles("gen_ai_span_operation_duration_seconds",
                                           "gen_ai_request_model", genai.strip("{}")),
                             exemplars=True))
        .with_panel(ts_panel("GenAI operations by model", "GenAI client operations per minute "
                             "by model; each call counted once (from a service's metric "
                             "points when it sends them, else from its spans).", "cpm",
                             [(f"sum by (model) ({Names.genai_ops}{m}) * 60", "{{model}}")]))
        .with_panel(bar_panel("Source of GenAI figures", "Where each service's GenAI figures "
                              f"of each model come from: {first} when it sends them, else "
                              f"{second} (genai_preferred_source in mixin/config.py). "
                              "Operations per minute.", "cpm",
                              f"sum by (service_name, model, source) "
                              f"({Names.genai_source_ops}{m}) * 60",
                              "{{service_name}} {{model}} from {{source}}", width=24,
                              height=6))
        .with_row(dash.Row("Tokens"))
        .with_panel(ts_panel("Token usage by model", "Tokens per second by model and token "
                             "type (input, output).", "suffix: tokens/s",
                             [(f"sum by (model, gen_ai_token_type) ({Names.genai_tokens}{m})",
                               "{{model}} {{gen_ai_token_type}}")],
                             stacked=True))
        .with_panel(ts_panel("Tokens per operation p95", "95th percentile of the tokens one "
                             "GenAI operation used, by model and token type, from metric "
                             "points where a model has them, else from spans.",
                             "suffix: tokens",
                             [(f"histogram_quantile(0.95, {token_buckets})",
                               "{{gen_ai_request_model}} {{gen_ai_token_type}}")]))
        .with_row(dash.Row("Streaming"))
        .with_panel(ts_panel("Time to first token", "Time until the first token of a "
                             "response (gen_ai.server.time_to_first_token), p50 and p95 by "
                             "model.", "s", median_and_p95(Names.genai_ttft_buckets), width=8))
        .with_panel(ts_panel("Time to first chunk", "Time from a streaming request until its "
                             "first chunk arrives at the client "
                             "(gen_ai.client.operation.time_to_first_chunk), p50 and p95 by "
                             "model.", "s", median_and_p95(Names.genai_first_chunk_buckets),
                             width=8))
        .with_panel(ts_panel("Time per output token", "Time per output token after the first "
                             "(gen_ai.server.time_per_output_token), and between the chunks "
                             "of a stream (gen_ai.client.operation.time_per_output_chunk), "
                             "median by model.", "s",
                             [(f"histogram_quantile(0.5, {Names.genai_tpot_buckets}{m})",
                               "{{model}} per token"),
                              (f"histogram_quantile(0.5, sum by (gen_ai_request_model, le) "
                               f"(rate(gen_ai_client_operation_time_per_output_chunk_seconds"
                               f"_bucket{genai}[{RI}])))",
                               "{{gen_ai_request_model}} per chunk")], width=8))
        .with_panel(ts_panel("Finish reasons", "Share of GenAI responses by the finish reason "
                             "of their first choice (stop, length, content_filter, "
                             "tool_calls, ...), by model, from spans; a growing length share "
                             "means answers cut off at max_tokens.", "percentunit",
                             [(f"{Names.genai_finish_reasons}{m}",
                               "{{model}} {{gen_ai_response_finish_reason}}")],
                             max_val=1, stacked=True, width=24))
        .with_row(dash.Row("Cost"))
        .with_panel(stat_panel("GenAI spend (24h)", "What the GenAI token usage of the last "
                               "24 hours cost, all models (prices: genai.prices of the "
                               "exporter's config, else the genai-prices database).",
                               "currencyUSD", f"sum({Names.genai_cost_1d}{{{JOB}}})", "24h",
                               width=8))
        .with_panel(stat_panel("Daily budget used", f"The last 24 hours' spend as a share of "
                               f"the daily budget ({budget:g} USD, genai_daily_budget_usd); "
                               "the budget alert fires above 100%.", "percentunit",
                               f"sum({Names.genai_cost_1d}{{{JOB}}}) / {budget:g}", "budget",
                               thresholds=_thresholds((None, "green"), (0.8, "orange"),
                                                      (1, "red")), width=8))
        .with_panel(stat_panel("Unpriced tokens", "Tokens per hour of models with no known "
                               "price; their cost is in no figure. Price them under "
                               "genai.prices.", "short",
                               f"max(sum by (signal) (rate("
                               f"kpi_exporter_gen_ai_unpriced_tokens_total{{{INST}}}"
                               f"[{RI}]))) * 3600", "tokens/h",
                               thresholds=_thresholds((None, "green"), (1, "orange")), width=8,
                               decimals=0))
        .with_panel(ts_panel("Cost by model", "USD spent per hour on GenAI calls, by model.",
                             "currencyUSD",
                             [(f"sum by (model) ({Names.genai_cost_1h}{m})", "{{model}}")],
                             stacked=True))
        .with_panel(ts_panel("Cost by feature", "USD spent per hour by app.feature (the "
                             "attribute of the GenAI spans). A model's cost is split by the "
                             "share each feature has of its span cost; cost without spans is "
                             "unknown.", "currencyUSD",
                             [(f"sum by (app_feature) ({Names.genai_cost_feature_1h}{m})",
                               "{{app_feature}}")], stacked=True))
        .with_panel(ts_panel("Cost per successful operation", "USD spent per hour over the "
                             "successful GenAI operations of that hour, by model: the price "
                             "of one useful answer.", "currencyUSD",
                             [(f"{Names.genai_cost_per_success}{m}", "{{model}}")]))
        .with_panel(ts_panel("Cost by token type", "USD spent per hour by token type: "
                             "uncached input, cache reads, cache writes, output, per-request "
                             "fees.", "currencyUSD",
                             [(f"sum by (gen_ai_token_type) ({Names.genai_cost_type_1h}{m})",
                               "{{gen_ai_token_type}}")], stacked=True))
        .with_panel(ts_panel("Unpriced tokens by model", "Tokens per second of models with no "
                             "known price, by model (the larger of what spans and metric "
                             "points report); add their prices under genai.prices.",
                             "suffix: tokens/s",
                             [(f"max by (model) (sum by (model, signal) (rate("
                               f"kpi_exporter_gen_ai_unpriced_tokens_total{{{INST}, {MODEL}}}"
                               f"[{RI}])))", "{{model}}")], width=24))
    )


def web_analytics(cfg: Config) -> dash.Dashboard:
    """Plausible's first screen: six figures over the dashboard's period against the period
    before, visitors and visits over time, then pages, entry and exit pages, sources,
    campaigns, devices, browsers, OS, countries and goals."""
    svc = f'{INST}, service_name=~"$service"'
    period = "[$__range]"

    def total(metric: str, extra: str = "", offset: str = "") -> str:
        return f"sum(increase({metric}{{{svc}{extra}}}{period}{offset}))"

    def ratio(numerator: str, denominator: str, offset: str = "") -> str:
        # "or 0 * ...": a period without a single bounce (or conversion) shows 0, not nothing
        num, den = total(numerator, offset=offset), total(denominator, offset=offset)
        return f"({num} or 0 * {den}) / {den}"

    def change(expr_now: str, expr_before: str) -> str:
        return f"({expr_now}) / ({expr_before}) - 1"

    closed, bounced = "app_sessions_closed_total", "app_sessions_bounced_total"
    visits = total(closed)
    views = total("app_page_views_total")
    per_visit = ratio("app_session_page_views_sum", "app_session_page_views_count")
    bounce = ratio(bounced, closed)
    duration = ratio("app_session_duration_seconds_sum", "app_session_duration_seconds_count")
    before = " offset $__range"
    users = f'max(app_active_users{{{INST}, window="1d"}})'
    rule = f'{{{JOB}, service_name=~"$service"}}'

    def top(title: str, description: str, expr: str, legend: str, width: int = 8,
            unit: str = "short") -> bargauge.Panel:
        return bar_panel(title, description, unit, expr, legend, width=width, height=9)

    def by(label: str, metric: str, extra: str = "") -> str:
        return (f"topk(10, sum by ({label}) (increase({metric}{{{svc}{extra}}}{period})))")

    return (
        _dashboard(cfg, "kpi-web-analytics", "KPI exporter / Web analytics",
                   "Visitors, visits, page views, views per visit, bounce rate and visit "
                   "duration over the dashboard's period, against the period before; then "
                   "pages, where visits come from, devices, countries and goals (docs/kpis.md "
                   "defines every figure).", "now-24h")
        .with_variable(service_var())
        .with_row(dash.Row("Overview"))
        .with_panel(compared(stat_panel(
            "Unique visitors (24h)", "Distinct users (user.id) over the last day, a "
            "HyperLogLog estimate (app_active_users, window 1d); the change is against the "
            "same figure one period earlier (the day before, with the default 24h period). "
            "The windows have no service label: every service counts.", "short",
            users, "visitors", width=4, decimals=0, instant=True),
            change(users, f'max(app_active_users{{{INST}, window="1d"}}{before})')))
        .with_panel(compared(stat_panel(
            "Visits", "Visits (sessions) that ended in the dashboard's period "
            "(app_sessions_closed_total): after windows.session_timeout without events or at an "
            "end event. Change against the period before.", "short", visits, "visits",
            width=4, decimals=0, instant=True),
            change(visits, total(closed, offset=before))))
        .with_panel(compared(stat_panel(
            "Pageviews", "Page views in the period (app_page_views_total), bots left out.",
            "short", views, "page views", width=4, decimals=0, instant=True),
            change(views, total("app_page_views_total", offset=before))))
        .with_panel(compared(stat_panel(
            "Views per visit", "Page views per visit, over the visits that ended in the "
            "period (app_session_page_views).", "short", per_visit, "views per visit",
            width=4, decimals=2, instant=True),
            change(per_visit, ratio("app_session_page_views_sum",
                                    "app_session_page_views_count", before))))
        .with_panel(compared(stat_panel(
            "Bounce rate", "Share of the visits that ended in the period with at most one "
            "interactive event: one page view and nothing else (Plausible's bounce).",
            "percentunit", bounce, "bounce rate", width=4, decimals=1, instant=True),
            change(bounce, ratio(bounced, closed, before)), better="down"))
        .with_panel(compared(stat_panel(
            "Visit duration", "Mean time from the first to the last event of the visits that "
            "ended in the period; bounces count as 0 (app_session_duration_seconds).", "s",
            duration, "visit duration", width=4, decimals=0, instant=True),
            change(duration, ratio("app_session_duration_seconds_sum",
                                   "app_session_duration_seconds_count", before))))
        .with_row(dash.Row("Over time"))
        .with_panel(ts_panel("Visitors and visits", "Unique visitors over the last hour "
                             "(a sliding window), and visits started and ended per hour.",
                             "short",
                             [(f'max(app_active_users{{{INST}, window="1h"}})',
                               "unique visitors (1h)"),
                              (f"sum(rate(app_sessions_started_total{{{svc}}}[{RI}])) * 3600",
                               "visits started per hour"),
                              (f"sum(rate({closed}{{{svc}}}[{RI}])) * 3600",
                               "visits ended per hour")], width=24))
        .with_panel(ts_panel("Bounce rate over time", "Bounced over all visits that ended in "
                             "the last hour, and in the last day (recording rules).",
                             "percentunit",
                             [(f"{Names.bounce_rate(w)}{rule}", f"{{{{service_name}}}} {w}")
                              for w in ("1h", "1d")], width=8, max_val=1))
        .with_panel(ts_panel("Visit duration over time", "Mean and median duration of the "
                             "visits that ended in the last hour (recording rules; the median is "
                             "interpolated within the duration buckets).", "s",
                             [(f"{Names.visit_duration('1h')}{rule}", "{{service_name}} mean"),
                              (f"{Names.visit_duration('1h', 'p50')}{rule}",
                               "{{service_name}} median")], width=8))
        .with_panel(ts_panel("Views per visit over time", "Page views per visit that ended in "
                             "the last hour and in the last day (recording rules).", "short",
                             [(f"{Names.views_per_visit(w)}{rule}", f"{{{{service_name}}}} {w}")
                              for w in ("1h", "1d")], width=8))
        .with_row(dash.Row("Pages"))
        .with_panel(top("Top pages", "Page views in the period by route template.",
                        by("route", "app_page_views_total"), "{{route}}"))
        .with_panel(top("Entry pages", "Visits that ended in the period, by the route of "
                        "their first page view.", by("route", "app_session_entries_total"),
                        "{{route}}"))
        .with_panel(top("Exit pages", "Visits that ended in the period, by the route of "
                        "their last page view.", by("route", "app_session_exits_total"),
                        "{{route}}"))
        .with_row(dash.Row("Acquisition"))
        .with_panel(top("Sources", "Visits started in the period by source: the referrer's "
                        "site (search engines, social networks, AI assistants, webmail by "
                        "name; other sites by host), utm_source, or Direct / None.",
                        by("source", "app_sessions_started_total"), "{{source}}"))
        .with_panel(top("Mediums", "Visits started in the period by medium: search, social, "
                        "email, ai, referral, (none) for direct visits, or utm_medium.",
                        by("medium", "app_sessions_started_total"), "{{medium}}"))
        .with_panel(top("Campaigns", "Visits started in the period by utm_campaign. Needs "
                        "web_analytics.campaign_label: true (the label is opt-in).",
                        by("campaign", "app_sessions_started_total", ', campaign!="(none)"'),
                        "{{campaign}}"))
        .with_panel(top("Bounce rate by source", "Bounced over all visits that ended in the "
                        "period, per source (needs source in web_analytics.session_labels, the "
                        "default).",
                        f"topk(10, (sum by (source) (increase({bounced}{{{svc}}}{period})) or "
                        f"0 * sum by (source) (increase({closed}{{{svc}}}{period}))) / "
                        f"sum by (source) (increase({closed}{{{svc}}}{period})))",
                        "{{source}}", width=12, unit="percentunit"))
        .with_panel(top("Visit duration by source", "Mean duration of the visits that ended "
                        "in the period, per source.",
                        f"topk(10, sum by (source) (increase(app_session_duration_seconds_sum"
                        f"{{{svc}}}{period})) / sum by (source) (increase("
                        f"app_session_duration_seconds_count{{{svc}}}{period})))",
                        "{{source}}", width=12, unit="s"))
        .with_row(dash.Row("Devices and places"))
        .with_panel(top("Devices", "Visits started in the period by device class: desktop, "
                        "mobile, tablet (bots are left out unless web_analytics.bots: include).",
                        by("device", "app_sessions_started_by_client_total"), "{{device}}",
                        width=6))
        .with_panel(top("Browsers", "Visits started in the period by browser.",
                        by("browser", "app_sessions_started_by_client_total"), "{{browser}}",
                        width=6))
        .with_panel(top("Operating systems", "Visits started in the period by operating "
                        "system.", by("os", "app_sessions_started_by_client_total"), "{{os}}",
                        width=6))
        .with_panel(top("Countries", "Visits that ended in the period by country "
                        "(geo.country.iso_code, e.g. from the OpenTelemetry Collector's geoip "
                        "processor; needs country in web_analytics.session_labels, the default).",
                        by("country", closed), "{{country}}", width=6))
        .with_row(dash.Row("Goals"))
        .with_panel(top("Goals", "Conversions in the period by type (app_conversions_total).",
                        by("type", "app_conversions_total"), "{{type}}", width=12))
        .with_panel(compared(stat_panel(
            "Converted visits", "Share of the visits that ended in the period with at least "
            "one conversion event.", "percentunit",
            ratio("app_sessions_converted_total", closed), "converted", width=12,
            decimals=1, instant=True),
            change(ratio("app_sessions_converted_total", closed),
                   ratio("app_sessions_converted_total", closed, before))))
        .with_panel(bar_panel("Bots", "Events of bots in the period by bot (user agent "
                              "family); they count as neither visits nor users.", "short",
                              by("bot", "app_bot_events_total"), "{{bot}}", width=24,
                              height=6))
    )


def exporter_health(cfg: Config) -> dash.Dashboard:
    """What the exporter receives, loses, stores and saves."""
    p = "kpi_exporter_"
    return (
        _dashboard(cfg, "kpi-exporter-health", "KPI exporter / Exporter health",
                   "The kpi-exporter itself: records in, records lost and why, series, "
                   "request latency, state saves.", "now-6h")
        .with_row(dash.Row("Overview"))
        .with_panel(stat_panel("Targets up", "Exporter replicas Prometheus scrapes "
                               "successfully.", "short", f"sum(up{{{INST}}})", "up",
                               decimals=0))
        .with_panel(stat_panel("Records per second", "Log records, spans and metric points "
                               "received per second.", "cps",
                               f"sum(rate({p}records_received_total{{{INST}}}[{RI}]))",
                               "records/s"))
        .with_panel(stat_panel("Rejected share", f"Share of received records rejected; red "
                               f"above {pct(cfg.rejected_ratio_max)}.", "percentunit",
                               f"sum(rate({p}records_rejected_total{{{INST}}}[{RI}])) / "
                               f"sum(rate({p}records_received_total{{{INST}}}[{RI}]))",
                               "rejected",
                               thresholds=_thresholds((None, "green"),
                                                      (cfg.rejected_ratio_max, "red"))))
        .with_panel(stat_panel("Series", "Series of all mapped metrics, overflow series "
                               "included.", "short", f"sum({p}metric_series{{{INST}}})",
                               "series", decimals=0))
        .with_row(dash.Row("Ingest"))
        .with_panel(ts_panel("Ingest rate per signal", "Records received per second by signal "
                             "(log, span, metric).", "cps",
                             [(f"sum by (signal) (rate({p}records_received_total{{{INST}}}"
                               f"[{RI}]))", "{{signal}}")]))
        .with_panel(ts_panel("Requests by code", "OTLP export requests per second by "
                             "transport (grpc, http), signal and status (HTTP code or gRPC "
                             "status name).", "reqps",
                             [(f"sum by (transport, signal, code) (rate({p}requests_total"
                               f"{{{INST}}}[{RI}]))", "{{transport}} {{signal}} {{code}}")]))
        .with_panel(ts_panel("Rejected records by reason", "Records that could not be used, "
                             "per second, by signal and reason.", "cps",
                             [(f"sum by (signal, reason) (rate({p}records_rejected_total"
                               f"{{{INST}}}[{RI}]))", "{{signal}} {{reason}}")]))
        .with_panel(ts_panel("Unmatched records by signal", "Records no rule mapped, per "
                             "second, by signal (`kpi-exporter explain` tells why).", "cps",
                             [(f"sum by (signal) (rate({p}records_unmatched_total{{{INST}}}"
                               f"[{RI}]))", "{{signal}}")]))
        .with_panel(ts_panel("Request latency", "Time to handle an OTLP export request, 50th "
                             "and 99th percentile, by transport and signal.", "s",
                             [(f"histogram_quantile({q}, sum by (transport, signal, le) "
                               f"(rate({p}request_duration_seconds_bucket{{{INST}}}[{RI}])))",
                               f"{{{{transport}}}} {{{{signal}}}} p{int(q * 100)}")
                              for q in (0.5, 0.99)]))
        .with_panel(ts_panel("Request bytes", "OTLP request body bytes received per second, "
                             "by transport and signal (HTTP before decompression, gRPC after).",
                             "Bps",
                             [(f"sum by (transport, signal) (rate({p}request_bytes_total"
                               f"{{{INST}}}[{RI}]))", "{{transport}} {{signal}}")]))
        .with_panel(ts_panel("Refused connections and requests", "TLS connections dropped "
                             "before a listener (failed handshake, client certificate without "
                             "an allowed SAN) and metrics-listener requests refused by basic "
                             "auth or the rate limit, per second (a web config is in use).",
                             "reqps",
                             [(f"sum by (listener, reason) (rate("
                               f"{p}tls_connections_refused_total{{{INST}}}[{RI}]))",
                               "TLS {{listener}} {{reason}}"),
                              (f"sum by (reason) (rate({p}http_requests_denied_total"
                               f"{{{INST}}}[{RI}]))", "metrics {{reason}}")]))
        .with_row(dash.Row("Series"))
        .with_panel(ts_panel("Series per metric", "Series each mapped metric has, as a share "
                             "of its cap; at 100% new label sets go to the overflow series.",
                             "percentunit",
                             [(f"max by (metric) ({p}metric_series{{{INST}}} / "
                               f"{p}metric_series_limit{{{INST}}})", "{{metric}}")],
                             max_val=1, thresholds=_thresholds((None, "green"), (0.8, "orange"),
                                                               (1, "red"))))
        .with_panel(ts_panel("Overflow updates per metric", "Updates per second that went to a "
                             "metric's overflow series because its series cap was reached.",
                             "cps",
                             [(f"sum by (metric) (rate({p}metric_overflow_updates_total"
                               f"{{{INST}}}[{RI}]))", "{{metric}}")]))
        .with_row(dash.Row("KPI windows"))
        .with_panel(ts_panel("Window store up", "1 while a replica's KPI window store answers "
                             "(the memory store always does; a shared Redis or Valkey may "
                             "not). While 0, the window gauges are left out.", "short",
                             [(f"min by (instance) ({p}window_store_up{{{INST}}})",
                               "{{instance}}")], max_val=1,
                             thresholds=_thresholds((None, "red"), (1, "green"))))
        .with_panel(ts_panel("Window events dropped by reason", "Events not counted in the "
                             "KPI windows per second: too old, too far in the future, or not "
                             "taken by an unreachable window store.", "cps",
                             [(f"sum by (reason) (rate({p}window_records_dropped_total"
                               f"{{{INST}}}[{RI}]))", "{{reason}}")]))
        .with_row(dash.Row("State"))
        .with_panel(ts_panel("State saves", "Snapshots of the store and KPI windows to the "
                             "state directory per minute, by outcome.", "cpm",
                             [(f"sum by (outcome) (rate({p}state_saves_total{{{INST}}}[{RI}]))"
                               " * 60", "{{outcome}}")]))
        .with_panel(ts_panel("State save duration", "Time one state save takes, 50th and 99th "
                             "percentile.", "s",
                             [(f"histogram_quantile({q}, sum by (le) (rate("
                               f"{p}state_save_duration_seconds_bucket{{{INST}}}[{RI}])))",
                               f"p{int(q * 100)}") for q in (0.5, 0.99)]))
    )


# File name (under grafana/dashboards/) -> builder.
DASHBOARDS = {
    "kpi-product-analytics.json": product_analytics,
    "kpi-business.json": business_kpis,
    "kpi-web-analytics.json": web_analytics,
    "kpi-ai-performance.json": ai_performance,
    "kpi-exporter-health.json": exporter_health,
}


def _number_panels(model: dm.Dashboard) -> None:
    # Stable ids in layout order, so links to a panel (viewPanel=N) survive regeneration.
    n = 0
    for panel in model.panels or []:
        n += 1
        panel.id_val = n
        for inner in getattr(panel, "panels", None) or []:
            n += 1
            inner.id_val = n


def build(cfg: Config = CONFIG) -> dict[str, dict[str, Any]]:
    """Every dashboard as a JSON document, by file name."""
    out = {}
    encoder = JSONEncoder(sort_keys=True, indent=2)
    for filename, builder in DASHBOARDS.items():
        model = builder(cfg).build()
        _number_panels(model)
        out[filename] = json.loads(encoder.encode(model))
    return out
