"""TLS in front of the listeners: one asyncio thread accepts every TLS listener's
connections, completes each handshake without blocking anything else, and pipes the
plaintext to the listener's own server on a Unix socket in a private directory.

Why a front rather than TLS inside the servers: waitress (the HTTP server) has no TLS, and
doing the handshake in its single I/O thread or a worker lets one client that connects and
sends nothing stall everyone else. Here a handshake is a coroutine with a timeout: idle,
slow and pre-connecting clients cost a little memory, never a thread. One front also gives
the gRPC listener exactly the same TLS (versions, ciphers, client certificates, allowed
SANs, reload) as the HTTP ones, which grpcio's own credentials cannot express.

Each new connection takes the TLS context current at its handshake; :meth:`reconfigure`
swaps it (a certificate renewed on disk, a reloaded web config) while open connections keep
theirs. The Unix sockets live in a directory only this user can enter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable

from exporter.webconfig import TLSSettings, peer_sans

__all__ = ["TLSFront", "REFUSALS"]

log = logging.getLogger("kpi_exporter")

_CHUNK = 256 * 1024
# Why a connection can be dropped before it reaches its listener's server.
REFUSALS = ("handshake", "client_san", "connection_limit")


@dataclass
class _Listener:
    name: str
    sock: socket.socket
    upstream: str
    alpn: tuple[str, ...]
    server: asyncio.AbstractServer | None = None
    # connections open now, handshakes in progress included
    open: int = 0


class TLSFront:
    """Terminates TLS for listeners added with :meth:`add`. ``on_failure(listener,
    reason)`` is told of every connection dropped before it reached its server (reasons:
    ``handshake``, ``client_san``, ``connection_limit``). ``connection_limit`` holds for
    each listener on its own (as waitress's for a plain one), so clients filling one
    listener, however many, never keep anyone out of another."""

    def __init__(self, tls: TLSSettings, *, handshake_timeout: float = 10.0,
                 connection_limit: int = 1000,
                 on_failure: Callable[[str, str], None] = lambda listener, reason: None):
        self.handshake_timeout = handshake_timeout
        self.connection_limit = connection_limit
        self.on_failure = on_failure
        self.directory = tempfile.mkdtemp(prefix="kpi-exporter-tls-")  # mode 0700
        self._listeners: list[_Listener] = []
        self._tls = tls
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {(): tls.context()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def tls(self) -> TLSSettings:
        return self._tls

    def upstream(self, name: str) -> str:
        """Where the listener ``name``'s own server should listen (a Unix socket path)."""
        return os.path.join(self.directory, f"{name}.sock")

    def add(self, name: str, sock: socket.socket, alpn: tuple[str, ...] = ()) -> None:
        """Serves TLS on ``sock`` (bound, not listening) in front of :meth:`upstream`
        (``name``); ``alpn`` are the application protocols to agree on (``("h2",)`` for
        gRPC)."""
        if alpn not in self._contexts:
            self._contexts = {**self._contexts, alpn: self._tls.context(alpn)}
        self._listeners.append(_Listener(name, sock, self.upstream(name), alpn))

    def reconfigure(self, tls: TLSSettings) -> None:
        """New connections use ``tls`` from now on. Raises (and keeps the current settings)
        when its files do not load."""
        contexts = {alpn: tls.context(alpn) for alpn in self._contexts}
        self._tls, self._contexts = tls, contexts

    def start(self) -> None:
        """Starts accepting on every listener."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        for listener in self._listeners:
            listener.server = loop.run_until_complete(asyncio.start_server(
                functools.partial(self._accepted, listener), sock=listener.sock,
                limit=_CHUNK, backlog=1024))
        self._thread = threading.Thread(target=loop.run_forever, name="tls-front", daemon=True)
        self._thread.start()

    def close_listeners(self) -> None:
        """Stops accepting; connections already open keep going (requests in flight finish)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def close() -> None:
            for listener in self._listeners:
                if listener.server is not None:
                    listener.server.close()

        loop.call_soon_threadsafe(close)

    def stop(self) -> None:
        """Closes every connection and the listeners, and removes the socket directory."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and not loop.is_closed():
            async def shutdown() -> None:
                for listener in self._listeners:
                    if listener.server is not None:
                        listener.server.close()
                for task in list(self._tasks):
                    task.cancel()
                if self._tasks:
                    await asyncio.wait(list(self._tasks), timeout=5)
                asyncio.get_running_loop().stop()

            asyncio.run_coroutine_threadsafe(shutdown(), loop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()
        for listener in self._listeners:
            listener.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- one connection -----------------------------------------------------------------

    async def _accepted(self, listener: _Listener, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if listener.open >= self.connection_limit:
            writer.transport.abort()
            self.on_failure(listener.name, "connection_limit")
            return
        listener.open += 1
        self._tasks.add(task)
        try:
            await self._serve(listener, reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            listener.open -= 1
            self._tasks.discard(task)

    async def _serve(self, listener: _Listener, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        context, allowed = self._contexts[listener.alpn], self._tls.client_allowed_sans
        raw = writer.get_extra_info("socket")
        if raw is not None:
            # a response written in two pieces must not wait for the client's delayed ACK
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await writer.start_tls(context, ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:  # SSLError is OSError
            log.debug("TLS handshake on the %s listener failed: %s", listener.name, exc)
            writer.transport.abort()
            self.on_failure(listener.name, "handshake")
            return
        if allowed is not None:
            cert = writer.get_extra_info("peercert") or {}
            if not peer_sans(cert) & allowed:
                log.debug("client certificate on the %s listener has no allowed SAN",
                          listener.name)
                writer.transport.abort()
                self.on_failure(listener.name, "client_san")
                return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(listener.upstream,
                                                                      limit=_CHUNK)
        except OSError as exc:
            log.warning("the %s listener's server is not reachable: %s", listener.name, exc)
            writer.transport.abort()
            return
        await asyncio.gather(_pipe(reader, up_writer, half_close=True),
                             _pipe(up_reader, writer, half_close=False))


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, half_close: bool) -> None:
    """Copies until ``src`` ends. The client's end of sending is passed on as a half-close
    (the server may still answer); the server closing ends the client's connection."""
    clean = False
    try:
        while True:
            data = await src.read(_CHUNK)
            if not data:
                clean = True
                break
            dst.write(data)
            await dst.drain()
    except (OSError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if clean and half_close and dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()
        except (OSError, RuntimeError):
            dst.transport.abort()
