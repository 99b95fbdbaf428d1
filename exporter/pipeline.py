"""The exporter's running state: configuration, compiled mapping, store, registry, and the
ingest path every receiver request goes through."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter.collectors import MappedMetricsCollector, SelfMetrics, StoreStatsCollector
from exporter.config import Config, ConfigError, load_config
from exporter.mapper import Mapping, MapResult
from exporter.records import Batch
from exporter.store import Store

__all__ = ["Pipeline", "Observer"]

log = logging.getLogger("kpi_exporter")

# Called with every decoded batch after it was mapped (the KPI windows are one).
Observer = Callable[[Batch, MapResult], None]


class Pipeline:
    """Decoded batches in, store updates and self-metrics out. Thread-safe."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 process_metrics: bool = True):
        self.config = config
        self.mapping = Mapping(config.rules)
        self.store = Store(self.mapping.metrics, config.max_label_value_length, clock=clock)
        self.registry = CollectorRegistry(auto_describe=False)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.metrics = SelfMetrics(self.registry)
        self.registry.register(MappedMetricsCollector(lambda: self.store))
        self.registry.register(StoreStatsCollector(
            lambda: self.store, lambda: (self.mapping.cache_hits, self.mapping.cache_misses)))
        self.observers: list[Observer] = []
        self._reload_lock = threading.Lock()
        self.config_path: str | None = None
        self.config_overrides: dict[str, str] = {}
        self.ready = threading.Event()

    def ingest(self, batch: Batch) -> MapResult:
        """Maps a decoded batch, applies it to the store and counts what happened."""
        mapping = self.mapping  # one consistent mapping per batch, even across a reload
        result = mapping.map_batch(batch)
        if result.deltas:
            self.store.apply(result.deltas)
        signal = batch.signal
        m = self.metrics
        m.received.labels(signal).inc(result.received)
        if result.unmatched:
            m.unmatched.labels(signal).inc(result.unmatched)
        for reason, n in result.rejected.items():
            m.rejected.labels(signal, reason).inc(n)
        for observer in self.observers:
            observer(batch, result)
        return result

    def reload(self) -> tuple[bool, str]:
        """Reloads the config file the exporter was started with. A valid config takes effect
        at once and keeps the series of every metric whose shape is unchanged; an invalid one
        is refused and the running config stays."""
        with self._reload_lock:
            try:
                config = load_config(self.config_path, overrides=self.config_overrides)
            except ConfigError as exc:
                self.metrics.reloads.labels("failure").inc()
                self.metrics.last_reload_ok.set(0)
                log.error("config reload refused, keeping the running config: %s",
                          "; ".join(exc.problems))
                return False, str(exc)
            mapping = Mapping(config.rules)
            kept, dropped = self.store.reconfigure(mapping.metrics)
            if (config.server.otlp_listen, config.server.metrics_listen) != (
                    self.config.server.otlp_listen, self.config.server.metrics_listen):
                log.warning("listen addresses changed in the config; restart to apply them")
            self.mapping = mapping
            self.config = config
            self.metrics.reloads.labels("success").inc()
            self.metrics.last_reload_ok.set(1)
            self.metrics.last_reload_time.set_to_current_time()
            message = (f"config reloaded from {config.describe()}; kept the series of {kept} "
                       f"metrics, dropped {dropped}")
            log.info(message)
            return True, message
