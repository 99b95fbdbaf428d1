"""The straightforward receiver kpi-exporter is measured against: Flask, protobuf's
MessageToDict, and a prometheus_client ``.labels().inc()`` per event. Served by the same WSGI
server (waitress) so only the receiving and mapping differ."""

from __future__ import annotations

import sys

from flask import Flask, Response, request
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from waitress import serve

registry = CollectorRegistry()
events = Counter("app_events_total", "Events.", ["event", "service_name"], registry=registry)
views = Counter("app_page_views_total", "Page views.", ["route", "service_name"], registry=registry)
features = Counter("app_feature_usage_total", "Features.", ["feature", "action", "service_name"],
                   registry=registry)
app = Flask(__name__)


def _attrs(kvs):
    return {kv["key"]: next(iter(kv.get("value", {}).values()), None) for kv in kvs or []}


@app.post("/v1/logs")
def logs() -> Response:
    req = ExportLogsServiceRequest()
    req.ParseFromString(request.get_data())
    doc = MessageToDict(req)
    for rl in doc.get("resourceLogs", []):
        service = _attrs(rl.get("resource", {}).get("attributes")).get("service.name", "")
        for sl in rl.get("scopeLogs", []):
            for lr in sl.get("logRecords", []):
                a = _attrs(lr.get("attributes"))
                name = lr.get("eventName", "")
                events.labels(name, service).inc()
                if name == "app.page_view":
                    views.labels(a.get("url.path", ""), service).inc()
                elif name == "app.feature_used":
                    features.labels(a.get("app.feature", ""), a.get("app.action", ""), service).inc()
    return Response(b"", content_type="application/x-protobuf")


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(registry), content_type="text/plain")


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8, _quiet=True)
