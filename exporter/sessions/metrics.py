"""The visit metrics: exact counters and histograms of visits started and closed.

They live in a :class:`~exporter.store.Store` of their own (series caps, the overflow series,
exposition and the state snapshot work as for mapped metrics) and are updated once per batch
of visits, never per event. Each visit is counted once when it starts and once when it
closes, by the process that opened or closed it, so the figures of several replicas add up
with ``sum``.
"""

from __future__ import annotations

import bisect
import threading

from exporter.rules import COUNTER, HISTOGRAM, MetricDef
from exporter.sessions.store import REASONS, Dims, Visit
from exporter.store import Deltas, Store
from exporter.web_analytics import DIMENSIONS, WebAnalyticsConfig

__all__ = ["VisitMetrics", "DURATION_BUCKETS", "PAGE_VIEW_BUCKETS"]

# Visit duration: bounces (one event) are 0 and fall in the first bucket.
DURATION_BUCKETS = (0.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
PAGE_VIEW_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0)

_SERVICE, _SOURCE, _MEDIUM, _CAMPAIGN, _DEVICE, _BROWSER, _OS, _COUNTRY = range(8)


class VisitMetrics:
    """Counts started and closed visits into :attr:`store`. Thread-safe."""

    def __init__(self, web_analytics: WebAnalyticsConfig, max_series: int = 2000,
                 max_label_length: int = 256):
        self.web_analytics = web_analytics
        label_index = {name: i for i, name in enumerate(DIMENSIONS)}
        self._session_index = (_SERVICE, *(label_index[name]
                                           for name in web_analytics.session_labels))
        self._started_index = (_SERVICE, _SOURCE, _MEDIUM) + (
            (_CAMPAIGN,) if web_analytics.campaign_label else ())
        session_labels = ("service_name", *web_analytics.session_labels)

        def metric(name: str, kind: str, help: str, labels: tuple[str, ...],
                   buckets: tuple[float, ...] = ()) -> MetricDef:
            return MetricDef(name, kind, help, labels, buckets, max_series)

        defs = [
            metric("app_sessions_started_total", COUNTER,
                   "Visits (sessions) started, by where they came from; counted when the "
                   "visit's first event arrives.",
                   tuple(DIMENSIONS[i] for i in self._started_index)),
            metric("app_sessions_started_by_client_total", COUNTER,
                   "Visits started, by device class, browser and operating system.",
                   ("service_name", "device", "browser", "os")),
            metric("app_sessions_closed_total", COUNTER,
                   "Visits closed: after windows.session_timeout without events, at an end "
                   "event, or early when windows.max_open_sessions is reached.", session_labels),
            metric("app_sessions_bounced_total", COUNTER,
                   "Closed visits with at most one interactive event (one page view and "
                   "nothing else): bounces.", session_labels),
            metric("app_sessions_converted_total", COUNTER,
                   "Closed visits with at least one conversion event.", session_labels),
            metric("app_session_duration_seconds", HISTOGRAM,
                   "Duration of closed visits: last minus first event time; bounces are 0.",
                   session_labels, DURATION_BUCKETS),
            metric("app_session_page_views", HISTOGRAM,
                   "Page views per closed visit.", session_labels, PAGE_VIEW_BUCKETS),
            metric("app_session_entries_total", COUNTER,
                   "Closed visits by the route of their first page view (entry page).",
                   ("service_name", "route")),
            metric("app_session_exits_total", COUNTER,
                   "Closed visits by the route of their last page view (exit page).",
                   ("service_name", "route")),
        ]
        self.definitions = {d.name: d for d in defs}
        self.store = Store(self.definitions, max_label_length)
        self._lock = threading.Lock()
        # visits closed in this process, by reason (a self-metric)
        self.closed_by_reason = {reason: 0 for reason in REASONS}

    def started(self, dims: list[Dims]) -> None:
        """Counts visits that started, by their dimensions."""
        counters: dict[tuple[str, tuple[str, ...]], float] = {}
        started_index = self._started_index
        for d in dims:
            for key in (("app_sessions_started_total", tuple(d[i] for i in started_index)),
                        ("app_sessions_started_by_client_total",
                         (d[_SERVICE], d[_DEVICE], d[_BROWSER], d[_OS]))):
                counters[key] = counters.get(key, 0.0) + 1
        self.store.apply(Deltas(counters=counters))

    def closed(self, visits: list[Visit], reason: str) -> None:
        """Counts visits that closed: closed, bounced, converted, duration, page views,
        entry and exit page."""
        counters: dict[tuple[str, tuple[str, ...]], float] = {}
        histograms: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        index = self._session_index

        def count(name: str, labels: tuple[str, ...]) -> None:
            key = (name, labels)
            counters[key] = counters.get(key, 0.0) + 1

        def observe(name: str, labels: tuple[str, ...], buckets: tuple[float, ...],
                    value: float) -> None:
            key = (name, labels)
            h = histograms.get(key)
            if h is None:
                h = histograms[key] = [0.0, 0] + [0] * (len(buckets) + 1)
            h[0] += value
            h[1] += 1
            h[2 + bisect.bisect_left(buckets, value)] += 1

        for v in visits:
            d = v.dims
            labels = tuple(d[i] for i in index)
            count("app_sessions_closed_total", labels)
            if v.bounced:
                count("app_sessions_bounced_total", labels)
            if v.converted:
                count("app_sessions_converted_total", labels)
            observe("app_session_duration_seconds", labels, DURATION_BUCKETS, v.duration)
            observe("app_session_page_views", labels, PAGE_VIEW_BUCKETS, v.page_views)
            if v.entry_route is not None:
                count("app_session_entries_total", (d[_SERVICE], v.entry_route))
            if v.exit_route is not None:
                count("app_session_exits_total", (d[_SERVICE], v.exit_route))
        self.store.apply(Deltas(counters=counters, histograms=histograms))
        with self._lock:
            self.closed_by_reason[reason] = self.closed_by_reason.get(reason, 0) + len(visits)
