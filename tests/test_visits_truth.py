"""Visits against ground truth: 5,000 known visits (page views, durations, sources, devices,
countries, bounces, conversions, some ended by the page, some bots) sent through the
OpenTelemetry SDK give exactly the visit metrics they should, from one exporter with the
memory store and from three replicas sharing a Redis behind a load balancer, where each
visit's events are spread over the replicas and every visit is still opened and closed once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers import ProcessExporter, eventually, free_port
from tests.redis_server import RedisServer
from tests.test_e2e_monitoring import Server
from tests.test_mixin_promtool import tool
from tests.test_scale_out import Nginx
from tests.web_traffic import (
    expected_samples, headline, make_visits, send, summed, visit_samples,
)

pytestmark = pytest.mark.timeout(600)

VISITS = 5000
BOTS = 50
TIMEOUT = "3s"


def normalized(samples: dict) -> dict:
    """le labels as numbers (their text form is the client library's business)."""
    out = {}
    for (name, labels), v in samples.items():
        labels = frozenset((k, repr(float(x)) if k == "le" else x) for k, x in labels)
        out[(name, labels)] = v
    return out


def test_memory_store_counts_every_visit_exactly(process_factory, tmp_path):
    config = tmp_path / "exporter.yaml"
    config.write_text(f"windows: {{session_timeout: {TIMEOUT}}}\n"
                      f"state: {{dir: {tmp_path / 'state'}}}\n")
    exporter: ProcessExporter = process_factory("--config", str(config))
    base = int(time.time() * 1000) - 3_600_000
    visits, events = make_visits(VISITS, seed=11, base_ms=base, bots=BOTS)
    send(visits, exporter.otlp_url)
    expected = normalized(expected_samples(visits))

    def settled():
        # a visit leaves the open ones a moment before it is counted: wait for the count,
        # then read it again after a few ticks of the closing timer (it must not move)
        s = exporter.scrape()
        return s if (s.value("kpi_exporter_open_sessions") == 0 and
                     s.value("kpi_exporter_records_received_total", signal="log") == events
                     and sum(s.matching("app_sessions_closed_total").values()) >= VISITS) \
            else None
    assert eventually(settled, timeout=60, interval=0.5), exporter.scrape().text[-2000:]
    time.sleep(1.5)
    scrape = exporter.scrape()
    assert scrape.value("kpi_exporter_open_sessions") == 0
    got = normalized(visit_samples(scrape.samples))
    assert set(got) == set(expected)
    assert got == pytest.approx(expected)
    # the figures of the dashboard's top row, from the counters as PromQL would combine them
    truth = headline(visits)
    closed = sum(v for (n, _), v in got.items() if n == "app_sessions_closed_total")
    bounced = sum(v for (n, _), v in got.items() if n == "app_sessions_bounced_total")
    views = sum(v for (n, _), v in got.items() if n == "app_session_page_views_sum")
    duration = sum(v for (n, _), v in got.items() if n == "app_session_duration_seconds_sum")
    assert closed == truth["visits"] == VISITS
    assert bounced / closed == pytest.approx(truth["bounce_rate"])
    assert views / closed == pytest.approx(truth["views_per_visit"])
    assert duration / closed == pytest.approx(truth["mean_duration"])
    # bots are no visit, counted apart
    assert scrape.value("app_bot_events_total", bot="Googlebot", service_name="truth-shop") == \
        sum(len(v.events) for v in visits if v.client[1] == "bot")
    assert scrape.value("kpi_exporter_sessions_closed_total", reason="evicted") == 0
    ended = sum(1 for v in visits if v.client[1] != "bot"
                and v.events[-1][0] == "app.session.end")
    assert scrape.value("kpi_exporter_sessions_closed_total", reason="end") == ended
    assert scrape.value("kpi_exporter_sessions_closed_total", reason="timeout") == \
        VISITS - ended


REPLICAS = 3
SALT = "visit-truth-salt-0123456789abcdef"


def test_replicas_sharing_redis_open_and_close_each_visit_once(tmp_path):
    store = RedisServer(tmp_path / "redis")
    started: list = [store]
    try:
        replicas = []
        for i in range(REPLICAS):
            config = tmp_path / f"exporter-{i}.yaml"
            config.write_text(yaml.safe_dump({
                "state": {"dir": str(tmp_path / f"state-{i}")},
                "windows": {"session_timeout": "5s", "redis_prefix": "truth:"}}))
            e = ProcessExporter(["--config", str(config), "--windows-store", store.url],
                                env={"KPI_EXPORTER_SALT": SALT})
            replicas.append(e)
            started.append(e)
        nginx = Nginx(tmp_path / "nginx", [e.otlp_port for e in replicas])
        started.append(nginx)
        port = free_port()
        (tmp_path / "prometheus-data").mkdir()
        prometheus = Server(
            [tool("prometheus"),
             f"--config.file={prometheus_config(tmp_path, [e for e in replicas])}",
             f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            f"http://127.0.0.1:{port}/-/ready", tmp_path / "prometheus.log")
        started.append(prometheus)

        base = int(time.time() * 1000) - 3_600_000
        visits, events = make_visits(VISITS, seed=23, base_ms=base, bots=BOTS)
        # small requests, so each visit's events reach several replicas
        send(visits, nginx.url, batch=40, delay_ms=20)
        spread = nginx.upstreams_of("/v1/logs")
        assert len(spread) == REPLICAS and min(spread.values()) > 50, spread

        def settled():
            scrapes = [e.scrape() for e in replicas]
            received = sum(s.value("kpi_exporter_records_received_total", signal="log") or 0
                           for s in scrapes)
            closed = sum(sum(s.matching("kpi_exporter_sessions_closed_total").values())
                         for s in scrapes)
            waiting = sum(s.value("kpi_exporter_session_store_buffered_updates") or 0
                          for s in scrapes)
            return scrapes if received == events and closed >= VISITS and not waiting \
                else None
        assert eventually(settled, timeout=90, interval=0.5), [
            s.matching("kpi_exporter_sessions_closed_total")
            for s in (e.scrape() for e in replicas)]
        time.sleep(2)  # counted a moment after they are claimed: read them once settled
        scrapes = [e.scrape() for e in replicas]
        assert store.client().zcard("truth:{sessions}:open") == 0
        expected = normalized(expected_samples(visits))
        got = normalized(summed([visit_samples(s.samples) for s in scrapes]))
        assert set(got) == set(expected)
        assert got == pytest.approx(expected)
        # every replica opened and closed some of them: the work was shared
        for s in scrapes:
            assert 0 < sum(s.matching("app_sessions_started_total").values()) < VISITS
            assert 0 < sum(s.matching("kpi_exporter_sessions_closed_total").values()) < VISITS
        assert all(s.value("kpi_exporter_session_store_errors_total", operation="write") == 0
                   for s in scrapes)

        # as Prometheus reads it: sum over the replicas
        def query(expr: str) -> float | None:
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr},
                             timeout=10).json()
            result = r["data"]["result"]
            return float(result[0]["value"][1]) if len(result) == 1 else None
        truth = headline(visits)
        assert eventually(lambda: query("sum(app_sessions_closed_total)") == VISITS, timeout=20)
        assert query("sum(app_sessions_bounced_total) / sum(app_sessions_closed_total)") == \
            pytest.approx(truth["bounce_rate"])
        assert query("sum(app_session_page_views_sum) / sum(app_session_page_views_count)") == \
            pytest.approx(truth["views_per_visit"])
        assert query("sum(app_session_duration_seconds_sum) / "
                     "sum(app_session_duration_seconds_count)") == \
            pytest.approx(truth["mean_duration"])
    finally:
        for part in reversed(started):
            if isinstance(part, ProcessExporter):
                part.close()
            else:
                part.stop()


def prometheus_config(tmp: Path, replicas: list[ProcessExporter]) -> Path:
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
              "scrape_configs": [{"job_name": "kpi-exporter", "static_configs": [
                  {"targets": [f"127.0.0.1:{e.metrics_port}" for e in replicas]}]}]}
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path
