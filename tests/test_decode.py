"""Protobuf and JSON decoding agree, record for record; attribute filtering keeps what the
rules and observers read."""

from __future__ import annotations

import random

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from benchmarks.payloads import make_batch
from exporter import otlp_json, otlp_protobuf
from tests.helpers import built


def test_protobuf_and_json_decoders_produce_the_same_records():
    body = make_batch(random.Random(3), size=64)
    req = ExportLogsServiceRequest.FromString(body)
    # protobuf's own JSON printer writes int64 as strings and lowerCamelCase keys
    as_json = MessageToJson(req).encode()
    a = otlp_protobuf.decode_logs(body).records
    b = otlp_json.decode_logs(as_json).records
    assert len(a) == len(b) == 64
    for x, y in zip(a, b):
        assert (x.name, x.time_ns, x.attributes) == (y.name, y.time_ns, y.attributes)


def test_decoders_extract_only_the_wanted_attributes():
    body = make_batch(random.Random(3), size=16)
    keep = frozenset({"service.name", "url.path"})
    for rec in otlp_protobuf.decode_logs(body, keep).records:
        assert set(rec.attributes) <= keep
        assert "service.name" in rec.attributes


class _Reads:
    """An observer that names the attribute keys it reads."""

    def __init__(self, *keys):
        self.attributes = frozenset(keys)

    def __call__(self, batch):
        pass


def test_pipeline_decodes_what_rules_and_declared_observers_read(tmp_path):
    p = built(tmp_path).pipeline
    keep = p.attributes_to_decode("log")
    assert keep is not None
    assert {"url.path", "service.name", "app.feature", "event.name"} <= keep
    assert {"user.id", "session.id"} <= keep  # the KPI windows' observer reads them
    assert "http.referrer" not in keep  # no rule reads it
    p.add_observer(_Reads("http.referrer"))
    assert "http.referrer" in (p.attributes_to_decode("log") or ())
    says_nothing = lambda batch: None  # noqa: E731 - says nothing: sees everything
    p.add_observer(says_nothing)
    assert p.attributes_to_decode("log") is None
    assert p.attributes_to_decode("metric") is None
    p.remove_observer(says_nothing)
    assert "http.referrer" in (p.attributes_to_decode("log") or ())


def _same(a, b):
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert (x.signal, x.name, x.time_ns, x.attributes, x.duration, x.status, x.kind,
                x.point_kind, x.temporality, x.monotonic, x.start_ns) == \
               (y.signal, y.name, y.time_ns, y.attributes, y.duration, y.status, y.kind,
                y.point_kind, y.temporality, y.monotonic, y.start_ns)
        if hasattr(x.value, "counts"):
            assert (x.value.bounds, x.value.counts, x.value.sum, x.value.count) == \
                   (y.value.bounds, y.value.counts, y.value.sum, y.value.count)
        else:
            assert x.value == y.value


def test_protobuf_and_json_agree_on_spans_and_metric_points():
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    treq = ExportTraceServiceRequest()
    rs = treq.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "api"
    span = rs.scope_spans.add().spans.add()
    span.name, span.kind = "chat", 3
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000_000_000, 3_500_000_000
    span.status.code = 2
    for key, setter in (("gen_ai.usage.input_tokens", lambda v: setattr(v, "int_value", 12)),
                        ("ratio", lambda v: setattr(v, "double_value", 0.5)),
                        ("ok", lambda v: setattr(v, "bool_value", True))):
        a = span.attributes.add()
        a.key = key
        setter(a.value)
    _same(otlp_protobuf.decode_traces(treq.SerializeToString()).records,
          otlp_json.decode_traces(MessageToJson(treq).encode()).records)

    mreq = ExportMetricsServiceRequest()
    sm = mreq.resource_metrics.add().scope_metrics.add()
    g = sm.metrics.add()
    g.name = "queue.depth"
    p = g.gauge.data_points.add()
    p.as_int, p.time_unix_nano = 7, 5
    s = sm.metrics.add()
    s.name = "jobs"
    s.sum.aggregation_temporality, s.sum.is_monotonic = 2, True
    p = s.sum.data_points.add()
    p.as_double, p.start_time_unix_nano, p.time_unix_nano = 3.5, 1, 9
    h = sm.metrics.add()
    h.name = "latency"
    h.histogram.aggregation_temporality = 1
    p = h.histogram.data_points.add()
    p.explicit_bounds.extend([0.1, 1.0])
    p.bucket_counts.extend([1, 2, 3])
    p.count, p.sum = 6, 4.2
    _same(otlp_protobuf.decode_metrics(mreq.SerializeToString()).records,
          otlp_json.decode_metrics(MessageToJson(mreq).encode()).records)
