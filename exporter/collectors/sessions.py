"""The open-visit store's own health: visits open, closed by reason, values capped, and a
shared store's buffer and errors."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.sessions.observer import SessionObserver
from exporter.sessions.tracker import SessionTracker
from exporter.web_analytics import DIMENSIONS

__all__ = ["SessionsCollector"]

P = "kpi_exporter_"


class SessionsCollector(Collector):
    """Fresh families on every scrape; nothing is closed or changed here."""

    def __init__(self, tracker: SessionTracker, observer: SessionObserver, shared: bool):
        self._tracker = tracker
        self._observer = observer
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        store = self._tracker.store
        n = store.open_sessions()
        if n is not None:
            open_ = GaugeMetricFamily(P + "open_sessions", "Visits open now (in the shared "
                                      "store: all replicas', measured every few seconds).")
            open_.add_metric([], n)
            yield open_
        closed = CounterMetricFamily(P + "sessions_closed", "Visits this process closed and "
                                     "counted, by reason: timeout (windows.session_timeout "
                                     "without events), end (an end event), evicted (closed "
                                     "early: windows.max_open_sessions was reached).",
                                     labels=["reason"])
        for reason, count in sorted(self._tracker.metrics.closed_by_reason.items()):
            closed.add_metric([reason], count)
        yield closed
        capped = CounterMetricFamily(P + "visit_values_capped", "Visit dimension values "
                                     "counted as (other) because the dimension had "
                                     "web_analytics.max_values (routes: "
                                     "web_analytics.max_routes) values already.",
                                     labels=["dimension"])
        for name, count in zip(DIMENSIONS, self._observer.admit.refused):
            capped.add_metric([name], count)
        capped.add_metric(["route"], self._observer.admit_route.refused[0])
        yield capped
        if store.dropped:
            dropped = CounterMetricFamily(P + "session_updates_dropped", "Visit updates not "
                                          "applied, by reason (store_unavailable: the shared "
                                          "store did not take them while the buffer was full).",
                                          labels=["reason"])
            for reason, count in sorted(store.dropped.items()):
                dropped.add_metric([reason], count)
            yield dropped
        errors = CounterMetricFamily(P + "session_store_errors", "Failed operations on the "
                                     "open-visit store, by operation (write, close).",
                                     labels=["operation"])
        for operation, count in sorted({**store.errors,
                                        "close": store.errors.get("close", 0)
                                        + self._tracker.failures}.items()):
            errors.add_metric([operation], count)
        yield errors
        if self._shared:
            up = GaugeMetricFamily(P + "session_store_up", "1 when the shared open-visit store "
                                   "answers; while 0, visits wait in a bounded buffer.")
            up.add_metric([], 1 if store.up else 0)
            yield up
            buffered = GaugeMetricFamily(P + "session_store_buffered_updates", "Visit updates "
                                         "waiting to be sent to the shared store.")
            buffered.add_metric([], store.buffered())
            yield buffered
        size = store.store_bytes()
        if size is not None:
            family = GaugeMetricFamily(P + "session_store_bytes", "Memory the open visits "
                                       "take (the memory store: estimated; the shared store: "
                                       "measured with MEMORY USAGE every minute).")
            family.add_metric([], size)
            yield family
