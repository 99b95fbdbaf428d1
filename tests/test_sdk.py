"""The app SDK against a running exporter: real OpenTelemetry SDK exporters over real HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from exporter import sdk
from exporter.enrich import DERIVED
from exporter.records import Record
from tests.helpers import ROOT, InProcessExporter, Scrape, eventually, free_port

SERVICE = "sdk-test"


class Captured:
    """Every record the exporter decoded, as the mapper saw it."""

    def __init__(self, exporter: InProcessExporter):
        self.records: list[Record] = []
        self._lock = threading.Lock()
        exporter.pipeline.add_observer(self._observe)

    def _observe(self, batch: Any) -> None:
        with self._lock:
            self.records.extend(batch.records)

    def named(self, name: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.name == name]


@pytest.fixture
def client(exporter: InProcessExporter) -> Iterator[sdk.Analytics]:
    a = sdk.Analytics(exporter.otlp_url, SERVICE, schedule_delay_millis=50, close_at_exit=False)
    yield a
    a.shutdown(2)


def product_samples(scrape: Scrape) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the mapped metrics (not the exporter's own)."""
    return {k: v for k, v in scrape.samples.items()
            if k[0].startswith(("app_", "ai_", "gen_ai_"))}


def emit_every_call(a: sdk.Analytics) -> str:
    """One call of each kind, under one identity; returns the recommendation id."""
    with sdk.identify(user_id="user-1", session_id="session-1"):
        a.track("app.search", {"search.results": 3}, source="header")
        a.track_page_view("/workouts/:id")
        a.track_feature("workout", "create", plan="beginner")
        a.track_conversion("subscribe", 9.99, "eur")
        a.track_conversion("purchase")
        rec = a.track_recommendation("gpt-4o-mini", "workout_plan", 0.85)
        a.track_recommendation_response("gpt-4o-mini", rec, "modified", 4.2)
        a.track_model_performance("gpt-4o-mini", 0.91, 0.3, 0.02)
        a.track_evaluation("relevance", 0.75, "pass", response_id="resp-1")
    return rec


def test_every_call_arrives_as_its_event_with_its_attributes(exporter, client):
    captured = Captured(exporter)
    rec = emit_every_call(client)
    assert client.flush(10)
    identity = {"user.id": "user-1", "session.id": "session-1", "service.name": SERVICE}
    expected = {
        "app.search": {"search.results": 3, "source": "header"},
        "app.page_view": {"url.path": "/workouts/:id"},
        "app.feature_used": {"app.feature": "workout", "app.action": "create",
                             "plan": "beginner"},
        "ai.recommendation.generated": {"gen_ai.request.model": "gpt-4o-mini",
                                        "ai.recommendation.id": rec,
                                        "ai.recommendation.type": "workout_plan",
                                        "ai.recommendation.confidence": 0.85},
        "ai.recommendation.response": {"gen_ai.request.model": "gpt-4o-mini",
                                       "ai.recommendation.id": rec,
                                       "ai.recommendation.outcome": "modified",
                                       "ai.recommendation.response_time": 4.2},
        "ai.model.performance": {"gen_ai.request.model": "gpt-4o-mini", "ai.model.accuracy": 0.91,
                                 "ai.model.latency": 0.3, "ai.model.error_rate": 0.02},
        "gen_ai.evaluation.result": {"gen_ai.evaluation.name": "relevance",
                                     "gen_ai.evaluation.score.value": 0.75,
                                     "gen_ai.evaluation.score.label": "pass",
                                     "gen_ai.response.id": "resp-1"},
    }
    for name, attrs in expected.items():
        records = captured.named(name)
        assert len(records) == 1, name
        # the OpenTelemetry SDK's own resource attributes are not ours to check, nor what
        # the exporter derives (a page view's source)
        got = {k: v for k, v in records[0].attributes.items()
               if not k.startswith(("telemetry.", "service.instance.")) and k not in DERIVED}
        assert got == {**attrs, **identity}, name
    conversions = sorted((r.attributes for r in captured.named("app.conversion")),
                         key=lambda a: a["app.conversion.type"])
    assert [{k: v for k, v in c.items() if k.startswith("app.")} for c in conversions] == [
        {"app.conversion.type": "purchase"},
        {"app.conversion.type": "subscribe", "app.conversion.value": 9.99,
         "app.conversion.currency": "EUR"},
    ]
    assert client.stats() == sdk.Stats(events_emitted=9, spans_emitted=0, events_delivered=9,
                                       spans_delivered=0, waiting=0, dropped=0, rejected=0,
                                       errors=0)


def test_every_call_updates_the_default_metrics_exactly(exporter, client):
    emit_every_call(client)
    assert client.flush(10)
    s = exporter.scrape()
    svc = {"service_name": SERVICE}
    model = {"model": "gpt-4o-mini"}
    rec = {**model, "type": "workout_plan"}
    resp = {**model, "outcome": "modified"}
    got = product_samples(s)
    expected: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def want(name: str, value: float, **labels: str) -> None:
        expected[(name, frozenset(labels.items()))] = value

    for event in ("app.search", "app.page_view", "app.feature_used", "ai.recommendation.generated",
                  "ai.recommendation.response", "ai.model.performance",
                  "gen_ai.evaluation.result"):
        want("app_events_total", 1, event=event, **svc)
    want("app_events_total", 2, event="app.conversion", **svc)
    want("app_page_views_total", 1, route="/workouts/:id", **svc)
    want("app_feature_usage_total", 1, feature="workout", action="create", **svc)
    want("app_conversions_total", 1, type="subscribe", **svc)
    want("app_conversions_total", 1, type="purchase", **svc)
    want("app_conversion_value_total", 9.99, type="subscribe", currency="EUR", **svc)
    want("ai_recommendations_total", 1, **rec)
    want("ai_recommendation_responses_total", 1, **resp)
    want("ai_model_accuracy_ratio", 0.91, **model)
    want("ai_model_error_rate_ratio", 0.02, **model)
    want("gen_ai_evaluation_results_total", 1, gen_ai_evaluation_name="relevance",
         gen_ai_evaluation_score_label="pass")
    for name, labels, value, bounds in (
            ("ai_recommendation_confidence", rec, 0.85,
             [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]),
            ("ai_recommendation_response_time_seconds", resp, 4.2,
             [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]),
            ("ai_model_latency_seconds", model, 0.3,
             [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
            ("gen_ai_evaluation_score", {"gen_ai_evaluation_name": "relevance"}, 0.75,
             [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])):
        want(name + "_count", 1, **labels)
        want(name + "_sum", value, **labels)
        for b in bounds:
            want(name + "_bucket", 1 if value <= b else 0, le=str(float(b)), **labels)
        want(name + "_bucket", 1, le="+Inf", **labels)
    # the KPI windows: one user, one session, and that session converted
    for window in ("5m", "1h", "1d", "7d", "30d"):
        want("app_active_users", 1, window=window)
        want("app_sessions", 1, window=window)
        want("app_conversion_rate_ratio", 1, window=window)
    # one visit started (it closes after windows.session_timeout), from no referrer and an
    # unknown client: a server-side SDK sends no user agent
    want("app_sessions_started_total", 1, source="Direct / None", medium="(none)", **svc)
    want("app_sessions_started_by_client_total", 1, device="unknown", browser="unknown",
         os="unknown", **svc)
    assert got == pytest.approx(expected)
    assert set(got) == set(expected)


def test_genai_spans_feed_duration_and_token_histograms(exporter, client):
    captured = Captured(exporter)
    end = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    client.record_genai_operation("chat", "openai", "gpt-4o-mini", duration=0.5, input_tokens=120,
                                  output_tokens=30, end_time=end)
    client.record_genai_operation("chat", "openai", "gpt-4o-mini", duration=2.0, input_tokens=10,
                                  error_type="timeout", end_time=end)
    with pytest.raises(KeyError):
        with client.genai_operation("embeddings", "openai", "text-embedding-3-small") as op:
            op.set_usage(input_tokens=64)
            raise KeyError("boom")
    assert client.flush(10)
    spans = sorted(captured.records, key=lambda r: r.duration or 0)
    assert [r.signal for r in spans] == ["span"] * 3
    ok = next(r for r in spans if r.duration == pytest.approx(0.5))
    assert ok.name == "chat gpt-4o-mini"
    assert ok.time_ns == int(end.timestamp() * 1e9)
    assert {k: ok.attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                          "gen_ai.request.model", "gen_ai.usage.input_tokens",
                                          "gen_ai.usage.output_tokens")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30}

    s = exporter.scrape()
    chat = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
            "gen_ai_request_model": "gpt-4o-mini", "service_name": SERVICE}
    dur = "gen_ai_span_operation_duration_seconds"
    assert s.value(dur + "_count", error_type="", **chat) == 1
    assert s.value(dur + "_sum", error_type="", **chat) == pytest.approx(0.5)
    assert s.value(dur + "_count", error_type="timeout", **chat) == 1
    assert s.value(dur + "_sum", error_type="timeout", **chat) == pytest.approx(2.0)
    emb = {"gen_ai_operation_name": "embeddings", "gen_ai_provider_name": "openai",
           "gen_ai_request_model": "text-embedding-3-small", "error_type": "KeyError",
           "service_name": SERVICE}
    assert s.value(dur + "_count", **emb) == 1
    tokens = "gen_ai_span_token_usage_sum"
    assert s.value(tokens, error_type="", gen_ai_token_type="input", **chat) == 120
    assert s.value(tokens, error_type="", gen_ai_token_type="output", **chat) == 30
    assert s.value(tokens, error_type="timeout", gen_ai_token_type="input", **chat) == 10
    assert s.value(tokens, gen_ai_token_type="input", **emb) == 64
    assert s.value("gen_ai_span_token_usage_bucket", error_type="", gen_ai_token_type="input",
                   le="256.0", **chat) == 1
    assert s.value("gen_ai_span_token_usage_bucket", error_type="", gen_ai_token_type="input",
                   le="64.0", **chat) == 0
    assert client.stats().spans_delivered == 3


def test_explicit_timestamps_become_the_event_time(exporter, client):
    captured = Captured(exporter)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    client.track_page_view("/old", timestamp=when)
    client.track_feature("nutrition", "view", timestamp=when.timestamp() - 60)
    assert client.flush(10)
    assert captured.named("app.page_view")[0].time_ns == int(when.timestamp() * 1e9)
    assert captured.named("app.feature_used")[0].time_ns == int((when.timestamp() - 60) * 1e9)


def test_identity_is_per_context_and_nests(exporter, client):
    captured = Captured(exporter)

    async def visit(user: str) -> None:
        with sdk.identify(user_id=user, session_id=f"s-{user}"):
            await asyncio.sleep(0.01)  # the other task runs in between
            client.track_page_view(f"/{user}")

    async def both() -> None:
        await asyncio.gather(visit("ann"), visit("bob"))

    asyncio.run(both())
    with sdk.identify(session_id="outer"):
        with sdk.identify(user_id="late-login"):
            client.track_feature("profile", "edit")
        client.track_feature("profile", "view")
    sdk.set_user("carol")
    sdk.set_session("s-carol")
    client.track_feature("social", "share")
    sdk.clear_identity()
    client.track_feature("social", "view")
    assert client.flush(10)

    def ids(r: Record) -> tuple[Any, Any]:
        return r.attributes.get("user.id"), r.attributes.get("session.id")

    assert {r.attributes["url.path"]: ids(r) for r in captured.named("app.page_view")} == {
        "/ann": ("ann", "s-ann"), "/bob": ("bob", "s-bob")}
    assert {(r.attributes["app.feature"], r.attributes["app.action"]): ids(r)
            for r in captured.named("app.feature_used")} == {
        ("profile", "edit"): ("late-login", "outer"),
        ("profile", "view"): (None, "outer"),
        ("social", "share"): ("carol", "s-carol"),
        ("social", "view"): (None, None),
    }


def test_bad_arguments_are_counted_not_raised(exporter, client):
    client.track_recommendation("m", "t", confidence=1.5)
    client.track_recommendation_response("m", "r", "maybe", 1.0)
    client.track_model_performance("m", accuracy=0.9, latency=-1, error_rate=0.1)
    client.track_conversion("purchase", value=float("nan"))
    client.track("")
    client.track_page_view("/fine")
    assert client.flush(10)
    st = client.stats()
    assert (st.errors, st.events_emitted, st.events_delivered) == (5, 1, 1)
    s = exporter.scrape()
    window_gauges = {"app_active_users", "app_sessions", "app_conversion_rate_ratio"}
    assert {k[0] for k in product_samples(s)} - window_gauges == {"app_events_total",
                                                                  "app_page_views_total"}


def test_endpoint_and_service_name_from_the_standard_variables(exporter, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", exporter.otlp_url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    a = sdk.Analytics(close_at_exit=False)
    try:
        a.track_page_view("/env")
        assert a.flush(10)
    finally:
        a.shutdown(2)
    assert exporter.scrape().value("app_page_views_total", route="/env",
                                   service_name="from-env") == 1


def test_a_disabled_sdk_says_so_and_reports_nothing_emitted(exporter, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    a = sdk.Analytics(exporter.otlp_url, SERVICE, schedule_delay_millis=50, close_at_exit=False)
    try:
        emit_every_call(a)
        a.record_genai_operation("chat", "openai", "gpt-4o-mini", duration=0.5, input_tokens=10)
        with a.genai_operation("chat", "openai", "gpt-4o-mini") as op:
            op.set_usage(1, 2)
        assert a.flush(5)
        st = a.stats()
    finally:
        a.shutdown(2)
    assert st.disabled is True
    assert (st.events_emitted, st.spans_emitted, st.events_delivered, st.spans_delivered,
            st.waiting, st.errors) == (0, 0, 0, 0, 0, 0)
    assert "OTEL_SDK_DISABLED=true" in caplog.text
    assert exporter.scrape().value("kpi_exporter_records_received_total", signal="log") is None
    assert not [k for k, v in product_samples(exporter.scrape()).items() if v]

    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    b = sdk.Analytics(exporter.otlp_url, SERVICE, schedule_delay_millis=50, close_at_exit=False)
    try:
        b.track_page_view("/on")
        assert b.flush(10)
        assert b.stats() == sdk.Stats(1, 0, 1, 0, 0, 0, 0, 0, disabled=False)
    finally:
        b.shutdown(2)


def test_module_level_client(exporter):
    sdk.configure(exporter.otlp_url, "module-level", schedule_delay_millis=50,
                  close_at_exit=False)
    try:
        with sdk.identify(user_id="u"):
            sdk.track_feature("nutrition", "create")
            sdk.track_conversion("purchase", 5, "usd")
        assert sdk.flush(10)
        assert sdk.stats().events_delivered == 2
    finally:
        sdk.shutdown(2)
    s = exporter.scrape()
    assert s.value("app_feature_usage_total", feature="nutrition", action="create",
                   service_name="module-level") == 1
    assert s.value("app_conversion_value_total", type="purchase", currency="USD",
                   service_name="module-level") == 5


def test_a_refused_batch_is_dropped_and_counted_not_retried_forever(exporter_factory):
    guarded = exporter_factory("server:\n  auth:\n    bearer_tokens: [s3cret]\n")
    wrong = sdk.Analytics(guarded.otlp_url, SERVICE, schedule_delay_millis=50, timeout=2,
                          close_at_exit=False)
    right = sdk.Analytics(guarded.otlp_url, SERVICE, schedule_delay_millis=50, timeout=2,
                          headers={"Authorization": "Bearer s3cret"}, close_at_exit=False)
    try:
        for _ in range(3):
            wrong.track_page_view("/refused")
        right.track_page_view("/allowed")
        assert wrong.flush(10) and right.flush(10)
        st = wrong.stats()
        assert (st.events_delivered, st.rejected, st.waiting) == (0, 3, 0)
        assert right.stats().events_delivered == 1
    finally:
        wrong.shutdown(1)
        right.shutdown(1)
    s = guarded.scrape()
    assert s.value("app_page_views_total", route="/allowed", service_name=SERVICE) == 1
    assert s.value("app_page_views_total", route="/refused", service_name=SERVICE) is None


def test_exporter_down_neither_raises_nor_blocks_and_delivers_once_back(process_factory, tmp_path):
    port = free_port()
    # OTLP delivery is at least once: a request that outlives the export timeout is sent
    # again. While the exporter is down a refused connection fails at once; once it is up, a
    # timeout a loaded machine can meet keeps each batch to one delivery.
    a = sdk.Analytics(f"http://127.0.0.1:{port}", SERVICE, schedule_delay_millis=50, timeout=10,
                      close_at_exit=False)
    try:
        with sdk.identify(user_id="offline", session_id="offline-1"):
            for i in range(120):
                a.track_feature("workout", ("view", "create", "share")[i % 3])
            a.record_genai_operation("chat", "openai", "gpt-4o-mini", duration=0.2,
                                     input_tokens=5, output_tokens=7)
        st = a.stats()
        assert (st.events_emitted, st.spans_emitted, st.errors) == (120, 1, 0)
        # Every call has returned while nothing could be delivered: the events are held.
        held = eventually(lambda: a.stats().waiting == 121, timeout=60)
        assert held, a.stats()
        assert a.stats().events_delivered == 0
        assert a.flush(0.2) is False  # still down: flush reports it, without raising

        e = process_factory("--state-dir", str(tmp_path / "state"), otlp_port=port)
        assert a.flush(60), a.stats()
        st = a.stats()
        assert (st.events_delivered, st.spans_delivered, st.waiting, st.dropped) == (120, 1, 0, 0)
    finally:
        a.shutdown(2)
    s = e.scrape()
    for action in ("view", "create", "share"):
        assert s.value("app_feature_usage_total", feature="workout", action=action,
                       service_name=SERVICE) == 40
    assert s.value("gen_ai_span_token_usage_sum", gen_ai_operation_name="chat",
                   gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o-mini",
                   error_type="", gen_ai_token_type="output", service_name=SERVICE) == 7


def test_spool_is_bounded_and_counts_what_it_drops(process_factory, tmp_path):
    port = free_port()
    a = sdk.Analytics(f"http://127.0.0.1:{port}", SERVICE, schedule_delay_millis=50, timeout=1,
                      max_export_batch_size=10, spool_records=30, close_at_exit=False)
    try:
        for i in range(100):
            a.track_page_view("/bounded", n=i)
        assert eventually(lambda: a.stats().waiting + a.stats().dropped == 100, timeout=60), \
            a.stats()
        st = a.stats()
        assert st.waiting == 30 and st.dropped == 70
        e = process_factory("--state-dir", str(tmp_path / "state"), otlp_port=port)
        assert a.flush(60)
        assert a.stats().events_delivered == 30
    finally:
        a.shutdown(2)
    assert e.scrape().value("app_page_views_total", route="/bounded", service_name=SERVICE) == 30


def test_importing_the_sdk_starts_and_imports_no_server():
    code = ("import sys, exporter.sdk as s; "
            "bad = [m for m in ('flask', 'waitress', 'exporter.server', 'exporter.receiver') "
            "if m in sys.modules]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
