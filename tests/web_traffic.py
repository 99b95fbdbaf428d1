"""Known web traffic for the visit truth tests: visits with known page views, durations,
sources, devices, countries, bounces and conversions, sent through the real OpenTelemetry
SDK, and the exact samples the visit metrics must show for them."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from exporter.sessions.metrics import DURATION_BUCKETS, PAGE_VIEW_BUCKETS

SERVICE = "truth-shop"
# (referrer, page query, source, medium, campaign)
SOURCES = (
    ("https://www.google.com/search?q=shoes", "", "Google", "search", "(none)"),
    ("https://news.ycombinator.com/item?id=1", "", "Hacker News", "social", "(none)"),
    ("", "utm_source=newsletter&utm_medium=email&utm_campaign=spring", "newsletter", "email",
     "spring"),
    ("https://l.facebook.com/l.php", "", "Facebook", "social", "(none)"),
    ("", "", "Direct / None", "(none)", "(none)"),
    ("https://blog.example.org/post/7", "", "blog.example.org", "referral", "(none)"),
    ("https://chatgpt.com/", "", "ChatGPT", "ai", "(none)"),
    ("https://www.google.com/", "gclid=abc123", "Google", "cpc", "(none)"),
)
SOURCE_WEIGHTS = (30, 8, 10, 8, 25, 6, 5, 8)
# (user agent, device, browser, os)
CLIENTS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "mobile", "Safari", "iOS"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.6778.81 Mobile Safari/537.36", "mobile", "Chrome", "Android"),
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1", "tablet", "Safari", "iOS"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/18.1 Safari/605.1.15", "desktop", "Safari", "macOS"),
)
CLIENT_WEIGHTS = (40, 25, 15, 8, 12)
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
COUNTRIES = ("DE", "US", "FR", "")
COUNTRY_WEIGHTS = (40, 35, 15, 10)
ROUTES = ("/", "/shoes", "/shoes/:id", "/cart", "/checkout", "/about")
PAGE = "https://shop.example.com"

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Visit:
    """One visit: its events as (event name, time in ms, attributes)."""

    session: str
    source: tuple[str, str, str, str, str]
    client: tuple[str, str, str, str]
    country: str
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    page_views: int = 0
    interactions: int = 0
    converted: bool = False
    entry: str = ""
    exit: str = ""

    @property
    def duration(self) -> float:
        times = [t for name, t, _ in self.events if name != "app.session.end"]
        return (max(times) - min(times)) / 1000.0


def make_visits(n: int, seed: int, base_ms: int, bots: int = 0) -> tuple[list[Visit], int]:
    """``n`` human visits and ``bots`` bot visits (which must count as no visit): the
    visits, and how many events they hold in all."""
    rng = random.Random(seed)
    visits = []
    for i in range(n + bots):
        bot = i >= n
        source = rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        client = (BOT_UA, "bot", "Googlebot", "unknown") if bot else rng.choices(
            CLIENTS, CLIENT_WEIGHTS)[0]
        country = rng.choices(COUNTRIES, COUNTRY_WEIGHTS)[0]
        v = Visit(f"truth-{seed}-{i}", source, client, country)
        t = base_ms + rng.randrange(0, 600_000)
        # half the visits are bounces: one page view (sometimes with a non-interactive event)
        pages = 1 if rng.random() < 0.45 else rng.randint(2, 7)
        for p in range(pages):
            route = ROUTES[0] if p == 0 and rng.random() < 0.5 else rng.choice(ROUTES)
            attrs: dict[str, Any] = {"url.path": route, "user_agent.original": client[0]}
            if p == 0:
                if source[0]:
                    attrs["app.referrer"] = source[0]
                attrs["url.full"] = PAGE + route.replace(":id", "17") + (
                    "?" + source[1] if source[1] else "")
                if country:
                    # older Collector geoip processors write the legacy name
                    attrs["geo.country.iso_code" if i % 3 else "geo.country_iso_code"] = (
                        country.lower() if i % 5 == 0 else country)
            v.events.append(("app.page_view", t, attrs))
            v.page_views += 1
            v.interactions += 1
            v.entry = v.entry or route
            v.exit = route
            if rng.random() < 0.3:
                t += rng.randrange(500, 20_000)
                v.events.append(("app.feature_used", t, {"app.feature": "search",
                                                         "app.action": "open"}))
                v.interactions += 1
            t += rng.randrange(1_000, 90_000)
        if rng.random() < 0.15:
            # a non-interactive event: lengthens the visit, does not un-bounce it
            v.events.append(("app.scroll", t, {"app.interactive": False}))
            t += rng.randrange(100, 5_000)
        if rng.random() < 0.1:
            v.events.append(("app.conversion", t, {"app.conversion.type": "purchase"}))
            v.converted = True
            v.interactions += 1
        if rng.random() < 0.3:
            v.events.append(("app.session.end", t + 1, {}))
        visits.append(v)
    return visits, sum(len(v.events) for v in visits)


def send(visits: list[Visit], endpoint: str, batch: int = 512, delay_ms: int = 200) -> None:
    """Sends every visit's events, visit after visit, through the OpenTelemetry SDK. Every
    event carries the user agent, as a browser's resource attributes would."""
    provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=endpoint + "/v1/logs", timeout=30),
        schedule_delay_millis=delay_ms, max_export_batch_size=batch, max_queue_size=65536))
    logger = provider.get_logger("truth.web")
    try:
        for v in visits:
            for name, t, attrs in v.events:
                logger.emit(event_name=name, timestamp=t * 1_000_000,
                            attributes={"session.id": v.session,
                                        "user_agent.original": v.client[0], **attrs})
        assert provider.force_flush(120_000)
    finally:
        provider.shutdown()


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def expected_samples(visits: list[Visit]) -> dict[Key, float]:
    """The visit metrics' samples these visits must produce (counters without _created)."""
    out: dict[Key, float] = {}

    def add(name: str, value: float, **labels: str) -> None:
        key = (name, _labels(**labels))
        out[key] = out.get(key, 0.0) + value

    def histogram(name: str, buckets: tuple[float, ...], value: float, **labels: str) -> None:
        add(name + "_count", 1, **labels)
        add(name + "_sum", value, **labels)
        at = bisect.bisect_left(buckets, value)
        for i, b in enumerate((*buckets, float("inf"))):
            add(name + "_bucket", 1 if i >= at else 0, le=_le(b), **labels)

    for v in visits:
        if v.client[1] == "bot":
            continue
        _, _, source, medium, _ = v.source
        _, device, browser, os_name = v.client
        svc = SERVICE
        labels = {"service_name": svc, "source": source, "device": device,
                  "country": v.country or "unknown"}
        add("app_sessions_started_total", 1, service_name=svc, source=source, medium=medium)
        add("app_sessions_started_by_client_total", 1, service_name=svc, device=device,
            browser=browser, os=os_name)
        add("app_sessions_closed_total", 1, **labels)
        if v.interactions <= 1:
            add("app_sessions_bounced_total", 1, **labels)
        if v.converted:
            add("app_sessions_converted_total", 1, **labels)
        histogram("app_session_duration_seconds", DURATION_BUCKETS, v.duration, **labels)
        histogram("app_session_page_views", PAGE_VIEW_BUCKETS, v.page_views, **labels)
        add("app_session_entries_total", 1, service_name=svc, route=v.entry)
        add("app_session_exits_total", 1, service_name=svc, route=v.exit)
    return out


VISIT_METRICS = ("app_sessions_started", "app_sessions_started_by_client", "app_sessions_closed",
                 "app_sessions_bounced", "app_sessions_converted", "app_session_duration_seconds",
                 "app_session_page_views", "app_session_entries", "app_session_exits")


def visit_samples(samples: dict[Key, float]) -> dict[Key, float]:
    """The visit metrics' samples of a scrape."""
    return {k: v for k, v in samples.items()
            if k[0].removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
            .removesuffix("_sum") in VISIT_METRICS}


def summed(scrapes: list[dict[Key, float]]) -> dict[Key, float]:
    """What sum() over replicas gives, sample by sample."""
    out: dict[Key, float] = {}
    for s in scrapes:
        for k, v in s.items():
            out[k] = out.get(k, 0.0) + v
    return out


def headline(visits: list[Visit]) -> dict[str, float]:
    """The top-row figures: visits, bounce rate, views per visit, mean visit duration."""
    human = [v for v in visits if v.client[1] != "bot"]
    return {"visits": len(human),
            "bounce_rate": sum(v.interactions <= 1 for v in human) / len(human),
            "views_per_visit": sum(v.page_views for v in human) / len(human),
            "mean_duration": sum(v.duration for v in human) / len(human),
            "page_views": sum(v.page_views for v in human)}
