"""Restart-safe state: snapshot round trip, a real `serve` process stopped with SIGTERM and
started again, periodic saves and their self-metrics, corrupt and unsupported snapshots, the
directory lock."""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import otlp_json
from exporter import state as state_module
from exporter.collectors.selfmetrics import StateMetrics
from exporter.config import ConfigError, load_config
from exporter.state import (
    FORMAT, INCOMPLETE_FILE, STATE_FILE, UNSAVED_FILE, VERSION, StateManager, encode_snapshot,
)
from tests.helpers import ROOT, ProcessExporter, built, eventually, parse_samples
from tests.otel import logger_provider, meter_provider, tracer_provider

SALT = "state-test-salt-0123456789"

CONFIG = f"""
privacy:
  salt: {SALT}
rules:
  - metric: app_jobs_total
    type: counter
    match: {{signal: metric, name: app.jobs}}
    labels: {{queue: {{attribute: queue, default: none}}}}
    value: data_point
  - metric: app_job_duration_seconds
    type: histogram
    match: {{signal: metric, name: app.job.duration}}
    labels: {{queue: {{attribute: queue, default: none}}}}
    value: data_point
    buckets: [5, 10, 100]
  - metric: app_feature_clicks_total
    type: counter
    match: {{signal: log, name: app.feature_used}}
    labels: {{feature: app.feature}}
    max_series: 3
"""


def kv(key, value):
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def logs_body(events):
    """An OTLP JSON logs request: events are (name, attributes) stamped now."""
    now = str(time.time_ns())
    records = [{"timeUnixNano": now, "eventName": name,
                "attributes": [kv(k, v) for k, v in attrs.items()]} for name, attrs in events]
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [kv("service.name", "web")]},
        "scopeLogs": [{"logRecords": records}]}]}).encode()


def cumulative_body(total, start_ns, queue="q1"):
    """An OTLP JSON metrics request with one cumulative monotonic sum point."""
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "app.jobs", "sum": {
            "aggregationTemporality": 2, "isMonotonic": True,
            "dataPoints": [{"startTimeUnixNano": str(start_ns), "timeUnixNano": str(time.time_ns()),
                            "asDouble": total, "attributes": [kv("queue", queue)]}]}}]}]}]}).encode()


def traffic():
    events = [("app.page_view", {"user.id": f"user-{i % 7}", "session.id": f"s-{i % 9}",
                                 "url.path": "/home"}) for i in range(30)]
    events += [("app.feature_used", {"app.feature": f"f{i}", "app.action": "open",
                                     "session.id": f"s-{i}"}) for i in range(6)]
    events += [("app.conversion", {"session.id": "s-2", "app.conversion.type": "purchase",
                                   "app.conversion.value": 12.5})]
    events += [("ai.model.performance", {"gen_ai.request.model": "m1", "ai.model.accuracy": 0.81,
                                         "ai.model.latency": 0.4})]
    return events


def kpi_samples(text):
    """The samples a restart must keep: mapped metrics and the window gauges."""
    return {k: v for k, v in parse_samples(text).items()
            if k[0].startswith(("app_", "ai_", "gen_ai_"))
            or k[0] == "kpi_exporter_metric_overflow_updates_total"}


def new_app(config_text=CONFIG, tmp_path=None):
    """An exporter built without a state directory of its own: each test's StateManager
    below saves and restores its parts."""
    return built(tmp_path, config_text + "state: {enabled: false}\n")


def manager(app, directory):
    """A StateManager of the exporter's parts, and the registry its self-metrics are in."""
    registry = CollectorRegistry()
    m = StateManager(Path(directory), StateMetrics(registry))
    m.add("store", app.store)
    app.store.on_unsaved_change = m.mark_unsaved
    m.add("windows", app.windows, salted=True)
    if app.sessions is not None:
        m.add("visits", app.sessions.metrics.store)
        m.add("sessions", app.sessions.store, salted=True)
    m.fingerprint = app.hasher.fingerprint
    return m, registry


def feed(app, start_ns):
    app.pipeline.ingest_batch(otlp_json.decode_logs(logs_body(traffic())))
    app.pipeline.ingest_batch(otlp_json.decode_metrics(cumulative_body(10.0, start_ns)))
    app.pipeline.ingest_batch(otlp_json.decode_metrics(cumulative_body(4.0, start_ns,
                                                                       queue="q2")))


# -- round trip -----------------------------------------------------------------------------------

def test_snapshot_round_trip_restores_series_overflow_streams_and_windows(tmp_path):
    before = new_app(tmp_path=tmp_path)
    start_ns = time.time_ns()  # the app's stream starts after the exporter did
    feed(before, start_ns)
    m, _ = manager(before, tmp_path / "state")
    m.open()
    assert m.save(clean=True)
    m.close()
    path = tmp_path / "state" / STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["lock", STATE_FILE]
    doc = json.loads(gzip.decompress(path.read_bytes()))
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)

    after = new_app(tmp_path=tmp_path)
    m2, registry = manager(after, tmp_path / "state")
    m2.open()
    assert m2.restore()
    m2.close()
    assert after.store.export_state() == before.store.export_state()
    overflow = {s.definition.name: s.overflow_updates for s in after.store}
    assert overflow["app_feature_clicks_total"] == 4  # six features, a cap of three
    assert kpi_samples(generate_latest(after.registry).decode()) == \
        kpi_samples(generate_latest(before.registry).decode())
    text = generate_latest(after.registry).decode()
    assert parse_samples(text)[("app_active_users", frozenset({("window", "5m")}))] == 7
    # the restored stream state turns the next cumulative point into its increase only
    after.pipeline.ingest_batch(otlp_json.decode_metrics(cumulative_body(15.0, start_ns)))
    assert after.store.get("app_jobs_total", ("q1",)) == 15.0
    samples = parse_samples(generate_latest(registry).decode())
    assert samples[("kpi_exporter_state_bytes", frozenset())] == path.stat().st_size


def test_after_counting_past_the_last_save_counters_start_from_zero_and_gauges_and_windows_are_restored(
        tmp_path, caplog):
    before = new_app(tmp_path=tmp_path)
    start_ns = time.time_ns()
    feed(before, start_ns)
    m, _ = manager(before, tmp_path)
    assert m.save()  # a periodic save...
    assert not (tmp_path / UNSAVED_FILE).exists()
    before.pipeline.ingest_batch(otlp_json.decode_logs(logs_body(traffic()[:1])))  # ...then more
    assert (tmp_path / UNSAVED_FILE).read_text() == "1\n"  # counted after snapshot 1
    doc = json.loads(gzip.decompress((tmp_path / STATE_FILE).read_bytes()))
    assert (doc["generation"], doc["clean"]) == (1, False)
    after = new_app(tmp_path=tmp_path)  # the first process was killed: no save since
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert manager(after, tmp_path)[0].restore()
    assert "counted more after the state file" in caplog.text
    samples = parse_samples(generate_latest(after.registry).decode())
    # counters and histograms: every series at zero (Prometheus sees the reset at once)
    reset = {k: v for k, v in samples.items()
             if k[0] in ("app_page_views_total", "app_jobs_total",
                         "ai_model_latency_seconds_count", "ai_model_latency_seconds_bucket")}
    assert {k[0] for k in reset} == {"app_page_views_total", "app_jobs_total",
                                     "ai_model_latency_seconds_count",
                                     "ai_model_latency_seconds_bucket"}
    assert set(reset.values()) == {0}
    assert samples[("kpi_exporter_metric_overflow_updates_total",
                    frozenset({("metric", "app_feature_clicks_total")}))] == 0
    # gauges and window sketches: as saved
    assert samples[("ai_model_accuracy_ratio", frozenset({("model", "m1")}))] == 0.81
    assert samples[("app_active_users", frozenset({("window", "5m")}))] == 7
    assert samples[("app_conversion_rate_ratio", frozenset({("window", "1h")}))] == \
        pytest.approx(1 / 9)
    # stream baselines are not restored: the stream's next point is its baseline again
    after.pipeline.ingest_batch(otlp_json.decode_metrics(cumulative_body(15.0, start_ns)))
    after.pipeline.ingest_batch(otlp_json.decode_metrics(cumulative_body(16.0, start_ns)))
    assert after.store.get("app_jobs_total", ("q1",)) == 1.0


def test_a_snapshot_with_nothing_counted_after_it_is_restored_whole_however_the_run_ended(
        tmp_path):
    before = new_app(tmp_path=tmp_path)
    feed(before, time.time_ns())
    assert manager(before, tmp_path)[0].save()  # a periodic save, then a kill: complete
    first = new_app(tmp_path=tmp_path)
    m1, _ = manager(first, tmp_path)
    assert m1.restore()
    assert first.store.get("app_jobs_total", ("q1",)) == 10.0
    # killed again before counting anything: still complete
    second = new_app(tmp_path=tmp_path)
    m2, _ = manager(second, tmp_path)
    assert m2.restore() and second.store.get("app_jobs_total", ("q1",)) == 10.0
    # this run counts one more event, then is killed: its snapshot is no longer complete
    second.pipeline.ingest_batch(otlp_json.decode_logs(logs_body(traffic()[:1])))
    third = new_app(tmp_path=tmp_path)
    assert manager(third, tmp_path)[0].restore()
    assert third.store.get("app_jobs_total", ("q1",)) == 0.0  # kept at zero: a visible reset


def test_an_unreadable_unsaved_mark_restores_no_counters(tmp_path, caplog):
    before = new_app(tmp_path=tmp_path)
    feed(before, time.time_ns())
    assert manager(before, tmp_path)[0].save(clean=True)
    (tmp_path / UNSAVED_FILE).write_bytes(b"\x00\x00")  # torn by a crash of the disk
    after = new_app(tmp_path=tmp_path)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert manager(after, tmp_path)[0].restore()
    assert "does not hold a snapshot number" in caplog.text
    assert after.store.get("app_jobs_total", ("q1",)) == 0.0
    samples = parse_samples(generate_latest(after.registry).decode())
    assert samples[("ai_model_accuracy_ratio", frozenset({("model", "m1")}))] == 0.81
    assert samples[("app_active_users", frozenset({("window", "5m")}))] == 7
    assert (tmp_path / UNSAVED_FILE).read_text() == "1\n"  # readable again, still incomplete


def test_a_changed_metric_is_not_restored_and_the_rest_is(tmp_path, caplog):
    before = new_app(tmp_path=tmp_path)
    feed(before, time.time_ns())
    assert manager(before, tmp_path)[0].save(clean=True)
    changed = CONFIG.replace("labels: {feature: app.feature}",
                             "labels: {feature: app.feature, action: app.action}")
    assert changed != CONFIG
    after = new_app(changed, tmp_path)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert manager(after, tmp_path)[0].restore()
    assert after.store.get("app_feature_clicks_total", ("f0",)) is None
    assert after.store.get("app_jobs_total", ("q1",)) == 10.0
    assert "not restored: app_feature_clicks_total changed its type, labels or buckets" in \
        caplog.text


def test_a_changed_salt_keeps_the_counts_and_starts_the_windows_empty(tmp_path, caplog):
    before = new_app(tmp_path=tmp_path)
    feed(before, time.time_ns())
    assert manager(before, tmp_path)[0].save(clean=True)
    after = new_app(CONFIG.replace(SALT, "another-salt-9876543210"), tmp_path)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert manager(after, tmp_path)[0].restore()
    samples = parse_samples(generate_latest(after.registry).decode())
    assert samples[("app_active_users", frozenset({("window", "1h")}))] == 0
    assert after.store.get("app_jobs_total", ("q1",)) == 10.0
    assert "the salt changed since the snapshot" in caplog.text


def test_a_failed_save_is_counted_and_leaves_no_temp_file(tmp_path, caplog):
    p = new_app(tmp_path=tmp_path)
    m, registry = manager(p, tmp_path)
    (tmp_path / STATE_FILE).mkdir()  # a directory where the file should go: the rename fails
    (tmp_path / STATE_FILE / "x").write_text("")
    with caplog.at_level(logging.ERROR, logger="kpi_exporter"):
        assert not m.save()
    assert "cannot save the state" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    samples = parse_samples(generate_latest(registry).decode())
    assert samples[("kpi_exporter_state_saves_total", frozenset({("outcome", "failure")}))] == 1
    assert samples[("kpi_exporter_state_saves_total", frozenset({("outcome", "success")}))] == 0


@pytest.fixture
def small_disk(tmp_path):
    """A state directory on a 64 KiB tmpfs of its own (mounted as root; unmounted after), so
    a test can fill the disk and free it again."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
                   check=True)
    try:
        (mount / "state").mkdir()
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fills the disk to the last block; returns the file that does it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        with pytest.raises(OSError) as full:
            while True:
                f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def views_total(app):
    return sum(v for k, v in parse_samples(generate_latest(app.registry).decode()).items()
               if k[0] == "app_page_views_total")


def test_a_full_disk_that_stops_the_unsaved_mark_never_restores_older_counters(
        small_disk, tmp_path, caplog):
    state_dir = small_disk / "state"
    before = new_app(tmp_path=tmp_path)
    m, registry = manager(before, state_dir)
    before.pipeline.ingest_batch(otlp_json.decode_logs(page_views(1000)))
    assert m.save()  # a periodic save of 1000
    filler = fill(small_disk)
    with caplog.at_level(logging.ERROR, logger="kpi_exporter"):
        before.pipeline.ingest_batch(otlp_json.decode_logs(page_views(500)))  # scraped: 1500
        assert not m.save(clean=True)  # the final save fails too
    assert views_total(before) == 1500
    assert f"cannot write {state_dir / UNSAVED_FILE}" in caplog.text
    filler.unlink()  # the disk is freed, the exporter restarted
    after = new_app(tmp_path=tmp_path)
    ma, _ = manager(after, state_dir)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert ma.restore()
    # Prometheus read 1000, 1500, then the reset: 0, never 1000 again (+1000 counted twice)
    assert views_total(after) == 0
    assert "counters not restored" in caplog.text
    # the snapshot of 1000 was withdrawn by a rename, which needs no space
    assert not (state_dir / STATE_FILE).exists() and (state_dir / INCOMPLETE_FILE).exists()
    after.pipeline.ingest_batch(otlp_json.decode_logs(page_views(10)))
    assert prometheus_increase([1000, 1500, views_total(after)]) == 1510 - 1000
    samples = parse_samples(generate_latest(after.registry).decode())
    assert samples[("app_active_users", frozenset({("window", "5m")}))] == 7  # windows restored


def test_an_unsaved_mark_that_failed_is_written_at_the_next_change(small_disk, tmp_path):
    state_dir = small_disk / "state"
    before = new_app(tmp_path=tmp_path)
    m, _ = manager(before, state_dir)
    before.pipeline.ingest_batch(otlp_json.decode_logs(page_views(1000)))
    assert m.save()
    filler = fill(small_disk)
    before.pipeline.ingest_batch(otlp_json.decode_logs(page_views(500)))
    assert (state_dir / UNSAVED_FILE).read_text() == "0\n"  # the mark of snapshot 1 failed
    filler.unlink()
    before.pipeline.ingest_batch(otlp_json.decode_logs(page_views(1)))
    assert (state_dir / UNSAVED_FILE).read_text() == "1\n"  # tried again, written
    assert m.save()  # snapshot 2 replaces the withdrawn one
    assert (state_dir / STATE_FILE).exists() and not (state_dir / INCOMPLETE_FILE).exists()
    after = new_app(tmp_path=tmp_path)  # killed with nothing counted since: complete
    assert manager(after, state_dir)[0].restore()
    assert views_total(after) == 1501


def test_parts_that_mark_at_once_write_the_mark_once_per_snapshot(tmp_path, monkeypatch,
                                                                   caplog):
    # The mapped counters and the visit counters each mark their first change after a
    # snapshot from their own locks, so several marks can come at the same moment: one write (two
    # fsyncs) says it for all of them, and no two writes share a temp file.
    app = new_app(tmp_path=tmp_path)
    m, _ = manager(app, tmp_path)
    writes: list[bytes] = []
    real = state_module.write_atomic

    def slow_write(path, data):
        if path.name == UNSAVED_FILE:
            writes.append(data)
            time.sleep(0.05)  # every other marker arrives while this one writes
        real(path, data)

    monkeypatch.setattr(state_module, "write_atomic", slow_write)
    start = threading.Barrier(8)

    def mark():
        start.wait()
        results.append(m.mark_unsaved())

    results: list[bool] = []
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        threads = [threading.Thread(target=mark) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == [True] * 8
    assert writes == [b"0\n"]
    assert "cannot write" not in caplog.text
    assert (tmp_path / UNSAVED_FILE).read_text() == "0\n"
    assert m.save()  # snapshot 1: the next change is marked again
    assert m.mark_unsaved() and m.mark_unsaved()
    assert writes == [b"0\n", b"1\n"]
    assert (tmp_path / UNSAVED_FILE).read_text() == "1\n"


# -- unusable snapshots ---------------------------------------------------------------------------

def valid_snapshot(tmp_path) -> bytes:
    p = new_app(tmp_path=tmp_path)
    feed(p, time.time_ns())
    return encode_snapshot(manager(p, tmp_path)[0].snapshot())


def rewrite(data: bytes, change) -> bytes:
    doc = json.loads(gzip.decompress(data))
    change(doc)
    return encode_snapshot(doc)


@pytest.mark.parametrize("damage, kind, message", [
    (lambda d: b"this is not a snapshot", "corrupt", "not a readable gzip-compressed JSON"),
    (lambda d: d[: len(d) // 2], "corrupt", "not a readable gzip-compressed JSON"),
    (lambda d: d[:-12] + bytes(12), "corrupt", "not a readable gzip-compressed JSON"),
    (lambda d: gzip.compress(b'{"hello": 1}'), "corrupt", "not a kpi-exporter state file"),
    (lambda d: rewrite(d, lambda doc: doc["store"].update(metrics=7)), "corrupt",
     "expected an object with a 'metrics' list"),
    (lambda d: rewrite(d, lambda doc: doc["windows"]["tiers"][0]["cells"][0].__setitem__(
        2, "bm90IGEgc2tldGNo")), "corrupt", "a sketch cannot be read"),
    (lambda d: rewrite(d, lambda doc: doc.update(version=VERSION + 1)), "unsupported",
     "written by a newer kpi-exporter"),
    (lambda d: rewrite(d, lambda doc: doc.update(version=0)), "unsupported",
     "format version 0, which this kpi-exporter cannot migrate"),
])
def test_an_unusable_snapshot_is_moved_aside_and_the_exporter_starts_fresh(
        tmp_path, caplog, damage, kind, message):
    data = damage(valid_snapshot(tmp_path))
    (tmp_path / STATE_FILE).write_bytes(data)
    p = new_app(tmp_path=tmp_path)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        assert not manager(p, tmp_path)[0].restore()
    assert message in caplog.text
    assert "starting with empty state" in caplog.text
    aside = [f for f in tmp_path.iterdir() if f.name.startswith(f"{STATE_FILE}.{kind}-")]
    assert len(aside) == 1 and aside[0].read_bytes() == data
    assert str(aside[0]) in caplog.text
    assert not (tmp_path / STATE_FILE).exists()
    # nothing half restored
    assert all(not s.series for s in p.store)
    assert parse_samples(generate_latest(p.registry).decode())[
        ("app_sessions", frozenset({("window", "30d")}))] == 0


# -- a real serve process -------------------------------------------------------------------------

def send_everything(e, start_ns):
    """Events through the SDK, a GenAI span, cumulative metrics through the SDK."""
    lp = logger_provider(e.otlp_url, service="web")
    log = lp.get_logger("app")
    for name, attrs in traffic():
        log.emit(event_name=name, attributes=attrs)
    lp.shutdown()
    tp = tracer_provider(e.otlp_url)
    with tp.get_tracer("ai").start_as_current_span(
            "chat m1", attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "p",
                                   "gen_ai.request.model": "m1",
                                   "gen_ai.usage.input_tokens": 120}):
        pass
    tp.shutdown()
    assert e.post("/v1/metrics", cumulative_body(10.0, start_ns)).status_code == 200


def test_sigterm_then_restart_keeps_every_counter_and_window_gauge(process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    state_dir = tmp_path / "state"
    e = process_factory("--config", str(config), "--state-dir", str(state_dir))
    start_ns = time.time_ns()  # the app's stream starts after the exporter did
    send_everything(e, start_ns)
    mp, reader = meter_provider(e.otlp_url, delta=False)
    hist = mp.get_meter("jobs").create_histogram("app.job.duration")
    for v in (3, 7, 50, 700):
        hist.record(v, {"queue": "q1"})
    reader.force_flush()
    before = e.scrape()
    kept = kpi_samples(before.text)
    assert before.value("app_active_users", window="1h") == 7
    assert before.value("app_job_duration_seconds_count", queue="q1") == 4
    assert sum(before.matching("gen_ai_span_operation_duration_seconds_count",
                               gen_ai_request_model="m1").values()) == 1
    assert before.value("app_jobs_total", queue="q1") == 10
    assert before.value("kpi_exporter_metric_overflow_updates_total",
                        metric="app_feature_clicks_total") == 4

    e.signal(signal.SIGTERM)
    assert e.proc.wait(20) == 0
    assert "saved the state to" in e.log()

    # the same ports, so the SDK below keeps sending to the same endpoint
    e2 = process_factory("--config", str(config), "--state-dir", str(state_dir),
                         otlp_port=e.otlp_port, metrics_port=e.metrics_port)
    after = e2.scrape()
    assert kpi_samples(after.text) == kept
    assert "restored state from" in e2.log()
    assert after.value("kpi_exporter_state_last_save_timestamp_seconds") == pytest.approx(
        time.time(), abs=60)
    # the same SDK keeps sending cumulative values: only the increase since the last point
    # before the restart is added
    for v in (8, 9):
        hist.record(v, {"queue": "q1"})
    reader.force_flush()
    mp.shutdown()
    assert e2.post("/v1/metrics", cumulative_body(16.0, start_ns)).status_code == 200
    s = e2.scrape()
    assert s.value("app_job_duration_seconds_count", queue="q1") == 6
    assert s.value("app_job_duration_seconds_bucket", queue="q1", le="10.0") == 4
    assert s.value("app_jobs_total", queue="q1") == 16


def prometheus_increase(values):
    """What Prometheus' increase() adds up over consecutive scrapes of a counter: the
    differences, and after a drop (a reset) the new value in full. None is a scrape the
    series was absent from."""
    values = [v for v in values if v is not None]
    return sum(b - a if b >= a else b for a, b in zip(values, values[1:]))


def page_views(n, route="/kill"):
    return logs_body([("app.page_view", {"url.path": route, "user.id": f"user-{i % 7}",
                                         "session.id": f"s-{i % 9}"}) for i in range(n)])


def perf(n, accuracy):
    return logs_body([("ai.model.performance", {"gen_ai.request.model": "m1",
                                                "ai.model.accuracy": accuracy,
                                                "ai.model.latency": 0.4})] * n)


def views_of(scrape):
    return scrape.value("app_page_views_total", route="/kill", service_name="web")


def saves(e):
    return e.scrape().value("kpi_exporter_state_saves_total", outcome="success")


def test_kill_9_after_a_periodic_save_resets_counters_instead_of_rewinding_them(
        process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "state: {interval: 1s}\n")
    args = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    e = process_factory(*args)
    assert e.post("/v1/logs", page_views(1000)).status_code == 200
    assert e.post("/v1/logs", perf(3, 0.5)).status_code == 200
    saved = saves(e)
    assert eventually(lambda: saves(e) > saved), e.log()  # a periodic save with the 1,000
    assert e.post("/v1/logs", page_views(500)).status_code == 200
    assert e.post("/v1/logs", perf(2, 0.75)).status_code == 200
    s = e.scrape()
    scraped = [views_of(s)]
    assert scraped == [1500]
    assert s.value("ai_model_latency_seconds_count", model="m1") == 5
    e.signal(signal.SIGKILL)
    assert e.proc.wait(20) == -signal.SIGKILL

    e2 = process_factory(*args)
    s = e2.scrape()
    assert "counted more after the state file" in e2.log()
    # every counter and histogram series is there at zero: the first scrape shows the reset
    scraped.append(views_of(s))
    assert s.value("ai_model_latency_seconds_count", model="m1") == 0
    assert s.value("ai_model_latency_seconds_bucket", model="m1", le="+Inf") == 0
    assert s.value("ai_model_accuracy_ratio", model="m1") in (0.5, 0.75)  # as last saved
    assert s.value("app_active_users", window="1h") == 7
    assert e2.post("/v1/logs", page_views(10)).status_code == 200
    assert e2.post("/v1/logs", perf(1, 0.9)).status_code == 200
    s = e2.scrape()
    scraped.append(views_of(s))
    assert scraped == [1500, 0, 10]  # the reset is visible
    assert prometheus_increase(scraped) == 10
    assert s.value("ai_model_latency_seconds_count", model="m1") == 1
    assert s.value("ai_model_accuracy_ratio", model="m1") == 0.9


def test_kill_9_after_a_save_with_nothing_counted_since_loses_nothing(process_factory,
                                                                        tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "state: {interval: 1s}\n")
    args = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    e = process_factory(*args)
    assert e.post("/v1/logs", page_views(1000)).status_code == 200
    sent_at = time.time()
    scraped = [views_of(e.scrape())]
    assert eventually(lambda: (e.scrape().value("kpi_exporter_state_last_save_timestamp_seconds")
                               or 0) > sent_at + 1), e.log()  # saved, idle since
    e.signal(signal.SIGKILL)
    assert e.proc.wait(20) == -signal.SIGKILL

    e2 = process_factory(*args)
    assert "nothing counted after it" in e2.log()
    scraped.append(views_of(e2.scrape()))
    assert e2.post("/v1/logs", page_views(10)).status_code == 200
    scraped.append(views_of(e2.scrape()))
    assert scraped == [1000, 1000, 1010]  # no reset
    assert scraped[0] + prometheus_increase(scraped) == 1010


def test_kill_9_of_a_run_restored_from_a_clean_stop_does_not_restore_its_counters_again(
        process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    args = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    e = process_factory(*args)
    assert e.post("/v1/logs", page_views(1000)).status_code == 200
    scraped = [views_of(e.scrape())]
    e.signal(signal.SIGTERM)
    assert e.proc.wait(20) == 0

    e2 = process_factory(*args)  # restored from the clean stop: the counters go on
    scraped.append(views_of(e2.scrape()))
    assert e2.post("/v1/logs", page_views(500)).status_code == 200
    scraped.append(views_of(e2.scrape()))
    assert scraped == [1000, 1000, 1500]
    e2.signal(signal.SIGKILL)  # before its first periodic save (every 30 s)
    assert e2.proc.wait(20) == -signal.SIGKILL

    e3 = process_factory(*args)
    assert e3.post("/v1/logs", page_views(10)).status_code == 200
    scraped.append(views_of(e3.scrape()))
    assert scraped == [1000, 1000, 1500, 10]
    assert scraped[0] + prometheus_increase(scraped) == 1000 + 500 + 10


def test_kill_9_never_counts_a_cumulative_stream_twice(process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "state: {interval: 1s}\n")
    args = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    e = process_factory(*args)
    mp, reader = meter_provider(e.otlp_url, delta=False)
    try:
        jobs = mp.get_meter("jobs").create_counter("app.jobs")
        jobs.add(100, {"queue": "q1"})
        reader.force_flush()
        saved = saves(e)
        assert eventually(lambda: saves(e) > saved), e.log()  # the snapshot has 100
        jobs.add(20, {"queue": "q1"})
        reader.force_flush()
        scraped = [e.scrape().value("app_jobs_total", queue="q1")]
        assert scraped == [120]
        e.signal(signal.SIGKILL)
        assert e.proc.wait(20) == -signal.SIGKILL
        # the same ports: the app's SDK keeps sending its cumulative totals
        e2 = process_factory(*args, otlp_port=e.otlp_port, metrics_port=e.metrics_port)
        # Prometheus scrapes before the app's next export (every 60 s by default)
        scraped.append(e2.scrape().value("app_jobs_total", queue="q1"))
        for n in (5, 3):
            jobs.add(n, {"queue": "q1"})
            reader.force_flush()
            scraped.append(e2.scrape().value("app_jobs_total", queue="q1"))
    finally:
        mp.shutdown()
    # 125 is the stream's baseline after the reset: the 5 are missed, nothing is counted
    # twice. (Restoring the saved counter and last point, 100, would show 100 first, a drop
    # Prometheus reads as a reset, then 125: 100 + 25 counted again.)
    assert scraped == [120, 0, 0, 3]
    assert scraped[0] + prometheus_increase(scraped) == 123 <= 100 + 20 + 5 + 3


def test_periodic_saves_and_their_self_metrics(process_factory, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("state: {interval: 1s}\n")
    e = process_factory("--config", str(config), "--state-dir", str(tmp_path / "s"))
    e.post("/v1/logs", logs_body(traffic()))

    def saved():
        s = e.scrape()
        n = s.value("kpi_exporter_state_saves_total", outcome="success")
        return s if n and n >= 2 else None

    s = eventually(saved, timeout=20)
    assert s, e.log()
    assert s.value("kpi_exporter_state_saves_total", outcome="failure") == 0
    assert s.value("kpi_exporter_state_save_duration_seconds_count") >= 2
    assert s.value("kpi_exporter_state_bytes") > 0
    assert s.value("kpi_exporter_state_last_save_timestamp_seconds") == pytest.approx(
        time.time(), abs=30)
    assert (tmp_path / "s" / STATE_FILE).exists()


def test_a_corrupt_snapshot_does_not_stop_a_real_exporter(process_factory, tmp_path):
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(b"\x1f\x8b garbage")
    e = process_factory("--state-dir", str(state_dir))
    assert "is corrupt" in e.log() or "cannot be restored" in e.log()
    assert any(p.name.startswith(STATE_FILE + ".corrupt-") for p in state_dir.iterdir())
    assert e.post("/v1/logs", logs_body(traffic())).status_code == 200
    e.signal(signal.SIGTERM)
    assert e.proc.wait(20) == 0
    doc = json.loads(gzip.decompress((state_dir / STATE_FILE).read_bytes()))
    assert doc["format"] == FORMAT


def test_two_exporters_cannot_share_a_state_directory(process_factory, tmp_path):
    state_dir = tmp_path / "s"
    process_factory("--state-dir", str(state_dir))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "exporter", "serve", "--otlp-listen",
                        "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0", "--metrics-listen",
                        "127.0.0.1:0", "--state-dir",
                        str(state_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "another kpi-exporter is using the state directory" in r.stderr


# -- config ---------------------------------------------------------------------------------------

def test_state_dir_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("state: {dir: /from/config, interval: 45s}\n")
    cfg = load_config(str(path), env={})
    assert (cfg.state.dir, cfg.state.interval) == ("/from/config", 45)
    assert load_config(str(path), env={"KPI_EXPORTER_STATE_DIR": "/from/env"}).state.dir == \
        "/from/env"
    assert load_config(str(path), env={"KPI_EXPORTER_STATE_DIR": "/from/env"},
                       overrides={"state_dir": "/from/flag"}).state.dir == "/from/flag"
    assert load_config(None, env={}).state.dir == "./data"


@pytest.mark.parametrize("text, message", [
    ("state:\n  interval: 0.5s\n", "c.yaml:2: state.interval: save at most once a second"),
    ("state: {interval: 99999d}\n", "state.interval: '99999d' is not a duration"),
    ("state: {interval: often}\n", "interval: 'often' is not a duration"),
    ("state: {dir: 7}\n", "dir: expected a directory path"),
    ("state: {enable: false}\n", "did you mean 'enabled'"),
])
def test_state_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert message in str(err.value)


def test_a_temp_file_left_by_an_interrupted_save_is_removed_at_start(tmp_path, caplog):
    leftover = tmp_path / f".{STATE_FILE}.tmp-4242"
    leftover.write_bytes(b"\x1f\x8b half a snapshot")
    m, _ = manager(new_app(tmp_path=tmp_path), tmp_path)
    with caplog.at_level(logging.INFO, logger="kpi_exporter"):
        m.open()
    m.close()
    assert not leftover.exists()
    assert "left by a save a crash interrupted" in caplog.text
