"""The composition root: one place that builds the exporter from its config and wires the
parts together.

    Config -> registry and self-metrics
           -> state directory (its lock, the salt) -> identity hasher, privacy filter
           -> visit enricher (sources, devices, countries)
           -> store, window store and its observer, open-visit store and its observer,
              visit metrics, collectors
           -> Pipeline(filters, observers) -> snapshot restore
           -> listeners (OTLP/HTTP receiver, OTLP/gRPC receiver, metrics web app), behind
              the web config's TLS front and guards

Reload and shutdown are handled here and nowhere else: a reload builds a new config, filter
and rule set and hands them to the pipeline at once, and the new web config to the TLS front
and the guards; a change of the web config file or of a certificate it names reloads just
the web config. A stop closes the listeners (requests in flight finish), stops closing
visits, saves the state, then releases the window store.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter.collectors import MappedMetricsCollector, SelfMetrics, StoreStatsCollector
from exporter.collectors.genai import UnpricedTokensCollector
from exporter.acquisition import Acquisition
from exporter.collectors.selfmetrics import StateMetrics
from exporter.collectors.sessions import SessionsCollector
from exporter.collectors.windows import WindowsCollector
from exporter.config import Config, ConfigError, load_config
from exporter.devices import DeviceDetector
from exporter.enrich import VisitEnricher
from exporter.genai import PriceBook, UnpricedTokens
from exporter.grpc_receiver import GRPC_LISTENER, GrpcReceiver
from exporter.otlp_service import ExportLimiter
from exporter.pipeline import Filter, Observer, Pipeline
from exporter.privacy import AttributeScrubber, IdentityHasher, SaltError, load_or_create_salt
from exporter.receiver import create_receiver
from exporter.server import Server
from exporter.sessions.memory import MemorySessionStore
from exporter.sessions.metrics import VisitMetrics
from exporter.sessions.observer import SessionObserver
from exporter.sessions.redis import RedisSessionStore
from exporter.sessions.store import SessionStore
from exporter.sessions.tracker import SessionTracker
from exporter.state import StateError, StateManager
from exporter.store import Store
from exporter.tlsfront import REFUSALS, TLSFront
from exporter.web import create_web_app
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.webguard import WebGuard
from exporter.windows import EventObserver, MemoryWindowStore, WindowStore
from exporter.windows.redis import RedisWindowStore, WindowStoreError

__all__ = ["App", "build", "StateError", "WindowStoreError"]

log = logging.getLogger("kpi_exporter")


@dataclass
class App:
    """A built exporter: its parts, and the hooks that start, reload and stop it.
    ``started_config`` is the config it was built with (restart-only settings come from it);
    ``config`` is the one in effect now."""

    started_config: Config
    registry: CollectorRegistry
    metrics: SelfMetrics
    store: Store
    pipeline: Pipeline
    hasher: IdentityHasher
    windows: WindowStore | None
    state: StateManager | None
    server: Server
    unpriced: UnpricedTokens = field(default_factory=UnpricedTokens)
    grpc: GrpcReceiver | None = None
    tls: TLSFront | None = None
    guards: list[WebGuard] = field(default_factory=list)
    # the web config in effect: the last one that loaded
    web: WebConfig | None = None
    sessions: SessionTracker | None = None
    enricher: VisitEnricher | None = None
    config_path: str | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False
    _web_watch_stop: threading.Event = field(default_factory=threading.Event)
    _web_watch: threading.Thread | None = None
    # what the web config's files looked like when it was last loaded
    _web_stamp: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        self._web_stamp = self.web.stamp() if self.web is not None else ()

    @property
    def config(self) -> Config:
        return self.pipeline.config

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Binds the listeners, starts the periodic state saves and the window store's
        background work, and reports ready."""
        if self.windows is not None:
            self.windows.start()
        if self.sessions is not None:
            self.sessions.start()
        self.server.start()
        if self.grpc is not None:
            self.grpc.start()
        if self.tls is not None:
            self.tls.start()
        if self.state is not None:
            self.state.start(self.started_config.state.interval)
        self._web_watch = threading.Thread(target=self._watch_web_config,
                                           name="web-config-watch", daemon=True)
        self._web_watch.start()
        self.ready.set()

    def stop(self) -> None:
        """Closes the listeners once the requests in flight are done, saves the state, then
        releases the window store (a shared one is sent what it still buffers first). Safe
        to call more than once, and before start()."""
        if self._stopped:
            return
        self._stopped = True
        self.ready.clear()
        self._web_watch_stop.set()
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.tls is not None:
            steps.append(("closing the TLS listeners", self.tls.close_listeners))
        steps.append(("closing the listeners", self.server.stop))
        if self.grpc is not None:
            steps.append(("closing the gRPC listener", self.grpc.stop))
        if self.tls is not None:
            steps.append(("closing the TLS connections", self.tls.stop))
        if self.sessions is not None:
            # before the final save: no visit is counted after the snapshot is written
            steps.append(("stopping the visits", self.sessions.close))
        if self.state is not None:
            steps.append(("saving the state", self.state.stop))
        if self.windows is not None:
            steps.append(("closing the window store", self.windows.close))
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - every step gets its turn
                log.exception("error %s", what)

    def serve_forever(self) -> None:
        """Starts, then blocks until SIGTERM or SIGINT; SIGHUP reloads the config."""
        stop = threading.Event()

        def on_term(signum: int, _frame: Any) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        try:
            self.start()
            while not stop.wait(1.0):
                pass
        finally:
            self.stop()
        log.info("stopped")

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Reloads the config file the exporter was started with. A valid config takes effect
        at once and keeps the series of every metric whose shape is unchanged; an invalid one
        is refused and the running config stays. Returns (accepted, message)."""
        with self._reload_lock:
            m = self.metrics
            old = self.pipeline.config
            try:
                config = load_config(self.config_path, overrides=self.config_overrides)
                filters = _filters(config, self.started_config, self.hasher, self.enricher)
                kept, dropped = self.pipeline.reconfigure(config, filters,
                                                          PriceBook(config.genai, self.unpriced))
                self.unpriced.max_label_length = config.max_label_value_length
            except ConfigError as exc:
                m.reloads.labels("failure").inc()
                m.last_reload_ok.set(0)
                log.error("config reload refused, keeping the running config: %s",
                          "; ".join(exc.problems))
                return False, ("config reload refused, the running config stays:\n"
                               + "\n".join(exc.problems))
            except Exception:  # noqa: BLE001 - a reload must never take the exporter down
                m.reloads.labels("failure").inc()
                m.last_reload_ok.set(0)
                log.exception("config reload failed with an unexpected error, keeping the "
                              "running config")
                return False, ("config reload failed with an unexpected error (a bug; the "
                               "exporter's log has the traceback), the running config stays")
            m.reloads.labels("success").inc()
            m.last_reload_ok.set(1)
            m.last_reload_time.set_to_current_time()
            message = (f"config reloaded from {config.describe()}; kept the series of {kept} "
                       f"metrics, dropped {dropped}")
            restart_only = _restart_only_changes(old, config)
            restart_only += self._apply_web_config(config.server.web)
            if restart_only:
                message += f"; restart to apply: {', '.join(restart_only)}"
                log.warning("%s changed in the config; restart to apply",
                            ", ".join(restart_only))
            log.info("%s", message)
            return True, message


    # -- the web config ------------------------------------------------------------------------

    def _apply_web_config(self, web: WebConfig | None) -> list[str]:
        """Hands a (validated) web config to the guards and the TLS front; returns what only
        a restart applies (turning TLS on or off)."""
        m = self.metrics
        pending: list[str] = []
        if self.tls is not None and web is not None and web.tls is not None:
            try:
                self.tls.reconfigure(web.tls)
            except (OSError, ValueError) as exc:  # the files changed again since loading
                m.web_config_reloads.labels("failure").inc()
                m.web_config_last_reload_ok.set(0)
                log.error("web config %s: the certificate or key does not load, keeping the "
                          "running TLS settings: %s", web.path, exc)
                return pending
        if (self.tls is not None) != (web is not None and web.tls is not None):
            pending.append("TLS on or off (server.web_config_file tls_server_config)")
        for guard in self.guards:
            guard.update(web)
        if web is not None or self.web is not None:
            m.web_config_reloads.labels("success").inc()
        m.web_config_last_reload_ok.set(1)
        self.web = web
        self._web_stamp = web.stamp() if web is not None else ()
        return pending

    def reload_web_config(self) -> bool:
        """Re-reads the web config file the exporter runs with (its certificate, key or CA,
        or the file itself, changed); a file that does not load is refused with the reason
        and the running settings stay. Returns whether the new one is in effect."""
        with self._reload_lock:
            current = self.web
            if current is None:
                return False
            try:
                web = load_web_config(current.path)
            except WebConfigError as exc:
                self._web_stamp = current.stamp()  # report once per change, not every poll
                self.metrics.web_config_reloads.labels("failure").inc()
                self.metrics.web_config_last_reload_ok.set(0)
                log.error("web config reload refused, keeping the running one: %s",
                          "; ".join(exc.problems))
                return False
            pending = self._apply_web_config(web)
            if pending:
                log.warning("web config %s: restart to apply: %s", web.path, ", ".join(pending))
            log.info("web config reloaded from %s", web.path)
            return True

    def _watch_web_config(self) -> None:
        """Polls the web config file and the files it names once a second: a renewed
        certificate applies to the next connection without a signal."""
        while not self._web_watch_stop.wait(1.0):
            web = self.web
            if web is not None and web.stamp() != self._web_stamp:
                self.reload_web_config()


def _filters(config: Config, started: Config, hasher: IdentityHasher,
             enricher: VisitEnricher | None) -> list[Filter]:
    # The identity keys are those of the windows the exporter started with (restart-only).
    # The denylist goes first: the enricher never sees what it drops.
    scrubber = AttributeScrubber(config.privacy.denylist, started.windows.identity_keys, hasher)
    return [scrubber] if enricher is None else [scrubber, enricher]


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    """The settings that differ between two configs but only take effect at a restart."""
    return [name for name, a, b in (
        ("server.otlp_listen", old.server.otlp_listen, new.server.otlp_listen),
        ("server.otlp_grpc_listen", old.server.otlp_grpc_listen, new.server.otlp_grpc_listen),
        ("server.metrics_listen", old.server.metrics_listen, new.server.metrics_listen),
        ("server.reuse_port", old.server.reuse_port, new.server.reuse_port),
        ("server.threads", old.server.threads, new.server.threads),
        ("windows", old.windows, new.windows),
        ("web_analytics", old.web_analytics, new.web_analytics),
        ("privacy.salt", old.privacy.salt, new.privacy.salt),
        ("state", old.state, new.state),
    ) if a != b]


def build(config: Config, *, config_path: str | None = None,
          config_overrides: dict[str, Any] | None = None, process_metrics: bool = True,
          clock: Callable[[], float] = time.time) -> App:
    """Builds an exporter from ``config``: takes the state directory's lock, loads (or
    creates) the salt, checks a shared window store, restores the snapshot. Raises
    :class:`StateError` when the state directory cannot be used and
    :class:`WindowStoreError` when the shared window store belongs to exporters with another
    salt. ``clock`` is the wall clock the KPI windows bucket by."""
    registry = CollectorRegistry(auto_describe=False)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    metrics = SelfMetrics(registry)

    state: StateManager | None = None
    if config.state.enabled:
        state = StateManager(Path(config.state.dir), StateMetrics(registry))
        state.open()
    else:
        log.warning("state persistence is off (state.enabled: false): counts and windows start "
                    "from zero at every start")
    salt = config.privacy.salt
    if salt is None and state is not None:
        try:
            salt = load_or_create_salt(state.directory)
        except (SaltError, OSError) as exc:
            state.close()
            raise StateError(str(exc)) from None
    hasher = IdentityHasher(salt or secrets.token_hex(32))

    store = Store()
    windows: WindowStore | None = None
    observers: list[Observer] = []
    if config.windows.enabled and config.windows.shared:
        shared = RedisWindowStore(config.windows, hasher.fingerprint, clock=clock,
                                  max_label_length=config.max_label_value_length)
        try:
            shared.open()
        except WindowStoreError:
            shared.close()
            if state is not None:
                state.close()
            raise
        windows = shared
    elif config.windows.enabled:
        windows = MemoryWindowStore(config.windows, clock=clock,
                                    max_label_length=config.max_label_value_length)
    if windows is not None:
        observers.append(EventObserver(windows, hasher))

    enricher: VisitEnricher | None = None
    tracker: SessionTracker | None = None
    visit_metrics: VisitMetrics | None = None
    session_store: SessionStore | None = None
    analytics = config.web_analytics
    if analytics.enabled:
        enricher = VisitEnricher(analytics, config.windows.identity_keys,
                                 Acquisition(analytics.sources, analytics.internal_hosts),
                                 DeviceDetector())
    if analytics.enabled and windows is not None:
        w = config.windows
        visit_metrics = VisitMetrics(analytics, config.max_series_per_metric,
                                     config.max_label_value_length)
        if isinstance(windows, RedisWindowStore):
            session_store = RedisSessionStore(w, windows.client, windows.keys.prefix)
        else:
            session_store = MemorySessionStore(w.session_timeout, w.max_open_sessions)
        tracker = SessionTracker(session_store, visit_metrics, w.session_timeout, clock)
        session_observer = SessionObserver(session_store, hasher, w, analytics, clock,
                                           config.max_label_value_length)
        observers.append(session_observer)
    # GenAI usage is priced by the rules whose value is a cost; the tokens no price covers are
    # counted across reloads, each of which brings a new price book.
    unpriced = UnpricedTokens(config.max_series_per_metric, config.max_label_value_length)
    pipeline = Pipeline(config, store, metrics,
                        filters=_filters(config, config, hasher, enricher), observers=observers,
                        pricer=PriceBook(config.genai, unpriced))
    registry.register(MappedMetricsCollector(store))
    registry.register(UnpricedTokensCollector(unpriced))
    registry.register(StoreStatsCollector(
        store, lambda: (pipeline.mapping.cache_hits, pipeline.mapping.cache_misses),
        more_stores=[visit_metrics.store] if visit_metrics is not None else []))
    if windows is not None:
        registry.register(WindowsCollector(windows))
    if tracker is not None and visit_metrics is not None:
        registry.register(MappedMetricsCollector(visit_metrics.store))
        registry.register(SessionsCollector(tracker, session_observer, config.windows.shared))

    if state is not None:
        state.add("store", store)
        store.on_unsaved_change = state.mark_unsaved
        if windows is not None and not config.windows.shared:
            # a shared store keeps its sketches itself, for every replica
            state.add("windows", windows, salted=True)
        if visit_metrics is not None:
            state.add("visits", visit_metrics.store)
            visit_metrics.store.on_unsaved_change = state.mark_unsaved
        if session_store is not None and not config.windows.shared:
            state.add("sessions", session_store, salted=True)
        state.fingerprint = hasher.fingerprint
        state.restore()

    web = config.server.web
    tls: TLSFront | None = None
    if web is not None and web.tls is not None:
        tls = TLSFront(web.tls, on_failure=lambda listener, reason: metrics.tls_refused.labels(
            listener, reason).inc())
    server = Server(config.server, tls=tls)
    limiter = ExportLimiter()
    grpc = (GrpcReceiver(pipeline, config.server, limiter, tls=tls)
            if config.server.otlp_grpc_listen else None)
    app = App(started_config=config, registry=registry, metrics=metrics, store=store, pipeline=pipeline,
              hasher=hasher, windows=windows, state=state, server=server, unpriced=unpriced,
              grpc=grpc, tls=tls, web=web, sessions=tracker, enricher=enricher,
              config_path=config_path,
              config_overrides=dict(config_overrides or {}))
    # The web config's headers on every HTTP response; its basic auth and rate limit on the
    # metrics listener (OTLP senders authenticate with bearer tokens).
    otlp = WebGuard(create_receiver(pipeline, queued=server.queued, limiter=limiter), web,
                    protect=False)
    web_app = WebGuard(create_web_app(registry, lambda: pipeline.config, app.ready, app.reload),
                       web, protect=True,
                       on_denied=lambda reason: metrics.http_denied.labels(reason).inc())
    app.guards = [otlp, web_app]
    server.add("otlp", otlp, config.server.otlp_listen, prefix="/v1/",
               reuse_port=config.server.reuse_port)
    server.add("metrics", web_app, config.server.metrics_listen)
    # every listener's refusals count from 0 (with TLS off they stay there)
    for listener in server.listener_names() + ([GRPC_LISTENER] if grpc is not None else []):
        for reason in REFUSALS:
            metrics.tls_refused.labels(listener, reason)
    return app
