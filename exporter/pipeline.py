"""The exporter's running state: configuration, compiled mapping, store, registry, and the
ingest path every receiver request goes through."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter.collectors import MappedMetricsCollector, SelfMetrics, StoreStatsCollector
from exporter.config import Config, ConfigError, load_config
from exporter.mapper import Mapping, MapResult
from exporter.records import METRIC, Batch
from exporter.store import Store
from exporter.windows import install as install_kpis

__all__ = ["Pipeline", "Observer"]

log = logging.getLogger("kpi_exporter")

# The deprecated way to name an event, read by the log decoders.
_ALWAYS_DECODED = frozenset({"event.name"})

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
        # Attribute keys each observer reads, when it said so with add_observer(); an observer
        # appended to ``observers`` directly sees every attribute.
        self._observer_attributes: dict[int, frozenset[str]] = {}
        # Called with every decoded batch before it is mapped (the privacy denylist is one).
        self.filters: list[Callable[[Batch], None]] = []
        self._reload_lock = threading.Lock()
        self.config_path: str | None = None
        self.config_overrides: dict[str, str] = {}
        self.ready = threading.Event()
        self.kpi = install_kpis(self)

    def attributes_to_decode(self, signal: str) -> frozenset[str] | None:
        """The attribute keys decoders should extract for a signal (None: all of them).

        Metric points keep every attribute: they tell one source's cumulative stream from
        another's."""
        if signal == METRIC:
            return None
        keys = self.mapping.attribute_keys | _ALWAYS_DECODED
        for observer in self.observers:
            wanted = self._observer_attributes.get(id(observer))
            if wanted is None:
                return None
            keys |= wanted
        return keys

    def add_observer(self, observer: Observer, attributes: Iterable[str] | None = None) -> None:
        """Calls ``observer(batch, result)`` after every ingested batch. ``attributes`` names
        the attribute keys it reads, so decoders can skip the rest; None means all."""
        self.observers.append(observer)
        if attributes is not None:
            self._observer_attributes[id(observer)] = frozenset(attributes)

    def ingest(self, batch: Batch) -> MapResult:
        """Maps a decoded batch, applies it to the store and counts what happened."""
        for apply_filter in self.filters:
            apply_filter(batch)
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
            self.store.max_label_length = config.max_label_value_length
            old, new = self.config, config
            restart_only = [name for name, a, b in (
                ("server.otlp_listen", old.server.otlp_listen, new.server.otlp_listen),
                ("server.metrics_listen", old.server.metrics_listen, new.server.metrics_listen),
                ("server.threads", old.server.threads, new.server.threads),
                ("state", old.state, new.state),
            ) if a != b]
            if restart_only:
                log.warning("%s changed in the config; restart to apply", ", ".join(restart_only))
            self.mapping = mapping
            self.config = config
            self.metrics.reloads.labels("success").inc()
            self.metrics.last_reload_ok.set(1)
            self.metrics.last_reload_time.set_to_current_time()
            message = (f"config reloaded from {config.describe()}; kept the series of {kept} "
                       f"metrics, dropped {dropped}")
            log.info(message)
            return True, message
