"""OTLP/HTTP protobuf payloads to :class:`~exporter.records.Record` lists.

Parsing is protobuf's own (the upb C backend); this module only walks the parsed messages
and reads what the mapping can use. It is on the hot path: keep per-record work small.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Callable, Iterator

from google.protobuf.message import DecodeError as _PbDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.records import (
    LOG, METRIC, POINT_GAUGE, POINT_HISTOGRAM, POINT_SUM, SPAN, Batch, DecodeError, Histogram,
    Record, histogram_problem, trace_context,
)

__all__ = ["decode_logs", "decode_traces", "decode_metrics", "any_value", "DECODERS"]


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` message as a Python value (None when empty)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def _attributes(kvs: Any, base: dict[str, Any] | None = None,
                keep: frozenset[str] | None = None) -> dict[str, Any]:
    out = dict(base) if base else {}
    if keep is None:
        for kv in kvs:
            out[kv.key] = any_value(kv.value)
    else:
        # Only the attributes some rule or window reads are converted: the rest cost one key
        # read each, which is most of the saving on wide records.
        for kv in kvs:
            key = kv.key
            if key in keep:
                out[key] = any_value(kv.value)
    return out


def _scopes(resources: Any, scopes_field: str, keep: frozenset[str] | None
            ) -> Iterator[tuple[dict[str, Any], Any]]:
    """(resource + scope attributes, scope block) for every scope of every resource."""
    for res in resources:
        resource = _attributes(res.resource.attributes, None, keep)
        for block in getattr(res, scopes_field):
            attrs = block.scope.attributes
            yield (_attributes(attrs, resource, keep) if attrs else resource), block


def _parse(message: Any, body: bytes) -> Any:
    try:
        message.ParseFromString(body)
    except (_PbDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"cannot decode protobuf {type(message).__name__}: {exc}") from None
    return message


def decode_logs(body: bytes, keep: frozenset[str] | None = None, trace: bool = False) -> Batch:
    """Decodes an ``ExportLogsServiceRequest``; each log record becomes a record.

    The event name is the ``event_name`` field, or the deprecated ``event.name`` attribute.
    ``keep``, when given, is the set of attribute keys to extract; others are skipped.
    ``trace``: also read each record's trace context (for exemplars).
    """
    req = _parse(ExportLogsServiceRequest(), body)
    batch = Batch(LOG)
    records = batch.records
    for base, sl in _scopes(req.resource_logs, "scope_logs", keep):
        for lr in sl.log_records:
            # _attributes() inlined for the filtered case: this loop runs once per event.
            if keep is None:
                attrs = _attributes(lr.attributes, base)
            else:
                attrs = base.copy()
                for kv in lr.attributes:
                    key = kv.key
                    if key in keep:
                        v = kv.value
                        attrs[key] = (v.string_value if v.WhichOneof("value") == "string_value"
                                      else any_value(v))
            name = lr.event_name
            if not name:
                legacy = attrs.get("event.name")
                name = legacy if isinstance(legacy, str) else ""
            if trace:
                tid, sid = trace_context(lr.trace_id, lr.span_id)
                records.append(Record(LOG, name, lr.time_unix_nano or lr.observed_time_unix_nano,
                                      attrs, trace_id=tid, span_id=sid))
            else:
                records.append(
                    Record(LOG, name, lr.time_unix_nano or lr.observed_time_unix_nano, attrs)
                )
    return batch


def decode_traces(body: bytes, keep: frozenset[str] | None = None, trace: bool = False
                  ) -> Batch:
    """Decodes an ``ExportTraceServiceRequest``; each span becomes a record with a duration
    (and, with ``trace``, its trace and span id)."""
    req = _parse(ExportTraceServiceRequest(), body)
    batch = Batch(SPAN)
    records = batch.records
    for base, ss in _scopes(req.resource_spans, "scope_spans", keep):
        for span in ss.spans:
            start, end = span.start_time_unix_nano, span.end_time_unix_nano
            if end < start or not start:
                batch.reject("invalid_span", f"span {span.name!r} " + (
                    "ends before it starts" if start else "has no start time"))
                continue
            tid, sid = trace_context(span.trace_id, span.span_id) if trace else (b"", b"")
            records.append(
                Record(
                    SPAN, span.name, end, _attributes(span.attributes, base, keep),
                    duration=(end - start) / 1e9, status=span.status.code, kind=span.kind,
                    trace_id=tid, span_id=sid,
                )
            )
    return batch


def _number(point: Any) -> float | None:
    which = point.WhichOneof("value")
    if which == "as_double":
        return float(point.as_double)
    if which == "as_int":
        return float(point.as_int)
    return None


def decode_metrics(body: bytes, keep: frozenset[str] | None = None, trace: bool = False
                   ) -> Batch:
    """Decodes an ``ExportMetricsServiceRequest``; each data point becomes a record.

    Gauge and sum points carry a number, histogram points a :class:`Histogram`. Exponential
    histograms and summaries are not mapped and are rejected with their own reason. ``trace``
    is accepted for symmetry: metric points make no exemplars.
    """
    req = _parse(ExportMetricsServiceRequest(), body)
    batch = Batch(METRIC)
    records = batch.records
    for base, sm in _scopes(req.resource_metrics, "scope_metrics", keep):
        for metric in sm.metrics:
            name = metric.name
            data = metric.WhichOneof("data")
            if data == "gauge" or data == "sum":
                container = metric.gauge if data == "gauge" else metric.sum
                temporality = container.aggregation_temporality if data == "sum" else 0
                monotonic = bool(container.is_monotonic) if data == "sum" else False
                for p in container.data_points:
                    value = _number(p)
                    if value is None:
                        batch.reject("missing_value", f"{name}: data point without a value")
                        continue
                    records.append(
                        Record(
                            METRIC, name, p.time_unix_nano, _attributes(p.attributes, base, keep),
                            value=value,
                            point_kind=POINT_SUM if data == "sum" else POINT_GAUGE,
                            temporality=temporality, monotonic=monotonic,
                            start_ns=p.start_time_unix_nano,
                        )
                    )
            elif data == "histogram":
                h = metric.histogram
                for p in h.data_points:
                    bounds = tuple(p.explicit_bounds)
                    counts, problem = histogram_problem(bounds, tuple(p.bucket_counts), p.count)
                    if problem:
                        batch.reject("invalid_histogram", f"{name}: {problem}")
                        continue
                    records.append(
                        Record(
                            METRIC, name, p.time_unix_nano, _attributes(p.attributes, base, keep),
                            value=Histogram(bounds, counts, p.sum if p.HasField("sum") else math.nan, p.count),
                            point_kind=POINT_HISTOGRAM, temporality=h.aggregation_temporality,
                            monotonic=True, start_ns=p.start_time_unix_nano,
                        )
                    )
            else:
                points = len(getattr(metric, data).data_points) if data else 1
                for _ in range(points):
                    batch.reject(
                        "unsupported_point_type",
                        f"{name}: {data or 'empty'} data points are not supported",
                    )
    return batch


DECODERS: dict[str, Callable[[bytes, frozenset[str] | None, bool], Batch]] = {
    LOG: decode_logs,
    SPAN: decode_traces,
    METRIC: decode_metrics,
}
