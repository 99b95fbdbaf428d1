"""What the OTLP/HTTP and OTLP/gRPC receivers share: the bearer-token check, the limit on
export requests handled at once (one limit for both transports), and the export response
with its ``partial_success``."""

from __future__ import annotations

import hmac
import threading
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from exporter.mapper import MapResult
from exporter.records import LOG, METRIC, SPAN

__all__ = ["ExportLimiter", "bearer_ok", "rejection_message", "export_response",
           "result_fields", "REJECTED_FIELD"]

_RESPONSES: dict[str, Any] = {LOG: ExportLogsServiceResponse, SPAN: ExportTraceServiceResponse,
                              METRIC: ExportMetricsServiceResponse}
REJECTED_FIELD = {LOG: "rejected_log_records", SPAN: "rejected_spans",
                  METRIC: "rejected_data_points"}


class ExportLimiter:
    """Export requests being handled now, over every transport; a new one is refused when
    those and the ones waiting for a worker reach the limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def enter(self, room: int) -> bool:
        """Takes a place when fewer than ``room`` requests are being handled; False when
        the exporter is full (answer: retry later)."""
        with self._lock:
            if self.active >= room:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def bearer_ok(tokens: tuple[str, ...], header: str | None) -> bool:
    """True when no token is configured, or ``header`` is ``Bearer <one of tokens>``. Every
    token is compared, in constant time, so the time taken says nothing about which one
    matched."""
    if not tokens:
        return True
    scheme, _, token = (header or "").strip().partition(" ")
    ok = False
    if scheme.lower() == "bearer" and token.strip():
        presented = token.strip().encode()
        for expected in tokens:
            ok |= hmac.compare_digest(presented, expected.encode())
    return ok


def rejection_message(result: MapResult) -> str:
    """The English message of a partial success: how many records were rejected, why, and
    the first reason in full; "" when none was."""
    rejected = result.rejected_total
    if not rejected:
        return ""
    return (f"{rejected} of {result.received} records rejected: "
            + ", ".join(f"{n} {r}" for r, n in sorted(result.rejected.items()))
            + (f" (first: {result.messages[0]})" if result.messages else ""))


def export_response(signal: str, result: MapResult) -> bytes:
    """The serialized ``Export*ServiceResponse`` for a handled request: empty on full
    success, ``partial_success`` with the rejected count and message otherwise."""
    msg = _RESPONSES[signal]()
    if result.rejected_total:
        setattr(msg.partial_success, REJECTED_FIELD[signal], result.rejected_total)
        msg.partial_success.error_message = rejection_message(result)
    return bytes(msg.SerializeToString())


def result_fields(result: MapResult | None) -> dict[str, object]:
    """What a request's debug log line says of its records: received, accepted, rejected
    (by reason) and unmatched counts; never a message, which could quote a value."""
    if result is None:
        return {}
    fields: dict[str, object] = {
        "records": result.received, "accepted": result.received - result.rejected_total,
        "rejected": result.rejected_total}
    for reason, n in sorted(result.rejected.items()):
        fields[f"rejected_{reason}"] = n
    fields["unmatched"] = result.unmatched
    return fields
