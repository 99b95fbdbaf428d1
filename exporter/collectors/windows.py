"""The KPI window gauges and the windows' own health."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.naming import OVERFLOW_LABEL
from exporter.windows.config import breakdown_metric_names
from exporter.windows.store import OVERFLOW_VALUE, Estimate, WindowStore

__all__ = ["WindowsCollector"]

P = "kpi_exporter_"

_HELP = {
    "app_active_users": "Distinct users (user.id) with at least one event in the window; a "
                        "HyperLogLog estimate (docs/kpis.md gives the error bound).",
    "app_sessions": "Distinct sessions (session.id) with at least one event in the window, "
                    "anonymous ones included; a HyperLogLog estimate.",
    "app_conversion_rate_ratio": "Sessions with a conversion event in the window over all "
                                 "sessions in the window (0 when there were none).",
}


class WindowsCollector(Collector):
    """Fresh families on every scrape from the windows' merged sketches."""

    def __init__(self, windows: WindowStore):
        self._windows = windows

    def collect(self) -> Iterator[Metric]:
        w = self._windows
        estimates = w.estimates()
        if estimates is not None:
            yield from self._gauges(w, estimates)
        yield from self._health(w)

    def _gauges(self, w: WindowStore, estimates: list[Estimate]) -> Iterator[Metric]:
        users = GaugeMetricFamily("app_active_users", _HELP["app_active_users"],
                                  labels=["window"])
        sessions = GaugeMetricFamily("app_sessions", _HELP["app_sessions"], labels=["window"])
        rate = GaugeMetricFamily("app_conversion_rate_ratio", _HELP["app_conversion_rate_ratio"],
                                 labels=["window"])
        breakdowns = w.config.breakdowns
        split = []
        for b in breakdowns:
            names = breakdown_metric_names(b.label)
            split.append(tuple(
                GaugeMetricFamily(n, f"{_HELP[base]} By {b.attribute}.")
                for n, base in zip(names, ("app_active_users", "app_sessions",
                                           "app_conversion_rate_ratio"))))
        for e in estimates:
            if e.breakdown < 0:
                users.add_metric([e.window], round(e.users))
                sessions.add_metric([e.window], round(e.sessions))
                rate.add_metric([e.window], e.conversion_rate)
                continue
            label = breakdowns[e.breakdown].label
            labels = {"window": e.window}
            if e.value == OVERFLOW_VALUE:
                labels[OVERFLOW_LABEL] = "true"
            else:
                labels[label] = e.value
            fu, fs, fr = split[e.breakdown]
            _add(fu, labels, round(e.users))
            _add(fs, labels, round(e.sessions))
            _add(fr, labels, e.conversion_rate)
        yield users
        yield sessions
        yield rate
        for families in split:
            yield from families

    def _health(self, w: WindowStore) -> Iterator[Metric]:
        breakdowns = w.config.breakdowns
        dropped = CounterMetricFamily(P + "window_records_dropped", "Events not counted in the "
                                      "KPI windows, by reason: too_old (older than every "
                                      "window), in_future (beyond windows.max_future), "
                                      "store_unavailable (the shared window store did not take "
                                      "them while the buffer was full).",
                                      labels=["reason"])
        for reason, n in sorted(w.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        if breakdowns:
            overflow = CounterMetricFamily(P + "window_overflow_records", "Events counted under a "
                                           "breakdown's overflow value because it had "
                                           "max_values values already.", labels=["breakdown"])
            for b, n in zip(breakdowns, w.overflow):
                overflow.add_metric([b.label], n)
            yield overflow
        up = GaugeMetricFamily(P + "window_store_up", "1 when the KPI window store answers "
                               "(always, for the memory store); while 0 the window gauges are "
                               "left out.")
        up.add_metric([], 1 if w.up else 0)
        yield up
        if w.config.shared:
            buffered = GaugeMetricFamily(P + "window_store_buffered_events", "Events waiting "
                                         "to be sent to the shared window store.")
            buffered.add_metric([], w.buffered_events())
            yield buffered
            errors = CounterMetricFamily(P + "window_store_errors", "Failed operations on the "
                                         "shared window store, by operation (write: sending "
                                         "events, read: reading estimates).",
                                         labels=["operation"])
            for operation, n in sorted(w.errors.items()):
                errors.add_metric([operation], n)
            yield errors
        size_bytes = w.sketch_bytes()
        if size_bytes is not None:
            size = GaugeMetricFamily(P + "window_sketch_bytes", "Size of the KPI window "
                                     "sketches, serialized (in the shared store: its keys, "
                                     "measured once a minute); bounded by the windows, not by "
                                     "the number of users.")
            size.add_metric([], size_bytes)
            yield size


def _add(family: GaugeMetricFamily, labels: dict[str, str], value: float) -> None:
    # label sets differ between a value and the overflow series, so samples go in directly
    family.samples.append(Sample(family.name, labels, value, None, None))
