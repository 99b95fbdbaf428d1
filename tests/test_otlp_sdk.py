"""The real OpenTelemetry Python SDK sends to a running exporter; scraped values equal what
was sent, exactly."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.otel import logger_provider, meter_provider, tracer_provider


def test_sdk_logs_become_counters_with_resource_labels(exporter):
    lp = logger_provider(exporter.otlp_url, service="fitness-web")
    logger = lp.get_logger("app")
    for route, n in (("/workouts/:id", 3), ("/home", 2)):
        for _ in range(n):
            logger.emit(event_name="app.page_view", attributes={"url.path": route})
    logger.emit(event_name="app.feature_used",
                attributes={"app.feature": "workout", "app.action": "create"})
    # the deprecated event.name attribute still names the event
    logger.emit(attributes={"event.name": "app.conversion", "app.conversion.type": "purchase",
                            "app.conversion.value": 19.5, "app.conversion.currency": "EUR"})
    lp.shutdown()
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/workouts/:id", service_name="fitness-web") == 3
    assert s.value("app_page_views_total", route="/home", service_name="fitness-web") == 2
    assert s.value("app_events_total", event="app.page_view", service_name="fitness-web") == 5
    assert s.value("app_feature_usage_total", feature="workout", action="create",
                   service_name="fitness-web") == 1
    assert s.value("app_conversions_total", type="purchase", service_name="fitness-web") == 1
    assert s.value("app_conversion_value_total", type="purchase", currency="EUR",
                   service_name="fitness-web") == 19.5
    assert s.value("kpi_exporter_records_received_total", signal="log") == 7


def test_record_attributes_win_over_resource_attributes(exporter):
    lp = logger_provider(exporter.otlp_url, service="from-resource")
    lp.get_logger("app").emit(event_name="app.page_view",
                              attributes={"url.path": "/x", "service.name": "from-record"})
    lp.shutdown()
    s = exporter.scrape()
    assert s.value("app_page_views_total", route="/x", service_name="from-record") == 1
    assert s.value("app_page_views_total", route="/x", service_name="from-resource") is None


def test_sdk_ai_events_fill_histograms_and_gauges(exporter):
    lp = logger_provider(exporter.otlp_url)
    logger = lp.get_logger("ai")
    for conf in (0.05, 0.5, 0.92, 0.92):
        logger.emit(event_name="ai.recommendation.generated",
                    attributes={"gen_ai.request.model": "rec-v2", "ai.recommendation.type": "workout",
                                "ai.recommendation.confidence": conf})
    logger.emit(event_name="ai.model.performance", timestamp=1_000_000_000_000_000_000,
                attributes={"gen_ai.request.model": "rec-v2", "ai.model.accuracy": 0.7,
                            "ai.model.latency": 0.2, "ai.model.error_rate": 0.1})
    logger.emit(event_name="ai.model.performance", timestamp=1_000_000_001_000_000_000,
                attributes={"gen_ai.request.model": "rec-v2", "ai.model.accuracy": 0.9,
                            "ai.model.latency": 0.3, "ai.model.error_rate": 0.02})
    # an older report arriving late does not overwrite the newer gauge value
    logger.emit(event_name="ai.model.performance", timestamp=999_999_999_000_000_000,
                attributes={"gen_ai.request.model": "rec-v2", "ai.model.accuracy": 0.1})
    lp.shutdown()
    s = exporter.scrape()
    lab = {"model": "rec-v2", "type": "workout"}
    assert s.value("ai_recommendations_total", **lab) == 4
    assert s.value("ai_recommendation_confidence_count", **lab) == 4
    assert s.value("ai_recommendation_confidence_sum", **lab) == pytest.approx(2.39)
    assert s.value("ai_recommendation_confidence_bucket", le="0.1", **lab) == 1
    assert s.value("ai_recommendation_confidence_bucket", le="0.5", **lab) == 2
    assert s.value("ai_recommendation_confidence_bucket", le="0.9", **lab) == 2
    assert s.value("ai_recommendation_confidence_bucket", le="0.95", **lab) == 4
    assert s.value("ai_recommendation_confidence_bucket", le="+Inf", **lab) == 4
    assert s.value("ai_model_accuracy_ratio", model="rec-v2") == 0.9
    assert s.value("ai_model_error_rate_ratio", model="rec-v2") == 0.02
    assert s.value("ai_model_latency_seconds_count", model="rec-v2") == 2
    assert s.value("ai_model_latency_seconds_sum", model="rec-v2") == pytest.approx(0.5)


def test_sdk_spans_feed_genai_duration_and_tokens(exporter):
    tp = tracer_provider(exporter.otlp_url)
    tracer = tp.get_tracer("genai")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30}):
        pass
    # the deprecated gen_ai.system lands in the same series as gen_ai.provider.name
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 80,
            "gen_ai.usage.output_tokens": 10}):
        pass
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o"}) as span:
        span.set_status(Status(StatusCode.ERROR, "boom"))
    with tracer.start_as_current_span("not genai"):
        pass
    tp.shutdown()
    s = exporter.scrape()
    ok = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
          "gen_ai_request_model": "gpt-4o", "error_type": "", "service_name": "test-app"}
    err = {**ok, "error_type": "_OTHER"}
    assert s.value("gen_ai_span_operation_duration_seconds_count", **ok) == 2
    assert s.value("gen_ai_span_operation_duration_seconds_count", **err) == 1
    assert s.value("gen_ai_span_token_usage_count", gen_ai_token_type="input", **ok) == 2
    assert s.value("gen_ai_span_token_usage_sum", gen_ai_token_type="input", **ok) == 200
    assert s.value("gen_ai_span_token_usage_sum", gen_ai_token_type="output", **ok) == 40
    assert s.value("gen_ai_span_token_usage_bucket", gen_ai_token_type="input", le="64.0", **ok) == 0
    assert s.value("gen_ai_span_token_usage_bucket", gen_ai_token_type="input", le="256.0", **ok) == 2
    # spans feed the span series only; gen_ai_client_* is what metric points feed
    assert not s.matching("gen_ai_client_operation_duration_seconds_count")
    assert s.value("kpi_exporter_records_received_total", signal="span") == 4
    assert s.value("kpi_exporter_records_unmatched_total", signal="span") == 1


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "cumulative"])
def test_sdk_metrics_delta_and_cumulative_end_up_identical(exporter, delta):
    mp, reader = meter_provider(exporter.otlp_url, delta=delta)
    meter = mp.get_meter("genai-instrumentation")
    duration = meter.create_histogram(
        "gen_ai.client.operation.duration", unit="s",
        explicit_bucket_boundaries_advisory=[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                                             2.56, 5.12, 10.24, 20.48, 40.96, 81.92])
    tokens = meter.create_histogram(
        "gen_ai.client.token.usage", unit="{token}",
        explicit_bucket_boundaries_advisory=[1, 4, 16, 64, 256, 1024, 4096, 16384, 65536,
                                             262144, 1048576, 4194304, 16777216, 67108864])
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": "gpt-4o"}
    for v in (0.05, 0.3):
        duration.record(v, attrs)
    tokens.record(100, {**attrs, "gen_ai.token.type": "input"})
    reader.force_flush()
    for v in (0.05, 3.0, 100.0):
        duration.record(v, attrs)
    tokens.record(50, {**attrs, "gen_ai.token.type": "input"})
    reader.force_flush()
    reader.force_flush()  # a third export with nothing new must not change the totals
    mp.shutdown()
    s = exporter.scrape()
    lab = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
           "gen_ai_request_model": "gpt-4o", "error_type": "", "service_name": "test-app"}
    assert s.value("gen_ai_client_operation_duration_seconds_count", **lab) == 5
    assert s.value("gen_ai_client_operation_duration_seconds_sum", **lab) == pytest.approx(103.4)
    assert s.value("gen_ai_client_operation_duration_seconds_bucket", le="0.08", **lab) == 2
    assert s.value("gen_ai_client_operation_duration_seconds_bucket", le="0.32", **lab) == 3
    assert s.value("gen_ai_client_operation_duration_seconds_bucket", le="5.12", **lab) == 4
    assert s.value("gen_ai_client_operation_duration_seconds_bucket", le="81.92", **lab) == 4
    assert s.value("gen_ai_client_operation_duration_seconds_bucket", le="+Inf", **lab) == 5
    assert s.value("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **lab) == 150
    assert s.value("gen_ai_client_token_usage_count", gen_ai_token_type="input", **lab) == 2
    # the cost of the 150 input tokens, however the points came
    assert s.value("gen_ai_client_cost_usd_total", gen_ai_provider_name="openai",
                   gen_ai_request_model="gpt-4o", gen_ai_token_type="input",
                   app_feature="unknown", service_name="test-app") == pytest.approx(150 * 2.5e-6)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "cumulative"])
def test_sdk_counter_sums_map_to_one_cumulative_counter(exporter_factory, delta):
    e = exporter_factory("""
rules:
  - metric: shop_orders_total
    type: counter
    help: Orders.
    match: {signal: metric, name: shop.orders}
    labels: {region: region}
    value: data_point
""")
    mp, reader = meter_provider(e.otlp_url, delta=delta)
    orders = mp.get_meter("shop").create_counter("shop.orders")
    orders.add(3, {"region": "eu"})
    reader.force_flush()
    orders.add(4, {"region": "eu"})
    orders.add(1, {"region": "us"})
    reader.force_flush()
    reader.force_flush()
    mp.shutdown()
    s = e.scrape()
    assert s.value("shop_orders_total", region="eu") == 7
    assert s.value("shop_orders_total", region="us") == 1


@pytest.mark.parametrize("max_streams, expected", [(2, 100 + 10 + 1 + 1 + 0), (3, 113)])
def test_an_evicted_sdk_stream_that_comes_back_is_never_counted_twice(exporter_factory,
                                                                       max_streams, expected):
    e = exporter_factory(f"""
limits: {{max_streams_per_metric: {max_streams}}}
rules:
  - metric: shop_orders_total
    type: counter
    match: {{signal: metric, name: shop.orders}}
    value: data_point
""")
    # three app processes, each its own cumulative stream into the one series
    apps = {name: meter_provider(e.otlp_url, delta=False, service=name) for name in "abc"}
    counters = {name: mp.get_meter("shop").create_counter("shop.orders")
                for name, (mp, _reader) in apps.items()}
    try:
        for name, n in (("a", 100), ("a", 10), ("b", 1), ("c", 1), ("a", 1)):
            counters[name].add(n)
            apps[name][1].force_flush()
        s = e.scrape()
    finally:
        for mp, _reader in apps.values():
            mp.shutdown()
    assert s.value("shop_orders_total") == expected
    evicted = 2 if max_streams == 2 else 0  # c evicts a; a, back as a baseline, evicts b
    assert s.value("kpi_exporter_metric_streams", metric="shop_orders_total") == max_streams
    assert s.value("kpi_exporter_metric_streams_limit", metric="shop_orders_total") == max_streams
    assert s.value("kpi_exporter_metric_streams_evicted_total",
                   metric="shop_orders_total") == evicted
    assert s.value("kpi_exporter_metric_streams_expired_total", metric="shop_orders_total") == 0
    assert s.value("kpi_exporter_metric_streams", metric="app_events_total") is None
