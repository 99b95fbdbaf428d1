"""OTLP/HTTP JSON payloads to :class:`~exporter.records.Record` lists.

Follows the OTLP JSON encoding: lowerCamelCase keys (the proto field names are accepted too),
64-bit integers as decimal strings or numbers, enums as integers, trace and span ids in hex
(read only for exemplars; an id that is not hex makes no exemplar), unknown fields ignored. Any value of the wrong type makes
the whole payload malformed: the error names the path to it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from exporter.records import (
    LOG, METRIC, POINT_GAUGE, POINT_HISTOGRAM, POINT_SUM, SPAN, Batch, DecodeError, Histogram,
    Record, histogram_problem, trace_context,
)

__all__ = ["decode_logs", "decode_traces", "decode_metrics", "any_value", "parse", "DECODERS"]

_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
    return value


def _list(obj: dict[str, Any], camel: str, snake: str, path: str) -> list[Any]:
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{path}.{camel}: expected an array, got {type(value).__name__}")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{path}: expected an object, got {type(value).__name__}")
    return value


_INT_MIN, _UINT_MAX = -2 ** 63, 2 ** 64 - 1


def _int(value: Any, path: str, low: int = _INT_MIN) -> int:
    """An int64 or uint64 field (``low=0`` for unsigned ones), as a number or decimal string."""
    number = _any_int(value, path)
    if not low <= number <= _UINT_MAX:
        raise DecodeError(f"{path}: {number} is out of range for a 64-bit integer field"
                          + (" (it is unsigned)" if low == 0 and number < 0 else ""))
    return number


def _any_int(value: Any, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise DecodeError(f"{path}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DecodeError(f"{path}: expected an integer or a decimal string, got {value!r}")


def _float(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise DecodeError(f"{path}: expected a number, got a boolean")
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            if value in _SPECIAL_FLOATS:
                return _SPECIAL_FLOATS[value]
            return float(value)
    except (ValueError, OverflowError):
        pass
    raise DecodeError(f"{path}: expected a number within double range, got {str(value)[:40]!r}")


def _str(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{path}: expected a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # a lone surrogate from a \ud800-style escape: not text, and no exposition
            # format could carry it
            raise DecodeError(f"{path}: not valid UTF-8 text (a lone surrogate escape)") from None
    return value


def any_value(v: Any, path: str = "value") -> Any:
    """An OTLP JSON ``AnyValue`` object as a Python value (None when empty)."""
    if not isinstance(v, dict):
        raise DecodeError(f"{path}: expected an AnyValue object, got {type(v).__name__}")
    if "stringValue" in v:
        return _str(v["stringValue"], path + ".stringValue")
    if "intValue" in v:
        return _int(v["intValue"], path + ".intValue")
    if "doubleValue" in v:
        return _float(v["doubleValue"], path + ".doubleValue")
    if "boolValue" in v:
        b = v["boolValue"]
        if not isinstance(b, bool):
            raise DecodeError(f"{path}.boolValue: expected true or false, got {b!r}")
        return b
    if "arrayValue" in v:
        values = _list(_object(v["arrayValue"], path + ".arrayValue"), "values", "values", path)
        return [any_value(x, f"{path}.arrayValue.values[{i}]") for i, x in enumerate(values)]
    if "kvlistValue" in v:
        kvs = _list(_object(v["kvlistValue"], path + ".kvlistValue"), "values", "values", path)
        return _attributes(kvs, None, path + ".kvlistValue.values")
    if "bytesValue" in v:
        return _str(v["bytesValue"], path + ".bytesValue")  # already base64 in JSON
    # proto field names, for payloads written by a protobuf JSON printer with original names
    for snake, camel in (("string_value", "stringValue"), ("int_value", "intValue"),
                         ("double_value", "doubleValue"), ("bool_value", "boolValue")):
        if snake in v:
            return any_value({camel: v[snake]}, path)
    return None


def _attributes(kvs: list[Any], base: dict[str, Any] | None, path: str) -> dict[str, Any]:
    out = dict(base) if base else {}
    for i, kv in enumerate(kvs):
        if not isinstance(kv, dict):
            raise DecodeError(f"{path}[{i}]: expected a key-value object")
        key = kv.get("key")
        if not isinstance(key, str):
            raise DecodeError(f"{path}[{i}].key: expected a string, got {key!r}")
        _str(key, f"{path}[{i}].key")
        value = kv.get("value")
        out[key] = None if value is None else any_value(value, f"{path}[{i}].value")
    return out


def parse(body: bytes) -> dict[str, Any]:
    """Parses a JSON body into an object, or raises :class:`DecodeError`."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"expected a JSON object at the top level, got {type(doc).__name__}")
    return doc


def _resource_and_scopes(
    doc: dict[str, Any], top: tuple[str, str], scopes: tuple[str, str]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, merged resource+scope attributes, the scope object) for every scope."""
    out = []
    for i, res in enumerate(_list(doc, top[0], top[1], "")):
        rpath = f"{top[0]}[{i}]"
        res = _object(res, rpath)
        resource = _object(res.get("resource"), rpath + ".resource")
        rattrs = _attributes(
            _list(resource, "attributes", "attributes", rpath + ".resource"), None,
            rpath + ".resource.attributes",
        )
        for j, scope_block in enumerate(_list(res, scopes[0], scopes[1], rpath)):
            spath = f"{rpath}.{scopes[0]}[{j}]"
            scope_block = _object(scope_block, spath)
            scope = _object(scope_block.get("scope"), spath + ".scope")
            sattrs = _list(scope, "attributes", "attributes", spath + ".scope")
            base = _attributes(sattrs, rattrs, spath + ".scope.attributes") if sattrs else rattrs
            out.append((spath, base, scope_block))
    return out


def _trace_context(obj: dict[str, Any]) -> tuple[bytes, bytes]:
    """A record's traceId and spanId (hex strings) as bytes; empty when absent or not hex."""
    tid, sid = _get(obj, "traceId", "trace_id"), _get(obj, "spanId", "span_id")
    if not isinstance(tid, str) or len(tid) != 32:
        return b"", b""
    try:
        return trace_context(bytes.fromhex(tid),
                             bytes.fromhex(sid) if isinstance(sid, str) and len(sid) == 16
                             else b"")
    except ValueError:
        return b"", b""


def decode_logs(body: bytes, keep: frozenset[str] | None = None, trace: bool = False) -> Batch:
    """Decodes an OTLP JSON ``ExportLogsServiceRequest``."""
    doc = parse(body)
    batch = Batch(LOG)
    for spath, base, block in _resource_and_scopes(doc, ("resourceLogs", "resource_logs"),
                                                   ("scopeLogs", "scope_logs")):
        for k, lr in enumerate(_list(block, "logRecords", "log_records", spath)):
            path = f"{spath}.logRecords[{k}]"
            lr = _object(lr, path)
            attrs = _attributes(_list(lr, "attributes", "attributes", path), base,
                                path + ".attributes")
            name = _str(_get(lr, "eventName", "event_name"), path + ".eventName")
            if not name:
                legacy = attrs.get("event.name")
                name = legacy if isinstance(legacy, str) else ""
            t = _int(_get(lr, "timeUnixNano", "time_unix_nano"), path + ".timeUnixNano", low=0)
            if not t:
                t = _int(_get(lr, "observedTimeUnixNano", "observed_time_unix_nano"),
                         path + ".observedTimeUnixNano", low=0)
            tid, sid = _trace_context(lr) if trace else (b"", b"")
            batch.records.append(Record(LOG, name, t, attrs, trace_id=tid, span_id=sid))
    return batch


def decode_traces(body: bytes, keep: frozenset[str] | None = None, trace: bool = False
                  ) -> Batch:
    """Decodes an OTLP JSON ``ExportTraceServiceRequest``."""
    doc = parse(body)
    batch = Batch(SPAN)
    for spath, base, block in _resource_and_scopes(doc, ("resourceSpans", "resource_spans"),
                                                   ("scopeSpans", "scope_spans")):
        for k, span in enumerate(_list(block, "spans", "spans", spath)):
            path = f"{spath}.spans[{k}]"
            span = _object(span, path)
            name = _str(span.get("name"), path + ".name")
            start = _int(_get(span, "startTimeUnixNano", "start_time_unix_nano"),
                         path + ".startTimeUnixNano", low=0)
            end = _int(_get(span, "endTimeUnixNano", "end_time_unix_nano"),
                       path + ".endTimeUnixNano", low=0)
            status = _object(span.get("status"), path + ".status")
            code = _enum(status.get("code"), _STATUS_NAMES, path + ".status.code")
            kind = _enum(span.get("kind"), _KIND_NAMES, path + ".kind")
            if end < start or not start:
                batch.reject("invalid_span", f"{path}: span {name!r} " + (
                    "ends before it starts" if start else "has no start time"))
                continue
            attrs = _attributes(_list(span, "attributes", "attributes", path), base,
                                path + ".attributes")
            tid, sid = _trace_context(span) if trace else (b"", b"")
            batch.records.append(
                Record(SPAN, name, end, attrs, duration=(end - start) / 1e9, status=code,
                       kind=kind, trace_id=tid, span_id=sid)
            )
    return batch


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
}
_TEMPORALITY_NAMES = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0, "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
}


def _enum(value: Any, names: dict[str, int], path: str) -> int:
    # OTLP JSON says integers; enum names are what protobuf printers emit by default, so
    # they are accepted too.
    if isinstance(value, str) and value in names:
        return names[value]
    return _int(value, path)


def _point_attrs(p: dict[str, Any], base: dict[str, Any], path: str) -> dict[str, Any]:
    return _attributes(_list(p, "attributes", "attributes", path), base, path + ".attributes")


def decode_metrics(body: bytes, keep: frozenset[str] | None = None, trace: bool = False
                   ) -> Batch:
    """Decodes an OTLP JSON ``ExportMetricsServiceRequest``."""
    doc = parse(body)
    batch = Batch(METRIC)
    for spath, base, block in _resource_and_scopes(doc, ("resourceMetrics", "resource_metrics"),
                                                   ("scopeMetrics", "scope_metrics")):
        for k, metric in enumerate(_list(block, "metrics", "metrics", spath)):
            mpath = f"{spath}.metrics[{k}]"
            metric = _object(metric, mpath)
            name = _str(metric.get("name"), mpath + ".name")
            kind = next((key for key in ("gauge", "sum", "histogram") if key in metric), None)
            if kind is None:
                other = next((key for key in ("exponentialHistogram", "exponential_histogram",
                                              "summary") if key in metric), None)
                data = _object(metric.get(other), mpath) if other else {}
                for _ in range(max(1, len(_list(data, "dataPoints", "data_points", mpath)))):
                    batch.reject("unsupported_point_type",
                                 f"{name}: {other or 'empty'} data points are not supported")
                continue
            data = _object(metric[kind], f"{mpath}.{kind}")
            temporality = _enum(_get(data, "aggregationTemporality", "aggregation_temporality"),
                                _TEMPORALITY_NAMES, f"{mpath}.{kind}.aggregationTemporality")
            monotonic = bool(_get(data, "isMonotonic", "is_monotonic"))
            for n, p in enumerate(_list(data, "dataPoints", "data_points", f"{mpath}.{kind}")):
                ppath = f"{mpath}.{kind}.dataPoints[{n}]"
                p = _object(p, ppath)
                t = _int(_get(p, "timeUnixNano", "time_unix_nano"), ppath + ".timeUnixNano", low=0)
                start = _int(_get(p, "startTimeUnixNano", "start_time_unix_nano"),
                             ppath + ".startTimeUnixNano", low=0)
                attrs = _point_attrs(p, base, ppath)
                if kind == "histogram":
                    bounds = tuple(_float(b, f"{ppath}.explicitBounds[{i}]") for i, b in
                                   enumerate(_list(p, "explicitBounds", "explicit_bounds", ppath)))
                    counts = tuple(_int(c, f"{ppath}.bucketCounts[{i}]") for i, c in
                                   enumerate(_list(p, "bucketCounts", "bucket_counts", ppath)))
                    count = _int(p.get("count"), ppath + ".count")
                    counts, problem = histogram_problem(bounds, counts, count)
                    if problem:
                        batch.reject("invalid_histogram", f"{name}: {problem}")
                        continue
                    s = p.get("sum")
                    value: Any = Histogram(
                        bounds, counts, math.nan if s is None else _float(s, ppath + ".sum"), count)
                    batch.records.append(Record(
                        METRIC, name, t, attrs, value=value, point_kind=POINT_HISTOGRAM,
                        temporality=temporality, monotonic=True, start_ns=start))
                    continue
                if "asDouble" in p or "as_double" in p:
                    number = _float(_get(p, "asDouble", "as_double"), ppath + ".asDouble")
                elif "asInt" in p or "as_int" in p:
                    number = float(_int(_get(p, "asInt", "as_int"), ppath + ".asInt"))
                else:
                    batch.reject("missing_value", f"{name}: data point without a value")
                    continue
                batch.records.append(Record(
                    METRIC, name, t, attrs, value=number,
                    point_kind=POINT_SUM if kind == "sum" else POINT_GAUGE,
                    temporality=temporality if kind == "sum" else 0,
                    monotonic=monotonic if kind == "sum" else False, start_ns=start))
    return batch


# ``keep`` is accepted for symmetry with the protobuf decoders; JSON is parsed whole anyway.
DECODERS: dict[str, Callable[[bytes, frozenset[str] | None, bool], Batch]] = {
    LOG: decode_logs,
    SPAN: decode_traces,
    METRIC: decode_metrics,
}
