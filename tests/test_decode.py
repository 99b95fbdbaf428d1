"""Protobuf and JSON decoding agree, record for record; attribute filtering keeps what the
rules and observers read."""

from __future__ import annotations

import random

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from benchmarks.payloads import make_batch
from exporter import otlp_json, otlp_protobuf
from exporter.config import load_config
from exporter.pipeline import Pipeline


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


def test_pipeline_decodes_what_rules_and_declared_observers_read():
    p = Pipeline(load_config(None, env={}), process_metrics=False)
    keep = p.attributes_to_decode("log")
    assert keep is not None
    assert {"url.path", "service.name", "app.feature", "event.name"} <= keep
    assert "http.referrer" not in keep  # no rule reads it
    p.add_observer(lambda b, r: None, attributes=["http.referrer"])
    assert "http.referrer" in (p.attributes_to_decode("log") or ())
    p.observers.append(lambda b, r: None)  # says nothing: sees everything
    assert p.attributes_to_decode("log") is None
    assert p.attributes_to_decode("metric") is None
