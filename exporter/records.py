"""The one flat shape every decoded log record, span and metric data point takes.

Decoders (``otlp_protobuf``, ``otlp_json``) produce :class:`Record` objects; the mapper and the
KPI windows read them. Attributes are merged once per record with the lookup order
record > scope > resource, so rules never care where an attribute came from.
"""

from __future__ import annotations

import math
from typing import Any

LOG = "log"
SPAN = "span"
METRIC = "metric"
SIGNALS = (LOG, SPAN, METRIC)

# Span kinds and status codes as OTLP numbers them.
SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")

# Metric data point kinds.
POINT_GAUGE = "gauge"
POINT_SUM = "sum"
POINT_HISTOGRAM = "histogram"

TEMPORALITY_UNSPECIFIED = 0
TEMPORALITY_DELTA = 1
TEMPORALITY_CUMULATIVE = 2


class Histogram:
    """An OTLP explicit-bucket histogram data point: bucket counts are per bucket, not cumulative."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...], counts: tuple[int, ...], sum: float, count: int):
        self.bounds = bounds
        self.counts = counts
        self.sum = sum
        self.count = count


def histogram_problem(bounds: tuple[float, ...], counts: tuple[int, ...], count: int
                      ) -> tuple[tuple[int, ...], str | None]:
    """Checks an explicit-bucket histogram point; returns its bucket counts (a point with no
    buckets at all has its count in the +Inf bucket) and a problem, or None when it is sound."""
    if not counts:
        if bounds:
            return counts, f"{len(bounds)} bounds but no bucket counts"
        counts = (count,)
    if len(counts) != len(bounds) + 1:
        return counts, f"{len(counts)} bucket counts for {len(bounds)} bounds"
    if any(c < 0 for c in counts) or count < 0:
        return counts, "negative counts"
    if sum(counts) != count:
        return counts, f"count {count} is not the sum of the bucket counts ({sum(counts)})"
    if any(not b < c for b, c in zip(bounds, bounds[1:])) or not all(map(math.isfinite, bounds)):
        return counts, "bucket bounds are not finite and strictly increasing"
    return counts, None


class Record:
    """One log record, span or metric data point.

    ``name`` is the event name (logs), the span name, or the metric name. ``value`` is the
    number of a gauge or sum data point, or a :class:`Histogram`; ``duration`` is a span's
    duration in seconds. For metric points, ``point_kind``, ``temporality``, ``monotonic`` and
    ``start_ns`` describe the point. ``trace_id`` (16 bytes) and ``span_id`` (8 bytes) are a
    span's or a log record's trace context, decoded only when a rule could make an exemplar
    of it; empty otherwise.
    """

    __slots__ = (
        "signal", "name", "time_ns", "attributes", "value", "duration", "status", "kind",
        "point_kind", "temporality", "monotonic", "start_ns", "trace_id", "span_id",
    )

    def __init__(
        self,
        signal: str,
        name: str,
        time_ns: int,
        attributes: dict[str, Any],
        value: Any = None,
        duration: float | None = None,
        status: int = 0,
        kind: int = 0,
        point_kind: str = "",
        temporality: int = 0,
        monotonic: bool = False,
        start_ns: int = 0,
        trace_id: bytes = b"",
        span_id: bytes = b"",
    ) -> None:
        self.signal = signal
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes
        self.value = value
        self.duration = duration
        self.status = status
        self.kind = kind
        self.point_kind = point_kind
        self.temporality = temporality
        self.monotonic = monotonic
        self.start_ns = start_ns
        self.trace_id = trace_id
        self.span_id = span_id

    def __repr__(self) -> str:  # for explain output and test failures
        return (
            f"Record(signal={self.signal!r}, name={self.name!r}, time_ns={self.time_ns}, "
            f"attributes={self.attributes!r}, value={self.value!r}, duration={self.duration!r})"
        )


class Batch:
    """What a decoder hands on: the usable records and a count of the unusable ones by reason."""

    __slots__ = ("signal", "records", "rejected", "messages")

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.records: list[Record] = []
        self.rejected: dict[str, int] = {}
        self.messages: list[str] = []

    def reject(self, reason: str, message: str) -> None:
        """Counts one unusable record under ``reason``; keeps the first few messages."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if len(self.messages) < 5:
            self.messages.append(message)


_ZERO_TRACE = bytes(16)


def trace_context(trace_id: bytes, span_id: bytes) -> tuple[bytes, bytes]:
    """A valid trace context as (trace id, span id), or (b"", b""): a trace id is 16 bytes,
    not all zero; a span id 8 bytes (dropped when it is not)."""
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return b"", b""
    return trace_id, span_id if len(span_id) == 8 else b""


class DecodeError(ValueError):
    """The whole payload is malformed: the request is answered 400 and nothing is counted."""
