"""End to end with the real servers: apps send through the OpenTelemetry SDK to a
`kpi-exporter serve`, a real Prometheus scrapes it every second and evaluates the generated
recording and alert rules, a real Alertmanager routes the alerts to a webhook in this test.

Every query of every dashboard panel, with its variables filled from the variables' own
queries, must return data; traffic that breaks the AI error-rate threshold must reach the
webhook through Alertmanager. The week-over-week panels read `offset 1w`: a block of last
week's samples is backfilled with promtool before Prometheus starts.
"""

from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from mixin import layout, lint
from mixin.config import CONFIG
from tests.helpers import ROOT, ProcessExporter, eventually, free_port, wait_http
from tests.test_mixin_promtool import tool

pytestmark = pytest.mark.timeout(240)

MODEL = "gpt-e2e"
SERVICE = "e2e-shop"
# A second app calling the same model through an instrumentation that sends metric points
# (and spans); its calls must count once.
LLM_SERVICE = "e2e-assistant"
# The exporter prices MODEL from its config; calls through another provider stay unpriced.
PRICED_PROVIDER, UNPRICED_PROVIDER = "openai", "self-hosted"
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                   40.96, 81.92)
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864)
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
               5.0, 7.5, 10.0)
JOB = CONFIG.selector_labels()["job"]
# What Grafana would put for $__rate_interval with a 1s scrape interval and a short range.
RATE_INTERVAL = "30s"
# The dashboard's period ($__range) the web analytics totals cover, and compare with the one
# before: short enough for the stack's first minutes to hold two of them.
RANGE = "40s"
# Visits close after this much silence, so that the closed-visit panels fill.
SESSION_TIMEOUT = "3s"
UAS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
       "Chrome/131.0.0.0 Safari/537.36",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
       "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")
LANDINGS = (("https://www.google.com/", ""), ("", "utm_source=newsletter&utm_medium=email&"
                                                   "utm_campaign=spring"),
            ("https://news.ycombinator.com/", ""))
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# Alerts this test drives over the threshold; their for: is shortened to keep it quick.
ERROR_ALERTS = (f"{CONFIG.alert_prefix}AiModelErrorRateHigh",
                f"{CONFIG.alert_prefix}GenAiErrorRateHigh")
WEEK = 7 * 24 * 3600


# ---- pieces -------------------------------------------------------------------------------

class Webhook:
    """An Alertmanager webhook receiver: records every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def alerts(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver path, alert) for every notified alert of that name."""
        return [(path, a) for path, n in list(self.notifications) for a in n["alerts"]
                if a["labels"].get("alertname") == alertname]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server:
    """A server binary as a child process, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, cmd: list[str], ready_url: str, log: Path):
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url, timeout=30, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{cmd[0]} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Traffic:
    """An app sending events and GenAI spans through the OpenTelemetry SDK every 0.3s until
    stopped, and a second one calling the same model reported as GenAI metric points and
    spans. Healthy, the model reports a 1% error rate and no GenAI operation fails;
    ``broken``, the model reports 20% and two in three of the first app's operations fail."""

    otlp_url: str
    broken: bool = False
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        resource = Resource.create({"service.name": SERVICE})
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=self.otlp_url + "/v1/logs", timeout=5),
            schedule_delay_millis=200))
        self.traces = TracerProvider(resource=resource)
        self.traces.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=self.otlp_url + "/v1/traces", timeout=5),
            schedule_delay_millis=200))
        self.logger = self.logs.get_logger("e2e.app")
        self.tracer = self.traces.get_tracer("e2e.app")
        llm = Resource.create({"service.name": LLM_SERVICE})
        self.llm_traces = TracerProvider(resource=llm)
        self.llm_traces.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=self.otlp_url + "/v1/traces", timeout=5),
            schedule_delay_millis=200))
        self.llm_meters = MeterProvider(resource=llm, metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=self.otlp_url + "/v1/metrics", timeout=5),
                export_interval_millis=500)], views=[
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(bounds))
            for name, bounds in (("gen_ai.client.operation.duration", DURATION_BOUNDS),
                                 ("gen_ai.client.operation.time_per_output_chunk",
                                  DURATION_BOUNDS),
                                 ("gen_ai.client.token.usage", TOKEN_BOUNDS),
                                 ("gen_ai.server.time_to_first_token", TTFT_BOUNDS))])
        meter = self.llm_meters.get_meter("e2e.instrumentation")
        self.points = {name: meter.create_histogram(name, unit=unit) for name, unit in (
            ("gen_ai.client.operation.duration", "s"),
            ("gen_ai.client.token.usage", "{token}"),
            ("gen_ai.server.time_to_first_token", "s"),
            ("gen_ai.client.operation.time_per_output_chunk", "s"))}
        self.llm_tracer = self.llm_traces.get_tracer("e2e.instrumentation")
        self.random = random.Random(7)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def event(self, name: str, user: int, **attributes: Any) -> None:
        self.logger.emit(event_name=name, attributes={
            "user.id": f"user-{user}", "session.id": f"session-{user}-{self.rounds // 20}",
            "user_agent.original": UAS[user % 2], **attributes})

    def round(self) -> None:
        r = self.random
        for _ in range(4):
            user = r.randrange(40)
            referrer, query = LANDINGS[user % 3]
            route = r.choice(["/home", "/workouts/:id"])
            self.event("app.page_view", user, **{
                "url.path": route, "url.full": "https://fit.example.com" + route.replace(
                    ":id", "7") + ("?" + query if query else ""), "app.referrer": referrer,
                "geo.country.iso_code": ("DE", "US")[user % 2]})
            self.event("app.feature_used", user, **{"app.feature": r.choice(["search", "plan"]),
                                                     "app.action": r.choice(["open", "save"])})
        self.event("app.page_view", 99, **{"url.path": "/home", "user_agent.original": CRAWLER})
        # a visitor who leaves after one page: a bounce
        self.logger.emit(event_name="app.page_view", attributes={
            "session.id": f"bounce-{self.rounds}", "url.path": "/home",
            "user_agent.original": UAS[0]})
        user = r.randrange(40)
        self.event("app.conversion", user, **{"app.conversion.type": "subscribe",
                                               "app.conversion.value": 9.99,
                                               "app.conversion.currency": "EUR"})
        rec = f"rec-{self.rounds}"
        self.event("ai.recommendation.generated", user, **{
            "gen_ai.request.model": MODEL, "ai.recommendation.id": rec,
            "ai.recommendation.type": "workout",
            "ai.recommendation.confidence": r.uniform(0.3, 0.99)})
        self.event("ai.recommendation.response", user, **{
            "gen_ai.request.model": MODEL, "ai.recommendation.id": rec,
            "ai.recommendation.outcome": r.choice(["accepted", "accepted", "rejected", "modified"]),
            "ai.recommendation.response_time": r.uniform(0.5, 20)})
        self.event("ai.model.performance", user, **{
            "gen_ai.request.model": MODEL, "ai.model.accuracy": 0.9,
            "ai.model.latency": r.uniform(0.05, 1.5),
            "ai.model.error_rate": 0.2 if self.broken else 0.01})
        passed = r.random() < 0.8
        self.event("gen_ai.evaluation.result", user, **{
            "gen_ai.evaluation.name": "relevance",
            "gen_ai.evaluation.score.value": 0.9 if passed else 0.3,
            "gen_ai.evaluation.score.label": "pass" if passed else "fail"})
        if self.rounds % 10 == 0:
            # not a number: the exporter rejects it (non_numeric_value)
            self.event("ai.recommendation.generated", user, **{
                "gen_ai.request.model": MODEL, "ai.recommendation.confidence": "high"})
        for i in range(3):
            # broken: two in three fail; healthy: one call in 150 times out (well under the
            # error-rate threshold), reported as the class repr some instrumentations send
            failing = self.broken and i < 2 or i == 2 and self.rounds % 50 == 7
            with self.tracer.start_as_current_span("chat " + MODEL, attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": UNPRICED_PROVIDER if i == 2 else PRICED_PROVIDER,
                    "gen_ai.request.model": MODEL, "gen_ai.usage.input_tokens": r.randrange(50, 500),
                    "gen_ai.usage.cache_read.input_tokens": 20,
                    "gen_ai.usage.output_tokens": r.randrange(20, 300),
                    "gen_ai.response.finish_reasons": [r.choice(["stop", "stop", "length"])],
                    "gen_ai.response.time_to_first_chunk": r.uniform(0.05, 0.5),
                    "gen_ai.server.time_to_first_token": r.uniform(0.05, 0.5),
                    "gen_ai.server.time_per_output_token": r.uniform(0.01, 0.05),
                    "app.feature": r.choice(["search", "plan"])}) as span:
                if failing:
                    span.set_attribute("error.type", "<class 'httpx.ReadTimeout'>")
                    span.set_status(Status(StatusCode.ERROR))
        # the second app: every call as metric points, and a span
        point = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PRICED_PROVIDER,
                 "gen_ai.request.model": MODEL}
        self.points["gen_ai.client.operation.duration"].record(r.uniform(0.2, 2), point)
        for kind, n in (("input", r.randrange(50, 500)), ("output", r.randrange(20, 300))):
            self.points["gen_ai.client.token.usage"].record(
                n, {**point, "gen_ai.token.type": kind})
        self.points["gen_ai.server.time_to_first_token"].record(r.uniform(0.05, 0.5), point)
        self.points["gen_ai.client.operation.time_per_output_chunk"].record(
            r.uniform(0.01, 0.05), point)
        self.llm_tracer.start_span("chat " + MODEL, attributes={
            **point, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
            "app.feature": "assistant"}).end()
        with self.tracer.start_as_current_span("GET /home"):
            pass  # no rule maps plain HTTP spans: they count as unmatched
        self.rounds += 1

    def flush(self) -> None:
        self.logs.force_flush()
        self.traces.force_flush()
        self.llm_traces.force_flush()
        self.llm_meters.force_flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.flush()
        self.logs.shutdown()
        self.traces.shutdown()
        self.llm_traces.shutdown()
        self.llm_meters.shutdown()


@dataclass
class Stack:
    exporter: ProcessExporter
    traffic: Traffic
    prometheus_url: str
    alertmanager_url: str
    webhook: Webhook

    def query(self, expr: str, range_seconds: int | None = None) -> list[dict[str, Any]]:
        if range_seconds is None:
            r = requests.get(self.prometheus_url + "/api/v1/query", params={"query": expr},
                             timeout=10)
        else:
            end = time.time()
            r = requests.get(self.prometheus_url + "/api/v1/query_range", timeout=10, params={
                "query": expr, "start": end - range_seconds, "end": end, "step": 2})
        body = r.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params = {"match[]": selector} if selector else {}
        r = requests.get(f"{self.prometheus_url}/api/v1/label/{label}/values", params=params,
                         timeout=10)
        return sorted(r.json()["data"])

    def alerts(self) -> list[dict[str, Any]]:
        r = requests.get(self.prometheus_url + "/api/v1/alerts", timeout=10)
        return list(r.json()["data"]["alerts"])


# ---- configs derived from the generated ones ----------------------------------------------

def offset_metrics() -> set[str]:
    """Metrics the dashboards read a week back."""
    names = set()
    for p in (ROOT / layout.DASHBOARDS_DIR).glob("*.json"):
        for _, t in lint.panel_targets(json.loads(p.read_text())):
            names |= set(re.findall(r"([a-zA-Z_:][\w:]*)\{[^}]*\}\s*offset 1w", t["expr"]))
    return names


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def backfill_last_week(exporter: ProcessExporter, instance: str, data_dir: Path,
                       tmp: Path) -> int:
    """Writes today's values of the week-over-week metrics as samples one week ago (an hour
    around now - 1w, every 15s) into a TSDB block under ``data_dir``; returns the series."""
    wanted = offset_metrics()
    assert wanted, "the dashboards compare nothing with last week"
    now = time.time()
    lines = []
    series = 0
    for family in text_string_to_metric_families(exporter.scrape().text):
        for s in family.samples:
            if s.name not in wanted:
                continue
            labels = {**s.labels, "job": JOB, "instance": instance}
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            series += 1
            for t in range(int(now - WEEK - 1800), int(now - WEEK + 1800), 15):
                lines.append(f"{s.name}{{{body}}} {s.value} {t}")
    path = tmp / "last-week.om"
    path.write_text("\n".join(lines) + "\n# EOF\n")
    r = subprocess.run([tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(path),
                        str(data_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return series


def prometheus_config(tmp: Path, target: str, alertmanager: str) -> Path:
    """The shipped prometheus.yml with 1s intervals, loopback targets and a copy of the
    alerts whose error-rate alerts wait 2s instead of their for:."""
    alerts = yaml.safe_load((ROOT / layout.ALERT_RULES).read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in ERROR_ALERTS:
                rule["for"] = "2s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False))
    config = yaml.safe_load((ROOT / layout.PROMETHEUS_CONFIG).read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / layout.RECORDING_RULES), str(tmp / "alerts.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    job = config["scrape_configs"][0]
    assert job["job_name"] == JOB
    job.update(scrape_interval="1s", scrape_timeout="1s",
               static_configs=[{"targets": [target]}])
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alertmanager_config(tmp: Path, webhook: Webhook) -> Path:
    """The shipped alertmanager.yml with 1s grouping and the receivers pointed at the test's
    webhook (one path per receiver)."""
    config = yaml.safe_load((ROOT / layout.ALERTMANAGER_CONFIG).read_text())
    routes = [config["route"], *config["route"].get("routes", [])]
    for r in routes:
        r.update(group_wait="1s", group_interval="1s", repeat_interval="1m")
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_alertmanager(tmp: Path, config: Path) -> tuple[Server, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp / "am-data").mkdir()
    server = Server([tool("prometheus-alertmanager"), f"--config.file={config}",
                     f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
                     "--cluster.listen-address=", "--log.level=warn"],
                    url + "/-/ready", tmp / "alertmanager.log")
    return server, url


# ---- the stack ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("monitoring")
    prometheus_bin = tool("prometheus")
    webhook = Webhook()
    started: list[Any] = []
    try:
        (tmp / "exporter.yaml").write_text(
            f"state:\n  dir: {tmp / 'state'}\n  interval: 1s\n"
            f"genai:\n  prices:\n    - {{model: {MODEL}, provider: {PRICED_PROVIDER}, "
            f"input_per_mtok: 1.5, output_per_mtok: 6, cache_read_per_mtok: 0.5}}\n"
            f"windows:\n  session_timeout: {SESSION_TIMEOUT}\n"
            f"web_analytics:\n  campaign_label: true\n")
        exporter = ProcessExporter(["--config", str(tmp / "exporter.yaml")])
        started.append(exporter)
        traffic = Traffic(exporter.otlp_url)
        traffic.start()
        started.append(traffic)

        def ready() -> bool:
            s = exporter.scrape()
            return bool((s.value("app_active_users", window="5m") or 0) > 0
                        and s.matching("gen_ai_span_operation_duration_seconds_count")
                        and s.matching("gen_ai_client_operation_duration_seconds_count")
                        and s.matching("kpi_exporter_gen_ai_unpriced_tokens_total")
                        and s.matching("kpi_exporter_records_rejected_total"))
        assert eventually(ready, timeout=30), "the exporter did not see the SDK traffic"

        instance = f"127.0.0.1:{exporter.metrics_port}"
        data_dir = tmp / "prometheus-data"
        assert backfill_last_week(exporter, instance, data_dir, tmp) >= 5

        am, am_url = start_alertmanager(tmp, alertmanager_config(tmp, webhook))
        started.append(am)
        port = free_port()
        prom_url = f"http://127.0.0.1:{port}"
        config = prometheus_config(tmp, instance, am_url.removeprefix("http://"))
        prometheus = Server([prometheus_bin, f"--config.file={config}",
                             f"--storage.tsdb.path={data_dir}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            prom_url + "/-/ready", tmp / "prometheus.log")
        started.append(prometheus)
        yield Stack(exporter, traffic, prom_url, am_url, webhook)
    finally:
        for part in reversed(started):
            if isinstance(part, Server):
                part.stop()
            elif isinstance(part, Traffic):
                part.stop()
            else:
                part.close()
        webhook.close()


# ---- the tests ----------------------------------------------------------------------------

def test_window_gauges_and_state_saves_are_served(stack):
    s = stack.exporter.scrape()
    for metric in ("app_active_users", "app_sessions", "app_conversion_rate_ratio"):
        assert {dict(k)["window"] for k in s.matching(metric)} >= {"5m", "1h", "1d", "7d", "30d"}
    assert eventually(lambda: (stack.exporter.scrape().value(
        "kpi_exporter_state_saves_total", outcome="success") or 0) > 0, timeout=10)


def test_every_rule_evaluates_without_error(stack):
    def unhealthy() -> list[str] | None:
        r = requests.get(stack.prometheus_url + "/api/v1/rules", timeout=10).json()
        rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
        if len(rules) < 40:
            return None
        bad = [f"{rule['name']}: {rule['health']} {rule.get('lastError', '')}" for rule in rules
               if rule["health"] != "ok"]
        return bad or []
    bad = None
    deadline = time.monotonic() + 30
    while (bad is None or bad) and time.monotonic() < deadline:
        bad = unhealthy()
        time.sleep(1)
    assert bad == [], bad


def _fill_variables(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str] | None:
    """Each query variable's first value, from its own label_values() query; None while a
    variable has no values yet."""
    values: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]
        for k, v in values.items():
            query = query.replace(f"${k}", v)
        m = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", query)
        assert m, f"{dashboard['title']}: cannot read variable {var['name']}: {query}"
        options = stack.label_values(m.group(2), m.group(1))
        if not options:
            return None
        values[var["name"]] = options[0]
    return values


def _has_data(result: list[dict[str, Any]]) -> bool:
    for series in result:
        points = series.get("values") or [series.get("value")]
        if any(p and not math.isnan(float(p[1])) for p in points):
            return True
    return False


def test_every_dashboard_query_returns_data(stack):
    dashboards = {p.name: json.loads(p.read_text())
                  for p in sorted((ROOT / layout.DASHBOARDS_DIR).glob("*.json"))}
    queries = []
    for name, d in dashboards.items():
        values = eventually(lambda d=d: _fill_variables(stack, d), timeout=30)
        assert values, f"{name}: a variable has no values"
        assert values.get("job") == JOB
        if "model" in values:
            assert values["model"] == MODEL
        for panel, target in lint.panel_targets(d):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            expr = expr.replace("$__range", RANGE)
            for k, v in values.items():
                expr = expr.replace(f"${k}", v)
            assert "$" not in expr, f"{name} / {panel['title']}: unfilled variable in {expr}"
            queries.append((f"{name} / {panel['title']}", expr, target.get("instant", False)))
    assert len(queries) >= 60

    def empty() -> list[str]:
        return [f"{where}: {expr}" for where, expr, instant in queries
                if not _has_data(stack.query(expr, None if instant else 20))]
    # recording rules and rate windows need a few evaluations and scrapes to fill
    missing = empty()
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    assert missing == [], "panels without data:\n" + "\n".join(missing)


def test_ai_error_rate_alerts_reach_the_webhook(stack):
    model_rate = f'job_model:ai_model_error_rate:ratio{{job="{JOB}", model="{MODEL}"}}'
    assert eventually(lambda: stack.query(model_rate), timeout=30), "rules never evaluated"
    time.sleep(3)  # several evaluations of the alerts on healthy traffic
    firing = {a["labels"]["alertname"] for a in stack.alerts()}
    assert not firing & set(ERROR_ALERTS)
    assert all(not stack.webhook.alerts(a) for a in ERROR_ALERTS)

    stack.traffic.broken = True
    for alertname in ERROR_ALERTS:
        got = eventually(lambda a=alertname: stack.webhook.alerts(a), timeout=60)
        assert got, f"{alertname} did not reach the webhook; Prometheus alerts: {stack.alerts()}"
        path, alert = got[0]
        assert path == "/kpi-ticket"  # severity warning routes to the ticket receiver
        assert alert["status"] == "firing"
        assert alert["labels"]["model"] == MODEL and alert["labels"]["job"] == JOB
        assert alert["annotations"]["runbook_url"].endswith(f"#{alertname.lower()}")
        assert MODEL in alert["annotations"]["description"]


def test_alertmanager_inhibits_data_alerts_while_the_exporter_is_down(tmp_path):
    webhook = Webhook()
    am = None
    try:
        am, url = start_alertmanager(tmp_path, alertmanager_config(tmp_path, webhook))
        p = CONFIG.alert_prefix

        def alert(name: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, **labels},
                    "annotations": {"summary": name}, "generatorURL": "http://127.0.0.1/"}
        sent = [
            alert(f"{p}ExporterDown", job=JOB, instance="a:9464", severity="critical",
                  component="exporter"),
            alert(f"{p}AiModelErrorRateHigh", job=JOB, model="m-1", severity="warning",
                  component="data"),
            alert(f"{p}AiModelErrorRateHigh", job="other-exporter", model="m-1",
                  severity="warning", component="data"),
            alert(f"{p}AiLatencyErrorBudgetBurn", job="other-exporter", model="m-1",
                  severity="critical", component="data", long="1h", short="5m"),
            alert(f"{p}AiLatencyErrorBudgetBurn", job="other-exporter", model="m-1",
                  severity="warning", component="data", long="1d", short="2h"),
        ]
        r = requests.post(url + "/api/v2/alerts", json=sent, timeout=10)
        assert r.status_code == 200, r.text

        def states() -> dict[tuple[str, str, str], str]:
            got = requests.get(url + "/api/v2/alerts", timeout=10).json()
            return {(a["labels"]["alertname"], a["labels"]["job"], a["labels"]["severity"]):
                    a["status"]["state"] for a in got}
        want = {
            (f"{p}ExporterDown", JOB, "critical"): "active",
            (f"{p}AiModelErrorRateHigh", JOB, "warning"): "suppressed",
            (f"{p}AiModelErrorRateHigh", "other-exporter", "warning"): "active",
            (f"{p}AiLatencyErrorBudgetBurn", "other-exporter", "critical"): "active",
            (f"{p}AiLatencyErrorBudgetBurn", "other-exporter", "warning"): "suppressed",
        }
        assert eventually(lambda: states() == want, timeout=15), states()

        delivered = eventually(lambda: len(webhook.alerts(f"{p}AiModelErrorRateHigh")) >= 1
                               and webhook.alerts(f"{p}ExporterDown"), timeout=15)
        assert delivered
        time.sleep(2)  # several group intervals: an inhibited alert would have been sent
        jobs = {a["labels"]["job"] for _, a in webhook.alerts(f"{p}AiModelErrorRateHigh")}
        assert jobs == {"other-exporter"}
        assert [path for path, _ in webhook.alerts(f"{p}ExporterDown")][0] == "/kpi-page"
    finally:
        if am is not None:
            am.stop()
        webhook.close()


def test_genai_calls_are_counted_from_one_source_per_service(stack):
    rule = f'job_service_model:gen_ai_client_operations:rate5m{{job="{JOB}", model="{MODEL}"}}'

    def sources() -> dict[str, str]:
        return {r["metric"]["service_name"]: r["metric"]["source"] for r in stack.query(rule)}
    got = eventually(lambda: sources() if len(sources()) == 2 else None, timeout=30)
    assert got == {SERVICE: "spans", LLM_SERVICE: "metrics"}
    # the class repr some instrumentations send arrives as a bounded error type
    name = "gen_ai_span_operation_duration_seconds_count"
    assert eventually(lambda: stack.exporter.scrape().matching(name, error_type="ReadTimeout"),
                      timeout=30)
    assert not any("<class" in dict(k)["error_type"]
                   for k in stack.exporter.scrape().matching(name))
