"""The metrics listener: ``/metrics`` (Prometheus text or OpenMetrics, gzip when asked), a
landing page, health and readiness, and ``POST /-/reload``."""

from __future__ import annotations

import html
import logging
import threading
from typing import Any, Callable, Iterable

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, make_wsgi_app
from werkzeug.exceptions import HTTPException, NotFound

from exporter import __version__
from exporter.config import LIFECYCLE_ENV, Config
from exporter.pacing import PacedRegistry
from exporter.server import WSGIApp

__all__ = ["create_web_app"]

log = logging.getLogger("kpi_exporter")

_PATHS = "/metrics, /, /-/healthy, /-/ready and POST /-/reload"


_TEXT = "text/plain; charset=utf-8"


_LIFECYCLE_OFF = ("Lifecycle API is not enabled: start the exporter with "
                  "--web.enable-lifecycle (or server.enable_lifecycle: true, or "
                  f"{LIFECYCLE_ENV}=true) to reload with POST /-/reload, or send it SIGHUP.\n")


def _landing(cfg: Config) -> str:
    rows = []
    for r in cfg.rules:
        match = f"{r.signal} {r.name_source or '(any name)'}"
        if r.conditions:
            match += " where " + ", ".join(f"{k} {t}" for k, t, _ in r.conditions)
        rows.append(
            f"<tr><td><code>{html.escape(r.metric.name)}</code></td><td>{r.metric.type}</td>"
            f"<td>{html.escape(match)}</td><td>{html.escape(', '.join(r.metric.label_names))}</td>"
            f"<td>{html.escape(r.value.describe())}</td></tr>")
    s = cfg.server
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kpi-exporter</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}td,th{{padding:2px 8px;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}code{{font-size:95%}}</style></head>
<body><h1>kpi-exporter {html.escape(__version__)}</h1>
<p><a href="/metrics">Metrics</a> &middot; <a href="/-/healthy">Health</a> &middot;
<a href="/-/ready">Readiness</a></p>
<p>OTLP/gRPC receiver on <code>{html.escape(s.otlp_grpc_listen or 'none')}</code>;
OTLP/HTTP receiver on <code>{html.escape(s.otlp_listen)}</code> (<code>/v1/logs</code>,
<code>/v1/traces</code>, <code>/v1/metrics</code>); metrics on
<code>{html.escape(s.metrics_listen)}</code>. TLS: {'on' if s.web and s.web.tls else 'off'}.
Basic auth on this listener: {'yes' if s.web and s.web.users else 'no'}.</p>
<h2>Configuration</h2><p>{html.escape(cfg.describe())}.
Bearer token required: {'yes' if s.bearer_tokens else 'no'}.
Reload with <code>POST /-/reload</code>: {'on' if s.enable_lifecycle else 'off (SIGHUP reloads)'}.
CORS origins: {html.escape(', '.join(s.cors_allowed_origins) or 'none')}.
Series cap per metric: {cfg.max_series_per_metric}.</p>
<table><tr><th>Metric</th><th>Type</th><th>Match</th><th>Labels</th><th>Value</th></tr>
{''.join(rows)}</table></body></html>"""


def create_web_app(registry: CollectorRegistry, config: Callable[[], Config],
                   is_ready: threading.Event, do_reload: Callable[[], tuple[bool, str]]
                   ) -> WSGIApp:
    """The WSGI app of the metrics listener: ``registry`` on /metrics, ``config()`` on the
    landing page, ``is_ready`` for /-/ready, ``do_reload()`` for POST /-/reload."""
    app = Flask("kpi_exporter.web")
    # scrapes give way to the export requests they run beside (exporter/pacing.py)
    metrics_app = make_wsgi_app(PacedRegistry(registry))

    @app.get("/")
    def index() -> Response:
        return Response(_landing(config()), content_type="text/html; charset=utf-8")

    @app.get("/-/healthy")
    def healthy() -> Response:
        return Response("kpi-exporter is healthy.\n", content_type="text/plain")

    @app.get("/-/ready")
    def ready() -> Response:
        if is_ready.is_set():
            return Response("kpi-exporter is ready.\n", content_type="text/plain")
        return Response("kpi-exporter is starting.\n", status=503, content_type="text/plain")

    @app.post("/-/reload")
    def reload() -> Response:
        if not config().server.enable_lifecycle:
            return Response(_LIFECYCLE_OFF, status=403, content_type="text/plain")
        ok, message = do_reload()
        return Response(message + "\n", status=200 if ok else 400, content_type=_TEXT)

    # Every error in plain text, like the rest of the listener, never a framework HTML page.
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        detail = (f"{request.path} is not served here; this listener serves {_PATHS}"
                  if isinstance(exc, NotFound) else exc.description)
        # the exception's own headers (the Allow of a 405) but not its HTML content type
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return Response(f"{exc.code} {exc.name}: {detail}\n", status=exc.code or 500,
                        headers=headers, content_type=_TEXT)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.error("error serving %s %s", request.method, request.path, exc_info=exc)
        return Response("500 Internal Server Error: the exporter failed on this request; its "
                        "log has the details\n", status=500, content_type=_TEXT)

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return metrics_app(environ, start_response)
        return app(environ, start_response)

    return dispatch
