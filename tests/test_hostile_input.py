"""Hostile and broken input: every request gets a 400 (or a 200 with partialSuccess), never a
500, and /metrics still answers afterwards with the good data intact."""

from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

BIG = "1" + "0" * 400


def logs(record: dict) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()


def metric(m: dict) -> bytes:
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [m]}]}]}).encode()


def hist(**point) -> bytes:
    base = {"count": "3", "sum": 1.0, "explicitBounds": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64,
            1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92], "bucketCounts": ["1", "1", "1"] + ["0"] * 12,
            "startTimeUnixNano": "1", "timeUnixNano": "2"}
    base.update(point)
    return metric({"name": "gen_ai.client.operation.duration",
                   "histogram": {"aggregationTemporality": 1, "dataPoints": [base]}})


MALFORMED = [
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("lone surrogate in a name", b'{"resourceLogs":[{"scopeLogs":[{"logRecords":'
                                 b'[{"eventName":"x\\udfff"}]}]}]}', "lone surrogate"),
    ("lone surrogate in a key", logs({"eventName": "a", "attributes": [
        {"key": "k\ud800", "value": {"stringValue": "v"}}]}).replace(b"\\ud800", b"\\ud800"),
     "lone surrogate"),
    ("huge integer time", logs({"eventName": "a", "timeUnixNano": BIG}), "out of range"),
    ("negative time", logs({"eventName": "a", "timeUnixNano": "-5"}), "unsigned"),
    ("huge asDouble", metric({"name": "g", "gauge": {"dataPoints": [{"asDouble": int(BIG)}]}}),
     "within double range"),
    ("huge intValue", logs({"eventName": "app.conversion", "attributes": [
        {"key": "app.conversion.value", "value": {"intValue": BIG}}]}), "out of range"),
    ("a list where an object belongs", b'{"resourceLogs":[[1]]}', "expected an object"),
]


@pytest.mark.parametrize("name,body,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_json_is_a_400_never_a_500(exporter, name, body, needle):
    path = "/v1/metrics" if b"resourceMetrics" in body else "/v1/logs"
    r = exporter.post(path, body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert exporter.scrape().samples  # /metrics still renders


UNUSABLE = [
    ("count is not the sum of the buckets", hist(count="7"), "not the sum of the bucket counts"),
    ("bounds but no bucket counts", hist(bucketCounts=[]), "no bucket counts"),
    ("negative bucket count", hist(bucketCounts=["-1", "3", "1"] + ["0"] * 12), "negative"),
    ("bounds out of order", hist(explicitBounds=[2, 1], bucketCounts=["1", "1", "1"]),
     "strictly increasing"),
    ("span without a start", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "name": "chat", "startTimeUnixNano": "0", "endTimeUnixNano": "5000000000",
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]}]}]}]}
    ).encode(), "has no start time"),
    ("overflowing number in a numeric attribute", logs({"eventName": "ai.model.performance",
        "attributes": [{"key": "ai.model.accuracy", "value": {"stringValue": BIG + "e400"}}]}),
     "is not finite"),
]


@pytest.mark.parametrize("name,body,needle", UNUSABLE, ids=[u[0] for u in UNUSABLE])
def test_unusable_records_are_rejected_in_partial_success(exporter, name, body, needle):
    path = ("/v1/metrics" if b"resourceMetrics" in body else
            "/v1/traces" if b"resourceSpans" in body else "/v1/logs")
    r = exporter.post(path, body)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert next(v for k, v in partial.items() if k.startswith("rejected")) == "1"
    assert needle in partial["errorMessage"]
    assert exporter.scrape().samples


def test_cumulative_sum_under_a_histogram_name_is_not_a_500(exporter):
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "gen_ai.client.operation.duration"
    m.sum.aggregation_temporality = 2
    m.sum.is_monotonic = True
    p = m.sum.data_points.add()
    p.as_double, p.start_time_unix_nano = 0.3, 2 ** 62
    model = p.attributes.add()
    model.key, model.value.string_value = "gen_ai.request.model", "m"
    r = exporter.post("/v1/metrics", req.SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200
    s = exporter.scrape()
    assert s.value("gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="",
                   gen_ai_provider_name="", gen_ai_request_model="m", error_type="",
                   service_name="unknown_service") == 1


def test_concatenated_gzip_members_are_all_read(exporter):
    one = json.dumps({"eventName": "app.page_view", "attributes": [
        {"key": "url.path", "value": {"stringValue": "/a"}}]})
    body = logs(json.loads(one))
    half = len(body) // 2
    data = gzip.compress(body[:half]) + gzip.compress(body[half:])
    r = exporter.post("/v1/logs", data, **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert exporter.scrape().value("app_page_views_total", route="/a",
                                   service_name="unknown_service") == 1
    r = exporter.post("/v1/logs", gzip.compress(body) + b"junk", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_an_unexpected_error_is_a_500_with_a_status_body_and_is_counted(exporter_factory):
    e = exporter_factory()

    def broken(batch):
        raise RuntimeError("boom")

    # a filter runs before anything is counted: its failure leaves nothing half applied
    e.pipeline.reconfigure(e.pipeline.config, [broken])
    r = e.post("/v1/logs", logs({"eventName": "app.page_view"}))
    assert r.status_code == 500
    assert r.json()["code"] == 13 and "RuntimeError" in r.json()["message"]
    s = e.scrape()
    assert s.value("kpi_exporter_requests_total", transport="http", signal="log", code="500") == 1
    assert s.value("app_page_views_total", route="unknown", service_name="unknown_service") \
        is None


def test_an_observer_failure_keeps_the_metrics_and_is_counted(exporter_factory):
    e = exporter_factory()

    def broken(batch):
        raise RuntimeError("boom")

    broken.name = "broken"  # type: ignore[attr-defined]
    e.pipeline.add_observer(broken)
    r = e.post("/v1/logs", logs({"eventName": "app.page_view",
                                 "attributes": [{"key": "url.path",
                                                 "value": {"stringValue": "/a"}}]}))
    assert r.status_code == 200, r.text
    s = e.scrape()
    assert s.value("app_page_views_total", route="/a", service_name="unknown_service") == 1
    assert s.value("kpi_exporter_observer_errors_total", observer="broken") == 1
    assert s.value("kpi_exporter_requests_total", transport="http", signal="log", code="200") == 1


def test_observers_see_every_used_record_and_no_rejected_one(exporter_factory):
    e = exporter_factory()
    seen: list[list[str]] = []

    def watch(batch):
        seen.append([r.attributes.get("k", "") for r in batch.records])

    watch.name = "watch"  # type: ignore[attr-defined]
    e.pipeline.add_observer(watch)
    records = [{"eventName": "app.page_view", "attributes": [
                   {"key": "k", "value": {"stringValue": "mapped"}}]},
               {"eventName": "app.conversion", "attributes": [
                   {"key": "k", "value": {"stringValue": "rejected"}},
                   {"key": "app.conversion.value", "value": {"stringValue": "9,99"}}]},
               {"eventName": "app.nobody_maps_this_but_app_events_total", "attributes": [
                   {"key": "k", "value": {"stringValue": "another"}}]},
               {"body": {"stringValue": "a plain log line"}, "attributes": [
                   {"key": "k", "value": {"stringValue": "unmatched"}}]}]
    r = e.post("/v1/logs", json.dumps({"resourceLogs": [{"scopeLogs": [
        {"logRecords": records}]}]}).encode())
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert seen == [["mapped", "another", "unmatched"]]
