"""The exporter's own metrics (``kpi_exporter_*``): what came in, what was lost and why.

Per-request counters are prometheus_client metrics (updated once per request, never per
record); per-metric series counts come from the store at scrape time.
"""

from __future__ import annotations

import platform
from typing import Any, Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.store import Store

__all__ = ["SelfMetrics", "StoreStatsCollector", "StateMetrics"]

P = "kpi_exporter_"

# _created series double the exposition and no dashboard or alert of ours reads them.
disable_created_metrics()


class SelfMetrics:
    """The per-request self-metrics, registered in the exporter's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.received = Counter(P + "records_received", "Records (log records, spans, metric "
                                "data points) received, by signal.", ["signal"], registry=registry)
        self.rejected = Counter(P + "records_rejected", "Records that could not be used, by "
                                "signal and reason; the rest of their batch was kept.",
                                ["signal", "reason"], registry=registry)
        self.unmatched = Counter(P + "records_unmatched", "Records that no rule mapped, by "
                                 "signal (see `kpi-exporter explain`).", ["signal"],
                                 registry=registry)
        self.observer_errors = Counter(P + "observer_errors", "Batches an observer (the KPI "
                                       "windows) failed on after the metrics were updated, by "
                                       "observer; the exporter's log has the error.",
                                       ["observer"], registry=registry)
        self.requests = Counter(P + "requests", "OTLP export requests, by transport (http, "
                                "grpc), signal and status code (the HTTP status, or the gRPC "
                                "status name).", ["transport", "signal", "code"],
                                registry=registry)
        self.request_duration = Histogram(
            P + "request_duration_seconds", "Time to handle an OTLP export request, by "
            "transport and signal.", ["transport", "signal"], registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.request_bytes = Counter(P + "request_bytes", "Bytes of OTLP request bodies, by "
                                     "transport and signal: over HTTP as received (before "
                                     "decompression), over gRPC after decompression.", ["transport", "signal"], registry=registry)
        self.reloads = Counter(P + "config_reloads", "Configuration reloads, by outcome "
                               "(success, failure).", ["outcome"], registry=registry)
        self.last_reload_ok = Gauge(P + "config_last_reload_successful", "1 if the last "
                                    "configuration reload succeeded, else 0.", registry=registry)
        self.last_reload_time = Gauge(P + "config_last_reload_success_timestamp_seconds",
                                      "When the configuration was last loaded successfully.",
                                      registry=registry)
        self.web_config_reloads = Counter(P + "web_config_reloads", "Loads of the web config "
                                          "file (server.web_config_file) after a change of it "
                                          "or of the files it names, or a config reload, by "
                                          "outcome (success, failure).", ["outcome"],
                                          registry=registry)
        self.web_config_last_reload_ok = Gauge(P + "web_config_last_reload_successful",
                                               "1 if the last load of the web config file "
                                               "succeeded (or there is none), else 0: the "
                                               "listeners still use the last good one.",
                                               registry=registry)
        self.tls_refused = Counter(P + "tls_connections_refused", "TLS connections dropped "
                                   "before they reached a listener, by listener and reason "
                                   "(handshake: failed or timed out; client_san: the client "
                                   "certificate has none of client_allowed_sans; "
                                   "connection_limit); 0 while TLS is off.",
                                   ["listener", "reason"],
                                   registry=registry)
        self.http_denied = Counter(P + "http_requests_denied", "Requests to the metrics "
                                   "listener refused by the web config, by reason "
                                   "(unauthorized: basic auth; rate_limited).", ["reason"],
                                   registry=registry)
        self.build = Info(P + "build", "The exporter's version.", registry=registry)
        self.build.info({"version": __version__, "python_version": platform.python_version()})
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)
            self.web_config_reloads.labels(outcome)
        for reason in ("unauthorized", "rate_limited"):
            self.http_denied.labels(reason)
        self.web_config_last_reload_ok.set(1)
        self.last_reload_ok.set(1)
        self.last_reload_time.set_to_current_time()


_Family = GaugeMetricFamily | CounterMetricFamily


def _per_metric(rows: Iterable[tuple[Any, ...]], *families: _Family) -> tuple[_Family, ...]:
    """``families`` labelled by metric, filled from ``rows`` of (metric name, one value per
    family)."""
    for name, *values in rows:
        for family, value in zip(families, values):
            family.add_metric([name], value)
    return families


class StoreStatsCollector(Collector):
    """Series, overflow and expiry per mapped metric, and the rule lookup cache."""

    def __init__(self, store: Store, cache_stats: Callable[[], tuple[int, int]],
                 more_stores: Sequence[Store] = ()):
        self._stores = [store, *more_stores]
        self._cache_stats = cache_stats

    def collect(self) -> Iterator[Metric]:
        series = GaugeMetricFamily(P + "metric_series", "Series a mapped metric has now "
                                   "(the overflow series included).", labels=["metric"])
        limit = GaugeMetricFamily(P + "metric_series_limit", "Series a mapped metric may have "
                                  "before updates go to its overflow series.", labels=["metric"])
        overflow = CounterMetricFamily(P + "metric_overflow_updates", "Label sets routed to a "
                                       "metric's overflow series because its series cap was "
                                       "reached (each counted once per request it came in).", labels=["metric"])
        expired = CounterMetricFamily(P + "metric_series_expired", "Series removed after being "
                                      "idle longer than their rule's series_ttl.",
                                      labels=["metric"])
        rows = []
        stream_rows = []
        for store in self._stores:
            with store.lock:
                rows += [(s.definition.name, len(s.series), s.definition.max_series,
                          s.overflow_updates, s.expired)
                         for s in store.metrics.values()]
                # only metrics fed by cumulative streams have a stream table to report
                stream_rows += [(s.definition.name, len(s.streams), store.stream_limit(s),
                                 s.streams_evicted, s.streams_expired)
                                for s in store.metrics.values()
                                if s.streams or s.streams_evicted or s.streams_expired]
        yield from _per_metric(rows, series, limit, overflow, expired)
        streams = GaugeMetricFamily(P + "metric_streams", "Cumulative OTLP streams a mapped "
                                    "metric remembers now, to turn their points into "
                                    "increases.", labels=["metric"])
        streams_limit = GaugeMetricFamily(P + "metric_streams_limit", "Cumulative streams a "
                                          "mapped metric remembers at most "
                                          "(limits.max_streams_per_metric).", labels=["metric"])
        evicted = CounterMetricFamily(P + "metric_streams_evicted", "Cumulative OTLP streams "
                                      "forgotten because a metric had more than its stream "
                                      "limit; a forgotten stream that comes back counts from "
                                      "its next point.", labels=["metric"])
        stale = CounterMetricFamily(P + "metric_streams_expired", "Cumulative OTLP streams "
                                    "forgotten after sending nothing for limits.stream_ttl; "
                                    "one that comes back counts from its next point.",
                                    labels=["metric"])
        yield from _per_metric(stream_rows, streams, streams_limit, evicted, stale)
        hits, misses = self._cache_stats()
        cache = CounterMetricFamily(P + "rule_cache_lookups", "Lookups of the rules for a "
                                    "(signal, name), by result (hit, miss).", labels=["result"])
        cache.add_metric(["hit"], hits)
        cache.add_metric(["miss"], misses)
        yield cache


class StateMetrics:
    """Self-metrics of the state file: saves by outcome, their duration, size and time."""

    def __init__(self, registry: CollectorRegistry):
        self.saves = Counter(P + "state_saves", "Saves of the state file, by outcome "
                             "(success, failure).", ["outcome"], registry=registry)
        self.save_duration = Histogram(
            P + "state_save_duration_seconds", "Time to snapshot and write the state file.",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.bytes = Gauge(P + "state_bytes", "Size of the state file last written (or "
                           "restored), in bytes.", registry=registry)
        self.last_save = Gauge(P + "state_last_save_timestamp_seconds", "When the state file "
                               "was last written successfully (at start: when the restored "
                               "one was written).", registry=registry)
        for outcome in ("success", "failure"):
            self.saves.labels(outcome)
