"""The OTLP/HTTP receiver over real HTTP: encodings, every error status with its body, and
that good data sent before and after an error is intact."""

from __future__ import annotations

import gzip
import json
import threading
import zlib

import pytest
import requests
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

PB = "application/x-protobuf"


def kv(key, **value):
    return {"key": key, "value": value}


def page_view_logs(route="/home", n=1, service="web", extra=()):
    records = [{"timeUnixNano": "1700000000000000000", "eventName": "app.page_view",
                "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                "severityNumber": 9,
                "attributes": [kv("url.path", stringValue=route)]} for _ in range(n)]
    records += list(extra)
    return {"resourceLogs": [{
        "resource": {"attributes": [kv("service.name", stringValue=service)]},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}]}]}


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def views(exporter, route="/home", service="web"):
    return exporter.scrape().value("app_page_views_total", route=route, service_name=service)


def test_json_with_string_int64_hex_ids_and_unknown_fields(exporter):
    doc = page_view_logs(n=2)
    doc["someFutureField"] = {"x": 1}
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["newField"] = [1, 2]
    conv = {"timeUnixNano": 1700000000000000000, "eventName": "app.conversion",
            "attributes": [kv("app.conversion.type", stringValue="subscribe"),
                           kv("app.conversion.value", intValue="42")]}
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"].append(conv)
    r = exporter.post("/v1/logs", body(doc))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {}
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/home", service_name="web") == 2
    assert s.value("app_conversion_value_total", type="subscribe", currency="unknown",
                   service_name="web") == 42


def test_snake_case_keys_and_enum_names_are_accepted(exporter):
    doc = {"resource_spans": [{"scope_spans": [{"spans": [{
        "name": "chat", "kind": "SPAN_KIND_CLIENT", "start_time_unix_nano": "1000000000",
        "end_time_unix_nano": "3500000000", "status": {"code": "STATUS_CODE_ERROR"},
        "attributes": [kv("gen_ai.operation.name", stringValue="chat"),
                       kv("gen_ai.request.model", stringValue="m"),
                       kv("error.type", stringValue="timeout")]}]}]}]}
    r = exporter.post("/v1/traces", body(doc))
    assert r.status_code == 200, r.text
    s = exporter.scrape()
    lab = dict(gen_ai_operation_name="chat", gen_ai_provider_name="", gen_ai_request_model="m",
               error_type="timeout", service_name="unknown_service")
    assert s.value("gen_ai_span_operation_duration_seconds_sum", **lab) == 2.5


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies(exporter, encoding):
    raw = body(page_view_logs(n=3))
    if encoding == "gzip":
        data = gzip.compress(raw)
    elif encoding == "deflate":
        data = zlib.compress(raw)
    else:
        c = zlib.compressobj(wbits=-15)
        data = c.compress(raw) + c.flush()
    r = exporter.post("/v1/logs", data, **{"Content-Encoding": encoding.replace("raw-", "")})
    assert r.status_code == 200, r.text
    assert views(exporter) == 3


def test_protobuf_request_gets_protobuf_response(exporter):
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.event_name = "app.page_view"
    a = rec.attributes.add()
    a.key, a.value.string_value = "url.path", "/pb"
    r = exporter.post("/v1/logs", req.SerializeToString(), PB)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == PB
    resp = ExportLogsServiceResponse.FromString(r.content)
    assert not resp.HasField("partial_success")
    assert views(exporter, "/pb", "unknown_service") == 1


def test_partial_success_json_keeps_the_good_records(exporter):
    bad = {"eventName": "ai.model.performance",
           "attributes": [kv("gen_ai.request.model", stringValue="m"),
                          kv("ai.model.accuracy", stringValue="very good")]}
    r = exporter.post("/v1/logs", body(page_view_logs(n=4, extra=[bad, bad])))
    assert r.status_code == 200
    ps = r.json()["partialSuccess"]
    assert ps["rejectedLogRecords"] == "2"
    assert "non_numeric_value" in ps["errorMessage"] and "ai.model.accuracy" in ps["errorMessage"]
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/home", service_name="web") == 4
    assert s.value("kpi_exporter_records_rejected_total", signal="log",
                   reason="non_numeric_value") == 2
    # a rejected record is not half-applied: its event counter did not move either
    assert s.value("app_events_total", event="ai.model.performance", service_name="web") is None


def test_partial_success_protobuf_for_each_signal(exporter):
    # spans that end before they start, and exponential histograms, cannot be used
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    treq = ExportTraceServiceRequest()
    spans = treq.resource_spans.add().scope_spans.add()
    good = spans.spans.add()
    good.name, good.start_time_unix_nano, good.end_time_unix_nano = "ok", 1, 2
    bad = spans.spans.add()
    bad.name, bad.start_time_unix_nano, bad.end_time_unix_nano = "bad", 5, 2
    r = exporter.post("/v1/traces", treq.SerializeToString(), PB)
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert r.status_code == 200
    assert resp.partial_success.rejected_spans == 1
    assert "ends before it starts" in resp.partial_success.error_message

    mreq = ExportMetricsServiceRequest()
    m = mreq.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "latency"
    m.exponential_histogram.data_points.add().count = 3
    m.exponential_histogram.data_points.add().count = 4
    r = exporter.post("/v1/metrics", mreq.SerializeToString(), PB)
    resp = ExportMetricsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_data_points == 2
    assert exporter.scrape().value("kpi_exporter_records_rejected_total", signal="metric",
                                   reason="unsupported_point_type") == 2


@pytest.mark.parametrize("content_type,data,needle", [
    ("application/json", b"{not json", "invalid JSON"),
    ("application/json", b'{"resourceLogs": {"a": 1}}', "resourceLogs: expected an array"),
    ("application/json",
     body({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}),
     "resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano"),
    (PB, b"\xff\xff\xff\xff garbage", "cannot decode protobuf"),
])
def test_malformed_batch_is_rejected_whole_with_a_status_body(exporter, content_type, data, needle):
    assert exporter.post("/v1/logs", body(page_view_logs())).status_code == 200
    r = exporter.post("/v1/logs", data, content_type)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == content_type
    if content_type == PB:
        status = Status.FromString(r.content)
        code, message = status.code, status.message
    else:
        code, message = r.json()["code"], r.json()["message"]
    assert code == 3  # INVALID_ARGUMENT
    assert needle in message
    assert exporter.post("/v1/logs", body(page_view_logs())).status_code == 200
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/home", service_name="web") == 2
    assert s.value("kpi_exporter_records_rejected_total", signal="log",
                   reason="malformed_request") == 1


def test_unknown_content_type_is_415(exporter):
    r = exporter.post("/v1/logs", b"hello", "text/plain")
    assert r.status_code == 415
    assert "application/x-protobuf" in r.json()["message"]
    r = exporter.post("/v1/logs", body(page_view_logs()), **{"Content-Encoding": "br"})
    assert r.status_code == 415
    assert "Content-Encoding" in r.json()["message"]
    assert views(exporter) is None


def test_wrong_method_is_405_and_unknown_path_404(exporter):
    r = requests.get(exporter.otlp_url + "/v1/logs", timeout=5)
    assert r.status_code == 405
    assert "POST" in r.headers["Allow"] and "POST" in r.json()["message"]
    r = requests.post(exporter.otlp_url + "/v1/nope", data=b"{}", timeout=5)
    assert r.status_code == 404


def test_body_limit_before_and_after_decompression(exporter_factory):
    e = exporter_factory("server: {max_body_size: 64KiB}\n")
    ok = body(page_view_logs(n=1))
    assert e.post("/v1/logs", ok).status_code == 200
    big = body(page_view_logs(route="/" + "x" * 70_000))
    r = e.post("/v1/logs", big)
    assert r.status_code == 413 and "65536 bytes" in r.json()["message"]
    # a gzip bomb: tiny on the wire, huge inflated
    bomb = gzip.compress(b" " * 50_000_000)
    assert len(bomb) < 65536
    r = e.post("/v1/logs", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["message"]
    assert e.post("/v1/logs", ok).status_code == 200
    assert views(e) == 2


def test_bearer_token_from_config_and_file(exporter_factory, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# one per line\nfile-token\n")
    e = exporter_factory(f"server:\n  auth:\n    bearer_tokens: [cfg-token]\n"
                         f"    bearer_token_file: {token_file}\n")
    data = body(page_view_logs())
    r = e.post("/v1/logs", data)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["message"]
    assert e.post("/v1/logs", data, Authorization="Bearer wrong").status_code == 401
    assert e.post("/v1/logs", data, Authorization="Basic cfg-token").status_code == 401
    assert e.post("/v1/logs", data, Authorization="Bearer cfg-token").status_code == 200
    assert e.post("/v1/logs", data, Authorization="Bearer file-token").status_code == 200
    assert views(e) == 2


def test_cors_preflight_and_response_headers(exporter_factory):
    e = exporter_factory("server:\n  cors:\n    allowed_origins: ['https://app.example.com']\n")
    pre = requests.options(e.otlp_url + "/v1/logs", timeout=5, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    refused = requests.options(e.otlp_url + "/v1/logs", timeout=5, headers={
        "Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    r = e.post("/v1/logs", body(page_view_logs()), Origin="https://app.example.com")
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    r = e.post("/v1/logs", body(page_view_logs()), Origin="https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_overloaded_exporter_answers_503_with_retry_after(exporter_factory):
    e = exporter_factory("server: {max_concurrent_requests: 1}\n")
    entered, release = threading.Event(), threading.Event()

    def slow_observer(batch):
        entered.set()
        release.wait(10)

    e.pipeline.add_observer(slow_observer)
    first: list[requests.Response] = []
    t = threading.Thread(target=lambda: first.append(e.post("/v1/logs", body(page_view_logs()))))
    t.start()
    assert entered.wait(10)
    r = e.post("/v1/logs", body(page_view_logs()))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    release.set()
    t.join(10)
    e.pipeline.remove_observer(slow_observer)
    assert first[0].status_code == 200
    assert e.post("/v1/logs", body(page_view_logs())).status_code == 200
    assert views(e) == 2


def test_updates_are_visible_as_soon_as_the_response_is_sent(exporter):
    for i in range(1, 21):
        assert exporter.post("/v1/logs", body(page_view_logs())).status_code == 200
        assert views(exporter) == i
