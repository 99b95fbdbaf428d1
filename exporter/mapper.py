"""The mapper: compiled rules as a dispatch table, and a batch of records turned into deltas.

Rules are indexed by (signal, exact name); glob, regex and name-less rules are the fallback,
tried in rule order. What a (signal, name) resolves to is cached, hits and misses alike.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from exporter.records import (
    METRIC, TEMPORALITY_CUMULATIVE, Batch, Histogram, Record,
)
from exporter.rules import COUNTER, GAUGE, HISTOGRAM, MetricDef, RecordError, Rule, label_str
from exporter.store import Cumulative, Deltas

__all__ = ["Mapping", "MapResult"]

_CACHE_LIMIT = 10_000


@dataclass
class MapResult:
    """What mapping one batch produced."""

    deltas: Deltas
    received: int = 0
    matched: int = 0
    unmatched: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class Mapping:
    """A compiled rule set. Immutable once built; a reload builds a new one."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.metrics: dict[str, MetricDef] = {}
        for r in rules:
            self.metrics.setdefault(r.metric.name, r.metric)
        self._exact: dict[tuple[str, str], list[Rule]] = {}
        self._fallback: dict[str, list[Rule]] = {}
        for r in rules:
            if r.name_exact is not None:
                self._exact.setdefault((r.signal, r.name_exact), []).append(r)
            else:
                self._fallback.setdefault(r.signal, []).append(r)
        # Every attribute key some rule reads: decoders extract only these (and what the
        # pipeline's observers ask for).
        self.attribute_keys: frozenset[str] = frozenset(
            key for r in rules for key in (
                *(a for spec in r.labels for a in spec.attributes),
                *(k for k, _t, _p in r.conditions),
                *((r.value.attribute,) if r.value.kind == "attribute" else ())))
        self._cache: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self._rebucket: dict[tuple[str, tuple[float, ...]], list[int] | None] = {}

    def rules_for(self, signal: str, name: str) -> tuple[Rule, ...]:
        """The rules whose signal and name match, in rule order."""
        key = (signal, name)
        hit = self._cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        found = list(self._exact.get(key, ()))
        found += [r for r in self._fallback.get(signal, ()) if r.matches_name(name)]
        found.sort(key=lambda r: r.order)
        result = tuple(found)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # names are meant to be few; a flood of new ones resets the cache
        self._cache[key] = result
        return result

    def map_batch(self, batch: Batch, now_ns: int | None = None) -> MapResult:
        """Maps every record of a batch; unusable records are counted, never half-applied."""
        now_ns = now_ns or time.time_ns()
        deltas = Deltas()
        result = MapResult(deltas, received=len(batch.records) + sum(batch.rejected.values()))
        for reason, n in batch.rejected.items():
            result.rejected[reason] = result.rejected.get(reason, 0) + n
        result.messages.extend(batch.messages)
        counters, gauges, histograms = deltas.counters, deltas.gauges, deltas.histograms
        signal = batch.signal
        is_metric = signal == METRIC
        cache = self._cache
        hits = 0
        for record in batch.records:
            rules = cache.get((signal, record.name))
            if rules is None:
                rules = self.rules_for(signal, record.name)
            else:
                hits += 1
            if not rules:
                result.unmatched += 1
                continue
            updates = []
            try:
                for rule in rules:
                    if rule.checks and rule.why_not(record) is not None:
                        continue
                    value = rule.constant_value
                    if value is None:
                        value = rule.value_of(record)
                        if value is None:
                            continue
                    updates.append((rule, rule.label_getter(record), value))
            except RecordError as err:
                result.rejected[err.reason] = result.rejected.get(err.reason, 0) + 1
                if len(result.messages) < 5:
                    result.messages.append(str(err))
                continue
            if not updates:
                result.unmatched += 1
                continue
            try:
                if is_metric:
                    updates = [(r, l, self._point_value(r, record, v)) for r, l, v in updates]
            except RecordError as err:
                result.rejected[err.reason] = result.rejected.get(err.reason, 0) + 1
                if len(result.messages) < 5:
                    result.messages.append(str(err))
                continue
            result.matched += 1
            for rule, labels, value in updates:
                metric = rule.metric
                key = (metric.name, labels)
                mtype = metric.type
                if is_metric and record.temporality == TEMPORALITY_CUMULATIVE and mtype != GAUGE \
                        and (record.monotonic or isinstance(value, list)):
                    deltas.cumulative.append(Cumulative(
                        metric.name, labels, _stream_key(metric.name, record), record.start_ns,
                        value if isinstance(value, list) else value))
                elif mtype == COUNTER:
                    counters[key] = counters.get(key, 0.0) + value
                elif mtype == HISTOGRAM:
                    h = histograms.get(key)
                    if h is None:
                        h = histograms[key] = [0.0, 0] + [0] * (len(metric.buckets) + 1)
                    if isinstance(value, list):
                        for i, x in enumerate(value):
                            h[i] += x
                    else:
                        h[0] += value
                        h[1] += 1
                        h[2 + bisect_left(metric.buckets, value)] += 1
                else:
                    t = record.time_ns or now_ns
                    old = gauges.get(key)
                    if old is None or t >= old[0]:
                        gauges[key] = (t, value)
        self.cache_hits += hits
        return result

    def _point_value(self, rule: Rule, record: Record, value: Any) -> Any:
        """A metric data point's contribution in the rule's shape: histogram points become
        [sum, count, buckets...] in the rule's buckets."""
        if not isinstance(value, Histogram):
            if rule.metric.type == COUNTER and value < 0:
                raise RecordError("negative_counter_increment",
                                  f"{rule.title}: a counter cannot go down (value {value!r})")
            return value
        metric = rule.metric
        if metric.type != HISTOGRAM:
            raise RecordError("histogram_into_" + metric.type,
                              f"{rule.title}: a histogram data point cannot feed a {metric.type}")
        index = self._rebucket_index(rule, value.bounds)
        if index is None:
            raise RecordError(
                "bucket_mismatch",
                f"{rule.title}: the point's bucket bounds {list(value.bounds)} do not include "
                f"the rule's bounds {list(metric.buckets)}; set the rule's 'buckets' to some of "
                f"the instrumentation's bounds",
            )
        out: list[Any] = [0.0 if value.sum != value.sum else value.sum, value.count]
        out += [0] * (len(metric.buckets) + 1)
        for k, c in enumerate(value.counts):
            out[2 + index[k]] += c
        return out

    def _rebucket_index(self, rule: Rule, bounds: tuple[float, ...]) -> list[int] | None:
        key = (rule.metric.name, bounds)
        if key in self._rebucket:
            return self._rebucket[key]
        target = rule.metric.buckets
        index: list[int] | None
        if not set(target) <= set(bounds):
            index = None
        else:
            index = [bisect_left(target, b) for b in bounds] + [len(target)]
        self._rebucket[key] = index
        return index


def _stream_key(metric: str, record: Record) -> tuple[Any, ...]:
    # The identity of the incoming OTLP stream: its name and every attribute (resource and
    # scope included), so two apps whose points map to the same labels keep separate state.
    return (metric, record.name,
            tuple(sorted((k, label_str(v)) for k, v in record.attributes.items())))
