"""The OTLP/gRPC receiver: the three ``Export`` services (logs, traces, metrics) on one grpcio
server, into the same pipeline as OTLP/HTTP.

Request bodies reach the handlers as raw bytes (no generated servicer, no protobuf objects
built by grpc) and go to ``Pipeline.ingest`` like an HTTP body. Status codes follow the OTLP
specification: INVALID_ARGUMENT for an undecodable request, UNAUTHENTICATED for a missing or
wrong bearer token, UNAVAILABLE with a RetryInfo when the exporter is busy (in both the
``grpc-status-details-bin`` trailer Go, Java and the Collector read, and the
``google.rpc.retryinfo-bin`` one OpenTelemetry Python reads), RESOURCE_EXHAUSTED for a
message over ``server.max_body_size`` after decompression (grpc's own, uncounted, past
twice that), and ``partial_success`` when some records were rejected.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from exporter.config import ServerConfig, parse_listen
from exporter.logfmt import FIELDS
from exporter.mapper import MapResult
from exporter.netutil import bind_socket
from exporter.otlp_service import ExportLimiter, bearer_ok, export_response, result_fields
from exporter.pipeline import PROTOBUF, Pipeline
from exporter.records import LOG, METRIC, SPAN, DecodeError
from exporter.tlsfront import TLSFront

__all__ = ["GrpcReceiver", "SERVICES", "GRPC_LISTENER"]

log = logging.getLogger("kpi_exporter")

# gRPC service -> signal
SERVICES = {
    "opentelemetry.proto.collector.logs.v1.LogsService": LOG,
    "opentelemetry.proto.collector.trace.v1.TraceService": SPAN,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": METRIC,
}
# How long a client told the exporter is busy waits before it retries (as HTTP's
# Retry-After: 1). Short, so a client's own deadline (10 s by default) leaves room to retry.
RETRY_DELAY_SECONDS = 1.0
# The listener's name in logs and self-metrics (and its socket behind the TLS front).
GRPC_LISTENER = "otlp-grpc"


class _Status(NamedTuple):
    """A grpc.Status for ``abort_with_status``."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...]


def error_status(code: grpc.StatusCode, message: str, retry_after: float | None = None
                 ) -> _Status:
    """An error status whose ``google.rpc.Status`` travels in the trailers; with
    ``retry_after``, a RetryInfo in its details and in ``google.rpc.retryinfo-bin``."""
    status = status_pb2.Status(code=code.value[0], message=message)
    trailers: list[tuple[str, bytes]] = []
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(retry_after), nanos=int(round(retry_after % 1 * 1e9))))
        detail = any_pb2.Any()
        detail.Pack(info)
        status.details.append(detail)
        trailers.append(("google.rpc.retryinfo-bin", info.SerializeToString()))
    trailers.insert(0, ("grpc-status-details-bin", status.SerializeToString()))
    return _Status(code, message, tuple(trailers))


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcReceiver:
    """OTLP/gRPC on one address. ``limiter`` is shared with the HTTP receiver: the exporter
    handles at most ``server.max_concurrent_requests`` export requests at once, however they
    come. Listener settings (address, message size, workers) are read at :meth:`start`."""

    def __init__(self, pipeline: Pipeline, config: ServerConfig, limiter: ExportLimiter,
                 tls: TLSFront | None = None):
        self.pipeline = pipeline
        self.config = config
        self.limiter = limiter
        self.tls = tls
        self.port: int | None = None
        self._server: grpc.Server | None = None

    def start(self) -> None:
        """Binds and starts serving. Raises OSError when the address cannot be bound."""
        cfg = self.config
        host, port = parse_listen(cfg.otlp_grpc_listen)
        options = [
            # The spec's limit is on the request after decompression. The handler refuses
            # (and counts) a message over server.max_body_size; grpc itself, before and
            # after decompression, only one over the listeners' buffer limit (which bounds
            # the memory a request can take).
            ("grpc.max_receive_message_length", cfg.buffer_limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # grpc binds with SO_REUSEPORT unless told not to: a second exporter on the same
            # port would then share it silently instead of failing
            ("grpc.so_reuseport", 1 if cfg.reuse_port else 0),
        ]
        limit = cfg.max_concurrent_requests
        server = grpc.server(
            # room for the requests the limit allows, and a few more to answer "busy" fast
            futures.ThreadPoolExecutor(max_workers=limit + 4, thread_name_prefix="otlp-grpc"),
            options=options,
            # a last resort only: grpc refuses past it with RESOURCE_EXHAUSTED and no
            # RetryInfo, which some clients take as final
            maximum_concurrent_rpcs=4 * limit)
        for service, signal in SERVICES.items():
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._handler(signal), request_deserializer=None,
                    response_serializer=None)}),))
        try:
            if self.tls is not None:
                public = bind_socket(host, port, cfg.reuse_port)
                server.add_insecure_port("unix:" + self.tls.upstream(GRPC_LISTENER))
                self.tls.add(GRPC_LISTENER, public, alpn=("h2",))
                self.port = int(public.getsockname()[1])
            else:
                self.port = server.add_insecure_port(_grpc_address(host, port))
        except (RuntimeError, OSError) as exc:
            server.stop(None)
            raise OSError(f"cannot listen for OTLP/gRPC on {cfg.otlp_grpc_listen}: {exc}"
                          ) from None
        server.start()
        self._server = server
        log.info("listening for %s on %s:%s%s", GRPC_LISTENER, host, self.port,
                 " (TLS)" if self.tls is not None else "")

    def stop(self, grace: float = 10.0) -> None:
        """Stops taking requests; those in flight get ``grace`` seconds to finish."""
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
            self._server = None

    def _handler(self, signal: str) -> Any:
        pipeline = self.pipeline
        limiter = self.limiter
        metrics = pipeline.metrics

        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            started = time.perf_counter()
            result: list[MapResult] = []
            status = grpc.StatusCode.OK
            try:
                return self._export(signal, body, context, result)
            except _Abort as abort:
                status = abort.status.code
                context.abort_with_status(abort.status)
                raise  # abort_with_status raises; never reached
            except Exception:  # noqa: BLE001 - answered, counted and logged like any other
                log.exception("error handling an OTLP/gRPC %s export", signal)
                status = grpc.StatusCode.INTERNAL
                context.abort_with_status(error_status(
                    status, "internal error; the exporter's log has the details"))
                raise
            finally:
                duration = time.perf_counter() - started
                metrics.requests.labels("grpc", signal, status.name).inc()
                metrics.request_duration.labels("grpc", signal).observe(duration)
                metrics.request_bytes.labels("grpc", signal).inc(len(body))
                if log.isEnabledFor(logging.DEBUG):
                    _log_request(signal, len(body), status, result[0] if result else None,
                                 duration)

        return export

    def _export(self, signal: str, body: bytes, context: grpc.ServicerContext,
                result_out: list[MapResult]) -> bytes:
        pipeline = self.pipeline
        server = pipeline.config.server
        if server.bearer_tokens:
            header = None
            for key, value in context.invocation_metadata():
                if key == "authorization":
                    header = value if isinstance(value, str) else value.decode("latin-1")
                    break
            if not bearer_ok(server.bearer_tokens, header):
                raise _Abort(error_status(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token" if header else
                    "this exporter requires the metadata 'authorization: Bearer <token>'"))
        limit = server.max_body_size
        if len(body) > limit:
            raise _Abort(error_status(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request of {len(body)} bytes "
                f"(decompressed) is over the limit of {limit} bytes (server.max_body_size)"))
        if not self.limiter.enter(server.max_concurrent_requests):
            raise _Abort(error_status(grpc.StatusCode.UNAVAILABLE,
                                      "the exporter is overloaded; retry later",
                                      RETRY_DELAY_SECONDS))
        try:
            try:
                result = pipeline.ingest(signal, body, PROTOBUF)
            except DecodeError as exc:
                raise _Abort(error_status(grpc.StatusCode.INVALID_ARGUMENT, str(exc))) from None
        finally:
            self.limiter.leave()
        result_out.append(result)
        return export_response(signal, result)


class _Abort(Exception):
    def __init__(self, status: _Status):
        super().__init__(status.details)
        self.status = status


def _log_request(signal: str, size: int, status: grpc.StatusCode, result: MapResult | None,
                 duration: float) -> None:
    """One debug line per export request, like the HTTP receiver's."""
    fields: dict[str, object] = {"signal": signal, "transport": "grpc", "bytes": size,
                                 **result_fields(result)}
    fields.update(status=status.name, duration_seconds=round(duration, 6))
    log.debug("otlp request", extra={FIELDS: fields})
