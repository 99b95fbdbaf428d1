"""What OpenLLMetry and OpenLIT send, as they send it, and how the built-in rules and the
recording rules treat it.

The spans and metric points are built with the real OpenTelemetry SDK and exported over
OTLP/HTTP to a real exporter, shaped as ``opentelemetry-instrumentation-openai`` 0.62.4
(OpenLLMetry) and ``openlit`` 1.45.0 sent them for the same calls against an
OpenAI-compatible server (attributes, units, scopes, bucket bounds, what a failure carries).
Per model: 8 calls that succeed with 21 prompt tokens (8 of them cached) and 7 completion
tokens, 2 that fail with HTTP 500.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.fake_openai import RESPONSE_MODEL_SUFFIX as DATED
from tests.fake_openai import genai_prices_cost
from tests.rule_eval import evaluate, sample

pytestmark = pytest.mark.timeout(120)

MODELS = ("gpt-4o", "gpt-4o-mini")
OK, FAILED = 8, 2
PROMPT, CACHED, COMPLETION = 21, 8, 7
SERVICE = "support-bot"
SDK_DEFAULT_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0,
                      2500.0, 5000.0, 7500.0, 10000.0]
DURATION_BOUNDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                   40.96, 81.92]
TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864]
TTFT_BOUNDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0]


class Sender:
    """An app's tracer and meter, exporting to the exporter over OTLP/HTTP; ``buckets`` are
    the bounds each histogram instrument uses (the instrumentation's advice, or the SDK's
    defaults when it gives none)."""

    def __init__(self, otlp_url: str, scope: str, buckets: dict[str, list[float]],
                 service: str = SERVICE):
        resource = Resource.create({"service.name": service})
        self.tp = TracerProvider(resource=resource)
        self.tp.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=otlp_url + "/v1/traces", timeout=5)))
        views = [View(instrument_name=name,
                      aggregation=ExplicitBucketHistogramAggregation(bounds))
                 for name, bounds in buckets.items()]
        self.mp = MeterProvider(resource=resource, views=views, metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_url + "/v1/metrics", timeout=5),
                export_interval_millis=3_600_000)])
        self.tracer = self.tp.get_tracer(scope)
        self.meter = self.mp.get_meter(scope)
        self.instruments: dict[str, Any] = {}

    def span(self, name: str, attributes: dict[str, Any], error: str | None = None,
             ok_status: bool = False) -> None:
        end = time.time_ns()
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=end - 400_000_000)
        if error:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, "Error code: 500"))
        elif ok_status:
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=end)

    def record(self, name: str, unit: str, value: float, attributes: dict[str, Any],
               kind: str = "histogram") -> None:
        if name not in self.instruments:
            create = self.meter.create_histogram if kind == "histogram" else \
                self.meter.create_counter
            self.instruments[name] = create(name, unit=unit)
        inst = self.instruments[name]
        (inst.record if kind == "histogram" else inst.add)(value, attributes)

    def flush(self) -> None:
        self.tp.force_flush()
        self.mp.force_flush()

    def close(self) -> None:
        self.mp.shutdown()
        self.tp.shutdown()


def openllmetry_traffic(s: Sender) -> None:
    """opentelemetry-instrumentation-openai 0.62.4 (OpenLLMetry): spans with the request
    model, cache reads and finish reasons; metric points without the request model, with
    the SDK's default bucket bounds, and only error.type on a failure's duration point."""
    api = "http://127.0.0.1:46349/v1/"
    for model in MODELS:
        base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model, "gen_ai.is_streaming": False,
                "gen_ai.openai.api_base": api}
        point = {"gen_ai.provider.name": "openai", "gen_ai.response.model": model + DATED,
                 "gen_ai.operation.name": "chat", "server.address": api, "stream": False}
        for _ in range(OK):
            s.span("openai.chat", {
                **base, "gen_ai.response.model": model + DATED,
                "gen_ai.response.id": "chatcmpl-fake", "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.usage.total_tokens": PROMPT + COMPLETION,
                "gen_ai.usage.input_tokens": PROMPT, "gen_ai.usage.output_tokens": COMPLETION,
                "gen_ai.usage.cache_read.input_tokens": CACHED,
                "gen_ai.usage.reasoning_tokens": 0})
            s.record("gen_ai.client.operation.duration", "s", 0.4, point)
            s.record("gen_ai.client.token.usage", "token", PROMPT,
                     {**point, "gen_ai.token.type": "input"})
            s.record("gen_ai.client.token.usage", "token", COMPLETION,
                     {**point, "gen_ai.token.type": "output"})
            s.record("gen_ai.client.generation.choices", "choice", 1, point, kind="counter")
        for _ in range(FAILED):
            s.span("openai.chat", base, error="InternalServerError")
            s.record("gen_ai.client.operation.duration", "s", 0.05,
                     {"error.type": "InternalServerError"})
            s.record("llm.openai.chat_completions.exceptions", "time", 1,
                     {"error.type": "InternalServerError"}, kind="counter")


def openlit_traffic(s: Sender) -> None:
    """openlit 1.45.0: spans (status OK) with its own gen_ai.usage.cost, cache reads, time to
    first token and per output token; metric points with the request model and the
    conventions' bucket bounds, plus a gen_ai.usage.cost histogram (SDK default bounds) and
    gen_ai.server.request.duration."""
    for model in MODELS:
        common = {"telemetry.sdk.name": "openlit", "service.name": "default",
                  "deployment.environment": "default", "gen_ai.operation.name": "chat",
                  "gen_ai.provider.name": "openai", "server.address": "127.0.0.1",
                  "server.port": 39595, "gen_ai.request.model": model}
        for _ in range(OK):
            s.span(f"chat {model}", {
                **common, "gen_ai.response.model": model + DATED, "gen_ai.request.stream": False,
                "gen_ai.server.time_per_output_token": 0.0,
                "gen_ai.server.time_to_first_token": 0.05,
                "gen_ai.response.finish_reasons": ["stop"], "gen_ai.output.type": "text",
                "gen_ai.usage.input_tokens": PROMPT, "gen_ai.usage.output_tokens": COMPLETION,
                "gen_ai.client.token.usage": PROMPT + COMPLETION,
                "gen_ai.usage.cost": 0.0001125 if model == "gpt-4o" else 0.0000069,
                "gen_ai.usage.cache_read.input_tokens": CACHED,
                "gen_ai.usage.cache_creation.input_tokens": 0}, ok_status=True)
            point = {**common, "gen_ai.response.model": model + DATED}
            s.record("gen_ai.client.operation.duration", "s", 0.4, point)
            s.record("gen_ai.client.token.usage", "{token}", PROMPT,
                     {**point, "gen_ai.token.type": "input"})
            s.record("gen_ai.client.token.usage", "{token}", COMPLETION,
                     {**point, "gen_ai.token.type": "output"})
            s.record("gen_ai.server.time_to_first_token", "s", 0.05, point)
            s.record("gen_ai.server.request.duration", "s", 0.4, point)
            s.record("gen_ai.usage.cost", "USD", 0.0001125, point)
        for _ in range(FAILED):
            s.span(f"chat {model}", {**common, "gen_ai.request.stream": False},
                   error="InternalServerError")
            point = {**common, "gen_ai.response.model": model,
                     "error.type": "InternalServerError"}
            s.record("gen_ai.client.operation.duration", "s", 0.05, point)
            s.record("gen_ai.server.request.duration", "s", 0.05, point)
            s.record("gen_ai.usage.cost", "USD", 0, point)


def _ops_checks(source: str, costs: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"expr": "round(job_model:gen_ai_client_operations:rate5m * 3600)",
         "exp_samples": [sample(OK + FAILED, model=m) for m in MODELS]},
        {"expr": "count by (job, source) (job_service_model:gen_ai_client_operations:rate5m)",
         "exp_samples": [sample(len(MODELS), source=source)]},
        {"expr": "round(job_model:gen_ai_client_operation_errors:rate5m * 3600)",
         "exp_samples": [sample(FAILED, model=m) for m in MODELS]},
        {"expr": "round(job_model_type:gen_ai_client_token_usage:rate5m * 3600)",
         "exp_samples": [sample(OK * n, model=m, gen_ai_token_type=t) for m in MODELS
                         for t, n in (("input", PROMPT), ("output", COMPLETION))]},
        *[{"expr": f'round(job_model:gen_ai_cost_usd:increase1h{{model="{m}"}} / {c!r} * 1e9)',
           "exp_samples": [sample(1e9, model=m)]} for m, c in costs.items()],
    ]


def sent(s: Sender, traffic: Any) -> None:
    try:
        traffic(s)
        s.flush()
    finally:
        s.close()


def test_openllmetry_is_counted_from_its_spans(exporter_factory, tmp_path: Path):
    exporter = exporter_factory()
    sent(Sender(exporter.otlp_url, "opentelemetry.instrumentation.openai.v1", {
        name: SDK_DEFAULT_BOUNDS for name in ("gen_ai.client.operation.duration",
                                              "gen_ai.client.token.usage")}),
         openllmetry_traffic)
    scrape = exporter.scrape()
    # Its metric points name no request model: they cannot be matched with the model's
    # spans, so no rule maps them (unmatched, not rejected), and the spans count.
    assert not scrape.matching("gen_ai_client_operation_duration_seconds_count")
    assert not scrape.matching("gen_ai_client_cost_usd_total")
    assert scrape.value("kpi_exporter_records_unmatched_total", signal="metric") > 0
    assert scrape.matching("kpi_exporter_records_rejected_total", signal="metric") == {}
    # Spans report cache reads: the span cost prices 8 of 21 prompt tokens at the cached rate.
    with_cache = Usage(input_tokens=PROMPT, cache_read_tokens=CACHED, output_tokens=COMPLETION)
    costs = {m: OK * genai_prices_cost(m, with_cache) for m in MODELS}
    for m in MODELS:
        parts = scrape.matching("gen_ai_span_cost_usd_total", gen_ai_request_model=m)
        by_type = {dict(k)["gen_ai_token_type"]: v for k, v in parts.items()}
        assert set(by_type) == {"input", "cache_read", "output"}
        assert sum(by_type.values()) == pytest.approx(costs[m], rel=1e-9)
        calc = calc_price(with_cache, m, provider_id="openai")
        assert by_type["output"] == pytest.approx(OK * float(calc.output_price), rel=1e-9)
        assert by_type["input"] + by_type["cache_read"] == pytest.approx(
            OK * float(calc.input_price), rel=1e-9)
        assert by_type["cache_read"] == pytest.approx(
            OK * CACHED * float(calc.model_price.cache_read_mtok) / 1e6, rel=1e-9)
    evaluate(scrape, _ops_checks("spans", costs), tmp_path)


def test_openlit_is_counted_from_its_metric_points_and_its_cost_is_not_added(
        exporter_factory, tmp_path: Path):
    exporter = exporter_factory()
    sent(Sender(exporter.otlp_url, "openlit.otel.metrics", {
        "gen_ai.client.operation.duration": DURATION_BOUNDS,
        "gen_ai.server.request.duration": DURATION_BOUNDS,
        "gen_ai.client.token.usage": TOKEN_BOUNDS,
        "gen_ai.server.time_to_first_token": TTFT_BOUNDS,
        "gen_ai.usage.cost": SDK_DEFAULT_BOUNDS}, service="my-app"), openlit_traffic)
    scrape = exporter.scrape()
    # OpenLIT sets service.name="default" on every span and point; the record's attribute
    # wins over the resource's, the same for both sources, so they still pair up.
    ok = dict(gen_ai_operation_name="chat", gen_ai_provider_name="openai",
              service_name="default", error_type="")
    for m in MODELS:
        for name in ("gen_ai_client_operation_duration_seconds_count",
                     "gen_ai_span_operation_duration_seconds_count"):
            assert scrape.value(name, gen_ai_request_model=m, **ok) == OK
            assert scrape.value(name, gen_ai_request_model=m,
                                **{**ok, "error_type": "InternalServerError"}) == FAILED
        assert scrape.value("gen_ai_server_time_to_first_token_seconds_count",
                            gen_ai_request_model=m, gen_ai_operation_name="chat",
                            gen_ai_provider_name="openai", service_name="default") == OK
    # Our cost, never theirs: metric points say nothing of caching, so all 21 prompt tokens
    # at the input rate; spans price the 8 cached ones at the cached rate, which is what
    # OpenLIT's own gen_ai.usage.cost says (0.0001125 a call for gpt-4o). Their cost feeds no
    # metric (its points are unmatched; the span attribute is not read).
    plain = Usage(input_tokens=PROMPT, output_tokens=COMPLETION)
    cached = Usage(input_tokens=PROMPT, cache_read_tokens=CACHED, output_tokens=COMPLETION)
    point_costs = {m: OK * genai_prices_cost(m, plain) for m in MODELS}
    for m in MODELS:
        assert sum(scrape.matching("gen_ai_client_cost_usd_total",
                                   gen_ai_request_model=m).values()) == pytest.approx(
            point_costs[m], rel=1e-9)
        assert sum(scrape.matching("gen_ai_span_cost_usd_total",
                                   gen_ai_request_model=m).values()) == pytest.approx(
            OK * genai_prices_cost(m, cached), rel=1e-9)
    assert genai_prices_cost("gpt-4o", cached) == pytest.approx(0.0001125)
    assert not [n for n, _ in scrape.samples if "usage_cost" in n]
    assert scrape.matching("kpi_exporter_records_rejected_total", signal="metric") == {}
    checks = _ops_checks("metrics", point_costs) + [
        # every first token between 0.04s and 0.06s: the median interpolates to 0.05s
        {"expr": "round(histogram_quantile(0.5, "
                 "job_model_le:gen_ai_server_time_to_first_token_seconds_bucket:rate5m) * 1000)",
         "exp_samples": [sample(50, model=m) for m in MODELS]},
        {"expr": "round(job_model_reason:gen_ai_finish_reasons:ratio_rate5m * 1000)",
         "exp_samples": [sample(1000, model=m, gen_ai_response_finish_reason="stop")
                         for m in MODELS]},
    ]
    evaluate(scrape, checks, tmp_path)
