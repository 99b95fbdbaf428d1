"""The mapped metrics' exposition against prometheus_client's own: a histogram fed through
the rules renders its buckets exactly as a prometheus_client Histogram with the same bounds
and observations, in the Prometheus text format and in OpenMetrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.collectors import MappedMetricsCollector, mapped
from exporter.mapper import Mapping
from exporter.pacing import Pacer
from exporter.records import LOG, Batch, Record
from exporter.rules import parse_rules
from exporter.store import Store

# The GenAI token-usage bounds: powers of 4 up to 67,108,864, past where Go (and
# prometheus_client) write floats with an exponent.
BOUNDS = [0.005, 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
          16777216, 67108864]
VALUES = [0.001, 3, 100, 70000, 2_000_000, 50_000_000, 1e9]


def bucket_lines(text: str) -> list[str]:
    return [line.split("_bucket", 1)[1] for line in text.splitlines() if "_bucket{" in line]


@pytest.mark.parametrize("render", [generate_latest, generate_openmetrics],
                         ids=["text", "openmetrics"])
def test_histogram_buckets_render_as_prometheus_client_renders_them(render):
    reference = CollectorRegistry()
    h = Histogram("ref_tokens", "Tokens.", buckets=BOUNDS, registry=reference)
    for v in VALUES:
        h.observe(v)

    mapping = Mapping(parse_rules([{
        "metric": "app_tokens", "type": "histogram", "match": {"signal": "log", "name": "t"},
        "value": {"attribute": "n"}, "buckets": BOUNDS}]))
    store = Store(mapping.metrics)
    batch = Batch(LOG)
    batch.records.extend(Record(LOG, "t", 1, {"n": v}) for v in VALUES)
    store.apply(mapping.map_batch(batch).deltas)
    ours = CollectorRegistry()
    ours.register(MappedMetricsCollector(store))

    mine, theirs = bucket_lines(render(ours).decode()), bucket_lines(render(reference).decode())
    assert mine == theirs
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in mine}
    assert counts['{le="1.048576e+06"}'] == 4 and counts['{le="+Inf"}'] == 7


@pytest.mark.parametrize("kind", ["counter", "gauge", "histogram"])
def test_building_a_large_family_gives_way_to_request_threads(monkeypatch, kind):
    # a pacer on a clock that moves 1 ms a look pauses at every look: one per series built
    name = "app_things_total" if kind == "counter" else "app_things"
    mapping = Mapping(parse_rules([{
        "metric": name, "type": kind, "match": {"signal": "log", "name": "t"},
        "labels": {"item": "item"}, "value": {"attribute": "n"}, "buckets": [1, 10]}
        if kind == "histogram" else {
        "metric": name, "type": kind, "match": {"signal": "log", "name": "t"},
        "labels": {"item": "item"}, "value": {"attribute": "n"}}]))
    store = Store(mapping.metrics)
    batch = Batch(LOG)
    batch.records.extend(Record(LOG, "t", 1, {"n": 2, "item": f"i{i}"}) for i in range(50))
    store.apply(mapping.map_batch(batch).deltas)
    registry = CollectorRegistry()
    registry.register(MappedMetricsCollector(store))
    unpaced = generate_latest(registry)
    ticks = iter(range(10**6))
    slept: list[float] = []
    monkeypatch.setattr(mapped, "Pacer", lambda: Pacer(
        clock=lambda: next(ticks) / 1000, sleep=slept.append))
    assert generate_latest(registry) == unpaced
    assert len(slept) == 50
