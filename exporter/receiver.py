"""The OTLP/HTTP receiver: ``POST /v1/logs``, ``/v1/traces`` and ``/v1/metrics``.

Follows the OTLP/HTTP specification: protobuf and JSON bodies, gzip and deflate, answers in
the request's content type, ``google.rpc.Status`` bodies for errors, ``partial_success`` when
some records could not be used, 503 with ``Retry-After`` only when overloaded.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from typing import Any, Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from google.rpc.status_pb2 import Status

from exporter.logfmt import FIELDS
from exporter.mapper import MapResult
from exporter.otlp_service import (
    ExportLimiter, bearer_ok, export_response, rejection_message, result_fields,
)
from exporter.pipeline import JSON as JSON_PAYLOAD, PROTOBUF as PROTOBUF_PAYLOAD, Pipeline
from exporter.records import LOG, METRIC, SPAN, DecodeError

__all__ = ["create_receiver"]

log = logging.getLogger("kpi_exporter")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PATHS = {"/v1/logs": LOG, "/v1/traces": SPAN, "/v1/metrics": METRIC}
_REJECTED_JSON = {LOG: "rejectedLogRecords", SPAN: "rejectedSpans", METRIC: "rejectedDataPoints"}
# google.rpc.Code numbers for the Status body
_RPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
_CORS_ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization"


class _TooLarge(Exception):
    pass


def _status_body(code: int, message: str, content_type: str) -> bytes:
    if content_type == PROTOBUF:
        return Status(code=_RPC_CODE.get(code, 2), message=message).SerializeToString()
    return json.dumps({"code": _RPC_CODE.get(code, 2), "message": message}).encode()


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflates a gzip or deflate body, never past ``limit`` bytes (a gzip bomb costs nothing)."""
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif body[:1] == b"\x78":
        d = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped deflate, as HTTP means it
    else:
        d = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some clients send it
    out = b""
    while True:
        try:
            out += d.decompress(body, limit + 1 - len(out))
        except zlib.error as exc:
            raise DecodeError(f"cannot {encoding}-decompress the body: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise _TooLarge()
        if not d.eof:
            raise DecodeError(f"the {encoding} body is truncated")
        body = d.unused_data
        if not body:
            return out
        if encoding != "gzip":
            raise DecodeError("trailing data after the deflate stream")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip allows several members in a row


def _log_request(signal: str, mimetype: str, resp: Response, result: MapResult | None,
                 duration: float) -> None:
    """One debug line per export request: what came in, what was used, how it was answered."""
    fields: dict[str, object] = {
        "signal": signal, "transport": "http", "path": request.path,
        "content_type": mimetype or "(none)",
        "encoding": (request.headers.get("Content-Encoding") or "identity").strip().lower(),
        "bytes": request.content_length if request.content_length is not None else "unknown",
    }
    # No error message: a decode error can quote a value, and no identity may reach the log.
    fields.update(result_fields(result))
    fields.update(status=resp.status_code, duration_seconds=round(duration, 6))
    log.debug("otlp request", extra={FIELDS: fields})


def create_receiver(pipeline: Pipeline, queued: Callable[[], int] = lambda: 0,
                    limiter: ExportLimiter | None = None) -> Flask:
    """The OTLP/HTTP WSGI app for a pipeline. ``queued()`` tells how many requests the WSGI
    server holds that no worker thread has taken yet: they count towards the limit too.
    ``limiter`` is shared with the other OTLP receivers (server.max_concurrent_requests is
    one limit for all of them)."""
    app = Flask("kpi_exporter.receiver")
    app.url_map.strict_slashes = False
    load = limiter or ExportLimiter()
    metrics = pipeline.metrics

    def error(status: int, message: str, content_type: str, headers: dict[str, str] | None = None
              ) -> Response:
        resp = Response(_status_body(status, message, content_type), status=status,
                        content_type=content_type, headers=headers)
        return resp

    def cors_origin() -> str | None:
        """The origin to echo back when the request's Origin is allowed, else None."""
        origin = request.headers.get("Origin")
        allowed = pipeline.config.server.cors_allowed_origins
        if not origin or not allowed:
            return None
        if "*" in allowed:
            return "*"
        return origin if origin in allowed else None

    @app.after_request
    def add_cors(resp: Response) -> Response:
        origin = cors_origin()
        if origin and request.method != "OPTIONS":
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
            resp.headers["Access-Control-Expose-Headers"] = "Retry-After"
        return resp

    def handle(signal: str) -> Response:
        server = pipeline.config.server
        if request.method == "OPTIONS":
            origin = cors_origin()
            if origin is None:
                return Response("origin not allowed by server.cors.allowed_origins\n", status=403,
                                content_type="text/plain")
            return Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", _CORS_ALLOW_HEADERS),
                "Access-Control-Max-Age": str(server.cors_max_age),
                "Vary": "Origin",
            })
        mimetype = (request.mimetype or "").lower()
        content_type = mimetype if mimetype in (PROTOBUF, JSON) else JSON
        started = time.perf_counter()
        result: list[MapResult] = []
        try:
            resp = _handle_export(signal, mimetype, content_type, result)
        except Exception as exc:  # noqa: BLE001 - answered, counted and logged like any other
            log.exception("error handling %s %s", request.method, request.path)
            resp = error(500, f"internal error: {type(exc).__name__}; the exporter's log has "
                         f"the details", content_type)
        duration = time.perf_counter() - started
        metrics.requests.labels("http", signal, str(resp.status_code)).inc()
        metrics.request_duration.labels("http", signal).observe(duration)
        if log.isEnabledFor(logging.DEBUG):
            _log_request(signal, mimetype, resp, result[0] if result else None, duration)
        return resp

    def _handle_export(signal: str, mimetype: str, content_type: str,
                       result_out: list[MapResult]) -> Response:
        server = pipeline.config.server
        if server.bearer_tokens:
            header = request.headers.get("Authorization", "")
            if not bearer_ok(server.bearer_tokens, header):
                return error(401, "missing or wrong bearer token" if header else
                             "this exporter requires 'Authorization: Bearer <token>'",
                             content_type, {"WWW-Authenticate": 'Bearer realm="kpi-exporter"'})
        if mimetype not in (PROTOBUF, JSON):
            return error(415, f"unsupported content type {request.mimetype or '(none)'!r}: send "
                         f"{PROTOBUF} or {JSON}", JSON)
        encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            return error(415, f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or "
                         f"none", content_type)
        limit = server.max_body_size
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"request body of {request.content_length} bytes is over the "
                         f"limit of {limit} bytes (server.max_body_size)", content_type)
        if not load.enter(server.max_concurrent_requests - queued()):
            return error(503, "the exporter is overloaded; retry later", content_type,
                         {"Retry-After": "1"})
        try:
            body = request.stream.read(limit + 1)
            metrics.request_bytes.labels("http", signal).inc(len(body))
            if len(body) > limit:
                return error(413, f"request body is over the limit of {limit} bytes "
                             f"(server.max_body_size)", content_type)
            try:
                if encoding != "identity":
                    body = _decompress(body, encoding, limit)
            except _TooLarge:
                return error(413, f"decompressed body is over the limit of {limit} bytes "
                             f"(server.max_body_size)", content_type)
            except DecodeError as exc:
                metrics.rejected.labels(signal, "malformed_request").inc()
                return error(400, str(exc), content_type)
            try:
                result = pipeline.ingest(signal, body, PROTOBUF_PAYLOAD if mimetype == PROTOBUF
                                         else JSON_PAYLOAD)
            except DecodeError as exc:
                return error(400, str(exc), content_type)
        finally:
            load.leave()
        result_out.append(result)
        if content_type == PROTOBUF:
            return Response(export_response(signal, result), status=200, content_type=PROTOBUF)
        doc: dict[str, Any] = {}
        if result.rejected_total:
            doc["partialSuccess"] = {_REJECTED_JSON[signal]: str(result.rejected_total),
                                     "errorMessage": rejection_message(result)}
        return Response(json.dumps(doc), status=200, content_type=JSON)

    for path, signal in _PATHS.items():
        app.add_url_rule(path, f"export_{signal}", lambda s=signal: handle(s),
                         methods=["POST", "OPTIONS"])

    @app.errorhandler(405)
    def method_not_allowed(_e: Exception) -> Response:
        return error(405, f"{request.method} is not allowed here: OTLP exports are POST requests",
                     JSON, {"Allow": "POST, OPTIONS"})

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return error(exc.code or 500, exc.description or exc.name, JSON)
        log.exception("error handling %s %s", request.method, request.path)
        mimetype = (request.mimetype or "").lower()
        return error(500, f"internal error: {type(exc).__name__}; the exporter's log has the "
                     f"details", PROTOBUF if mimetype == PROTOBUF else JSON)

    @app.errorhandler(404)
    def not_found(_e: Exception) -> Response:
        return error(404, f"no OTLP endpoint at {request.path}: use /v1/logs, /v1/traces or "
                     f"/v1/metrics", JSON)

    return app
