"""The mapper: compiled rules as a dispatch table, and a batch of records turned into deltas.

Rules are indexed by (signal, exact name); glob, regex and name-less rules are the fallback,
tried in rule order. What a (signal, name) resolves to is cached, hits and misses alike.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.records import (
    METRIC, TEMPORALITY_CUMULATIVE, Batch, Histogram, Record,
)
from exporter.rules import COUNTER, HISTOGRAM, MetricDef, RecordError, Rule, label_str
from exporter.store import COUNTER_EXEMPLAR, Cumulative, Deltas

__all__ = ["Mapping", "MapResult", "Pricer", "Priced"]

_CACHE_LIMIT = 10_000
_CACHED_NAME_LENGTH = 256
_REBUCKET_LIMIT = 1_000


class Pricer(Protocol):
    """Prices GenAI token usage for the rules whose value is a ``cost``. ``attributes`` are
    the record attributes it reads (decoders keep them)."""

    attributes: frozenset[str]

    def span_cost(self, record: Record, part: str) -> float | None:
        """USD of one part (input, cache_read, cache_write, output, request) of a span's
        usage; None when the span has none of it or its model has no known price."""
        ...

    def point_price(self, record: Record) -> "Priced | None":
        """The tokens of a token usage metric point and their price; None when the point has
        no tokens or its model has no known price."""
        ...


class Priced:
    """Tokens of a metric point and the USD one of them costs. A cumulative point's increase
    is taken on the tokens, then priced, so a price change never looks like a reset."""

    __slots__ = ("tokens", "usd_per_token")

    def __init__(self, tokens: float, usd_per_token: float):
        self.tokens = tokens
        self.usd_per_token = usd_per_token

    @property
    def usd(self) -> float:
        return self.tokens * self.usd_per_token


@dataclass
class MapResult:
    """What mapping one batch produced."""

    deltas: Deltas
    received: int = 0
    matched: int = 0
    unmatched: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    # The records of the batch a rule could not use: none of their updates were made, and
    # observers must not count them either.
    rejected_records: list[Record] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class Mapping:
    """A compiled rule set. Immutable once built; a reload builds a new one."""

    def __init__(self, rules: list[Rule], pricer: Pricer | None = None):
        self.rules = rules
        self.pricer = pricer
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
        if pricer is not None and any(r.cost_part is not None for r in rules):
            self.attribute_keys |= pricer.attributes
        # Signals whose records a rule counts or observes: their trace context makes
        # exemplars, so decoders read it (and only for these).
        self.exemplar_signals: frozenset[str] = frozenset(
            r.signal for r in rules if r.signal != METRIC and r.metric.type in (COUNTER, HISTOGRAM))
        self._cache: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self._rebucket: dict[tuple[int, tuple[float, ...]], list[int] | None] = {}

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
        if len(name) <= _CACHED_NAME_LENGTH:  # a sender's oversized names are not kept
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # names are meant to be few; a flood of new ones resets it
            self._cache[key] = result
        return result

    def map_batch(self, batch: Batch, now_ns: int | None = None) -> MapResult:
        """Maps every record of a batch; unusable records are counted, never half-applied."""
        now_ns = now_ns or time.time_ns()
        deltas = Deltas(metrics=self.metrics)
        result = MapResult(deltas, received=len(batch.records) + sum(batch.rejected.values()))
        for reason, n in batch.rejected.items():
            result.rejected[reason] = result.rejected.get(reason, 0) + n
        result.messages.extend(batch.messages)
        counters, gauges, histograms = deltas.counters, deltas.gauges, deltas.histograms
        pricer = self.pricer
        exemplars = deltas.exemplars
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
                if is_metric:
                    for rule in rules:
                        value = self.evaluate(rule, record)
                        if value is not None:
                            updates.append((rule, rule.label_getter(record), value))
                else:  # evaluate() inlined: this loop runs once per event
                    for rule in rules:
                        if rule.checks and rule.why_not(record) is not None:
                            continue
                        value = rule.constant_value
                        if value is None:
                            part = rule.cost_part
                            if part is None:
                                value = rule.value_of(record)
                            elif pricer is not None:
                                value = pricer.span_cost(record, part)
                            if value is None:
                                continue
                        updates.append((rule, rule.label_getter(record), value))
            except RecordError as err:
                result.rejected[err.reason] = result.rejected.get(err.reason, 0) + 1
                result.rejected_records.append(record)
                if len(result.messages) < 5:
                    result.messages.append(str(err))
                continue
            if not updates:
                result.unmatched += 1
                continue
            result.matched += 1
            trace_id = None if is_metric else record.trace_id
            for rule, labels, value in updates:
                metric = rule.metric
                key = (metric.name, labels)
                mtype = metric.type
                if type(value) is Priced:
                    if record.temporality == TEMPORALITY_CUMULATIVE:
                        deltas.cumulative.append(Cumulative(
                            metric.name, labels, _stream_key(metric.name, record),
                            record.start_ns, value.tokens, value.usd_per_token))
                    else:
                        counters[key] = counters.get(key, 0.0) + value.usd
                        if trace_id:
                            _exemplar(exemplars, key, COUNTER_EXEMPLAR, record, value.usd,
                                      now_ns)
                elif is_metric and record.temporality == TEMPORALITY_CUMULATIVE and (
                        isinstance(value, list) or mtype == COUNTER):
                    deltas.cumulative.append(Cumulative(
                        metric.name, labels, _stream_key(metric.name, record), record.start_ns,
                        value))
                elif mtype == COUNTER:
                    counters[key] = counters.get(key, 0.0) + value
                    if trace_id:
                        _exemplar(exemplars, key, COUNTER_EXEMPLAR, record, value, now_ns)
                elif mtype == HISTOGRAM:
                    h = histograms.get(key)
                    if h is None:
                        h = histograms[key] = [0.0, 0] + [0] * (len(metric.buckets) + 1)
                    if isinstance(value, list):
                        for i, x in enumerate(value):
                            h[i] += x
                    else:
                        bucket = bisect_left(metric.buckets, value)
                        h[0] += value
                        h[1] += 1
                        h[2 + bucket] += 1
                        if trace_id:
                            _exemplar(exemplars, key, bucket, record, value, now_ns)
                else:
                    # Gauges keep the newest value by event time. A stamp ahead of the
                    # exporter's clock counts as arriving now: a sender's clock a few minutes
                    # fast must not make the correct points that follow lose to its value.
                    t = record.time_ns
                    if not t or t > now_ns:
                        t = now_ns
                    old = gauges.get(key)
                    if old is None or t >= old[0]:
                        gauges[key] = (t, value)
        self.cache_hits += hits
        return result

    def evaluate(self, rule: Rule, record: Record) -> Any:
        """What one record contributes to one rule whose signal and name it matched: a number,
        a histogram point as [sum, count, buckets...] in the rule's buckets, a :class:`Priced`
        metric point, or None when the rule does not apply. Raises :class:`RecordError` when
        the record cannot be used."""
        if rule.checks and rule.why_not(record) is not None:
            return None
        if rule.cost_part is not None:
            return self._cost(rule, record)
        value = rule.constant_value
        if value is None:
            value = rule.value_of(record)
            if value is None:
                return None
        if isinstance(value, Histogram):
            return self._histogram_point(rule, value)
        return value

    def _cost(self, rule: Rule, record: Record) -> Any:
        if self.pricer is None:
            return None
        if record.signal == METRIC:
            return self.pricer.point_price(record)
        return self.pricer.span_cost(record, rule.cost_part or "")

    def _histogram_point(self, rule: Rule, point: Histogram) -> list[Any]:
        metric = rule.metric
        if metric.type != HISTOGRAM:
            raise RecordError("histogram_into_" + metric.type,
                              f"{rule.title}: a histogram data point cannot feed a {metric.type}")
        scale = rule.value.scale
        index = self._rebucket_index(rule, point.bounds)
        if index is None:
            shown = [b * scale for b in point.bounds] if scale != 1 else list(point.bounds)
            raise RecordError(
                "bucket_mismatch",
                f"{rule.title}: the point's bucket bounds {shown}"
                f"{' (scaled)' if scale != 1 else ''} do not include the rule's bounds "
                f"{list(metric.buckets)}; set the rule's 'buckets' to some of the "
                f"instrumentation's bounds",
            )
        total = 0.0 if point.sum != point.sum else point.sum * scale
        out: list[Any] = [total, point.count] + [0] * (len(metric.buckets) + 1)
        for k, c in enumerate(point.counts):
            out[2 + index[k]] += c
        return out

    def _rebucket_index(self, rule: Rule, bounds: tuple[float, ...]) -> list[int] | None:
        """For each of a point's buckets, the rule's bucket it falls in; None when the rule's
        bounds are not all among the point's (scaled) bounds, so counts cannot be split."""
        key = (rule.order, bounds)
        if key in self._rebucket:
            return self._rebucket[key]
        target = rule.metric.buckets
        scale = rule.value.scale
        scaled = [b * scale for b in bounds]
        index: list[int] | None = None
        if all(any(math.isclose(t, b, rel_tol=1e-9) for b in scaled) for t in target):
            # bucket k (upper bound scaled[k]) goes to the first rule bucket whose bound is at
            # or above it; equal within float rounding counts as at
            index = [next((i for i, t in enumerate(target)
                           if t >= b or math.isclose(t, b, rel_tol=1e-9)), len(target))
                     for b in scaled] + [len(target)]
        if len(self._rebucket) >= _REBUCKET_LIMIT:
            self._rebucket.clear()  # bounds come from senders: keep the cache bounded
        self._rebucket[key] = index
        return index


def _exemplar(exemplars: dict[tuple[str, tuple[str, ...]], dict[int, Any]],
              key: tuple[str, tuple[str, ...]], bucket: int, record: Record, value: float,
              now_ns: int) -> None:
    """Keeps the record as the series' exemplar for ``bucket`` unless a newer one is there.
    A stamp ahead of the exporter's clock counts as now (as for gauges)."""
    t = record.time_ns
    if not t or t > now_ns:
        t = now_ns
    per_bucket = exemplars.get(key)
    if per_bucket is None:
        exemplars[key] = {bucket: (t, value, record.trace_id, record.span_id)}
        return
    old = per_bucket.get(bucket)
    if old is None or t >= old[0]:
        per_bucket[bucket] = (t, value, record.trace_id, record.span_id)


def _stream_key(metric: str, record: Record) -> tuple[Any, ...]:
    # The identity of the incoming OTLP stream: its name and every attribute (resource and
    # scope included), so two apps whose points map to the same labels keep separate state.
    return (metric, record.name,
            tuple(sorted((k, label_str(v)) for k, v in record.attributes.items())))
