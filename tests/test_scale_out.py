"""Scale-out for real: three `kpi-exporter serve` processes share a Redis window store behind
nginx, which spreads the export requests round robin, request by request, so every user's
events reach several replicas. An app sends through the OpenTelemetry SDK to nginx; a real
Prometheus scrapes all three and evaluates the shipped alerts.

Checked as Prometheus reads it: the window KPIs from `max by (window)` within the sketch error
of the ground truth, the counters from `sum` exact; a replica killed with SIGKILL and
restarted changes neither; Redis killed and restarted from its append-only file brings the
windows back as they were; Redis stopped leaves the counters served, the window gauges out,
the drops counted and the store-down alert firing, and the exporters recover once it is back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mixin import layout
from mixin.config import CONFIG
from exporter.windows.config import REDIS_ERROR_BOUND
from tests.helpers import ProcessExporter, eventually, free_port, wait_http
from tests.redis_server import RedisServer
from tests.test_e2e_monitoring import Server
from tests.test_mixin_promtool import tool

pytestmark = pytest.mark.timeout(300)

JOB = CONFIG.selector_labels()["job"]
STORE_DOWN = f"{CONFIG.alert_prefix}ExporterWindowStoreDown"
SALT = "scale-out-test-salt-0123456789abcdef"
USERS = 600
PLATFORMS = ("ios", "android", "web")
BUFFER = 2000  # windows.redis_buffer of each replica
REPLICAS = 3


def nginx_binary() -> str:
    for path in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if Path(path).exists():
            return path
    pytest.fail("nginx is not installed: run scripts/install-system-deps.sh (Debian package "
                "nginx)")


class Nginx:
    """nginx as a plain round-robin HTTP load balancer in front of ``upstreams``, with its
    own prefix directory; every request's upstream is logged."""

    def __init__(self, tmp: Path, upstreams: list[int]):
        tmp.mkdir()
        self.port = free_port()
        self.access_log = tmp / "access.log"
        servers = "".join(f"    server 127.0.0.1:{p} max_fails=0;\n" for p in upstreams)
        # as root, the workers would otherwise run as nobody and could not use the prefix
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
  log_format upstream '$request_uri $status $upstream_addr';
  access_log {self.access_log} upstream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size 64m;
  upstream exporters {{
{servers}    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://exporters;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
    }}
  }}
}}
""")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "error.log"
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e",
             str(tmp / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.log_path.read_text()}")
            try:
                requests.get(self.url + "/-/healthy", timeout=1)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def upstreams_of(self, path_prefix: str) -> dict[str, int]:
        """Requests under ``path_prefix`` answered 200, per upstream address."""
        counts: dict[str, int] = {}
        for line in self.access_log.read_text().splitlines():
            uri, status, upstream = line.split(" ", 2)
            if uri.startswith(path_prefix) and status == "200":
                counts[upstream] = counts.get(upstream, 0) + 1
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class App:
    """An app instrumented with the OpenTelemetry SDK, exporting to the load balancer in
    many small requests."""

    def __init__(self, url: str):
        resource = Resource.create({"service.name": "scale-shop"})
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=url + "/v1/logs", timeout=10),
            schedule_delay_millis=50, max_export_batch_size=40))
        self.traces = TracerProvider(resource=resource)
        self.traces.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=10),
            schedule_delay_millis=50, max_export_batch_size=20))
        self.logger = self.logs.get_logger("scale.app")
        self.tracer = self.traces.get_tracer("scale.app")
        self.page_views = self.conversions = self.spans = 0

    def page_view(self, user: str, session: str, platform: str) -> None:
        self.logger.emit(event_name="app.page_view", attributes={
            "user.id": user, "session.id": session, "url.path": "/workouts/:id",
            "app.platform": platform})
        self.page_views += 1

    def conversion(self, user: str, session: str, platform: str) -> None:
        self.logger.emit(event_name="app.conversion", attributes={
            "user.id": user, "session.id": session, "app.conversion.type": "subscribe",
            "app.platform": platform})
        self.conversions += 1

    def llm_call(self) -> None:
        with self.tracer.start_as_current_span("chat m", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "m"}):
            self.spans += 1

    def flush(self) -> None:
        assert self.logs.force_flush(30_000)
        assert self.traces.force_flush(30_000)

    def close(self) -> None:
        self.logs.shutdown()
        self.traces.shutdown()


@dataclass
class Cluster:
    tmp: Path
    redis: RedisServer
    replicas: list[ProcessExporter]
    configs: list[Path]
    nginx: Nginx
    prometheus_url: str
    app: App

    def restart(self, i: int) -> None:
        old = self.replicas[i]
        self.replicas[i] = ProcessExporter(
            ["--config", str(self.configs[i]), "--windows-store", self.redis.url],
            env={"KPI_EXPORTER_SALT": SALT}, otlp_port=old.otlp_port,
            metrics_port=old.metrics_port)

    def query(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        r = requests.get(self.prometheus_url + "/api/v1/query", params={"query": expr},
                         timeout=10).json()
        assert r["status"] == "success", r
        return {frozenset(s["metric"].items()): float(s["value"][1])
                for s in r["data"]["result"]}

    def scalar(self, expr: str) -> float | None:
        got = self.query(expr)
        return next(iter(got.values())) if len(got) == 1 else None

    def by_window(self, metric: str) -> dict[str, float]:
        return {dict(k)["window"]: v
                for k, v in self.query(f'max by (window) ({metric}{{job="{JOB}"}})').items()}

    def firing(self) -> set[str]:
        r = requests.get(self.prometheus_url + "/api/v1/alerts", timeout=10).json()
        return {a["labels"]["alertname"] for a in r["data"]["alerts"] if a["state"] == "firing"}


def prometheus_config(tmp: Path, targets: list[str]) -> Path:
    alerts = yaml.safe_load((Path(__file__).parent.parent / layout.ALERT_RULES).read_text())
    found = False
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == STORE_DOWN:
                rule["for"] = "1s"
                found = True
    assert found, f"the shipped alerts have no {STORE_DOWN}"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "alerts.yml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scale-out")
    started: list[Any] = []
    try:
        store = RedisServer(tmp / "redis", aof=True)
        started.append(store)
        replicas, configs = [], []
        for i in range(REPLICAS):
            config = tmp / f"exporter-{i}.yaml"
            config.write_text(yaml.safe_dump({
                "state": {"dir": str(tmp / f"state-{i}"), "interval": "1s"},
                "windows": {"redis_prefix": "scale:", "redis_buffer": BUFFER,
                            "breakdowns": [{"attribute": "app.platform", "label": "platform",
                                            "max_values": 5, "windows": ["1h", "1d"]}]},
            }))
            configs.append(config)
            e = ProcessExporter(["--config", str(config), "--windows-store", store.url],
                                env={"KPI_EXPORTER_SALT": SALT})
            replicas.append(e)
            started.append(e)
        nginx = Nginx(tmp / "nginx", [e.otlp_port for e in replicas])
        started.append(nginx)
        (tmp / "prometheus-data").mkdir()
        port = free_port()
        prometheus = Server(
            [tool("prometheus"), f"--config.file={prometheus_config(tmp, [f'127.0.0.1:{e.metrics_port}' for e in replicas])}",
             f"--storage.tsdb.path={tmp / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            f"http://127.0.0.1:{port}/-/ready", tmp / "prometheus.log")
        started.append(prometheus)
        app = App(nginx.url)
        c = Cluster(tmp, store, replicas, configs, nginx, f"http://127.0.0.1:{port}", app)
        try:
            yield c
        finally:
            app.close()
            started += [e for e in c.replicas if e not in started]
    finally:
        for part in reversed(started):
            if isinstance(part, ProcessExporter):
                part.close()
            else:
                part.stop()


def send_sessions(app: App) -> None:
    """USERS users, two sessions each of three page views, one in five converting in its
    second session. Sent in rounds, each flushed, so that each user's events go out in
    several requests and reach several replicas."""
    for rnd in range(6):
        session = rnd // 3
        for u in range(USERS):
            user, platform = f"user-{u}", PLATFORMS[u % 3]
            app.page_view(user, f"session-{u}-{session}", platform)
            if session == 1 and rnd == 5 and u % 5 == 0:
                app.conversion(user, f"session-{u}-{session}", platform)
        for _ in range(10):
            app.llm_call()
        app.flush()


def within(value: float | None, exact: float, bound: float = REDIS_ERROR_BOUND) -> bool:
    return value is not None and abs(value - exact) <= exact * bound


def windows_settled(c: Cluster, users: float, sessions: float | None = None) -> bool:
    got = c.by_window("app_active_users")
    if set(got) != {"5m", "1h", "1d", "7d", "30d"} or not all(
            within(v, users) for v in got.values()):
        return False
    if sessions is not None and not all(within(v, sessions)
                                        for v in c.by_window("app_sessions").values()):
        return False
    # every replica reads the same global figure
    spread = c.query(f'max by (window) (app_active_users{{job="{JOB}"}}) - min by (window) '
                     f'(app_active_users{{job="{JOB}"}})')
    count = c.query(f'count by (window) (app_active_users{{job="{JOB}"}})')
    return all(v == 0 for v in spread.values()) and all(v == REPLICAS for v in count.values())


def test_replicas_behind_a_load_balancer_report_global_windows_and_exact_counters(cluster):
    c = cluster
    send_sessions(c.app)
    sessions = 2 * USERS
    assert eventually(lambda: windows_settled(c, USERS, sessions), timeout=60), (
        c.by_window("app_active_users"), c.by_window("app_sessions"))
    # counters add up over the replicas, exactly
    assert eventually(lambda: c.scalar(f'sum(app_page_views_total{{job="{JOB}"}})')
                      == c.app.page_views, timeout=20)
    assert c.scalar(f'sum(app_conversions_total{{job="{JOB}"}})') == c.app.conversions
    assert c.scalar(f'sum(gen_ai_span_operation_duration_seconds_count{{job="{JOB}"}})') \
        == c.app.spans
    assert c.scalar(f'sum(kpi_exporter_records_received_total{{job="{JOB}", signal="log"}})') \
        == c.app.page_views + c.app.conversions
    # the load balancer spread the requests over every replica: each saw part of the users
    spread = c.nginx.upstreams_of("/v1/logs")
    assert len(spread) == REPLICAS and min(spread.values()) >= 10, spread
    received = c.query(f'kpi_exporter_records_received_total{{job="{JOB}", signal="log"}}')
    assert len(received) == REPLICAS and all(v < c.app.page_views for v in received.values())
    # summing a global gauge over replicas counts everyone three times: max is the answer
    summed = c.scalar(f'sum(app_active_users{{job="{JOB}", window="1h"}})')
    assert within(summed, REPLICAS * USERS)
    true_rate = (USERS // 5) / sessions

    def rates_settled() -> bool:
        rate = c.by_window("app_conversion_rate_ratio")
        return len(rate) == 5 and all(abs(v - true_rate) <= true_rate * 2 * REDIS_ERROR_BOUND
                                      for v in rate.values())
    assert eventually(rates_settled, timeout=20), c.by_window("app_conversion_rate_ratio")
    split = {(dict(k)["window"], dict(k)["platform"]): v for k, v in c.query(
        f'max by (window, platform) (app_active_users_by_platform{{job="{JOB}"}})').items()}
    assert set(split) == {(w, p) for w in ("1h", "1d") for p in PLATFORMS}
    assert all(within(v, USERS / 3) for v in split.values()), split
    assert STORE_DOWN not in c.firing()
    assert c.scalar(f'sum(kpi_exporter_window_records_dropped_total{{job="{JOB}"}})') == 0


def test_a_replica_killed_with_sigkill_changes_no_kpi(cluster):
    c = cluster
    before = c.by_window("app_active_users")
    views = c.app.page_views
    victim = c.replicas[1]
    # its state file was written after the last event it counted
    last_event = time.time()
    assert eventually(lambda: (victim.scrape().value("kpi_exporter_state_last_save_timestamp_seconds")
                               or 0) > last_event, timeout=10)
    victim.proc.kill()
    victim.proc.wait()
    assert eventually(lambda: c.scalar(f'count(up{{job="{JOB}"}} == 0)') == 1, timeout=15)
    assert c.by_window("app_active_users") == before  # the others read the same store
    c.restart(1)
    assert eventually(lambda: c.scalar(f'count(up{{job="{JOB}"}} == 1)') == REPLICAS,
                      timeout=15)
    assert eventually(lambda: windows_settled(c, USERS), timeout=30)
    assert c.by_window("app_active_users") == before
    # the counters came back from its state: no reset, nothing lost
    assert eventually(lambda: c.scalar(
        f'count(app_page_views_total{{job="{JOB}"}})') == REPLICAS, timeout=15)
    assert c.scalar(f'sum(app_page_views_total{{job="{JOB}"}})') == views
    assert c.scalar(f'sum(resets(app_page_views_total{{job="{JOB}"}}[5m]))') == 0


def test_redis_killed_and_restarted_from_its_append_only_file_keeps_the_windows(cluster):
    c = cluster
    before = [e.scrape().matching("app_active_users") for e in c.replicas]
    assert all(len(b) == 5 for b in before)
    c.redis.kill()
    c.redis.start()
    # every replica reconnects and reads what the append-only file kept
    assert eventually(lambda: [e.scrape().matching("app_active_users")
                               for e in c.replicas] == before, timeout=30)


def test_with_redis_stopped_counters_are_served_windows_left_out_drops_counted(cluster):
    c = cluster
    views_before = c.scalar(f'sum(app_page_views_total{{job="{JOB}"}})')
    # (a replica restarted since has counted no record yet: its self-metrics start afresh)
    received_before = [e.scrape().value("kpi_exporter_records_received_total", signal="log")
                       or 0 for e in c.replicas]
    for e in c.replicas:
        s = e.scrape()
        assert s.value("kpi_exporter_window_records_dropped_total",
                       reason="store_unavailable") == 0
        assert s.value("kpi_exporter_window_store_buffered_events") == 0
    c.redis.stop()
    assert eventually(lambda: all(e.scrape().value("kpi_exporter_window_store_up") == 0
                                  for e in c.replicas), timeout=20)
    for e in c.replicas:
        s = e.scrape()
        assert not s.matching("app_active_users") and not s.matching("app_sessions")
        assert s.matching("app_page_views_total")
    assert eventually(lambda: STORE_DOWN in c.firing(), timeout=20)

    # new users while the store is away: each replica holds BUFFER events, drops the rest
    newcomers = REPLICAS * BUFFER * 3 // 2
    for u in range(newcomers):
        c.app.page_view(f"newcomer-{u}", f"newcomer-session-{u}", "web")
        if u % 500 == 499:
            c.app.flush()  # the SDK's own queue holds 2048 records
    c.app.flush()
    got = [e.scrape() for e in c.replicas]
    arrived = [s.value("kpi_exporter_records_received_total", signal="log") - r
               for s, r in zip(got, received_before)]
    assert sum(arrived) == newcomers
    dropped = [s.value("kpi_exporter_window_records_dropped_total", reason="store_unavailable")
               for s in got]
    assert dropped == [max(0, a - BUFFER) for a in arrived], (arrived, dropped)
    assert [s.value("kpi_exporter_window_store_buffered_events") for s in got] == [
        min(a, BUFFER) for a in arrived]
    # the counters count every event, store or no store
    assert eventually(lambda: c.scalar(f'sum(app_page_views_total{{job="{JOB}"}})')
                      == views_before + newcomers, timeout=15)

    # the store comes back: no restart, the buffers are sent, the gauges return
    c.redis.start()
    buffered = sum(min(a, BUFFER) for a in arrived)
    assert eventually(lambda: all(e.scrape().value("kpi_exporter_window_store_up") == 1
                                  for e in c.replicas), timeout=30)
    assert eventually(lambda: windows_settled(c, USERS + buffered), timeout=30), \
        c.by_window("app_active_users")
    assert all(e.scrape().value("kpi_exporter_window_store_buffered_events") == 0
               for e in c.replicas)
    assert eventually(lambda: STORE_DOWN not in c.firing(), timeout=20)


def test_events_hours_late_count_at_once_on_every_replica(cluster):
    # every scrape reads a window's older buckets through one merged key (Prometheus scrapes
    # each replica every second, so they are built): events four hours late, spread by the
    # load balancer over the replicas, are merged into them by whichever replica takes them
    # and count in the 1d window at once, on every replica, where its buckets turn only
    # every 30 minutes
    c = cluster
    # the figures before, once Prometheus has scraped every window (also when this test runs
    # first, on a cluster that has had no traffic yet)
    assert eventually(lambda: set(c.by_window("app_active_users")) >= {"1h", "1d", "7d", "30d"},
                      timeout=30), c.by_window("app_active_users")
    before = c.by_window("app_active_users")
    late, stamp = 1000, time.time_ns() - 4 * 3600 * 10**9
    for u in range(late):
        c.app.logger.emit(event_name="app.page_view", timestamp=stamp, attributes={
            "user.id": f"late-user-{u}", "session.id": f"late-session-{u}",
            "url.path": "/workouts/:id", "app.platform": "web"})
        c.app.page_views += 1
        if u % 500 == 499:
            c.app.flush()
    c.app.flush()

    def settled() -> bool:
        got = c.by_window("app_active_users")
        spread = c.query(f'max by (window) (app_active_users{{job="{JOB}"}}) - min by '
                         f'(window) (app_active_users{{job="{JOB}"}})')
        return (within(got.get("1h"), before["1h"])
                and all(within(got.get(w), before[w] + late) for w in ("1d", "7d", "30d"))
                and all(v == 0 for v in spread.values()))
    assert eventually(settled, timeout=30), (before, c.by_window("app_active_users"))
    # none of them too old for a window: each replica took its share
    assert c.scalar(f'sum(kpi_exporter_window_records_dropped_total{{job="{JOB}", '
                    f'reason="too_old"}})') == 0


def test_processes_with_reuse_port_share_one_otlp_port(tmp_path: Path):
    store = RedisServer(tmp_path / "redis")
    otlp, otlp_grpc = free_port(), free_port()
    started: list[ProcessExporter] = []
    try:
        for i in range(2):
            config = tmp_path / f"p{i}.yaml"
            config.write_text(yaml.safe_dump({"state": {"dir": str(tmp_path / f"state-{i}")}}))
            started.append(ProcessExporter(
                ["--config", str(config), "--reuse-port", "--windows-store", store.url],
                env={"KPI_EXPORTER_SALT": SALT}, otlp_port=otlp, grpc_port=otlp_grpc))
        # without --reuse-port either address is taken
        config = tmp_path / "third.yaml"
        config.write_text(yaml.safe_dump({"state": {"dir": str(tmp_path / "state-3")}}))
        with pytest.raises(RuntimeError, match="cannot listen"):
            started.append(ProcessExporter(["--config", str(config)], otlp_port=otlp))
        with pytest.raises(RuntimeError, match="cannot listen for OTLP/gRPC"):
            started.append(ProcessExporter(["--config", str(config)], grpc_port=otlp_grpc))
        # gRPC connections are spread over both processes too (one channel, one connection)
        for _ in range(20):
            provider = LoggerProvider(resource=Resource.create({"service.name": "grpc-shop"}))
            provider.add_log_record_processor(SimpleLogRecordProcessor(GrpcLogExporter(
                endpoint=f"127.0.0.1:{otlp_grpc}", insecure=True, timeout=10)))
            provider.get_logger("app").emit(event_name="app.page_view",
                                            attributes={"url.path": "/grpc"})
            provider.shutdown()
        over_grpc = [e.scrape().value("app_page_views_total", route="/grpc",
                                      service_name="grpc-shop") or 0 for e in started[:2]]
        assert sum(over_grpc) == 20 and min(over_grpc) > 0, over_grpc
        # new connections are spread over both processes by the kernel (an SDK keeps its
        # connection alive: one app per ten users)
        for first in range(0, 200, 10):
            app = App(f"http://127.0.0.1:{otlp}")
            try:
                for u in range(first, first + 10):
                    app.page_view(f"u{u}", f"s{u}", "web")
                app.flush()
            finally:
                app.close()
        got = [e.scrape().value("app_page_views_total", route="/workouts/:id",
                                service_name="scale-shop") or 0 for e in started[:2]]
        assert sum(got) == 200 and min(got) > 0, got
        # and both report the same users, from the store they share
        assert eventually(lambda: len({e.scrape().value("app_active_users", window="5m")
                                       for e in started[:2]}) == 1
                          and started[0].scrape().value("app_active_users", window="5m")
                          == pytest.approx(200, rel=REDIS_ERROR_BOUND), timeout=20)
    finally:
        for e in started:
            e.close()
        store.stop()
