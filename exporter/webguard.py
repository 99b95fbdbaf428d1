"""What a web config asks of every HTTP request: the response headers it sets, its rate
limit and basic auth against bcrypt hashes, as a WSGI middleware.

Basic auth follows Prometheus' exporter-toolkit: an unknown user is checked against a fixed
hash, so the time taken does not tell which users exist; results, failures included, are
cached (up to 100, about a tenth dropped at random when full) so a scraper's repeated
credentials cost one bcrypt; one bcrypt runs at a time. The cache is keyed by a SHA-256 of
user, hash and password, so no password is kept in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import threading
import time
from typing import Any, Callable, Iterable

import bcrypt

from exporter.webconfig import WebConfig

__all__ = ["BasicAuth", "WebGuard"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# bcrypt of "fakepassword" at cost 10, the toolkit's own
_FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_CACHE_SIZE = 100


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against a web config's users."""

    def __init__(self) -> None:
        self._cache: dict[bytes, bool] = {}
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def check(self, users: dict[str, str], header: str | None) -> bool:
        """True when ``header`` names one of ``users`` with the right password."""
        scheme, _, encoded = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        if not sep:
            return False
        stored = users.get(user)
        hashed = stored.encode() if stored is not None else _FAKE_HASH
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        with self._cache_lock:
            ok = self._cache.get(key)
        if ok is None:
            with self._bcrypt_lock:
                try:
                    ok = bcrypt.checkpw(password.encode(), hashed)
                except ValueError:
                    # bcrypt reads at most 72 bytes of a password; the library refuses longer
                    # ones rather than compare a prefix: not a match.
                    ok = False
            ok = ok and stored is not None
            self._remember(key, ok)
        return ok

    def _remember(self, key: bytes, ok: bool) -> None:
        with self._cache_lock:
            if len(self._cache) >= _CACHE_SIZE:
                for old in random.sample(list(self._cache), _CACHE_SIZE // 10):
                    del self._cache[old]
            self._cache[key] = ok


class _TokenBucket:
    def __init__(self, interval: float, burst: int):
        self.interval, self.burst = interval, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(self.burst),
                              self.tokens + (now - self.stamp) / self.interval)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class WebGuard:
    """Wraps a WSGI app with a web config's headers and, when ``protect`` is set, its rate
    limit and basic auth. :meth:`update` switches to a reloaded web config at once."""

    def __init__(self, app: WSGIApp, config: WebConfig | None, protect: bool,
                 on_denied: Callable[[str], None] = lambda reason: None):
        self.app = app
        self.protect = protect
        self.on_denied = on_denied
        self.auth = BasicAuth()
        self._config: WebConfig | None = None
        self._bucket: _TokenBucket | None = None
        self.update(config)

    def update(self, config: WebConfig | None) -> None:
        bucket = self._bucket
        if config is None or not config.rate_interval:
            bucket = None
        elif bucket is None or (bucket.interval, bucket.burst) != (config.rate_interval,
                                                                     config.rate_burst):
            bucket = _TokenBucket(config.rate_interval, config.rate_burst)
        self._config, self._bucket = config, bucket

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        config, bucket = self._config, self._bucket
        if config is None:
            return self.app(environ, start_response)
        extra = list(config.headers)
        if self.protect:
            if bucket is not None and not bucket.allow():
                self.on_denied("rate_limited")
                return _plain(start_response, "429 Too Many Requests", extra)
            if config.users and not self.auth.check(config.users,
                                                    environ.get("HTTP_AUTHORIZATION")):
                self.on_denied("unauthorized")
                return _plain(start_response, "401 Unauthorized",
                              [("WWW-Authenticate", 'Basic realm="kpi-exporter"'), *extra])
        if not extra:
            return self.app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            names = {k.lower() for k, _v in extra}
            kept = [(k, v) for k, v in headers if k.lower() not in names]
            return start_response(status, kept + extra, exc_info)

        return self.app(environ, start)


def _plain(start_response: Callable[..., Any], status: str,
           headers: list[tuple[str, str]]) -> list[bytes]:
    body = status.split(" ", 1)[1].encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]
