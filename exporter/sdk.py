"""Emit the kpi-exporter event vocabulary from a Python app.

A thin, typed layer over the OpenTelemetry logs and tracing SDKs: every call builds one OTLP
log record with ``event_name`` set (or, for GenAI operations, one span) and hands it to a
``BatchLogRecordProcessor`` (``BatchSpanProcessor``) feeding the OTLP/HTTP exporter. Nothing
here talks to a server on the caller's thread, and no call raises into the app::

    from exporter import sdk as analytics

    analytics.configure(service_name="fitness-web")          # or OTEL_* variables only
    with analytics.identify(user_id=user.id, session_id=request.session_id):
        analytics.track_page_view("/workouts/:id")
        analytics.track_feature("workout", "create")

The endpoint comes from ``endpoint=`` or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` / ``..._TRACES_ENDPOINT`` variables (default
``http://localhost:4318``); batching from ``OTEL_BLRP_*`` / ``OTEL_BSP_*``; headers, timeout,
compression and TLS from the other ``OTEL_EXPORTER_OTLP_*`` variables.

Delivery: the OpenTelemetry exporter retries a failed request for up to its timeout
(``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s). A batch that still fails because the exporter cannot
be reached (or answers 429/5xx) is kept in a bounded in-memory spool and re-sent in the
background, oldest first, once the exporter answers again; while the spool holds anything,
new batches join it without a network attempt, so a down exporter never stalls the batch
worker. A batch the exporter refuses for good (another 4xx) is dropped and counted.
:meth:`Analytics.stats` says what was emitted, delivered, is waiting, and was lost.

``OTEL_SDK_DISABLED=true`` turns the OpenTelemetry SDK off, and with it this client: every
call is then a no-op, nothing counts as emitted, and :meth:`Analytics.stats` says
``disabled=True``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Generic, Iterator, Literal, Mapping, Sequence, TypeVar, Union

import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult,
)
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "Analytics", "Identity", "Stats", "GenAIOperation", "AttributeValue",
    "configure", "get_analytics", "shutdown", "flush", "stats",
    "identify", "set_user", "set_session", "clear_identity", "current_identity",
    "new_session_id", "sdk_disabled",
    "track", "track_page_view", "end_session", "track_feature", "track_conversion",
    "track_recommendation", "track_recommendation_response", "track_model_performance",
    "track_evaluation", "genai_operation", "record_genai_operation",
]

log = logging.getLogger("kpi_exporter.sdk")

AttributeValue = Union[str, bool, int, float, Sequence[str], Sequence[bool], Sequence[int],
                       Sequence[float]]
Timestamp = Union[float, int, datetime, None]
Outcome = Literal["accepted", "rejected", "modified"]

INSTRUMENTATION_SCOPE = "kpi_exporter.sdk"
DEFAULT_SPOOL_RECORDS = 10_000

# ---- identity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who the events of the current context are about; either id may be unset."""

    user_id: str | None = None
    session_id: str | None = None


_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "kpi_exporter_identity", default=Identity())


def current_identity() -> Identity:
    """The user and session ids that calls in the current context attach to their events."""
    return _identity.get()


@contextlib.contextmanager
def identify(user_id: str | None = None, session_id: str | None = None) -> Iterator[Identity]:
    """Within the block, events carry ``user.id`` and ``session.id``.

    An id left as None keeps the enclosing block's value, so a request handler can set the
    session once and a login step inside it can add the user. The previous identity is
    restored on exit, also after an exception.
    """
    outer = _identity.get()
    identity = Identity(outer.user_id if user_id is None else str(user_id),
                        outer.session_id if session_id is None else str(session_id))
    token = _identity.set(identity)
    try:
        yield identity
    finally:
        _identity.reset(token)


def set_user(user_id: str | None) -> None:
    """Sets ``user.id`` for the rest of the current context (thread or asyncio task).

    Thread pools reuse threads, and with them their context: call :func:`clear_identity`
    when the unit of work ends, or prefer ``with identify(...)``.
    """
    _identity.set(Identity(None if user_id is None else str(user_id), _identity.get().session_id))


def set_session(session_id: str | None) -> None:
    """Sets ``session.id`` for the rest of the current context; see :func:`set_user`."""
    _identity.set(Identity(_identity.get().user_id,
                           None if session_id is None else str(session_id)))


def clear_identity() -> None:
    """Forgets the user and session ids of the current context."""
    _identity.set(Identity())


def new_session_id() -> str:
    """A fresh random session id (a UUID4 in hex), for apps that have none of their own."""
    return uuid.uuid4().hex


# ---- delivery ---------------------------------------------------------------------------------

T = TypeVar("T")

# Statuses after which a batch may succeed later: the exporter is down, overloaded or
# restarting. Any other 4xx means this batch will never be accepted as it is.
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _StatusProbe:
    """Remembers, per thread, the HTTP status of the last response an exporter's session saw
    (None when the request never got an answer), so a failed export can be classified."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.session = requests.Session()
        self.session.hooks["response"].append(self._seen)

    def _seen(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self._local.status = response.status_code

    def reset(self) -> None:
        self._local.status = None

    @property
    def status(self) -> int | None:
        return getattr(self._local, "status", None)


class _Redelivery(Generic[T]):
    """Sends batches through ``send``; keeps the ones that failed for a retryable reason and
    re-sends them from a background thread with capped exponential backoff."""

    def __init__(self, send: Callable[[Sequence[T]], bool], probe: _StatusProbe, capacity: int,
                 name: str, min_backoff: float = 0.25, max_backoff: float = 30.0):
        self._send = send
        self._probe = probe
        self._capacity = max(1, capacity)
        self._name = name
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._pending: collections.deque[list[T]] = collections.deque()
        self._pending_records = 0
        self._inflight: list[T] | None = None  # the batch the retry thread is sending
        self._closed = False
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dropped = 0
        self.rejected = 0

    @property
    def waiting(self) -> int:
        """Records held for a later attempt."""
        with self._cond:
            return self._pending_records + len(self._inflight or ())

    def export(self, batch: Sequence[T]) -> bool:
        """Delivers ``batch`` now, or keeps it for the background retries; never raises."""
        records = list(batch)
        if not records:
            return True
        with self._cond:
            if self._closed:
                self.dropped += len(records)
                return False
            if self._pending or self._inflight is not None:
                # The exporter is known to be unreachable: queue behind older batches
                # instead of spending another timeout on the batch worker.
                self._keep(records)
                return False
        ok, retryable = self._attempt(records)
        if not ok and retryable:
            with self._cond:
                self._keep(records)
        return ok

    def _attempt(self, records: list[T]) -> tuple[bool, bool]:
        """Sends once (the OpenTelemetry exporter retries inside); (delivered, worth retrying)."""
        self._probe.reset()
        try:
            ok = self._send(records)
        except Exception:  # noqa: BLE001 - an exporter bug must not reach the app
            log.exception("kpi-exporter sdk: exporting %s failed", self._name)
            ok = False
        status = self._probe.status
        retryable = not ok and (status is None or status in _RETRYABLE_STATUS)
        with self._cond:
            if ok:
                self.delivered += len(records)
            elif not retryable:
                self.rejected += len(records)
                log.warning("kpi-exporter sdk: the exporter refused %d %s with HTTP %s; "
                            "dropped them (see the exporter's log and "
                            "kpi_exporter_records_rejected_total)", len(records), self._name,
                            status)
        return ok, retryable

    def _keep(self, records: list[T], front: bool = False) -> None:
        # called with self._cond held
        if front:
            self._pending.appendleft(records)
        else:
            self._pending.append(records)
        self._pending_records += len(records)
        inflight = len(self._inflight or ())
        # oldest first; one batch is always kept, even when it alone is over the cap
        while (self._pending_records + inflight > self._capacity
               and len(self._pending) > (0 if inflight else 1)):
            old = self._pending.popleft()
            self._pending_records -= len(old)
            self.dropped += len(old)
        if self._thread is None:
            self._thread = threading.Thread(target=self._retry_loop,
                                            name=f"kpi-sdk-redeliver-{self._name}", daemon=True)
            self._thread.start()
        self._wake.set()
        self._cond.notify_all()

    def _retry_loop(self) -> None:
        backoff = self._min_backoff
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            with self._cond:
                if self._closed:
                    return
                if not self._pending:
                    backoff = self._min_backoff
                    continue
                batch = self._pending.popleft()
                self._pending_records -= len(batch)
                self._inflight = batch
            ok, retryable = self._attempt(batch)
            with self._cond:
                self._inflight = None
                if ok or not retryable:
                    backoff = self._min_backoff
                    self._wake.set()  # go on with the next batch at once
                elif self._closed:
                    self.dropped += len(batch)
                else:
                    self._keep(batch, front=True)
                    self._wake.clear()
                    backoff = min(backoff * 2, self._max_backoff)
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the spool to empty; True when it is."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._cond:
            while self._pending or self._inflight is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
                self._wake.set()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self.dropped += self._pending_records
            self._pending.clear()
            self._pending_records = 0
            self._cond.notify_all()
        self._wake.set()


class _RedeliveringLogExporter(LogRecordExporter):
    def __init__(self, inner: OTLPLogExporter, probe: _StatusProbe, capacity: int):
        self.inner = inner
        self.redelivery: _Redelivery[ReadableLogRecord] = _Redelivery(
            lambda b: inner.export(b) == LogRecordExportResult.SUCCESS, probe, capacity, "events")

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self.redelivery.export(batch)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self.redelivery.close()
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.redelivery.drain(timeout_millis / 1000)


class _RedeliveringSpanExporter(SpanExporter):
    def __init__(self, inner: OTLPSpanExporter, probe: _StatusProbe, capacity: int):
        self.inner = inner
        self.redelivery: _Redelivery[ReadableSpan] = _Redelivery(
            lambda b: inner.export(b) == SpanExportResult.SUCCESS, probe, capacity, "spans")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self.redelivery.export(spans)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.redelivery.close()
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.redelivery.drain(timeout_millis / 1000)


# ---- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """What an :class:`Analytics` did so far. ``waiting`` records are held for redelivery;
    ``dropped`` were lost to a full spool or shutdown, ``rejected`` refused by the exporter,
    ``errors`` are calls that failed before emitting (bad arguments). ``disabled`` is True
    when ``OTEL_SDK_DISABLED=true`` turned the SDK off: calls send nothing and nothing
    counts as emitted then."""

    events_emitted: int
    spans_emitted: int
    events_delivered: int
    spans_delivered: int
    waiting: int
    dropped: int
    rejected: int
    errors: int
    disabled: bool = False


def sdk_disabled() -> bool:
    """True when ``OTEL_SDK_DISABLED`` turns the OpenTelemetry SDK off (as the SDK reads it)."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def _to_ns(ts: Timestamp) -> int | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1e9)
    return int(float(ts) * 1e9)


def _signal_endpoint(base: str | None, path: str) -> str | None:
    if base is None:
        return None
    return base.rstrip("/") + path


def _unit(value: float, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return v


def _non_negative(value: float, name: str) -> float:
    v = float(value)
    if not v >= 0.0 or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


class Analytics:
    """One app's connection to kpi-exporter: a logger provider with batching and redelivery
    for events and, created on first use, a tracer provider for GenAI spans.

    ``endpoint`` is the OTLP/HTTP base URL (``http://host:4318``); None uses the standard
    ``OTEL_EXPORTER_OTLP_*`` variables. ``service_name`` becomes the ``service.name`` resource
    attribute (``service_name`` label of the product metrics); None uses ``OTEL_SERVICE_NAME``.
    ``spool_records`` caps the records held for redelivery per signal.
    """

    def __init__(self, endpoint: str | None = None, service_name: str | None = None, *,
                 resource_attributes: Mapping[str, AttributeValue] | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeout: float | None = None,
                 schedule_delay_millis: float | None = None,
                 max_queue_size: int | None = None,
                 max_export_batch_size: int | None = None,
                 spool_records: int = DEFAULT_SPOOL_RECORDS,
                 close_at_exit: bool = True):
        attrs: dict[str, Any] = dict(resource_attributes or {})
        if service_name:
            attrs["service.name"] = service_name
        self.resource = Resource.create(attrs)
        self._endpoint = endpoint
        self._headers = dict(headers) if headers else None
        self._timeout = timeout
        self._spool_records = spool_records
        self._schedule_delay_millis = schedule_delay_millis
        self._max_queue_size = max_queue_size
        self._max_export_batch_size = max_export_batch_size
        self._probe = _StatusProbe()
        self._log_exporter = _RedeliveringLogExporter(
            OTLPLogExporter(endpoint=_signal_endpoint(endpoint, "/v1/logs"), headers=self._headers,
                            timeout=timeout, session=self._probe.session),
            self._probe, spool_records)
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(
            self._log_exporter, schedule_delay_millis=schedule_delay_millis,
            max_queue_size=max_queue_size, max_export_batch_size=max_export_batch_size))
        self._logger = self.logger_provider.get_logger(INSTRUMENTATION_SCOPE)
        self._tracing_lock = threading.Lock()
        self._tracer_provider: TracerProvider | None = None
        self._span_exporter: _RedeliveringSpanExporter | None = None
        self._counts_lock = threading.Lock()
        self._events = 0
        self._spans = 0
        self._errors = 0
        self._closed = False
        # The providers read the same variable and hand out no-op loggers and tracers.
        self.disabled = sdk_disabled()
        if self.disabled:
            log.warning("kpi-exporter sdk: OTEL_SDK_DISABLED=true, so no event or span is sent "
                        "(stats() says disabled=True)")
        if close_at_exit:
            atexit.register(self.shutdown, 5.0)

    # -- internals --

    def _count(self, field: str) -> None:
        with self._counts_lock:
            setattr(self, field, getattr(self, field) + 1)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._count("_errors")
        log.warning("kpi-exporter sdk: %s was not sent: %s", what, exc)

    def _emit(self, event_name: str, attributes: dict[str, Any], timestamp: Timestamp) -> None:
        if self.disabled:
            return
        identity = _identity.get()
        if identity.user_id is not None:
            attributes.setdefault("user.id", identity.user_id)
        if identity.session_id is not None:
            attributes.setdefault("session.id", identity.session_id)
        self._logger.emit(timestamp=_to_ns(timestamp) or time.time_ns(), event_name=event_name,
                          attributes=attributes)
        self._count("_events")

    def _guarded(self, event_name: str, build: Callable[[], dict[str, Any]],
                 timestamp: Timestamp) -> None:
        try:
            self._emit(event_name, build(), timestamp)
        except Exception as exc:  # noqa: BLE001 - analytics must never break the app
            self._failed(f"event {event_name!r}", exc)

    def _tracer_parts(self) -> TracerProvider:
        with self._tracing_lock:
            if self._tracer_provider is None:
                self._span_exporter = _RedeliveringSpanExporter(
                    OTLPSpanExporter(endpoint=_signal_endpoint(self._endpoint, "/v1/traces"),
                                     headers=self._headers, timeout=self._timeout,
                                     session=self._probe.session),
                    self._probe, self._spool_records)
                provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
                provider.add_span_processor(BatchSpanProcessor(
                    self._span_exporter, schedule_delay_millis=self._schedule_delay_millis,
                    max_queue_size=self._max_queue_size,
                    max_export_batch_size=self._max_export_batch_size))
                self._tracer_provider = provider
            return self._tracer_provider

    # -- the event vocabulary --

    def track(self, name: str, attributes: Mapping[str, AttributeValue] | None = None, *,
              timestamp: Timestamp = None, **more: AttributeValue) -> None:
        """Emits event ``name`` with ``attributes`` (a mapping, for dotted names) and keyword
        attributes. ``timestamp`` (seconds since the epoch, or a datetime) sets the event time;
        default now."""
        def build() -> dict[str, Any]:
            if not name:
                raise ValueError("an event needs a name")
            return {**(attributes or {}), **more}
        self._guarded(name, build, timestamp)

    def track_page_view(self, route: str, *, referrer: str | None = None,
                        url: str | None = None, user_agent: str | None = None,
                        screen_class: str | None = None, timestamp: Timestamp = None,
                        **attributes: AttributeValue) -> None:
        """``app.page_view`` for a route template such as ``/workouts/:id`` (not the concrete
        path: each distinct value becomes a Prometheus series).

        For web analytics (docs/events.md): ``referrer`` is the page's referrer (the HTTP
        ``Referer`` header, or ``document.referrer``), ``url`` the page's full URL (its
        ``utm_*`` parameters name the campaign; scrub personal data from it first),
        ``user_agent`` the visitor's ``User-Agent`` and ``screen_class`` mobile, tablet or
        desktop when the app knows it."""
        def build() -> dict[str, Any]:
            attrs: dict[str, Any] = {**attributes, "url.path": str(route)}
            for key, value in (("app.referrer", referrer), ("url.full", url),
                               ("user_agent.original", user_agent),
                               ("app.screen.class", screen_class)):
                if value:
                    attrs[key] = str(value)
            return attrs
        self._guarded("app.page_view", build, timestamp)

    def end_session(self, *, timestamp: Timestamp = None,
                    **attributes: AttributeValue) -> None:
        """``app.session.end``: the current session (``session.id``) is over, for example at
        logout; its visit closes now rather than after the exporter's session timeout."""
        self._guarded("app.session.end", lambda: dict(attributes), timestamp)

    def track_feature(self, feature: str, action: str, *, timestamp: Timestamp = None,
                      **attributes: AttributeValue) -> None:
        """``app.feature_used``: ``feature`` (workout, nutrition, ...) and ``action`` (view,
        create, edit, delete, share, ...)."""
        self._guarded("app.feature_used",
                      lambda: {**attributes, "app.feature": str(feature), "app.action": str(action)},
                      timestamp)

    def track_conversion(self, type: str, value: float | None = None, currency: str | None = None,
                         *, timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
        """``app.conversion`` of a ``type`` (purchase, subscribe, ...), with an optional value
        and ISO 4217 currency code."""
        def build() -> dict[str, Any]:
            attrs: dict[str, Any] = {**attributes, "app.conversion.type": str(type)}
            if value is not None:
                attrs["app.conversion.value"] = _non_negative(value, "value")
            if currency is not None:
                attrs["app.conversion.currency"] = str(currency).upper()
            return attrs
        self._guarded("app.conversion", build, timestamp)

    def track_recommendation(self, model: str, type: str, confidence: float, *,
                             recommendation_id: str | None = None, timestamp: Timestamp = None,
                             **attributes: AttributeValue) -> str:
        """``ai.recommendation.generated`` by ``model``; ``confidence`` in 0..1. Returns the
        recommendation id (a new one unless given) for :meth:`track_recommendation_response`."""
        rec_id = recommendation_id or uuid.uuid4().hex

        def build() -> dict[str, Any]:
            return {**attributes, "gen_ai.request.model": str(model),
                    "ai.recommendation.id": rec_id, "ai.recommendation.type": str(type),
                    "ai.recommendation.confidence": _unit(confidence, "confidence")}
        self._guarded("ai.recommendation.generated", build, timestamp)
        return rec_id

    def track_recommendation_response(self, model: str, recommendation_id: str, outcome: Outcome,
                                      response_time: float, *, timestamp: Timestamp = None,
                                      **attributes: AttributeValue) -> None:
        """``ai.recommendation.response``: the user ``accepted``, ``rejected`` or ``modified``
        a recommendation ``response_time`` seconds after it was shown."""
        def build() -> dict[str, Any]:
            if outcome not in ("accepted", "rejected", "modified"):
                raise ValueError(f"outcome must be accepted, rejected or modified, got {outcome!r}")
            return {**attributes, "gen_ai.request.model": str(model),
                    "ai.recommendation.id": str(recommendation_id),
                    "ai.recommendation.outcome": outcome,
                    "ai.recommendation.response_time": _non_negative(response_time,
                                                                     "response_time")}
        self._guarded("ai.recommendation.response", build, timestamp)

    def track_model_performance(self, model: str, accuracy: float, latency: float,
                                error_rate: float, *, timestamp: Timestamp = None,
                                **attributes: AttributeValue) -> None:
        """``ai.model.performance``: ``accuracy`` and ``error_rate`` in 0..1, ``latency`` in
        seconds (not milliseconds)."""
        def build() -> dict[str, Any]:
            return {**attributes, "gen_ai.request.model": str(model),
                    "ai.model.accuracy": _unit(accuracy, "accuracy"),
                    "ai.model.latency": _non_negative(latency, "latency"),
                    "ai.model.error_rate": _unit(error_rate, "error_rate")}
        self._guarded("ai.model.performance", build, timestamp)

    def track_evaluation(self, name: str, score_value: float | None = None,
                         score_label: str | None = None, *, response_id: str | None = None,
                         explanation: str | None = None, timestamp: Timestamp = None,
                         **attributes: AttributeValue) -> None:
        """``gen_ai.evaluation.result`` (OpenTelemetry GenAI conventions): the evaluation
        ``name`` (relevance, faithfulness, ...), a numeric score and/or a label (pass, fail)."""
        def build() -> dict[str, Any]:
            attrs: dict[str, Any] = {**attributes, "gen_ai.evaluation.name": str(name)}
            if score_value is not None:
                attrs["gen_ai.evaluation.score.value"] = float(score_value)
            if score_label is not None:
                attrs["gen_ai.evaluation.score.label"] = str(score_label)
            if response_id is not None:
                attrs["gen_ai.response.id"] = str(response_id)
            if explanation is not None:
                attrs["gen_ai.evaluation.explanation"] = str(explanation)
            return attrs
        self._guarded("gen_ai.evaluation.result", build, timestamp)

    # -- GenAI spans --

    @contextlib.contextmanager
    def genai_operation(self, operation_name: str, provider_name: str, request_model: str,
                        **attributes: AttributeValue) -> Iterator[GenAIOperation]:
        """A GenAI client span around the block (``chat gpt-4o-mini``, kind CLIENT). Set the
        token usage on the yielded handle. An exception leaving the block marks the span
        failed with ``error.type`` and propagates unchanged."""
        span: Span | None = None
        try:
            tracer = self._tracer_parts().get_tracer(INSTRUMENTATION_SCOPE)
            span = tracer.start_span(
                f"{operation_name} {request_model}", kind=SpanKind.CLIENT,
                attributes={**attributes, "gen_ai.operation.name": operation_name,
                            "gen_ai.provider.name": provider_name,
                            "gen_ai.request.model": request_model})
        except Exception as exc:  # noqa: BLE001
            self._failed(f"GenAI span {operation_name!r}", exc)
        handle = GenAIOperation(span)
        try:
            yield handle
        except BaseException as exc:
            handle.set_error(type(exc).__qualname__)
            raise
        finally:
            if span is not None:
                with contextlib.suppress(Exception):
                    span.end()
                    if not self.disabled:
                        self._count("_spans")

    def record_genai_operation(self, operation_name: str, provider_name: str, request_model: str,
                               *, duration: float, input_tokens: int | None = None,
                               output_tokens: int | None = None, error_type: str | None = None,
                               response_model: str | None = None, end_time: Timestamp = None,
                               **attributes: AttributeValue) -> None:
        """A GenAI client span for an operation that already happened: it ended at
        ``end_time`` (default now) after ``duration`` seconds."""
        try:
            end_ns = _to_ns(end_time) or time.time_ns()
            start_ns = end_ns - int(_non_negative(duration, "duration") * 1e9)
            attrs: dict[str, Any] = {**attributes, "gen_ai.operation.name": operation_name,
                                     "gen_ai.provider.name": provider_name,
                                     "gen_ai.request.model": request_model}
            if response_model is not None:
                attrs["gen_ai.response.model"] = response_model
            if input_tokens is not None:
                attrs["gen_ai.usage.input_tokens"] = int(input_tokens)
            if output_tokens is not None:
                attrs["gen_ai.usage.output_tokens"] = int(output_tokens)
            tracer = self._tracer_parts().get_tracer(INSTRUMENTATION_SCOPE)
            span = tracer.start_span(f"{operation_name} {request_model}", kind=SpanKind.CLIENT,
                                     attributes=attrs, start_time=start_ns)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR))
            span.end(end_time=end_ns)
            if not self.disabled:
                self._count("_spans")
        except Exception as exc:  # noqa: BLE001
            self._failed(f"GenAI span {operation_name!r}", exc)

    # -- lifecycle --

    def flush(self, timeout: float = 10.0) -> bool:
        """Sends everything queued; waits up to ``timeout`` seconds for redelivery of what is
        held. True when nothing is left waiting."""
        deadline = time.monotonic() + timeout
        try:
            self.logger_provider.force_flush(int(timeout * 1000))
            spools: list[_Redelivery[Any]] = [self._log_exporter.redelivery]
            if self._tracer_provider is not None and self._span_exporter is not None:
                self._tracer_provider.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000))
                spools.append(self._span_exporter.redelivery)
            return all(r.drain(max(0.0, deadline - time.monotonic())) for r in spools)
        except Exception as exc:  # noqa: BLE001
            log.warning("kpi-exporter sdk: flush failed: %s", exc)
            return False

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flushes for up to ``timeout`` seconds, then stops the background threads. What is
        still held is dropped (and counted)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.shutdown)
        self.flush(timeout)
        with contextlib.suppress(Exception):
            self.logger_provider.shutdown()
        if self._tracer_provider is not None:
            with contextlib.suppress(Exception):
                self._tracer_provider.shutdown()

    def stats(self) -> Stats:
        """Counts of what was emitted, delivered, is waiting, and was lost."""
        logs = self._log_exporter.redelivery
        spans = self._span_exporter.redelivery if self._span_exporter else None
        with self._counts_lock:
            return Stats(
                events_emitted=self._events, spans_emitted=self._spans,
                events_delivered=logs.delivered, spans_delivered=spans.delivered if spans else 0,
                waiting=logs.waiting + (spans.waiting if spans else 0),
                dropped=logs.dropped + (spans.dropped if spans else 0),
                rejected=logs.rejected + (spans.rejected if spans else 0),
                errors=self._errors, disabled=self.disabled)


class GenAIOperation:
    """The handle :meth:`Analytics.genai_operation` yields: records what the call returned."""

    def __init__(self, span: Span | None):
        self._span = span

    def set_usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Token counts (``gen_ai.usage.input_tokens`` / ``output_tokens``)."""
        if self._span is None:
            return
        with contextlib.suppress(Exception):
            if input_tokens is not None:
                self._span.set_attribute("gen_ai.usage.input_tokens", int(input_tokens))
            if output_tokens is not None:
                self._span.set_attribute("gen_ai.usage.output_tokens", int(output_tokens))

    def set_response(self, model: str | None = None, response_id: str | None = None) -> None:
        """The model that actually answered and the provider's response id."""
        if self._span is None:
            return
        with contextlib.suppress(Exception):
            if model is not None:
                self._span.set_attribute("gen_ai.response.model", model)
            if response_id is not None:
                self._span.set_attribute("gen_ai.response.id", response_id)

    def set_error(self, error_type: str) -> None:
        """Marks the operation failed with ``error.type`` (an exception class name or an
        error code such as ``timeout``)."""
        if self._span is None:
            return
        with contextlib.suppress(Exception):
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(Status(StatusCode.ERROR))


# ---- the process-wide default client ----------------------------------------------------------

_default: Analytics | None = None
_default_lock = threading.Lock()


def configure(endpoint: str | None = None, service_name: str | None = None,
              **options: Any) -> Analytics:
    """Creates the process-wide client the module-level functions use (replacing, and
    shutting down, an earlier one). Takes the arguments of :class:`Analytics`."""
    global _default
    with _default_lock:
        old, _default = _default, Analytics(endpoint, service_name, **options)
    if old is not None:
        old.shutdown()
    return _default


def get_analytics() -> Analytics:
    """The process-wide client; created from the ``OTEL_*`` variables on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Analytics()
        return _default


def shutdown(timeout: float = 5.0) -> None:
    """Flushes and stops the process-wide client, if there is one."""
    global _default
    with _default_lock:
        old, _default = _default, None
    if old is not None:
        old.shutdown(timeout)


def flush(timeout: float = 10.0) -> bool:
    """:meth:`Analytics.flush` on the process-wide client."""
    return get_analytics().flush(timeout)


def stats() -> Stats:
    """:meth:`Analytics.stats` of the process-wide client."""
    return get_analytics().stats()


def track(name: str, attributes: Mapping[str, AttributeValue] | None = None, *,
          timestamp: Timestamp = None, **more: AttributeValue) -> None:
    """:meth:`Analytics.track` on the process-wide client."""
    get_analytics().track(name, attributes, timestamp=timestamp, **more)


def track_page_view(route: str, *, referrer: str | None = None, url: str | None = None,
                    user_agent: str | None = None, screen_class: str | None = None,
                    timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_page_view` on the process-wide client."""
    get_analytics().track_page_view(route, referrer=referrer, url=url, user_agent=user_agent,
                                    screen_class=screen_class, timestamp=timestamp,
                                    **attributes)


def end_session(*, timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
    """:meth:`Analytics.end_session` on the process-wide client."""
    get_analytics().end_session(timestamp=timestamp, **attributes)


def track_feature(feature: str, action: str, *, timestamp: Timestamp = None,
                  **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_feature` on the process-wide client."""
    get_analytics().track_feature(feature, action, timestamp=timestamp, **attributes)


def track_conversion(type: str, value: float | None = None, currency: str | None = None, *,
                     timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_conversion` on the process-wide client."""
    get_analytics().track_conversion(type, value, currency, timestamp=timestamp, **attributes)


def track_recommendation(model: str, type: str, confidence: float, *,
                         recommendation_id: str | None = None, timestamp: Timestamp = None,
                         **attributes: AttributeValue) -> str:
    """:meth:`Analytics.track_recommendation` on the process-wide client."""
    return get_analytics().track_recommendation(model, type, confidence,
                                                recommendation_id=recommendation_id,
                                                timestamp=timestamp, **attributes)


def track_recommendation_response(model: str, recommendation_id: str, outcome: Outcome,
                                  response_time: float, *, timestamp: Timestamp = None,
                                  **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_recommendation_response` on the process-wide client."""
    get_analytics().track_recommendation_response(model, recommendation_id, outcome,
                                                  response_time, timestamp=timestamp,
                                                  **attributes)


def track_model_performance(model: str, accuracy: float, latency: float, error_rate: float, *,
                            timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_model_performance` on the process-wide client."""
    get_analytics().track_model_performance(model, accuracy, latency, error_rate,
                                            timestamp=timestamp, **attributes)


def track_evaluation(name: str, score_value: float | None = None, score_label: str | None = None,
                     *, response_id: str | None = None, explanation: str | None = None,
                     timestamp: Timestamp = None, **attributes: AttributeValue) -> None:
    """:meth:`Analytics.track_evaluation` on the process-wide client."""
    get_analytics().track_evaluation(name, score_value, score_label, response_id=response_id,
                                     explanation=explanation, timestamp=timestamp, **attributes)


def genai_operation(operation_name: str, provider_name: str, request_model: str,
                    **attributes: AttributeValue) -> contextlib.AbstractContextManager[GenAIOperation]:
    """:meth:`Analytics.genai_operation` on the process-wide client."""
    return get_analytics().genai_operation(operation_name, provider_name, request_model,
                                           **attributes)


def record_genai_operation(operation_name: str, provider_name: str, request_model: str, *,
                           duration: float, input_tokens: int | None = None,
                           output_tokens: int | None = None, error_type: str | None = None,
                           response_model: str | None = None, end_time: Timestamp = None,
                           **attributes: AttributeValue) -> None:
    """:meth:`Analytics.record_genai_operation` on the process-wide client."""
    get_analytics().record_genai_operation(
        operation_name, provider_name, request_model, duration=duration,
        input_tokens=input_tokens, output_tokens=output_tokens, error_type=error_type,
        response_model=response_model, end_time=end_time, **attributes)
