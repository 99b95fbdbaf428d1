"""The official OpenAI instrumentation, as its README sets it up, against a local
OpenAI-compatible server: every call counted once whatever the app sends, and priced as
genai-prices prices it.

The real ``openai`` client (``max_retries=0``) calls tests/fake_openai.py; the real
``opentelemetry-instrumentation-openai-v2`` reports each call as a span and as
``gen_ai.client.*`` metric points (exported every 200 ms, cumulative, as the SDK does by
default) to a real exporter over OTLP/HTTP. Per model, 8 chat calls succeed and 2 fail,
plus one embeddings call. The app sends spans and metric points; metric points only; spans
only; or metric points and spans sampled at 10% (a deterministic 1 in 10 trace ids). The
exporter's series are checked against what happened, then the generated recording rules
are evaluated over them by promtool, which must give back the same counts and costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from genai_prices import Usage
from openai import InternalServerError, OpenAI
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from tests.fake_openai import (
    COMPLETION_TOKENS, EMBEDDING_TOKENS, PROMPT_TOKENS, FakeOpenAI, genai_prices_cost,
)
from tests.helpers import Scrape
from tests.rule_eval import evaluate, sample

pytestmark = pytest.mark.timeout(180)

SERVICE = "chat-app"
CHAT_MODELS = ("gpt-4o", "gpt-4o-mini")
EMBEDDING_MODEL = "text-embedding-3-small"
CALLS, FAILING = 10, (3, 7)  # per chat model: calls 3 and 7 answer HTTP 500
OK = CALLS - len(FAILING)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]


class EveryTenthTrace(IdGenerator):
    """Trace ids of which exactly every tenth (the 1st, 11th, ...) falls under the 10%
    bound of TraceIdRatioBased, so a 10% sampler keeps a known set of calls."""

    def __init__(self) -> None:
        self.n = 0
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        low = 1 if self.n % 10 == 0 else (1 << 63)
        self.n += 1
        return (self.n << 64) | low


@dataclass(frozen=True)
class Sending:
    """What the app sends: spans (all, or 1 in 10) and/or metric points."""

    name: str
    spans: bool
    metrics: bool
    sampled: bool = False


CASES = [
    Sending("spans and metric points", spans=True, metrics=True),
    Sending("metric points only", spans=False, metrics=True),
    Sending("spans only", spans=True, metrics=False),
    Sending("metric points, spans sampled at 10%", spans=True, metrics=True, sampled=True),
]


@dataclass
class App:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def close(self) -> None:
        OpenAIInstrumentor().uninstrument()
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


def instrumented_app(otlp_url: str, sending: Sending) -> App:
    """The providers an app would set up, and the instrumentation as its README says."""
    resource = Resource.create({"service.name": SERVICE})
    sampler: Sampler = ParentBased(TraceIdRatioBased(0.1)) if sending.sampled else ALWAYS_ON
    tp = TracerProvider(resource=resource, sampler=sampler,
                        id_generator=EveryTenthTrace() if sending.sampled else None)
    if sending.spans:
        tp.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=otlp_url + "/v1/traces", timeout=5)))
    readers = [PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=otlp_url + "/v1/metrics", timeout=5),
        export_interval_millis=200)] if sending.metrics else []
    mp = MeterProvider(resource=resource, metric_readers=readers)
    OpenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp,
                                    logger_provider=LoggerProvider(resource=resource))
    return App(tp, mp)


def make_calls(srv: FakeOpenAI) -> int:
    """Per chat model, CALLS calls of which FAILING fail; one embeddings call. Returns the
    failures the client saw."""
    client = OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
    failed = 0
    for model in CHAT_MODELS:
        for i in range(CALLS):
            if i in FAILING:
                srv.fail_next = 1
            try:
                client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
            except InternalServerError:
                failed += 1
    client.embeddings.create(model=EMBEDDING_MODEL, input="hello")
    return failed


def expected_costs() -> dict[str, float]:
    # The instrumentation reports no cached tokens: every prompt token at the input price.
    per_call = Usage(input_tokens=PROMPT_TOKENS, output_tokens=COMPLETION_TOKENS)
    costs = {m: OK * genai_prices_cost(m, per_call) for m in CHAT_MODELS}
    costs[EMBEDDING_MODEL] = genai_prices_cost(EMBEDDING_MODEL,
                                               Usage(input_tokens=EMBEDDING_TOKENS))
    return costs


@pytest.fixture
def app_factory() -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for a in apps:
        a.close()


def _series_sum(s: Scrape, name: str, **labels: str) -> float:
    return sum(s.matching(name, **labels).values())


@pytest.mark.parametrize("sending", CASES, ids=[c.name for c in CASES])
def test_each_call_counted_once_and_priced(sending: Sending, exporter_factory, app_factory,
                                           tmp_path: Path):
    exporter = exporter_factory()
    app = instrumented_app(exporter.otlp_url, sending)
    app_factory.append(app)
    with FakeOpenAI() as srv:
        failed = make_calls(srv)
        requests = srv.requests
    app.flush()
    assert failed == len(CHAT_MODELS) * len(FAILING)
    assert requests == len(CHAT_MODELS) * CALLS + 1  # no retries
    s = exporter.scrape()
    costs = expected_costs()

    # -- what the exporter serves, per source ---------------------------------------------
    span_ops = "gen_ai_span_operation_duration_seconds_count"
    point_ops = "gen_ai_client_operation_duration_seconds_count"
    for model in CHAT_MODELS:
        ok = dict(gen_ai_request_model=model, service_name=SERVICE, error_type="",
                  gen_ai_operation_name="chat", gen_ai_provider_name="openai")
        bad = {**ok, "error_type": "InternalServerError"}  # not "<class 'openai.I...'>"
        input_tokens = {**ok, "gen_ai_token_type": "input"}
        if sending.metrics:
            assert s.value(point_ops, **ok) == OK and s.value(point_ops, **bad) == len(FAILING)
            assert s.value("gen_ai_client_token_usage_sum", **input_tokens) == OK * PROMPT_TOKENS
            assert _series_sum(s, "gen_ai_client_cost_usd_total",
                               gen_ai_request_model=model) == pytest.approx(costs[model],
                                                                            rel=1e-9)
        else:
            assert not s.matching(point_ops) and not s.matching("gen_ai_client_cost_usd_total")
        if sending.spans and not sending.sampled:
            assert s.value(span_ops, **ok) == OK and s.value(span_ops, **bad) == len(FAILING)
            assert s.value("gen_ai_span_token_usage_sum", **input_tokens) == OK * PROMPT_TOKENS
            assert _series_sum(s, "gen_ai_span_cost_usd_total",
                               gen_ai_request_model=model) == pytest.approx(costs[model],
                                                                            rel=1e-9)
            assert s.value("gen_ai_span_finish_reasons_total", gen_ai_request_model=model,
                           service_name=SERVICE, gen_ai_operation_name="chat",
                           gen_ai_provider_name="openai",
                           gen_ai_response_finish_reason="stop") == OK
        elif sending.sampled:
            # calls 0 (kept) .. 9 of the first model, 10 (kept) .. 19 of the second
            assert s.value(span_ops, **ok) == 1 and s.value(span_ops, **bad) is None
        else:
            assert not s.matching(span_ops)
    assert s.matching("kpi_exporter_gen_ai_unpriced_tokens_total") == {}
    assert s.value("kpi_exporter_records_rejected_total", signal="metric",
                   reason="bucket_mismatch") is None

    # -- what the recording rules make of it: every call once -----------------------------
    per_model = {**{m: CALLS for m in CHAT_MODELS}, EMBEDDING_MODEL: 1}
    source = "metrics" if sending.metrics else "spans"
    cost_total = sum(costs.values())
    checks = [
        {"expr": "round(job_model:gen_ai_client_operations:rate5m * 3600)",
         "exp_samples": [sample(n, model=m) for m, n in per_model.items()]},
        {"expr": "count by (job, source) (job_service_model:gen_ai_client_operations:rate5m)",
         "exp_samples": [sample(len(per_model), source=source)]},
        {"expr": "round(job_model:gen_ai_client_operation_errors:rate5m * 3600)",
         "exp_samples": [sample(len(FAILING), model=m) for m in CHAT_MODELS]},
        {"expr": "round(job_model:gen_ai_client_successful_operations:increase1h)",
         "exp_samples": [sample(n - (len(FAILING) if n > 1 else 0), model=m)
                         for m, n in per_model.items()]},
        {"expr": "round(job_model_type:gen_ai_client_token_usage:rate5m * 3600)",
         "exp_samples": [sample(OK * PROMPT_TOKENS, model=m, gen_ai_token_type="input")
                         for m in CHAT_MODELS]
         + [sample(OK * COMPLETION_TOKENS, model=m, gen_ai_token_type="output")
            for m in CHAT_MODELS]
         + [sample(EMBEDDING_TOKENS, model=EMBEDDING_MODEL, gen_ai_token_type="input")]},
        # the cost over genai-prices' own answer, to nine digits
        *[{"expr": f'round({rule}{{model="{m}"}} / {cost!r} * 1e9)',
           "exp_samples": [sample(1e9, model=m)]}
          for m, cost in costs.items()
          for rule in ("job_model:gen_ai_cost_usd:increase1h",
                       "job_model:gen_ai_cost_usd:increase1d")],
        {"expr": f"round(job:gen_ai_cost_usd:increase1d / {cost_total!r} * 1e9)",
         "exp_samples": [sample(1e9)]},
        {"expr": "round(job_model:gen_ai_client_operation_errors:ratio_rate5m * 1000)",
         "exp_samples": [sample(round(1000 * len(FAILING) / CALLS), model=m)
                         for m in CHAT_MODELS] + [sample(0, model=EMBEDDING_MODEL)]},
    ]
    evaluate(s, checks, tmp_path)


def test_a_stream_is_one_call_with_its_usage_when_the_client_asks_for_it(exporter_factory,
                                                                         app_factory,
                                                                         tmp_path: Path):
    """A streamed chat is one span and one duration point, ended when the stream is read;
    its tokens are reported only with stream_options.include_usage (as OpenAI sends them)."""
    exporter = exporter_factory()
    app = instrumented_app(exporter.otlp_url, CASES[0])
    app_factory.append(app)
    with FakeOpenAI() as srv:
        client = OpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        for options in ({"include_usage": True}, None):
            stream = client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                **({"stream_options": options} if options else {}))
            chunks = sum(1 for _ in stream)
            assert chunks >= 7
    app.flush()
    s = exporter.scrape()
    labels = dict(gen_ai_request_model="gpt-4o", service_name=SERVICE, error_type="",
                  gen_ai_operation_name="chat", gen_ai_provider_name="openai")
    assert s.value("gen_ai_client_operation_duration_seconds_count", **labels) == 2
    assert s.value("gen_ai_span_operation_duration_seconds_count", **labels) == 2
    assert s.value("gen_ai_client_token_usage_sum", gen_ai_token_type="input",
                   **labels) == PROMPT_TOKENS
    cost = genai_prices_cost("gpt-4o", Usage(input_tokens=PROMPT_TOKENS,
                                             output_tokens=COMPLETION_TOKENS))
    evaluate(s, [
        {"expr": "round(job_model:gen_ai_client_operations:rate5m * 3600)",
         "exp_samples": [sample(2, model="gpt-4o")]},
        {"expr": "round(job_model_type:gen_ai_client_token_usage:rate5m * 3600)",
         "exp_samples": [sample(PROMPT_TOKENS, model="gpt-4o", gen_ai_token_type="input"),
                         sample(COMPLETION_TOKENS, model="gpt-4o",
                                gen_ai_token_type="output")]},
        {"expr": f'round(job_model:gen_ai_cost_usd:increase1h / {cost!r} * 1e9)',
         "exp_samples": [sample(1e9, model="gpt-4o")]},
    ], tmp_path)
