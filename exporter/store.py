"""The metric store: plain dicts of series keyed by label-value tuples, one lock.

The mapper aggregates a request's updates into :class:`Deltas`; :meth:`Store.apply` merges
them here under the lock, so per-event work never touches a lock or prometheus_client.
Series beyond a metric's cap go to one overflow series (OpenTelemetry's cardinality rule);
idle series expire after a metric's TTL when one is set.

Cumulative OTLP streams are remembered per metric (their start time and last value) to turn
each point into an increase. The table has its own limit and forgets idle streams after
``stream_ttl``; a forgotten stream leaves a trace (a hash of its key, and its start time) in
a bounded list. A stream the table does not know is taken in full only when its start time
proves it new: after this store existed, after the start time its trace holds (a restart
since it was forgotten), and after the start time of every forgotten stream whose trace the
list has dropped. Any other unknown stream may have been counted already (by a previous run,
or before it was forgotten), so its first point is only a baseline. That may miss one
interval of a stream, never count one twice. A start time ahead of this clock (a sender whose
clock is fast) proves nothing either way, so such a point is held back until its start time
has passed: every start time the table and its marks hold is then in this clock's past.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from exporter.rules import COUNTER, GAUGE, MetricDef

log = logging.getLogger("kpi_exporter")

__all__ = ["Store", "Deltas", "MetricState", "OVERFLOW", "Cumulative", "Exemplar",
           "COUNTER_EXEMPLAR"]

# The label tuple of the overflow series; the collector renders it as otel_metric_overflow="true".
OVERFLOW: tuple[str, ...] = ("\x00overflow",)

Clock = Callable[[], float]

# An exemplar: (time_ns, value, trace_id, span_id), the ids as raw bytes.
Exemplar = tuple[int, float, bytes, bytes]
# The "bucket" of a counter's exemplar; a histogram's are its bucket indexes.
COUNTER_EXEMPLAR = -1

DEFAULT_STREAM_TTL = 3600.0
# Streams a metric's table keeps, per series it may have, unless limits.max_streams_per_metric
# says otherwise: several sources (pods, processes) usually feed one series.
STREAMS_PER_SERIES = 4


@dataclass
class Cumulative:
    """A cumulative OTLP point: its increase is computed against the stream's last point."""

    metric: str
    labels: tuple[str, ...]
    stream: tuple[Any, ...]
    start_ns: int
    value: Any  # float, or [sum, count, b0..bn] for a histogram
    # The increase of a scalar stream is multiplied by this (the USD of one token, for a
    # cost); the stream itself keeps the unscaled values.
    factor: float = 1.0


@dataclass
class Deltas:
    """One request's worth of updates, aggregated per series."""

    counters: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=dict)
    gauges: dict[tuple[str, tuple[str, ...]], tuple[int, float]] = field(default_factory=dict)
    histograms: dict[tuple[str, tuple[str, ...]], list[float]] = field(default_factory=dict)
    cumulative: list[Cumulative] = field(default_factory=list)
    # The newest exemplar per counter or histogram series and bucket (COUNTER_EXEMPLAR for a
    # counter), from records with a trace context.
    exemplars: dict[tuple[str, tuple[str, ...]], dict[int, Exemplar]] = field(
        default_factory=dict)
    # The metric definitions the updates were made for; a reload may have changed some since.
    metrics: dict[str, MetricDef] | None = None

    def __bool__(self) -> bool:
        return bool(self.counters or self.gauges or self.histograms or self.cumulative)


# A metric's state read back from a snapshot: (metric, series, streams, overflow, expired).
_Restored = tuple["MetricState", dict[tuple[str, ...], Any], dict[Any, tuple[int, Any]], int, int]


def _tuplify(x: Any) -> Any:
    # JSON has no tuples; stream keys are nested tuples and must hash the same after restore.
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _add_into(target: list[Any], increments: list[Any]) -> None:
    for i, x in enumerate(increments):
        target[i] += x


def _keep_newest(state: "MetricState", key: tuple[str, ...],
                 exemplars: dict[int, Exemplar]) -> None:
    """Keeps, per bucket, the newer of the series' exemplar and the request's."""
    kept = state.exemplars.get(key)
    if kept is None:
        state.exemplars[key] = dict(exemplars)
        return
    for bucket, ex in exemplars.items():
        old = kept.get(bucket)
        if old is None or ex[0] >= old[0]:
            kept[bucket] = ex


class MetricState:
    """The series of one metric. Values: counter float; gauge [time_ns, value];
    histogram [sum, count, bucket_0, ..., bucket_+Inf] (per-bucket, not cumulative)."""

    __slots__ = ("definition", "series", "touched", "overflow_updates", "expired", "streams",
                 "limit", "streams_evicted", "streams_expired", "streams_forgotten",
                 "streams_untraced_ns", "exemplars")

    def __init__(self, definition: MetricDef):
        self.definition = definition
        self.series: dict[tuple[str, ...], Any] = {}
        # series key -> bucket (COUNTER_EXEMPLAR for a counter) -> the newest exemplar
        self.exemplars: dict[tuple[str, ...], dict[int, Exemplar]] = {}
        self.touched: dict[tuple[str, ...], float] = {}
        self.overflow_updates = 0
        self.expired = 0
        # stream key -> (start_ns, last value, when last seen by the store's clock); in the
        # order of their last point, so the stalest stream is first
        self.streams: dict[tuple[Any, ...], tuple[int, Any, float]] = {}
        self.streams_evicted = 0
        self.streams_expired = 0
        # Hash of the key -> start time (ns) of forgotten streams (evicted or expired), oldest
        # first, at most as many as the table holds; and the newest start time of a forgotten
        # stream whose trace was dropped to make room: a stream that started no later may be
        # one of those.
        self.streams_forgotten: dict[int, int] = {}
        self.streams_untraced_ns = 0
        # Regular series allowed; the overflow series is the last of max_series.
        self.limit = max(1, definition.max_series - 1)

    def new_value(self) -> Any:
        t = self.definition.type
        if t == COUNTER:
            return 0.0
        if t == GAUGE:
            return [0, 0.0]
        return [0.0, 0] + [0] * (len(self.definition.buckets) + 1)


class Store:
    """All mapped series, safe to update from request threads and read from scrapes."""

    def __init__(self, metrics: dict[str, MetricDef] | None = None, max_label_length: int = 256,
                 clock: Clock = time.monotonic):
        self.lock = threading.Lock()
        self.max_label_length = max_label_length
        # Streams per metric (None: STREAMS_PER_SERIES x its max_series) and how long an idle
        # stream is remembered, in seconds.
        self.max_streams_per_metric: int | None = None
        self.stream_ttl = DEFAULT_STREAM_TTL
        self.clock = clock
        # Called under the lock before the first change after each export_state(), so that
        # the state manager can record, before the change is visible, that the last
        # snapshot no longer holds everything counted.
        self.on_unsaved_change: Callable[[], bool] | None = None
        self._unsaved = False
        metrics = metrics or {}
        self.metrics: dict[str, MetricState] = {n: MetricState(d) for n, d in metrics.items()}
        self._definitions = metrics
        # Cumulative streams that started before this store existed, and that it has not seen,
        # are taken from their next point on (as the OpenTelemetry Collector's
        # cumulative-to-delta does): their earlier total may already have been counted by a
        # previous run, or was never part of what this exporter saw.
        self.started_ns = time.time_ns()
        # Metrics whose points were held back for a start time ahead of this clock (logged
        # once per metric).
        self._ahead_logged: set[str] = set()

    def stream_limit(self, state: MetricState) -> int:
        """How many cumulative streams a metric's table keeps."""
        return self.max_streams_per_metric or STREAMS_PER_SERIES * state.definition.max_series

    # -- writes -------------------------------------------------------------------------------

    def _admit(self, state: MetricState, labels: tuple[str, ...]) -> tuple[str, ...]:
        """The key a new label tuple is stored under: itself (length-capped) or OVERFLOW."""
        cap = self.max_label_length
        if any(len(v) > cap or "\x00" in v for v in labels):
            # cut to length; NUL is replaced so no label value can pose as the overflow marker
            labels = tuple(v[:cap].replace("\x00", "\ufffd") for v in labels)
            if labels in state.series:
                return labels
        regular = len(state.series) - (OVERFLOW in state.series)
        if regular >= state.limit:
            state.overflow_updates += 1
            labels = OVERFLOW
        if labels not in state.series:
            state.series[labels] = state.new_value()
        return labels

    def _slot(self, name: str, labels: tuple[str, ...], now: float
              ) -> tuple[MetricState | None, tuple[str, ...]]:
        """The metric and the series key an update goes to (admitting a new series, or the
        overflow series, when needed). Called under the lock."""
        state = self.metrics.get(name)
        if state is None:  # the metric left the config while this request was in flight
            return None, labels
        if labels not in state.series:
            labels = self._admit(state, labels)
        if state.definition.series_ttl:
            state.touched[labels] = now
        return state, labels

    def apply(self, deltas: Deltas) -> None:
        """Merges one request's updates into the store (one lock acquisition)."""
        now = self.clock()
        slot = self._slot
        with self.lock:
            if not self._unsaved:
                # a mark that could not be written is tried again at the next change
                self._unsaved = self.on_unsaved_change is None or self.on_unsaved_change()
            if deltas.metrics is not None and deltas.metrics is not self._definitions:
                deltas = self._without_reshaped(deltas)
            exemplars = deltas.exemplars
            for (name, labels), inc in deltas.counters.items():
                state, key = slot(name, labels, now)
                if state is not None:
                    state.series[key] += inc
                    if exemplars and (name, labels) in exemplars:
                        _keep_newest(state, key, exemplars[name, labels])
            for (name, labels), (t, value) in deltas.gauges.items():
                state, key = slot(name, labels, now)
                if state is not None:
                    cur = state.series[key]
                    if t >= cur[0]:
                        cur[0], cur[1] = t, value
            for (name, labels), h in deltas.histograms.items():
                state, key = slot(name, labels, now)
                if state is not None:
                    _add_into(state.series[key], h)
                    if exemplars and (name, labels) in exemplars:
                        _keep_newest(state, key, exemplars[name, labels])
            for c in deltas.cumulative:
                self._apply_cumulative(c, now)

    def _without_reshaped(self, deltas: Deltas) -> Deltas:
        """The updates of a request mapped under a config that a reload has since replaced,
        less those for metrics whose type, labels or buckets changed (they would not fit)."""
        assert deltas.metrics is not None
        stale = {name for name, d in deltas.metrics.items()
                 if name not in self.metrics or not self.metrics[name].definition.same_shape(d)}
        if not stale:
            return deltas
        return Deltas(
            counters={k: v for k, v in deltas.counters.items() if k[0] not in stale},
            gauges={k: v for k, v in deltas.gauges.items() if k[0] not in stale},
            histograms={k: v for k, v in deltas.histograms.items() if k[0] not in stale},
            cumulative=[c for c in deltas.cumulative if c.metric not in stale],
            exemplars={k: v for k, v in deltas.exemplars.items() if k[0] not in stale})

    def _apply_cumulative(self, c: Cumulative, now: float) -> None:
        state = self.metrics.get(c.metric)
        if state is None:  # the metric left the config while this request was in flight
            return
        streams = state.streams
        if c.start_ns > time.time_ns():
            held = streams.get(c.stream)
            if held is None or held[0] != c.start_ns:
                self._hold_back(c)
                return
        key = self._slot(c.metric, c.labels, now)[1]
        prev = streams.pop(c.stream, None)
        value = c.value
        inc: Any = value
        if prev is None:
            # A stream the table does not know: all of it is new only if it started after this
            # store, after its own trace (it restarted since it was forgotten) and after every
            # forgotten stream the table lost the trace of; otherwise its total so far may have
            # been counted already, and this point is its baseline. (Its start time is not
            # ahead of this clock: such points are held back.)
            traced = state.streams_forgotten.pop(hash(c.stream), 0)
            if c.start_ns <= max(self.started_ns, state.streams_untraced_ns, traced):
                inc = [0] * len(value) if isinstance(value, list) else 0.0
        elif prev[0] == c.start_ns:
            # The increase since the stream's last point; a value that went down is a reset
            # (all of it is new), as is a new start time.
            last = prev[1]
            if isinstance(value, list):
                if value[1] >= last[1]:
                    inc = [a - b for a, b in zip(value, last)]
            elif value >= last:
                inc = value - last
        streams[c.stream] = (c.start_ns, value, now)
        self._forget_streams(state, now)
        if isinstance(inc, list):
            _add_into(state.series[key], inc)
        else:
            state.series[key] += inc * c.factor

    def _hold_back(self, c: Cumulative) -> None:
        """Skips a point of a new stream (or a restart) whose start time is ahead of this
        clock. Its start time proves nothing: the sender's clock is fast, and the stream may
        have started (and been counted) long before this store, or the stamp may pass this
        store's next restart. Once the start time has passed, the stream's next point enters
        the table like any other (in full if it is new, so nothing is lost, only late); until
        then nothing of it is kept, not even a mark that a stamp from a wrong clock could
        push into the future. Called under the lock."""
        if c.metric not in self._ahead_logged:
            self._ahead_logged.add(c.metric)
            log.warning("%s: a cumulative stream's start time is %.0fs ahead of this "
                        "exporter's clock; its points are not counted until that time has "
                        "passed (then in full). Check the sender's clock (NTP)", c.metric,
                        (c.start_ns - time.time_ns()) / 1e9)

    def _forget_streams(self, state: MetricState, now: float) -> None:
        """Drops streams idle for longer than the TTL, then the stalest ones over the limit,
        keeping a trace of each. Called under the lock; costs one look at the stalest stream
        when there is nothing to drop."""
        streams = state.streams
        limit = self.stream_limit(state)
        gone: list[tuple[tuple[Any, ...], int]] = []  # (key, start time)
        if self.stream_ttl:
            deadline = now - self.stream_ttl
            while streams:
                oldest = next(iter(streams))
                if streams[oldest][2] >= deadline:
                    break
                gone.append((oldest, streams.pop(oldest)[0]))
            state.streams_expired += len(gone)
        while len(streams) > limit:
            oldest = next(iter(streams))
            gone.append((oldest, streams.pop(oldest)[0]))
            state.streams_evicted += 1
        if not gone:
            return
        traces = state.streams_forgotten
        for key, start_ns in gone:
            traces[hash(key)] = start_ns
        while len(traces) > limit:
            dropped = traces.pop(next(iter(traces)))
            if dropped > state.streams_untraced_ns:
                state.streams_untraced_ns = dropped

    def expire(self) -> int:
        """Drops series idle for longer than their metric's TTL, and idle cumulative streams;
        returns how many series."""
        now = self.clock()
        dropped = 0
        with self.lock:
            for state in self.metrics.values():
                if state.streams:
                    self._forget_streams(state, now)
                ttl = state.definition.series_ttl
                if not ttl:
                    continue
                stale = [k for k, t in state.touched.items() if now - t > ttl]
                for k in stale:
                    del state.touched[k]
                    state.series.pop(k, None)
                    state.exemplars.pop(k, None)
                state.expired += len(stale)
                dropped += len(stale)
        return dropped

    def reconfigure(self, metrics: dict[str, MetricDef]) -> tuple[int, int]:
        """Switches to a new set of metric definitions. Series of metrics whose name, type,
        labels and buckets are unchanged are kept; the rest are dropped. Returns (kept, dropped)
        metric counts."""
        kept = dropped = 0
        with self.lock:
            new: dict[str, MetricState] = {}
            for name, definition in metrics.items():
                old = self.metrics.get(name)
                state = MetricState(definition)
                if old is not None and old.definition.same_shape(definition):
                    state.series, state.touched, state.streams = old.series, old.touched, old.streams
                    state.exemplars = old.exemplars
                    state.overflow_updates, state.expired = old.overflow_updates, old.expired
                    state.streams_evicted = old.streams_evicted
                    state.streams_expired = old.streams_expired
                    state.streams_forgotten = old.streams_forgotten
                    state.streams_untraced_ns = old.streams_untraced_ns
                    kept += 1
                new[name] = state
            dropped = len(self.metrics) - kept
            self.metrics = new
            self._definitions = metrics
        return kept, dropped

    # -- reads --------------------------------------------------------------------------------

    def snapshot(self) -> list[tuple[MetricDef, dict[tuple[str, ...], Any], int, int]]:
        """A consistent copy of every metric: (definition, series, overflow updates, expired)."""
        if any(s.definition.series_ttl or s.streams for s in self.metrics.values()):
            self.expire()
        with self.lock:
            out = []
            for state in self.metrics.values():
                if state.definition.type == COUNTER:
                    series = dict(state.series)
                else:
                    series = {k: list(v) for k, v in state.series.items()}
                out.append((state.definition, series, state.overflow_updates, state.expired))
        return out

    def exemplars(self) -> dict[str, dict[tuple[str, ...], dict[int, Exemplar]]]:
        """A copy of the newest exemplars, by metric, series and bucket (only metrics that
        have any)."""
        with self.lock:
            return {name: {k: dict(v) for k, v in state.exemplars.items()}
                    for name, state in self.metrics.items() if state.exemplars}

    def __iter__(self) -> Iterator[MetricState]:
        return iter(list(self.metrics.values()))

    # -- state ------------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """A JSON-ready copy of every metric's series, overflow count and cumulative streams."""
        out = []
        with self.lock:
            self._unsaved = False  # the export holds every change so far
            for state in self.metrics.values():
                d = state.definition
                copy: Callable[[Any], Any] = (lambda v: v) if d.type == COUNTER else list
                out.append({
                    "name": d.name, "type": d.type, "labels": list(d.label_names),
                    "buckets": list(d.buckets),
                    "series": [[list(k), copy(v)] for k, v in state.series.items()],
                    "overflow_updates": state.overflow_updates, "expired": state.expired,
                    "streams": [[k, start, v if not isinstance(v, list) else list(v)]
                                for k, (start, v, _seen) in state.streams.items()],
                })
        return {"metrics": out}

    def parse_state(self, doc: Any, complete: bool) -> tuple[list[_Restored], list[str]]:
        """Reads a document of :meth:`export_state` without changing the store: (staged,
        notes). Raises ValueError when it is malformed.

        When more was counted after the document was exported (``complete`` False: a crash
        after traffic since the last save), only gauges are taken whole. Counter and
        histogram series start from zero: each is kept at 0, so that the first scrape
        after the restart shows Prometheus the reset (a series that was left out until its
        next event could come back above its last scraped value, and its reset would go
        unseen). The overflow and expiry counts start from zero too, and so do the
        cumulative streams: a stream's last value in an old snapshot is older than points
        the crashed run had already counted (and Prometheus scraped), so restoring it would
        count that stretch again after the reset. Without it each stream's next point is a
        baseline: at most one export interval per stream is missed, never counted twice."""
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
            raise ValueError("store: expected an object with a 'metrics' list")
        staged: list[_Restored] = []
        notes = []
        for m in doc["metrics"]:
            try:
                name, mtype = m["name"], m["type"]
                labels, buckets = tuple(m["labels"]), tuple(float(b) for b in m["buckets"])
                series = {tuple(k): v for k, v in m["series"]}
                streams = {_tuplify(k): (int(start), v) for k, start, v in m["streams"]}
                overflow, expired = int(m["overflow_updates"]), int(m["expired"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"store: a metric entry is malformed ({exc!r})") from None
            if not all(isinstance(x, str) for k in series for x in k):
                raise ValueError(f"store: {name}: label values must be strings")
            state = self.metrics.get(name)
            if state is None:
                if series:
                    notes.append(f"{name} is no longer configured")
                continue
            d = state.definition
            if (d.type, d.label_names, d.buckets) != (mtype, labels, buckets):
                if series:
                    notes.append(f"{name} changed its type, labels or buckets")
                continue
            width = len(d.buckets) + 3
            for v in series.values():
                ok = (isinstance(v, (int, float)) and not isinstance(v, bool) if mtype == COUNTER
                      else isinstance(v, list) and len(v) == (2 if mtype == GAUGE else width))
                if not ok:
                    raise ValueError(f"store: {name}: a series value does not fit a {mtype}")
            if not complete:
                if mtype != GAUGE:
                    series = {k: state.new_value() for k in series}
                streams, overflow, expired = {}, 0, 0
            staged.append((state, series, streams, overflow, expired))
        return staged, notes

    def apply_state(self, staged: list[_Restored]) -> None:
        """Puts series read by :meth:`parse_state` into the store."""
        now = self.clock()
        with self.lock:
            for state, series, streams, overflow, expired in staged:
                state.series = series
                # idle times do not survive a restart either: every stream gets a full TTL
                state.streams = {k: (start, v, now) for k, (start, v) in streams.items()}
                state.overflow_updates = overflow
                state.expired = expired
                # idle times do not survive a restart: every series gets a full TTL again
                state.touched = {k: now for k in series} if state.definition.series_ttl else {}
                # exemplars are not saved: each points at a trace of the past run
                state.exemplars = {}

    def get(self, metric: str, labels: tuple[str, ...]) -> Any:
        """One series' current value (a copy), or None. For tests and explain."""
        with self.lock:
            state = self.metrics.get(metric)
            if state is None or labels not in state.series:
                return None
            v = state.series[labels]
            return list(v) if isinstance(v, list) else v
