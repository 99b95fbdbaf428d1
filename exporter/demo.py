"""``kpi-exporter demo``: realistic synthetic traffic through the SDK to a running exporter.

A population of users opens sessions; each session lands from a source (search, social,
a newsletter campaign, an AI assistant, or direct) on a device from a country, in known
proportions; about a third leave after that one page (bounces), the others view pages, use
features (workout, nutrition, profile, social x view, create, edit, delete, share), sometimes
ask an AI model for a recommendation (an LLM call, the recommendation, often the user's
response and an evaluation) and sometimes convert. Each model reports its performance now
and then. Events and spans go through :mod:`exporter.sdk`, exactly as an app would send them.

The LLM calls show both ways GenAI instrumentations report: gpt-4o-mini calls go out as
``gen_ai.client.*`` metric points for every call, plus a span for one call in four (as an
app sampling its traces at 25% would), claude-3-5-haiku calls as spans only, with prompt
cache reads and writes. The summary at the end counts what was sent in the terms of the
metrics it feeds, what the GenAI recording rules should make of it (every call once,
priced with the exporter's default prices) and what the visit metrics will show once the
visits have ended, so it can be held against the dashboards.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO, cast
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExportResult, MetricsData, PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from exporter import sdk
from exporter.genai import GenAIConfig, PriceBook
from exporter.genai.prices import SpanUsage

__all__ = ["DemoOptions", "Summary", "run_demo", "parse_duration", "check_reachable",
           "CATEGORIES", "ACTIONS"]

CATEGORIES = ("workout", "nutrition", "profile", "social")
ACTIONS = ("view", "create", "edit", "delete", "share")
_CATEGORY_WEIGHTS = (40, 30, 15, 15)
_ACTION_WEIGHTS = (50, 20, 15, 5, 10)
_ROUTES = {
    "workout": ("/workouts", "/workouts/:id", "/workouts/new"),
    "nutrition": ("/nutrition", "/nutrition/meals/:id", "/nutrition/log"),
    "profile": ("/profile", "/profile/settings"),
    "social": ("/social/feed", "/social/friends"),
}
_LANDING = ("/", "/dashboard")
# (provider, model) pairs the recommendations and LLM calls come from
_MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"))
_MODEL_WEIGHTS = (65, 35)
# gpt-4o-mini's calls are reported as metric points, and one in this many as a span too
_POINTS_MODEL = "gpt-4o-mini"
_SPAN_SAMPLE = 4
# The conventions' bucket bounds, as instrumentations advise them to the SDK.
_DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
_TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
_RECOMMENDATION_TYPE = {"workout": "workout_plan", "nutrition": "meal_plan"}
_OUTCOMES = ("accepted", "modified", "rejected")
_OUTCOME_WEIGHTS = (55, 20, 25)
_EVALUATIONS = ("relevance", "safety")
SITE = "https://fitness.example.com"
# Where visits come from: (referrer, landing query, source, medium, weight)
LANDINGS = (
    ("https://www.google.com/", "", "Google", "search", 38),
    ("", "", "Direct / None", "(none)", 25),
    ("", "utm_source=newsletter&utm_medium=email&utm_campaign=weekly", "newsletter", "email",
     12),
    ("https://news.ycombinator.com/", "", "Hacker News", "social", 8),
    ("https://l.facebook.com/", "", "Facebook", "social", 10),
    ("https://chatgpt.com/", "", "ChatGPT", "ai", 7),
)
# The visitor's browser: (user agent, device class, browser, OS, weight)
CLIENTS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows", 35),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/18.1 Safari/605.1.15", "desktop", "Safari", "macOS", 15),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "mobile", "Safari", "iOS", 25),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.6778.81 Mobile Safari/537.36", "mobile", "Chrome", "Android", 18),
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1", "tablet", "Safari", "iOS", 7),
)
# Where visitors are (normally the OpenTelemetry Collector's geoip processor's job)
COUNTRIES = (("US", 35), ("DE", 20), ("GB", 15), ("FR", 10), ("IN", 10), ("BR", 10))
BOUNCE_SHARE = 0.35
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '36h', '7d' as seconds; ValueError otherwise."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration: write a number with s, m, h or d "
                         f"(for example 30s or 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


@dataclass
class DemoOptions:
    """What to send, how fast and where. ``rate`` items (events and spans) per second for
    ``duration`` seconds: ``round(rate * duration)`` items in all, the same ones for the same
    ``seed``. ``backfill`` (seconds) spreads event times over that much past."""

    endpoint: str = "http://localhost:4318"
    rate: float = 50.0
    duration: float = 60.0
    users: int = 200
    seed: int | None = None
    backfill: float | None = None
    service_name: str = "kpi-demo"
    headers: dict[str, str] = field(default_factory=dict)


def _labels_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


@dataclass
class Summary:
    """What the demo sent, as the metric samples it should produce at the exporter."""

    options: DemoOptions
    seed: int
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    users: set[int] = field(default_factory=set)
    sessions: int = 0
    events: int = 0
    spans: int = 0
    elapsed: float = 0.0
    stats: sdk.Stats | None = None
    first_event_time: float = math.inf
    last_event_time: float = -math.inf
    # per model: what the GenAI recording rules should count (every call once)
    genai: dict[str, "GenAIFigures"] = field(default_factory=dict)
    metric_exports_failed: int = 0
    # per session: [page views, interactive events]
    visits: dict[str, list[int]] = field(default_factory=dict)

    def add(self, metric: str, value: float = 1.0, **labels: str) -> None:
        """Counts ``value`` into the sample ``metric{labels}``."""
        key = (metric, _labels_key(labels))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def interacted(self, session: str, page_view: bool = False) -> None:
        """Counts an interactive event (and a page view) of a session toward its visit."""
        v = self.visits.setdefault(session, [0, 0])
        v[0] += page_view
        v[1] += 1

    def visit_figures(self) -> dict[str, float]:
        """What the visit metrics will show once every visit has closed."""
        n = len(self.visits)
        bounces = sum(1 for _, interactions in self.visits.values() if interactions <= 1)
        views = sum(pv for pv, _ in self.visits.values())
        return {"visits": n, "bounces": bounces, "page_views": views,
                "bounce_rate": round(bounces / n, 6) if n else 0.0,
                "views_per_visit": round(views / n, 6) if n else 0.0}

    def seen(self, when: float) -> None:
        self.first_event_time = min(self.first_event_time, when)
        self.last_event_time = max(self.last_event_time, when)

    @property
    def delivered_all(self) -> bool:
        """True when the exporter accepted every event and span the demo emitted."""
        s = self.stats
        return (s is not None and not s.disabled and s.events_delivered == self.events
                and s.spans_delivered == self.spans and s.errors == 0)

    def samples(self) -> list[dict[str, Any]]:
        """The expected samples, sorted by metric and labels."""
        return [{"metric": m, "labels": dict(lab), "value": float(f"{v:.12g}")}
                for (m, lab), v in sorted(self.counters.items())]

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (``--json``)."""
        s = self.stats
        conversions = sum(v for (m, _), v in self.counters.items()
                          if m == "app_conversions_total")
        return {
            "endpoint": self.options.endpoint, "service_name": self.options.service_name,
            "seed": self.seed, "elapsed_seconds": round(self.elapsed, 3),
            "events": self.events, "spans": self.spans,
            "users": len(self.users), "sessions": self.sessions,
            "conversion_rate": round(conversions / self.sessions, 6) if self.sessions else 0.0,
            "event_time_range": [self.first_event_time, self.last_event_time]
            if self.events else None,
            "delivered_all": self.delivered_all,
            "metric_exports_failed": self.metric_exports_failed,
            "visits": self.visit_figures(),
            "sdk_stats": None if s is None else s.__dict__,
            "samples": self.samples(),
            "genai": {m: f.__dict__ for m, f in sorted(self.genai.items())},
        }

    def render(self) -> str:
        """The human-readable summary printed at the end of a run."""
        o = self.options
        s = self.stats
        rate = (self.events + self.spans) / self.elapsed if self.elapsed > 0 else 0.0
        items = f"{self.events} events and {self.spans} GenAI spans"
        what = (f"sent nothing: generated {items} for" if s is not None and s.disabled
                else f"sent {items} to")
        lines = [f"kpi-exporter demo: {what} {o.endpoint} in {self.elapsed:.1f}s "
                 f"({rate:.0f}/s), service_name=\"{o.service_name}\", seed {self.seed}"]
        if s is not None:
            if s.disabled:
                lines.append("  NOTHING was sent: OTEL_SDK_DISABLED=true turns the OpenTelemetry "
                             "SDK off (unset it to send)")
            elif self.delivered_all:
                lines.append("  the exporter accepted all of them")
            else:
                lines.append(f"  NOT all delivered: {s.events_delivered}/{self.events} events, "
                             f"{s.spans_delivered}/{self.spans} spans; {s.waiting} still held, "
                             f"{s.dropped} dropped, {s.rejected} refused, {s.errors} errors "
                             f"(see the exporter's log and kpi_exporter_records_rejected_total)")
        if self.events:
            span = self.last_event_time - self.first_event_time
            when = (f"event times spread over the last {_human(span)}" if o.backfill
                    else f"event times are the send times ({_human(span)})")
            lines.append(f"  {when}")
        conversions = sum(v for (m, _), v in self.counters.items()
                          if m == "app_conversions_total")
        lines.append(f"  {len(self.users)} distinct users of {o.users}, {self.sessions} sessions, "
                     f"{int(conversions)} conversions (at most one per session: a conversion "
                     f"rate of {conversions / max(self.sessions, 1):.3f}): compare app_active_users, app_sessions and "
                     f"app_conversion_rate_ratio for a window covering the run (HyperLogLog "
                     f"counts are estimates within a few percent)")
        visits = self.visit_figures()
        if visits["visits"]:
            lines.append(f"  {visits['visits']} visits; once they close (windows.session_timeout "
                         f"after their last event, 30m by default): app_sessions_closed_total "
                         f"{visits['visits']}, bounce rate {visits['bounce_rate']:.3f} "
                         f"({visits['bounces']} bounces), views per visit "
                         f"{visits['views_per_visit']:.3f}; by source, medium, device, browser "
                         f"and OS at once in app_sessions_started_total and "
                         f"app_sessions_started_by_client_total below")
        lines.append("  the counters it should have added (labels also carry "
                     f'service_name="{o.service_name}" where the metric has it):')
        by_metric: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (m, lab), v in sorted(self.counters.items()):
            by_metric.setdefault(m, []).append((lab, v))
        for metric, rows in by_metric.items():
            total = sum((v for _, v in rows), 0.0)
            lines.append(f"    {_num(total):>10}  {metric}")
            for lab, v in rows:
                shown = ",".join(f'{k}="{val}"' for k, val in lab if k != "service_name")
                lines.append(f"    {_num(v):>10}    {{{shown}}}")
        if self.genai:
            lines.append(f"  LLM calls as the GenAI recording rules count them, each once: "
                         f"{_POINTS_MODEL} from its metric points (its spans are a 1-in-"
                         f"{_SPAN_SAMPLE} sample), the others from their spans; cost at the "
                         f"exporter's default prices (job_model:gen_ai_cost_usd:increase1h "
                         f"over the run):")
            lines.append(f"    {'calls':>8} {'failed':>7} {'input tok':>10} {'cached':>8} "
                         f"{'output tok':>10} {'cost USD':>12}  model (source)")
            for model, f in sorted(self.genai.items()):
                lines.append(f"    {f.calls:>8} {f.failed:>7} {f.input_tokens:>10} "
                             f"{f.cached_tokens:>8} {f.output_tokens:>10} "
                             f"{f.cost_usd:>12.6f}  {model} ({f.source})")
        if self.metric_exports_failed:
            lines.append(f"  NOT all metric points delivered: {self.metric_exports_failed} "
                         f"exports failed")
        return "\n".join(lines)


@dataclass
class GenAIFigures:
    """One model's LLM calls as the GenAI recording rules count them."""

    source: str
    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class _GenAIPoints:
    """``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` metric points,
    as a GenAI instrumentation records them (cumulative, the conventions' buckets), exported
    to the exporter every second and at the end."""

    def __init__(self, options: DemoOptions):
        self.failed_exports = 0
        outer = self

        class Counting(OTLPMetricExporter):
            def export(self, metrics_data: MetricsData, timeout_millis: float | None = 10_000,
                       **kwargs: Any) -> MetricExportResult:
                result = super().export(metrics_data, timeout_millis, **kwargs)
                if result is not MetricExportResult.SUCCESS:
                    outer.failed_exports += 1
                return result

        exporter = Counting(endpoint=options.endpoint.rstrip("/") + "/v1/metrics",
                            headers=options.headers or None, timeout=10)
        self.provider = MeterProvider(
            resource=Resource.create({"service.name": options.service_name,
                                      "deployment.environment.name": "demo"}),
            metric_readers=[PeriodicExportingMetricReader(exporter,
                                                          export_interval_millis=1000)],
            views=[View(instrument_name="gen_ai.client.operation.duration",
                        aggregation=ExplicitBucketHistogramAggregation(_DURATION_BOUNDS)),
                   View(instrument_name="gen_ai.client.token.usage",
                        aggregation=ExplicitBucketHistogramAggregation(_TOKEN_BOUNDS))])
        meter = self.provider.get_meter("kpi_exporter.demo")
        self.duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

    def record(self, attributes: dict[str, Any], duration: float, error: str | None,
               input_tokens: int, output_tokens: int) -> None:
        if error:
            self.duration.record(duration, {**attributes, "error.type": error})
            return
        self.duration.record(duration, attributes)
        self.tokens.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
        self.tokens.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})

    def close(self) -> None:
        self.provider.force_flush(10_000)
        self.provider.shutdown()


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds:.1f} seconds"


def check_reachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """None when something accepts TCP connections at ``endpoint``, else why not."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{endpoint!r} is not an http(s) URL like http://localhost:4318"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc.strerror or exc}"


Action = Callable[[], None]


class _Traffic:
    """The simulated population: yields one zero-argument send per event or span."""

    def __init__(self, client: sdk.Analytics, options: DemoOptions, rng: random.Random,
                 summary: Summary, points: _GenAIPoints):
        self.client = client
        self.points = points
        self.prices = PriceBook(GenAIConfig())
        self.o = options
        self.rng = rng
        self.summary = summary
        # a few heavy users and a long tail, as real products have
        self.user_weights = [1.0 / (rank + 1) ** 0.8 for rank in range(options.users)]
        self.user_ids = [f"demo-user-{i:05d}" for i in range(options.users)]
        self.clock = time.time()  # simulated "now" for the next model report
        self.next_report = 0.0

    # -- time --

    def _session_start(self) -> float | None:
        """Event time of a session's first event: None means "when it is sent"."""
        if not self.o.backfill:
            return None
        now = time.time()
        for _ in range(20):  # fewer sessions at night: accept by a diurnal curve
            t = now - self.rng.uniform(0, self.o.backfill)
            hour = (t % 86400) / 3600
            if self.rng.random() < 0.35 + 0.65 * math.sin(math.pi * max(0.0, hour - 6) / 18) ** 2:
                return t
        return t

    # -- sending, counted in the terms of the default metrics --

    def _event(self, when: float | None, send: Callable[[float | None], None], event: str) -> None:
        send(when)
        self.summary.events += 1
        self.summary.seen(time.time() if when is None else when)
        self.summary.add("app_events_total", event=event, service_name=self.o.service_name)

    def sessions(self) -> Iterator[Action]:
        """Sends, one per item, for ever; the caller stops when it has enough."""
        while True:
            yield from self._session()

    def _session(self) -> Iterator[Action]:
        rng, c, summ, svc = self.rng, self.client, self.summary, self.o.service_name
        user = rng.choices(range(self.o.users), weights=self.user_weights)[0]
        session_id = sdk.new_session_id()
        start = self._session_start()
        t: list[float | None] = [start]

        def advance(mean: float) -> float | None:
            if t[0] is not None:
                # a session that started just now must not run into the future
                t[0] = min(t[0] + rng.expovariate(1 / mean), time.time())
            return t[0]

        def in_session(send: Callable[[], None]) -> Action:
            def act() -> None:
                with sdk.identify(user_id=self.user_ids[user], session_id=session_id):
                    send()
            return act

        referrer, query, source, medium, _ = rng.choices(LANDINGS, [x[-1] for x in LANDINGS])[0]
        ua, device, browser, os_name, _ = rng.choices(CLIENTS, [x[-1] for x in CLIENTS])[0]
        country = rng.choices(COUNTRIES, [w for _, w in COUNTRIES])[0][0]

        def page(route: str) -> Action:
            def send() -> None:
                when = advance(8)
                landing = first[0]
                url = SITE + route.replace(":id", "42") + (f"?{query}" if landing and query
                                                           else "")
                self._event(when, lambda w: c.track_page_view(
                    route, referrer=referrer if landing else f"{SITE}/", url=url,
                    user_agent=ua, timestamp=w, **{"geo.country.iso_code": country}),
                    "app.page_view")
                summ.add("app_page_views_total", route=route, service_name=svc)
                summ.interacted(session_id, page_view=True)
                if landing:
                    summ.users.add(user)
                    summ.sessions += 1
                    summ.add("app_sessions_started_total", source=source, medium=medium,
                             service_name=svc)
                    summ.add("app_sessions_started_by_client_total", device=device,
                             browser=browser, os=os_name, service_name=svc)
                    first[0] = False
            return in_session(send)

        first = [True]
        yield page(rng.choice(_LANDING))
        if rng.random() < BOUNCE_SHARE:
            return  # one page, and gone
        for _ in range(rng.randint(1, 6)):
            category = rng.choices(CATEGORIES, weights=_CATEGORY_WEIGHTS)[0]
            yield page(rng.choice(_ROUTES[category]))
            action = rng.choices(ACTIONS, weights=_ACTION_WEIGHTS)[0]
            yield in_session(self._feature(category, action, advance, session_id))
            if category in _RECOMMENDATION_TYPE and rng.random() < 0.35:
                yield from (in_session(a) for a in self._recommendation(category, advance,
                                                                        session_id))
            yield from self._model_reports(t[0])
        if rng.random() < 0.08:
            yield in_session(self._conversion(advance, session_id))

    def _feature(self, category: str, action: str, advance: Callable[[float], float | None],
                 session: str) -> Callable[[], None]:
        def send() -> None:
            when = advance(15)
            self.summary.interacted(session)
            self._event(when, lambda w: self.client.track_feature(category, action, timestamp=w),
                        "app.feature_used")
            self.summary.add("app_feature_usage_total", feature=category, action=action,
                             service_name=self.o.service_name)
        return send

    def _conversion(self, advance: Callable[[float], float | None],
                    session: str) -> Callable[[], None]:
        rng = self.rng
        if rng.random() < 0.6:
            kind, value = "subscribe", rng.choice((9.99, 79.99))
        else:
            kind, value = "purchase", round(rng.uniform(4.99, 49.99), 2)

        def send() -> None:
            when = advance(30)
            self.summary.interacted(session)
            self._event(when, lambda w: self.client.track_conversion(kind, value, "USD",
                                                                     timestamp=w),
                        "app.conversion")
            svc = self.o.service_name
            self.summary.add("app_conversions_total", type=kind, service_name=svc)
            self.summary.add("app_conversion_value_total", value, type=kind, currency="USD",
                             service_name=svc)
        return send

    def _recommendation(self, category: str, advance: Callable[[float], float | None],
                        session: str) -> Iterator[Callable[[], None]]:
        rng, c, summ = self.rng, self.client, self.summary
        provider, model = rng.choices(_MODELS, weights=_MODEL_WEIGHTS)[0]
        rec_type = _RECOMMENDATION_TYPE[category]
        latency = rng.lognormvariate(math.log(0.9 if "mini" in model else 0.7), 0.5)
        error = "timeout" if rng.random() < 0.03 else None
        # a call that timed out reports no usage
        tokens_in = 0 if error else rng.randint(300, 2500)
        tokens_out = 0 if error else rng.randint(80, 700)
        points = model == _POINTS_MODEL
        span = not points or rng.random() < 1 / _SPAN_SAMPLE
        # the spans-only model caches its long system prompt: reads most calls, a write now
        # and then (included in the input tokens, as the conventions count them)
        cache_read = 0 if points or error or rng.random() < 0.2 else rng.randint(0, tokens_in)
        cache_write = 0 if points or error or cache_read else rng.randint(0, tokens_in)
        reason = "length" if tokens_out >= 680 else "stop"
        confidence = round(min(0.99, max(0.05, rng.betavariate(6, 2))), 3)
        rec_id = [""]

        def llm_call() -> None:
            when = advance(2)
            svc = self.o.service_name
            genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": provider,
                     "gen_ai_request_model": model, "error_type": error or "",
                     "service_name": svc}
            usage = {} if error else {"input": tokens_in, "output": tokens_out}
            span_costs = {} if error else self._span_cost(provider, model, SpanUsage(
                tokens_in, tokens_out, cache_read, cache_write))
            point_costs = {kind: n * self._unit_price(provider, model, kind)
                           for kind, n in usage.items()}
            if span:
                extra: dict[str, Any] = {"app.feature": category}
                if not error:
                    extra["gen_ai.response.finish_reasons"] = [reason]
                if cache_read:
                    extra["gen_ai.usage.cache_read.input_tokens"] = cache_read
                if cache_write:
                    extra["gen_ai.usage.cache_creation.input_tokens"] = cache_write
                c.record_genai_operation("chat", provider, model, duration=latency,
                                         input_tokens=usage.get("input"),
                                         output_tokens=usage.get("output"),
                                         error_type=error, end_time=when, **extra)
                summ.spans += 1
                summ.seen(time.time() if when is None else when)
                summ.add("gen_ai_span_operation_duration_seconds_count", 1.0, **genai)
                for kind, n in usage.items():
                    summ.add("gen_ai_span_token_usage_sum", n, gen_ai_token_type=kind, **genai)
                if not error:
                    summ.add("gen_ai_span_finish_reasons_total", 1.0,
                             gen_ai_response_finish_reason=reason,
                             **{k: v for k, v in genai.items() if k != "error_type"})
                for part, usd in span_costs.items():
                    summ.add("gen_ai_span_cost_usd_total", usd, gen_ai_provider_name=provider,
                             gen_ai_request_model=model, gen_ai_token_type=part,
                             app_feature=category, service_name=svc)
            if points:
                self.points.record({"gen_ai.operation.name": "chat",
                                    "gen_ai.provider.name": provider,
                                    "gen_ai.request.model": model}, latency, error, tokens_in,
                                   tokens_out)
                summ.add("gen_ai_client_operation_duration_seconds_count", 1.0, **genai)
                for kind, n in usage.items():
                    summ.add("gen_ai_client_token_usage_sum", n, gen_ai_token_type=kind,
                             **genai)
                    summ.add("gen_ai_client_cost_usd_total", point_costs[kind],
                             gen_ai_provider_name=provider, gen_ai_request_model=model,
                             gen_ai_token_type=kind, app_feature="unknown", service_name=svc)
            figures = summ.genai.setdefault(model, GenAIFigures(
                "metric points" if points else "spans"))
            figures.calls += 1
            figures.failed += error is not None
            figures.input_tokens += tokens_in
            figures.cached_tokens += cache_read
            figures.output_tokens += tokens_out
            figures.cost_usd += sum((point_costs if points else span_costs).values())

        def generated() -> None:
            when = advance(0.5)
            summ.interacted(session)
            self._event(when, lambda w: rec_id.__setitem__(0, c.track_recommendation(
                model, rec_type, confidence, timestamp=w)), "ai.recommendation.generated")
            summ.add("ai_recommendations_total", model=model, type=rec_type)

        yield llm_call
        if error:
            return
        yield generated
        if rng.random() < 0.85:
            outcome = rng.choices(_OUTCOMES, weights=_OUTCOME_WEIGHTS)[0]
            response_time = round(rng.lognormvariate(math.log(6), 0.8), 3)

            def response() -> None:
                when = advance(response_time)
                summ.interacted(session)
                self._event(when, lambda w: c.track_recommendation_response(
                    model, rec_id[0], cast(sdk.Outcome, outcome), response_time, timestamp=w),
                    "ai.recommendation.response")
                summ.add("ai_recommendation_responses_total", model=model, outcome=outcome)
            yield response
        if rng.random() < 0.3:
            name = rng.choice(_EVALUATIONS)
            score = round(min(1.0, max(0.0, rng.gauss(0.8 if name == "safety" else 0.7, 0.15))), 3)
            label = "pass" if score >= 0.6 else "fail"

            def evaluation() -> None:
                when = advance(1)
                summ.interacted(session)
                self._event(when, lambda w: c.track_evaluation(name, score, label, timestamp=w),
                            "gen_ai.evaluation.result")
                summ.add("gen_ai_evaluation_results_total", gen_ai_evaluation_name=name,
                         gen_ai_evaluation_score_label=label)
            yield evaluation

    def _span_cost(self, provider: str, model: str, usage: SpanUsage) -> dict[str, float]:
        found = self.prices.find(provider, model)
        return (found and self.prices.price(found, usage)) or {}

    def _unit_price(self, provider: str, model: str, token_type: str) -> float:
        found = self.prices.find(provider, model)
        return (found and self.prices.unit_price(found, token_type)) or 0.0

    def _model_reports(self, event_time: float | None) -> Iterator[Action]:
        """Each model reports its performance about once a minute of traffic."""
        now = time.time() if event_time is None else event_time
        if self.next_report == 0.0:
            self.next_report = now  # first report at the start
        if self.o.backfill:
            due = self.rng.random() < 0.02
        else:
            due = now >= self.next_report
        if not due:
            return
        self.next_report = now + 60
        for provider, model in _MODELS:
            accuracy = round(min(0.99, max(0.5, self.rng.gauss(0.9 if "mini" in model else 0.87,
                                                               0.03))), 3)
            latency = round(self.rng.lognormvariate(math.log(0.8), 0.3), 3)
            error_rate = round(min(0.2, max(0.0, self.rng.gauss(0.015, 0.01))), 4)

            def report(model: str = model, accuracy: float = accuracy, latency: float = latency,
                       error_rate: float = error_rate) -> None:
                self._event(event_time, lambda w: self.client.track_model_performance(
                    model, accuracy, latency, error_rate, timestamp=w), "ai.model.performance")
            yield report


def _screen(stream: TextIO) -> dict[str, int]:
    # a terminal that reports a size of 0x0 (a fresh pty, some CI consoles) would hide the bar
    try:
        size = os.get_terminal_size(stream.fileno())
        return {"ncols": size.columns or 100, "nrows": size.lines or 24}
    except (OSError, ValueError):
        return {"ncols": 100, "nrows": 24}


def run_demo(options: DemoOptions, progress: bool | None = None,
             progress_file: TextIO | None = None, client: sdk.Analytics | None = None) -> Summary:
    """Sends ``round(rate * duration)`` items paced at ``rate`` per second, flushes, and
    returns what was sent. ``progress`` None shows a bar when ``progress_file`` (stderr) is a
    terminal."""
    from tqdm import tqdm

    progress_file = progress_file or sys.stderr
    if progress is None:
        progress = progress_file.isatty()
    seed = options.seed if options.seed is not None else random.randrange(2 ** 31)
    rng = random.Random(seed)
    own_client = client is None
    client = client or sdk.Analytics(options.endpoint, options.service_name,
                                     headers=options.headers or None,
                                     resource_attributes={"deployment.environment.name": "demo"},
                                     max_queue_size=65536, schedule_delay_millis=200,
                                     close_at_exit=False)
    summary = Summary(options, seed)
    total = max(1, round(options.rate * options.duration))
    points = _GenAIPoints(options)
    traffic = _Traffic(client, options, rng, summary, points)
    bar = tqdm(total=total, unit="item", desc="demo", file=progress_file, disable=not progress,
               **(_screen(progress_file) if progress else {}))
    started = time.monotonic()
    try:
        items = traffic.sessions()
        for i in range(total):
            due = started + i / options.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            next(items)()
            bar.update(1)
    except KeyboardInterrupt:
        pass  # a user stopping early still gets the summary of what was sent
    finally:
        bar.close()
        summary.elapsed = time.monotonic() - started
        client.flush(30)
        points.close()
        summary.metric_exports_failed = points.failed_exports
        summary.stats = client.stats()
        if own_client:
            client.shutdown(2)
    return summary


def write_json(summary: Summary, path: str) -> None:
    """Writes the summary as JSON to ``path`` ('-' for standard output)."""
    text = json.dumps(summary.to_json(), indent=2, sort_keys=True)
    if path == "-":
        print(text)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
