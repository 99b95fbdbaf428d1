"""Runs the two listeners under waitress (a production WSGI server) and handles signals:
SIGHUP reloads the config, SIGTERM and SIGINT stop gracefully."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

from waitress.server import create_server

from exporter.config import parse_listen
from exporter.pipeline import Pipeline
from exporter.receiver import create_receiver
from exporter.web import create_web_app

__all__ = ["Server"]

log = logging.getLogger("kpi_exporter")


class Server:
    """The OTLP and metrics listeners of one pipeline. ``start()`` binds and serves in
    background threads; ``stop()`` closes them and runs the shutdown hooks."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.shutdown_hooks: list[Callable[[], None]] = []
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        cfg = self.pipeline.config.server
        receiver = create_receiver(self.pipeline, queued=self._queued)
        web = create_web_app(self.pipeline)
        otlp = parse_listen(cfg.otlp_listen)
        metrics = parse_listen(cfg.metrics_listen)
        # waitress buffers a body before the app sees it; its own cap (with headroom, so the
        # receiver answers most oversized requests itself with an OTLP error body) bounds that.
        common = dict(threads=cfg.threads,
                      max_request_body_size=max(2 * cfg.max_body_size, cfg.max_body_size + 2 ** 20),
                      ident="kpi-exporter", clear_untrusted_proxy_headers=True,
                      channel_timeout=60, connection_limit=1000)
        if otlp == metrics:
            def both(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
                path = environ.get("PATH_INFO", "")
                target = receiver if path.startswith("/v1/") else web
                return target(environ, start_response)
            listeners: list[tuple[str, Any, tuple[str, int]]] = [("otlp+metrics", both, otlp)]
        else:
            listeners = [("otlp", receiver, otlp), ("metrics", web, metrics)]
        for name, app, (host, port) in listeners:
            server = create_server(app, host=host, port=port, map={}, **common)
            self._servers.append(server)
            t = threading.Thread(target=self._run, args=(server,), name=f"listener-{name}",
                                 daemon=True)
            self._threads.append(t)
            log.info("listening for %s on %s:%s", name, host, server.effective_port)
        for t in self._threads:
            t.start()
        self.pipeline.ready.set()

    def _queued(self) -> int:
        """Requests the listeners have read but no worker thread has taken yet."""
        return sum(len(s.task_dispatcher.queue) for s in self._servers)

    def _run(self, server: Any) -> None:
        # waitress's own run() loops until its socket map is empty; closing the server from
        # another thread races with select(). Loop in short steps and close from here instead.
        try:
            while not self._stopped.is_set():
                server.asyncore.loop(timeout=0.2, map=server._map, count=1,
                                     use_poll=server.adj.asyncore_use_poll)
        finally:
            # Let requests already being handled finish (and reach the store) before the
            # shutdown hooks save the state.
            server.task_dispatcher.shutdown(cancel_pending=False, timeout=10)
            try:
                server.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("error closing a listener")
            for channel in list(server._map.values()):
                channel.close()

    @property
    def ports(self) -> list[int]:
        return [int(s.effective_port) for s in self._servers]

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.pipeline.ready.clear()
        for t in self._threads:
            t.join(10)
        for hook in self.shutdown_hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - every hook gets its turn
                log.exception("error in a shutdown hook")

    def serve_forever(self) -> None:
        """Starts, then blocks until SIGTERM or SIGINT; SIGHUP reloads the config."""
        stop = threading.Event()

        def on_term(signum: int, _frame: Any) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stop.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            threading.Thread(target=self.pipeline.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        self.start()
        while not stop.wait(1.0):
            pass
        self.stop()
        log.info("stopped")
