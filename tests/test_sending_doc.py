"""docs/sending.md as an app would follow it: the environment variables it gives, and nothing
else, make the real OpenTelemetry Python SDK's auto-configuration send events to the
exporter; and what the page says of the protocol default is what that SDK does."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import ROOT, InProcessExporter

DOC = ROOT / "docs" / "sending.md"

# The app: the SDK's own auto-configuration (what opentelemetry-instrument runs), then one
# event through the global logger provider.
APP = """
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

_OTelSDKConfigurator().configure()
provider = get_logger_provider()
provider.get_logger("my-app").emit(event_name="app.page_view",
                                   attributes={"url.path": "/from-env/:id"})
provider.force_flush(5000)
provider.shutdown()
"""


def _doc_variables() -> dict[str, str]:
    """The `export NAME=value` lines of the page's per-signal example."""
    pairs = re.findall(r"^export (OTEL_\w+)=(\S+)", DOC.read_text(), re.M)
    assert pairs, "docs/sending.md has no 'export OTEL_...' example"
    return dict(pairs)


def _run_app(variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # The app's own traces and metrics "stay what they were": here, nowhere.
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none",
               OTEL_SERVICE_NAME="from-env", **variables)
    return subprocess.run([sys.executable, "-c", APP], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _page_views(exporter: InProcessExporter) -> float | None:
    return exporter.scrape().value("app_page_views_total", route="/from-env/:id",
                                   service_name="from-env")


def test_the_documented_variables_deliver_an_event(exporter: InProcessExporter):
    variables = _doc_variables()
    assert set(variables) == {"OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                              "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"}
    endpoint = variables["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    assert endpoint == "http://kpi-exporter:4318/v1/logs"
    variables["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = endpoint.replace(
        "http://kpi-exporter:4318", exporter.otlp_url)
    r = _run_app(variables)
    assert r.returncode == 0, r.stderr
    assert _page_views(exporter) == 1, r.stderr


def test_without_the_protocol_python_builds_the_grpc_exporter(exporter: InProcessExporter):
    # The page tells Python users not to leave the protocol out: the SDK then picks gRPC and
    # every export to the HTTP port fails. That is what the real SDK does.
    variables = _doc_variables()
    del variables["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"]
    variables["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = f"{exporter.otlp_url}/v1/logs"
    # A short export timeout, so the gRPC exporter's retries give up soon (seconds in this
    # SDK, milliseconds in the specification: short either way).
    variables["OTEL_EXPORTER_OTLP_LOGS_TIMEOUT"] = "3"
    r = _run_app(variables)
    assert _page_views(exporter) is None, r.stderr
    assert "StatusCode." in r.stderr, r.stderr  # the gRPC exporter's failure, in the app's log
    text = " ".join(DOC.read_text().split())
    assert "Python's auto-configuration, .NET and the Collector's `otlp` exporter default to gRPC" in text
    assert "Do not leave the protocol out: Python's auto-configuration then builds the gRPC exporter" in text
