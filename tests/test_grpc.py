"""The OTLP/gRPC receiver: the real OpenTelemetry SDK gRPC exporters send all three signals;
every error status the specification names, with its details; one concurrency limit shared
with OTLP/HTTP; gRPC's own port reuse off unless asked for."""

from __future__ import annotations

import gzip
import threading

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.helpers import ProcessExporter, eventually, free_port
from tests.test_receiver import body, page_view_logs

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def endpoint(e) -> str:
    return f"127.0.0.1:{e.grpc_port}"


def grpc_logs(e, events: list[tuple[str, dict]], service: str = "grpc-app", **kw) -> bool:
    """Emits log records through the SDK's gRPC exporter; True when the export succeeded."""
    results: list[bool] = []
    exporter = OTLPLogExporter(endpoint=endpoint(e), insecure=True, timeout=10, **kw)
    original = exporter.export

    def export(batch):
        result = original(batch)
        results.append(result.name == "SUCCESS")
        return result

    exporter.export = export  # type: ignore[method-assign]
    lp = LoggerProvider(resource=Resource.create({"service.name": service}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = lp.get_logger("app")
    for name, attributes in events:
        logger.emit(event_name=name, attributes=attributes)
    lp.shutdown()
    return all(results) and len(results) == len(events)


def raw_call(e, method: str, payload: bytes, metadata=(), **kw):
    """One unary call with a raw body; (response bytes or None, RpcError or None)."""
    with grpc.insecure_channel(endpoint(e), options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024)]) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            return call(payload, metadata=metadata, timeout=10, **kw), None
        except grpc.RpcError as err:
            return None, err


def rpc_status(err: grpc.RpcError) -> status_pb2.Status:
    """The google.rpc.Status an error carries in its grpc-status-details-bin trailer."""
    trailers = dict(err.trailing_metadata() or ())
    return status_pb2.Status.FromString(trailers["grpc-status-details-bin"])


def retry_delay(err: grpc.RpcError) -> float | None:
    """The RetryInfo delay in the status details, as Go, Java and the Collector read it."""
    for detail in rpc_status(err).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def logs_payload(n: int = 1, route: str = "/grpc") -> bytes:
    """The HTTP tests' page views, as a protobuf request."""
    doc = page_view_logs(route=route, n=n)
    msg = ExportLogsServiceRequest()
    json_format.ParseDict(doc, msg)
    return msg.SerializeToString()


def test_sdk_grpc_exporters_deliver_logs_spans_and_metrics(exporter):
    assert grpc_logs(exporter, [("app.page_view", {"url.path": "/workouts/:id"})] * 3
                     + [("app.feature_used", {"app.feature": "plan", "app.action": "share"})])

    tp = TracerProvider(resource=Resource.create({"service.name": "grpc-app"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=endpoint(exporter), insecure=True, timeout=10)))
    tracer = tp.get_tracer("genai")
    for tokens in (120, 80):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": tokens,
                "gen_ai.usage.output_tokens": 10}):
            pass
    tp.shutdown()

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(
        endpoint=endpoint(exporter), insecure=True, timeout=10,
        preferred_temporality={Counter: AggregationTemporality.DELTA,
                               Histogram: AggregationTemporality.DELTA}),
        export_interval_millis=3_600_000)
    mp = MeterProvider(resource=Resource.create({"service.name": "grpc-app"}),
                       metric_readers=[reader])
    mp.get_meter("m").create_counter("orders").add(5)
    mp.shutdown()

    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/workouts/:id", service_name="grpc-app") == 3
    assert s.value("app_feature_usage_total", feature="plan", action="share",
                   service_name="grpc-app") == 1
    genai = s.matching("gen_ai_span_operation_duration_seconds_count",
                       gen_ai_request_model="gpt-4o")
    assert sum(genai.values()) == 2
    assert s.value("kpi_exporter_records_received_total", signal="log") == 4
    assert s.value("kpi_exporter_records_received_total", signal="span") == 2
    assert s.value("kpi_exporter_records_received_total", signal="metric") == 1
    for signal, n in (("log", 4), ("span", 2), ("metric", 1)):
        assert s.value("kpi_exporter_requests_total", transport="grpc", signal=signal,
                       code="OK") == n
        assert s.value("kpi_exporter_request_duration_seconds_count", transport="grpc",
                       signal=signal) == n
        assert (s.value("kpi_exporter_request_bytes_total", transport="grpc",
                        signal=signal) or 0) > 0
    assert s.value("kpi_exporter_requests_total", transport="http", signal="log",
                   code="200") is None


def test_gzip_compressed_requests(exporter):
    assert grpc_logs(exporter, [("app.page_view", {"url.path": "/z"})] * 2,
                     compression=Compression.Gzip)
    assert exporter.scrape().value("app_page_views_total", route="/z",
                                   service_name="grpc-app") == 2


def test_bearer_token_in_the_authorization_metadata(exporter_factory):
    e = exporter_factory("server:\n  auth:\n    bearer_tokens: [s3cret]\n")
    assert grpc_logs(e, [("app.page_view", {"url.path": "/a"})],
                     headers={"authorization": "Bearer s3cret"})
    # wrong or missing: UNAUTHENTICATED, which the SDK does not retry
    assert not grpc_logs(e, [("app.page_view", {"url.path": "/a"})],
                         headers={"authorization": "Bearer nope"})
    _, err = raw_call(e, LOGS, logs_payload())
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in err.details()
    s = e.scrape()
    assert s.value("app_page_views_total", route="/a", service_name="grpc-app") == 1
    assert s.value("kpi_exporter_requests_total", transport="grpc", signal="log",
                   code="UNAUTHENTICATED") == 2


def test_undecodable_request_is_invalid_argument_and_nothing_counts(exporter):
    _, err = raw_call(exporter, LOGS, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode protobuf" in err.details()
    assert rpc_status(err).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # a good request after it is intact
    response, err = raw_call(exporter, LOGS, logs_payload(n=2))
    assert err is None and response == b""
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/grpc", service_name="web") == 2
    assert s.value("kpi_exporter_records_rejected_total", signal="log",
                   reason="malformed_request") == 1
    assert s.value("kpi_exporter_requests_total", transport="grpc", signal="log",
                   code="INVALID_ARGUMENT") == 1


def test_empty_request_is_a_success(exporter):
    response, err = raw_call(exporter, TRACES, b"")
    assert err is None and response == b""


def test_partial_success_names_the_rejected_spans(exporter):
    good = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="chat m",
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_001_000_000_000)
    bad = Span(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, name="broken",
               start_time_unix_nano=1_700_000_001_000_000_000,
               end_time_unix_nano=1_700_000_000_000_000_000)
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[
        ScopeSpans(spans=[good, bad, bad])])])
    response, err = raw_call(exporter, TRACES, req.SerializeToString())
    assert err is None
    msg = ExportTraceServiceResponse.FromString(response)
    assert msg.partial_success.rejected_spans == 2
    assert "2 of 3 records rejected: 2 invalid_span" in msg.partial_success.error_message
    assert exporter.scrape().value("kpi_exporter_records_rejected_total", signal="span",
                                   reason="invalid_span") == 2


def test_oversized_message_is_resource_exhausted_before_and_after_decompression(
        exporter_factory):
    e = exporter_factory("server: {max_body_size: 64KiB}\n")
    big = logs_payload(route="/" + "x" * 70_000)
    _, err = raw_call(e, LOGS, big)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 65536 bytes (server.max_body_size)" in err.details()
    assert rpc_status(err).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    # small on the wire, over the limit inflated
    padded = logs_payload(route="/" + " " * 500_000)
    assert len(gzip.compress(padded)) < 65536
    _, err = raw_call(e, LOGS, padded, compression=grpc.Compression.Gzip)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_body_size" in err.details()
    # both counted, as HTTP's 413s are
    s = e.scrape()
    assert s.value("kpi_exporter_requests_total", transport="grpc", signal="log",
                   code="RESOURCE_EXHAUSTED") == 2
    # past twice the limit (at least 1 MiB more) grpc refuses the message by itself, before
    # or after decompression, and the exporter never holds it
    bomb = logs_payload(route="/" + " " * 2_000_000)
    _, err = raw_call(e, LOGS, bomb, compression=grpc.Compression.Gzip)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, err = raw_call(e, LOGS, bomb)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response, err = raw_call(e, LOGS, logs_payload())
    assert err is None
    s = e.scrape()
    assert s.value("app_page_views_total", route="/grpc", service_name="web") == 1
    assert s.value("kpi_exporter_records_rejected_total", signal="log",
                   reason="malformed_request") in (None, 0)


def test_overload_is_unavailable_with_retry_info_in_both_trailers_and_shared_with_http(
        exporter_factory):
    e = exporter_factory("server: {max_concurrent_requests: 1}\n")
    entered, release = threading.Event(), threading.Event()

    def slow_observer(batch):
        entered.set()
        release.wait(10)

    e.pipeline.add_observer(slow_observer)
    first: list = []
    t = threading.Thread(target=lambda: first.append(raw_call(e, LOGS, logs_payload())))
    t.start()
    try:
        assert entered.wait(10)
        _, err = raw_call(e, LOGS, logs_payload())
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay(err) == 1.0
        trailers = dict(err.trailing_metadata())
        info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert info.retry_delay.seconds == 1
        # the one limit covers OTLP/HTTP too
        r = e.post("/v1/logs", body(page_view_logs()))
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    finally:
        release.set()
        t.join(10)
        e.pipeline.remove_observer(slow_observer)
    assert first[0][1] is None
    s = e.scrape()
    assert s.value("kpi_exporter_requests_total", transport="grpc", signal="log",
                   code="UNAVAILABLE") == 1
    assert s.value("kpi_exporter_requests_total", transport="grpc", signal="log",
                   code="OK") == 1


def test_the_sdk_retries_after_the_retry_info_and_delivers(exporter_factory):
    e = exporter_factory("server: {max_concurrent_requests: 1}\n")
    entered, release = threading.Event(), threading.Event()
    held = []

    def hold_first(batch):
        if not held:
            held.append(1)
            entered.set()
            release.wait(10)

    e.pipeline.add_observer(hold_first)
    t = threading.Thread(target=lambda: raw_call(e, LOGS, logs_payload(route="/held")))
    t.start()
    assert entered.wait(10)
    sent: list[bool] = []
    sdk = threading.Thread(target=lambda: sent.append(
        grpc_logs(e, [("app.page_view", {"url.path": "/retried"})])))
    sdk.start()

    def refused_once() -> bool:
        return (e.scrape().value("kpi_exporter_requests_total", transport="grpc",
                                 signal="log", code="UNAVAILABLE") or 0) >= 1

    assert eventually(refused_once, timeout=10)
    release.set()  # room again: the SDK's retry, a second later, gets through
    sdk.join(30)
    t.join(10)
    assert sent == [True]
    assert e.scrape().value("app_page_views_total", route="/retried",
                            service_name="grpc-app") == 1


def test_grpc_listener_off_with_an_empty_address(process_factory):
    port = free_port()
    e = process_factory("--otlp-grpc-listen", "", grpc_port=port)
    assert "otlp-grpc" not in e.log()
    _, err = raw_call(e, LOGS, logs_payload())
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
    assert e.post("/v1/logs", body(page_view_logs())).status_code == 200


def test_a_second_exporter_cannot_take_a_grpc_port_in_use(process_factory, tmp_path):
    first = process_factory("--state-dir", str(tmp_path / "a"))
    assert "listening for otlp-grpc on 127.0.0.1:" in first.log()
    with pytest.raises(RuntimeError, match="cannot listen for OTLP/gRPC"):
        ProcessExporter(["--state-dir", str(tmp_path / "b")], grpc_port=first.grpc_port)
    # the first one still answers alone
    response, err = raw_call(first, LOGS, logs_payload())
    assert err is None
