"""The ingest path every receiver request goes through: decode, filters, map, store,
observers.

A request sees one rule set from decode to store: the pipeline's view (config, compiled
mapping, filters, the attribute keys to decode) is read once per request, and a reload swaps
the whole view at once. Filters (the privacy denylist) change records in place before they
are mapped; observers (the KPI windows) see the records that were used, after the store was
updated: a record a rule rejected (used whole or not at all) counts nowhere. The pipeline
knows neither windows nor state: the composition root hands it its filters and observers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from exporter import otlp_json, otlp_protobuf
from exporter.collectors.selfmetrics import SelfMetrics
from exporter.config import Config
from exporter.mapper import Mapping, MapResult, Pricer
from exporter.records import METRIC, Batch, DecodeError, Record
from exporter.store import Store

__all__ = ["Pipeline", "Filter", "Observer", "PROTOBUF", "JSON"]

log = logging.getLogger("kpi_exporter")

# Payload formats, as the receivers name them.
PROTOBUF = "protobuf"
JSON = "json"
_DECODERS = {PROTOBUF: otlp_protobuf.DECODERS, JSON: otlp_json.DECODERS}

# The deprecated way to name an event, read by the log decoders.
_ALWAYS_DECODED = frozenset({"event.name"})

# Changes a decoded batch in place before it is mapped (the privacy denylist is one). A
# filter may name attribute keys it reads in an ``attributes`` attribute (a frozenset): they
# are decoded too.
Filter = Callable[[Batch], None]
# Called with the records of a batch that were used (matched or not, never rejected), after
# the store was updated (the KPI windows are one). An observer may name the attribute keys it
# reads in an ``attributes`` attribute (a frozenset), so decoders can skip the rest; without
# one it sees them all.
Observer = Callable[[Batch], None]


def _observer_name(observer: Observer) -> str:
    """The ``observer`` label of an observer: its ``name`` attribute, else its type's name."""
    return str(getattr(observer, "name", type(observer).__name__))


@dataclass(frozen=True)
class _View:
    """One consistent rule set: what a request is decoded, filtered and mapped with."""

    config: Config
    mapping: Mapping
    filters: tuple[Filter, ...]
    # Attribute keys decoders extract from log records and spans (None: all of them).
    keys: frozenset[str] | None


def _without(batch: Batch, rejected: list[Record]) -> Batch:
    """A copy of ``batch`` without the records a rule rejected."""
    gone = {id(r) for r in rejected}
    used = Batch(batch.signal)
    used.records = [r for r in batch.records if id(r) not in gone]
    return used


def _apply_limits(store: Store, config: Config) -> None:
    store.max_label_length = config.max_label_value_length
    store.max_streams_per_metric = config.max_streams_per_metric
    store.stream_ttl = config.stream_ttl


class Pipeline:
    """Payloads in, store updates, observer calls and self-metrics out. Thread-safe."""

    def __init__(self, config: Config, store: Store, metrics: SelfMetrics,
                 filters: Iterable[Filter] = (), observers: Iterable[Observer] = (),
                 pricer: Pricer | None = None):
        self.store = store
        self.metrics = metrics
        self.observers: list[Observer] = list(observers)
        for observer in self.observers:
            metrics.observer_errors.labels(_observer_name(observer))  # 0 from the start
        self._lock = threading.Lock()
        mapping = Mapping(config.rules, pricer)
        store.reconfigure(mapping.metrics)
        _apply_limits(store, config)
        self._view = self._make_view(config, mapping, tuple(filters))

    # -- the current view ---------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._view.config

    @property
    def mapping(self) -> Mapping:
        return self._view.mapping

    def _make_view(self, config: Config, mapping: Mapping, filters: tuple[Filter, ...]) -> _View:
        keys: frozenset[str] | None = mapping.attribute_keys | _ALWAYS_DECODED
        for observer in self.observers:
            wanted = getattr(observer, "attributes", None)
            if wanted is None:
                keys = None
                break
            keys = keys | frozenset(wanted) if keys is not None else None
        if keys is not None:
            for apply_filter in filters:
                keys |= frozenset(getattr(apply_filter, "attributes", ()))
        return _View(config, mapping, filters, keys)

    def add_observer(self, observer: Observer) -> None:
        """Calls ``observer(batch)`` after every ingested batch (see :data:`Observer`)."""
        self.metrics.observer_errors.labels(_observer_name(observer))
        with self._lock:
            self.observers.append(observer)
            view = self._view
            self._view = self._make_view(view.config, view.mapping, view.filters)

    def remove_observer(self, observer: Observer) -> None:
        """Stops calling ``observer``."""
        with self._lock:
            self.observers.remove(observer)
            view = self._view
            self._view = self._make_view(view.config, view.mapping, view.filters)

    def reconfigure(self, config: Config, filters: Iterable[Filter],
                    pricer: Pricer | None = None) -> tuple[int, int]:
        """Switches to a new config, filters and pricer (of the rules whose value is a cost)
        at once. Series of every metric whose type, labels and buckets are unchanged are
        kept; returns (kept, dropped) metric counts."""
        mapping = Mapping(config.rules, pricer)
        with self._lock:
            kept, dropped = self.store.reconfigure(mapping.metrics)
            _apply_limits(self.store, config)
            self._view = self._make_view(config, mapping, tuple(filters))
        return kept, dropped

    # -- ingest -------------------------------------------------------------------------------

    def attributes_to_decode(self, signal: str) -> frozenset[str] | None:
        """The attribute keys decoders extract for a signal now (None: all of them). Metric
        points keep every attribute: they tell one source's cumulative stream from
        another's."""
        return None if signal == METRIC else self._view.keys

    def ingest(self, signal: str, payload: bytes, fmt: str) -> MapResult:
        """Decodes an OTLP export request body (``fmt`` is :data:`PROTOBUF` or :data:`JSON`)
        and ingests it. Raises :class:`DecodeError` when the payload is malformed: nothing of
        it is counted then."""
        view = self._view
        try:
            batch = _DECODERS[fmt][signal](payload, None if signal == METRIC else view.keys,
                                           signal in view.mapping.exemplar_signals)
        except DecodeError:
            self.metrics.rejected.labels(signal, "malformed_request").inc()
            raise
        return self._ingest(view, batch)

    def ingest_batch(self, batch: Batch) -> MapResult:
        """Ingests a batch decoded elsewhere (tests, tools) with the current view."""
        return self._ingest(self._view, batch)

    def _ingest(self, view: _View, batch: Batch) -> MapResult:
        for apply_filter in view.filters:
            apply_filter(batch)
        result = view.mapping.map_batch(batch)
        if result.deltas:
            self.store.apply(result.deltas)
        signal = batch.signal
        m = self.metrics
        m.received.labels(signal).inc(result.received)
        if result.unmatched:
            m.unmatched.labels(signal).inc(result.unmatched)
        for reason, n in result.rejected.items():
            m.rejected.labels(signal, reason).inc(n)
        if result.rejected_records and self.observers:
            batch = _without(batch, result.rejected_records)
        for observer in self.observers:
            try:
                observer(batch)
            except Exception:  # noqa: BLE001 - the store is updated; an observer must not undo that
                name = _observer_name(observer)
                m.observer_errors.labels(name).inc()
                log.exception("observer %s failed on a batch of %d %s records; the metrics "
                              "were updated, the observer missed this batch", name,
                              len(batch.records), signal)
        return result
