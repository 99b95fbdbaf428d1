"""Real OpenTelemetry SDK pipelines pointed at a running exporter, for tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def logger_provider(otlp_url: str, service: str = "test-app", **resource: Any) -> LoggerProvider:
    """A LoggerProvider exporting each record synchronously with OTLPLogExporter (protobuf)."""
    lp = LoggerProvider(resource=Resource.create({"service.name": service, **resource}))
    lp.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=otlp_url + "/v1/logs", timeout=5)))
    return lp


def tracer_provider(otlp_url: str, service: str = "test-app") -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=otlp_url + "/v1/traces", timeout=5)))
    return tp


def meter_provider(otlp_url: str, delta: bool, service: str = "test-app"
                   ) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    """A MeterProvider that exports only when flushed, in delta or cumulative temporality."""
    t = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(
        endpoint=otlp_url + "/v1/metrics", timeout=5,
        preferred_temporality={Counter: t, Histogram: t, UpDownCounter: AggregationTemporality.CUMULATIVE})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    return mp, reader
