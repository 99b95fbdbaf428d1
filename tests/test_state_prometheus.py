"""Counters across crashes as a real Prometheus reads them: `kpi-exporter serve` killed with
SIGKILL and started again on the same port while Prometheus scrapes it every second. What
Prometheus stored must add up (reset-aware, as increase() adds) to what was sent, and each
crash must show as a reset."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

from tests.helpers import eventually, free_port
from tests.test_e2e_monitoring import Server
from tests.test_mixin_promtool import tool
from tests.test_state import CONFIG, page_views, prometheus_increase

SERIES = 'app_page_views_total{route="/kill",service_name="web"}'


class Prometheus:
    """A real Prometheus scraping one target every second, in its own temp directory."""

    def __init__(self, tmp: Path, target: str):
        (tmp / "data").mkdir(parents=True)
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "kpi", "static_configs": [{"targets": [target]}]}],
        }))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = Server([tool("prometheus"), f"--config.file={config}",
                              f"--storage.tsdb.path={tmp / 'data'}",
                              f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                             self.url + "/-/ready", tmp / "prometheus.log")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def latest(self, expr: str) -> float | None:
        """The newest sample of one series, None while it is absent (or stale)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def samples(self, expr: str) -> list[float]:
        """Every raw sample of one series over the last ten minutes, oldest first."""
        result = self.query(f"{expr}[10m]")
        assert len(result) == 1, result
        return [float(v) for _t, v in result[0]["values"]]

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        p = Prometheus(tmp_path / f"prometheus-{len(started)}", target)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_two_kill_9s_in_a_row_add_up_in_prometheus_to_what_was_sent(process_factory, tmp_path,
                                                                     prometheus_for):
    # Saves only at a stop (an hour's interval): each run killed with SIGKILL has counted
    # more than the snapshot on disk holds.
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "state: {interval: 1h}\n")
    args = ("--config", str(config), "--state-dir", str(tmp_path / "state"))
    e = process_factory(*args)
    ports = {"otlp_port": e.otlp_port, "metrics_port": e.metrics_port, "grpc_port": e.grpc_port}
    prom = prometheus_for(f"127.0.0.1:{e.metrics_port}")

    def seen(value: float) -> None:
        assert eventually(lambda: prom.latest(SERIES) == value, timeout=30), (
            prom.latest(SERIES), e.log())

    def kill() -> None:
        e.signal(signal.SIGKILL)
        assert e.proc.wait(20) == -signal.SIGKILL

    assert e.post("/v1/logs", page_views(1000)).status_code == 200
    seen(1000)
    e.signal(signal.SIGTERM)  # a clean stop: the next run goes on from 1,000
    assert e.proc.wait(20) == 0

    e = process_factory(*args, **ports)
    assert e.post("/v1/logs", page_views(500)).status_code == 200
    seen(1500)
    kill()

    e = process_factory(*args, **ports)
    assert "counted more after the state file" in e.log(), e.log()
    seen(0)  # the series is there at zero, so Prometheus sees the reset
    assert e.post("/v1/logs", page_views(7)).status_code == 200
    seen(7)
    kill()  # its counts were never saved: the snapshot on disk is still the clean stop's

    e = process_factory(*args, **ports)
    assert "counted more after the state file" in e.log(), e.log()
    seen(0)  # 10 passes the 7 Prometheus last saw: without this 0 it would read +3
    assert e.post("/v1/logs", page_views(10)).status_code == 200
    seen(10)

    values = prom.samples(SERIES)
    assert values[0] == 1000
    assert values[0] + prometheus_increase(values) == 1000 + 500 + 7 + 10
    assert prom.latest(f"resets({SERIES}[10m])") == 2
