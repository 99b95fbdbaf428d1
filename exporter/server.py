"""The HTTP listeners, under waitress (a production WSGI server): each serves one WSGI app on
one address; two apps given the same address share one listener, split by path. With a TLS
front, waitress serves each listener on a private Unix socket and the front terminates TLS
on the public address (see ``tlsfront``)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

from waitress.server import create_server

from exporter.config import ServerConfig, parse_listen
from exporter.netutil import bind_socket
from exporter.tlsfront import TLSFront

__all__ = ["Server", "WSGIApp"]

log = logging.getLogger("kpi_exporter")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Server:
    """HTTP listeners. ``add()`` the apps, ``start()`` binds and serves in background
    threads; ``stop()`` lets requests in flight finish, then closes the listeners."""

    def __init__(self, config: ServerConfig, tls: TLSFront | None = None):
        self.config = config
        self.tls = tls
        # address -> [(name, path prefix or "" for the rest, app)]
        self._apps: dict[tuple[str, int], list[tuple[str, str, WSGIApp]]] = {}
        self._reuse_port: set[tuple[str, int]] = set()
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def add(self, name: str, app: WSGIApp, listen: str, prefix: str = "",
            reuse_port: bool = False) -> None:
        """Serves ``app`` on ``listen`` (HOST:PORT). When another app has the same address,
        requests whose path starts with ``prefix`` go to this one. With ``reuse_port``, other
        processes may bind the same address too (SO_REUSEPORT): the kernel spreads new
        connections over them."""
        address = parse_listen(listen)
        self._apps.setdefault(address, []).append((name, prefix, app))
        if reuse_port:
            self._reuse_port.add(address)

    def listener_names(self) -> list[str]:
        """The listeners :meth:`start` opens, by name ("otlp+metrics" for apps sharing one
        address)."""
        return ["+".join(n for n, _p, _a in apps) for apps in self._apps.values()]

    def start(self) -> None:
        cfg = self.config
        # waitress buffers a body before the app sees it; its own cap (with headroom, so the
        # receiver answers most oversized requests itself with an OTLP error body) bounds that.
        common = dict(threads=cfg.threads,
                      max_request_body_size=cfg.buffer_limit,
                      ident="kpi-exporter", clear_untrusted_proxy_headers=True,
                      channel_timeout=60, connection_limit=1000)
        for ((host, port), apps), name in zip(self._apps.items(), self.listener_names()):
            reuse = (host, port) in self._reuse_port
            if self.tls is not None:
                public = bind_socket(host, port, reuse)
                server = create_server(_by_prefix(apps), unix_socket=self.tls.upstream(name),
                                       unix_socket_perms="600", url_scheme="https", map={},
                                       **common)
                self.tls.add(name, public)
                log.info("listening for %s on %s:%s (TLS)", name, host,
                         public.getsockname()[1])
            elif reuse:
                server = create_server(_by_prefix(apps), sockets=[bind_socket(host, port, True)],
                                       map={}, **common)
            else:
                server = create_server(_by_prefix(apps), host=host, port=port, map={}, **common)
            if self.tls is None:
                log.info("listening for %s on %s:%s", name, host, server.effective_port)
            self._servers.append(server)
            t = threading.Thread(target=self._run, args=(server,), name=f"listener-{name}",
                                 daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def queued(self) -> int:
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
            # state is saved.
            server.task_dispatcher.shutdown(cancel_pending=False, timeout=10)
            try:
                server.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("error closing a listener")
            for channel in list(server._map.values()):
                channel.close()

    def stop(self) -> None:
        """Closes the listeners once the requests they are handling are done."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for t in self._threads:
            t.join(10)


def _by_prefix(apps: list[tuple[str, str, WSGIApp]]) -> WSGIApp:
    """One WSGI app for the apps sharing an address: the first whose prefix the path starts
    with, else the one without a prefix."""
    if len(apps) == 1:
        return apps[0][2]
    routed = [(p, a) for _n, p, a in apps if p]
    rest = next((a for _n, p, a in apps if not p), routed[-1][1])

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in routed:
            if path.startswith(prefix):
                return app(environ, start_response)
        return rest(environ, start_response)

    return route
