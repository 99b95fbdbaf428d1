"""A real Prometheus (the Debian package's binary, on a free loopback port with its own data
directory) scrapes a `kpi-exporter serve` over HTTPS with basic auth, from the shipped
prometheus.yml with exemplar storage on, while an app sends GenAI spans over OTLP/gRPC with
TLS: Prometheus' /api/v1/query_exemplars answers with the trace ids of the spans sent. A job
with a wrong password is refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import bcrypt
import grpc
import pytest
import requests
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from mixin import layout
from tests.certs import CA
from tests.helpers import ROOT, ProcessExporter, eventually, free_port
from tests.test_e2e_monitoring import Server
from tests.test_mixin_promtool import tool

pytestmark = pytest.mark.timeout(240)

PASSWORD = "scrape-password-0123"
HISTOGRAM = "gen_ai_span_operation_duration_seconds_bucket"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prometheus-tls")
    pki = CA(tmp / "pki")
    pki.server()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    (tmp / "web.yml").write_text(
        "tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    started: list[Any] = []
    try:
        exporter = ProcessExporter(
            ["--web.config.file", str(tmp / "web.yml"), "--state-dir", str(tmp / "state")],
            scheme="https", verify=str(pki.ca_file), auth=("prometheus", PASSWORD))
        started.append(exporter)

        (tmp / "password").write_text(PASSWORD + "\n")
        (tmp / "wrong").write_text("not-the-password\n")
        config = yaml.safe_load((ROOT / layout.PROMETHEUS_CONFIG).read_text())
        assert config["storage"]["exemplars"]["max_exemplars"] > 0
        config["global"].update(scrape_interval="1s", scrape_timeout="1s")
        config["rule_files"] = []
        config.pop("alerting")
        job = config["scrape_configs"][0]
        target = f"127.0.0.1:{exporter.metrics_port}"
        secured = {"scheme": "https", "tls_config": {"ca_file": str(pki.ca_file)},
                   "static_configs": [{"targets": [target]}], "scrape_interval": "1s",
                   "scrape_timeout": "1s"}
        job.update(secured, basic_auth={"username": "prometheus",
                                        "password_file": str(tmp / "password")})
        config["scrape_configs"].append({"job_name": "wrong-password", **secured,
                                         "basic_auth": {"username": "prometheus",
                                                        "password_file": str(tmp / "wrong")}})
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        prometheus = Server([tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--enable-feature=exemplar-storage", "--log.level=warn"],
                            url + "/-/ready", tmp / "prometheus.log")
        started.append(prometheus)
        yield {"exporter": exporter, "prometheus": url, "pki": pki, "job": job["job_name"]}
    finally:
        for part in reversed(started):
            if isinstance(part, Server):
                part.stop()
            else:
                part.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    r = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return list(r["data"]["result"])


def test_prometheus_scrapes_over_https_with_basic_auth(stack):
    url = stack["prometheus"]

    def targets() -> dict[str, dict[str, Any]] | None:
        active = requests.get(url + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        by_job = {t["labels"]["job"]: t for t in active}
        return by_job if all(t["health"] != "unknown" for t in by_job.values()) else None

    by_job = eventually(targets, timeout=30)
    assert by_job, "Prometheus did not scrape yet"
    good, bad = by_job[stack["job"]], by_job["wrong-password"]
    assert good["health"] == "up" and good["scrapeUrl"].startswith("https://"), good
    assert bad["health"] == "down" and "401" in bad["lastError"], bad
    assert query(url, f'kpi_exporter_build_info{{job="{stack["job"]}"}}')
    assert eventually(lambda: (stack["exporter"].scrape().value(
        "kpi_exporter_http_requests_denied_total", reason="unauthorized") or 0) > 0, timeout=10)


def test_query_exemplars_returns_the_trace_ids_of_the_spans_sent(stack):
    exporter, url = stack["exporter"], stack["prometheus"]
    tp = TracerProvider(resource=Resource.create({"service.name": "e2e-llm"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"localhost:{exporter.grpc_port}", timeout=10,
        credentials=grpc.ssl_channel_credentials(stack["pki"].ca_file.read_bytes()))))
    tracer = tp.get_tracer("llm")
    sent: set[str] = set()
    deadline = time.monotonic() + 60

    def exemplar_ids() -> set[str]:
        r = requests.get(url + "/api/v1/query_exemplars", timeout=10, params={
            "query": f'{HISTOGRAM}{{gen_ai_request_model="e2e-model"}}',
            "start": time.time() - 600, "end": time.time() + 60}).json()
        assert r["status"] == "success", r
        return {e["labels"]["trace_id"] for s in r["data"] for e in s["exemplars"]}

    # one span a second, each in its own trace, until Prometheus has scraped a few of them
    found: set[str] = set()
    while time.monotonic() < deadline and len(found) < 3:
        with tracer.start_as_current_span("chat e2e-model", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "e2e-model"}) as span:
            sent.add(f"{span.get_span_context().trace_id:032x}")
        time.sleep(1.0)
        found = exemplar_ids()
    tp.shutdown()
    assert len(found) >= 3, (found, sent)
    assert found <= sent, found - sent
    # the exemplars also answer the latency panel's own query
    r = requests.get(url + "/api/v1/query_exemplars", timeout=10, params={
        "query": f"histogram_quantile(0.5, sum by (gen_ai_request_model, le) "
                 f"(rate({HISTOGRAM}[30s])))",
        "start": time.time() - 600, "end": time.time() + 60}).json()
    assert {e["labels"]["trace_id"] for s in r["data"] for e in s["exemplars"]} & sent
