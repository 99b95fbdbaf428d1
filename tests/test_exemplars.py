"""Exemplars: counters and histograms fed by spans, or by log records with a trace context,
keep the newest exemplar per series and bucket, served in OpenMetrics only; never on gauges."""

from __future__ import annotations

import json
import time

import requests
from opentelemetry import trace
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import otlp_json, otlp_protobuf
from exporter.collectors.mapped import exemplar
from exporter.config import load_config
from exporter.mapper import Mapping
from tests.otel import logger_provider, tracer_provider
from tests.test_receiver import body, page_view_logs

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def openmetrics(e) -> dict[tuple[str, frozenset], object]:
    """sample (name, labels) -> its exemplar (or None), from an OpenMetrics scrape."""
    r = requests.get(e.metrics_url + "/metrics", headers={"Accept": OPENMETRICS}, timeout=10)
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    return {(s.name, frozenset(s.labels.items())): s.exemplar
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def test_events_in_a_span_give_counters_and_histograms_exemplars_not_gauges(exporter):
    tp = tracer_provider(exporter.otlp_url)
    lp = logger_provider(exporter.otlp_url, service="shop")
    logger = lp.get_logger("app")
    tracer = tp.get_tracer("app")
    with tracer.start_as_current_span("GET /home") as span:
        ctx = span.get_span_context()
        logger.emit(event_name="app.page_view", attributes={"url.path": "/home"})
        logger.emit(event_name="ai.model.performance", attributes={
            "gen_ai.request.model": "m1", "ai.model.accuracy": 0.9, "ai.model.latency": 0.3})
    # no trace context: counted, no exemplar
    logger.emit(event_name="app.page_view", attributes={"url.path": "/plain"})
    lp.shutdown()
    tp.shutdown()
    trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    om = openmetrics(exporter)
    views = om[("app_page_views_total", frozenset({"route": "/home", "service_name": "shop"}.items()))]
    assert views.labels == {"trace_id": trace_id, "span_id": span_id}
    assert views.value == 1.0 and abs(float(views.timestamp) - time.time()) < 600
    assert om[("app_page_views_total",
               frozenset({"route": "/plain", "service_name": "shop"}.items()))] is None
    latency = {dict(k)["le"]: ex for (n, k), ex in om.items()
               if n == "ai_model_latency_seconds_bucket" and dict(k).get("model") == "m1"}
    with_exemplar = {le: ex for le, ex in latency.items() if ex is not None}
    assert list(with_exemplar) == ["0.5"]  # the bucket the 0.3 s fell in
    assert with_exemplar["0.5"].labels["trace_id"] == trace_id
    assert with_exemplar["0.5"].value == 0.3
    gauges = [ex for (n, _k), ex in om.items() if n.startswith("ai_model_accuracy_ratio")]
    assert gauges == [None]
    # the Prometheus text format has no exemplars
    text = exporter.scrape().text
    assert "trace_id" not in text


def test_spans_give_duration_histograms_the_newest_exemplar_per_bucket(exporter):
    tp = tracer_provider(exporter.otlp_url)
    tracer = tp.get_tracer("genai")
    ids = []
    for _ in range(3):
        with tracer.start_as_current_span("chat m", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "m"}) as span:
            ids.append(f"{span.get_span_context().trace_id:032x}")
    tp.shutdown()
    om = openmetrics(exporter)
    found = [ex for (n, k), ex in om.items()
             if n == "gen_ai_span_operation_duration_seconds_bucket" and ex is not None]
    # the three spans took microseconds: one bucket, holding the last span's trace
    assert len(found) == 1 and found[0].labels["trace_id"] == ids[-1]


def test_json_hex_ids_make_exemplars_and_malformed_ids_none(exporter):
    doc = page_view_logs(route="/json", n=1)
    record = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    record["timeUnixNano"] = str(time.time_ns())
    record["traceId"] = "5B8EFFF798038103D269B633813FC60C"  # case-insensitive hex
    bad = [dict(record, traceId=t) for t in ("not-hex" * 4 + "abcd", "00" * 16, "abc")]
    for b in bad:
        b["attributes"] = [{"key": "url.path", "value": {"stringValue": "/bad"}}]
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"] += bad
    assert exporter.post("/v1/logs", body(doc)).status_code == 200
    om = openmetrics(exporter)
    ex = om[("app_page_views_total", frozenset({"route": "/json", "service_name": "web"}.items()))]
    assert ex.labels == {"trace_id": "5b8efff798038103d269b633813fc60c",
                         "span_id": "eee19b7ec3c1b174"}
    assert om[("app_page_views_total",
               frozenset({"route": "/bad", "service_name": "web"}.items()))] is None
    assert exporter.scrape().value("app_page_views_total", route="/bad", service_name="web") == 3


def test_decoders_read_the_trace_context_only_when_a_rule_can_use_it():
    events = page_view_logs(n=2)
    raw = body(events)
    assert all(r.trace_id for r in otlp_json.decode_logs(raw, None, True).records)
    assert not any(r.trace_id for r in otlp_json.decode_logs(raw, None, False).records)
    gauges_only = load_config(None, env={}).rules
    mapping = Mapping([r for r in gauges_only if r.metric.type == "gauge"])
    assert mapping.exemplar_signals == frozenset()
    assert Mapping(gauges_only).exemplar_signals == {"log", "span"}
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    msg = json_format.ParseDict(json.loads(raw), ExportLogsServiceRequest())
    for lr in msg.resource_logs[0].scope_logs[0].log_records:  # hex in OTLP JSON, not base64
        lr.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
        lr.span_id = bytes.fromhex("eee19b7ec3c1b174")
    pb = msg.SerializeToString()
    with_ids = otlp_protobuf.decode_logs(pb, None, True).records
    assert with_ids[0].trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert with_ids[0].span_id.hex() == "eee19b7ec3c1b174"
    assert not otlp_protobuf.decode_logs(pb, None, False).records[0].trace_id


def test_exemplar_labels_over_the_openmetrics_limit_are_left_out():
    assert exemplar((1, 1.0, b"\x01" * 16, b"\x02" * 8)).labels == {
        "trace_id": "01" * 16, "span_id": "02" * 8}
    # names and values together: 8 + 120 code points is the limit, 8 + 122 over it
    assert exemplar((1, 1.0, b"\x01" * 60, b"")) is not None
    assert exemplar((1, 1.0, b"\x01" * 61, b"")) is None
    assert exemplar(None) is None


def test_exemplars_follow_their_series_and_start_empty_after_a_restart(exporter_factory):
    e = exporter_factory()
    tp = tracer_provider(e.otlp_url)
    lp = logger_provider(e.otlp_url, service="shop")
    with tp.get_tracer("t").start_as_current_span("s"):
        lp.get_logger("a").emit(event_name="app.page_view", attributes={"url.path": "/r"})
    lp.shutdown()
    tp.shutdown()
    key = ("app_page_views_total", frozenset({"route": "/r", "service_name": "shop"}.items()))
    assert openmetrics(e)[key] is not None
    ok, _ = e.app.reload()  # the same rules: the series and its exemplar stay
    assert ok and openmetrics(e)[key] is not None
    staged, _notes = e.app.store.parse_state(e.app.store.export_state(), True)
    e.app.store.apply_state(staged)
    assert openmetrics(e)[key] is None
    assert e.scrape().value("app_page_views_total", route="/r", service_name="shop") == 1


def test_no_trace_context_no_exemplar_anywhere(exporter):
    lp = logger_provider(exporter.otlp_url)
    assert trace.get_current_span().get_span_context().trace_id == 0
    for _ in range(5):
        lp.get_logger("a").emit(event_name="app.page_view", attributes={"url.path": "/n"})
    lp.shutdown()
    assert all(ex is None for ex in openmetrics(exporter).values())
