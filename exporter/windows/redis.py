"""The shared window store: HyperLogLogs in a Redis or Valkey that every replica adds to and
reads, so that any load balancer may spread a user's events over any number of exporters.

Every bucket of every window tier is one HyperLogLog key per figure (users, sessions,
converting sessions) and group (the totals, or one breakdown value); PFCOUNT over a window's
bucket keys is their union. Keys carry a hash tag that holds everything but the bucket, so
the buckets PFCOUNT reads together share a Redis Cluster slot, and they expire on their own
once no window covers them (TTL = window + one bucket)::

    kpi:meta                                      hash: salt fingerprint, key layout, epoch
    kpi:{w10:users:total}:172840213               HLL: users in the 10s bucket 172840213
    kpi:{w10:users:total}:172840184-172840211     HLL: union of the 5m window's older buckets
    kpi:{w1800:sessions:platform=9f2c...}:960223  HLL: sessions of one platform value
    kpi:{w86400:conversions:platform=*}:20004     HLL: converting sessions, overflow value
    kpi:{b:platform}:values                       sorted set: admitted breakdown values,
                                                  scored by when they were last seen

Ingest never waits on the network: :meth:`add` sorts events into an in-memory buffer (at most
``windows.redis_buffer`` events; more are dropped and counted as ``store_unavailable``) and a
background thread sends it every second in one pipeline of PFADD and EXPIRE, leaving out
identities it has already added to a bucket. Scrapes read estimates a background reader
computes on demand, so neither waits longer than a couple of seconds on a slow or absent
store; while the store cannot be reached, the window gauges are left out rather than reported
stale. A read takes a window's two newest buckets as they are and its older ones from one key
holding their union, merged by the first replica to read after the buckets turn, and kept
whole by any writer that adds to one of the buckets (a late event) by merging that bucket
into it: a PFCOUNT of three keys rather than of up to 56.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from exporter.windows.config import WindowsConfig
from exporter.windows.store import OVERFLOW_VALUE, Estimate, Event, WindowStore

__all__ = ["send_delay", "RedisWindowStore", "WindowStoreError", "KeyLayout", "LAYOUT", "KINDS"]

log = logging.getLogger("kpi_exporter")

# The key layout this module reads and writes, kept in the meta hash: a store written in
# another layout is refused rather than misread.
LAYOUT = "1"
KINDS = ("users", "sessions", "conversions")

FLUSH_INTERVAL = 1.0  # seconds between sends: how far behind the store may be
SENT_BUDGET = 262_144  # identity hashes remembered as already sent (about 20 MiB)
PFADD_CHUNK = 4096  # elements per PFADD command
FRESH_FOR = 1.0  # an estimate this young is served without asking the store again
# A window's newest buckets, read as they are: the current one, and the one before it, where
# events that come a little late land. Its older buckets are read from one key that holds
# their union (built once when the buckets turn; see _WINDOW).
NEWEST = 2
SCRAPE_WAIT = 2.0  # how long a scrape waits for a new estimate
STALE_AFTER = 15.0  # an estimate older than this is never served
ADMISSION_TTL = 60.0  # how long a breakdown value's admission is trusted before asking again
ADMISSION_CACHE = 10_000
SIZE_EVERY = 60.0  # how often the keys' size is measured
BACKOFF_MAX = 8.0
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0


def send_delay(failures: int) -> float:
    """Seconds a store's sender waits before its next send: FLUSH_INTERVAL while sends
    succeed; after failures 0.5 s, 1 s, 2 s, ... up to BACKOFF_MAX."""
    return FLUSH_INTERVAL if failures == 0 else min(BACKOFF_MAX, 0.5 * 2 ** (failures - 1))

# Admits breakdown values while the breakdown has fewer than its cap, atomically, so that
# every replica exposes the same values and the same overflow. Values not seen for longer
# than the breakdown's longest window are forgotten first, as their keys have expired.
_ADMIT = """
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[3])
local n = redis.call('ZCARD', key)
local out = {}
for i = 5, #ARGV do
  local seen = redis.call('ZSCORE', key, ARGV[i])
  if seen then
    if tonumber(seen) < now then redis.call('ZADD', key, now, ARGV[i]) end
    out[#out + 1] = 1
  elseif n < cap then
    redis.call('ZADD', key, now, ARGV[i])
    n = n + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call('EXPIRE', key, ARGV[4])
return out
"""

# A window's count of one figure and group: PFCOUNT over the key that merges its older
# buckets (KEYS[1]) and its ARGV[1] newest buckets (the next KEYS). Builds the merged key when
# it is missing and the older buckets follow as the remaining KEYS (returns -1, asking for
# them, when they do not). Atomic: a count never sees a merged key half built.
_WINDOW = """
local newest = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if #KEYS == newest + 1 then return -1 end
  redis.call('PFMERGE', KEYS[1], unpack(KEYS, newest + 2))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return redis.call('PFCOUNT', unpack(KEYS, 1, newest + 1))
"""

# Run by a writer after adding hashes to a bucket (KEYS[1]) that merged keys may hold (the
# other KEYS): merges the bucket into those that exist, which may have been built before the
# hashes arrived. One that does not exist stays so, for a read to build from every bucket.
# Sent with EVAL (no script to load again after a restart); Redis caches it compiled.
_MERGE_LATE = b"""
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PFMERGE', KEYS[i], KEYS[1]) end
end
return 0
"""

# The group of the totals; a breakdown's groups are (breakdown index, value).
TOTAL: tuple[Any, ...] = ()

# One time slot's identity hashes: users, sessions, converting sessions.
_Slot = tuple[set[int], set[int], set[int]]
_Groups = dict[tuple[Any, ...], dict[int, _Slot]]

# redis-py packs every argument of a command in Python (a type check and a copy each), and
# for an identity seen once that cost more than everything else the exporter does with it.
# The sender writes its PFADDs in the Redis protocol itself: each new identity hash is an
# 8-byte bulk string ``$8\r\n<hash>\r\n``, and the hashes of a set are laid into a
# template of such strings by one struct call and eight strided copies, all in C.
_ELEMENT = b"$8\r\n" + bytes(8) + b"\r\n"
_ELEMENT_SIZE = len(_ELEMENT)


def _elements(ids: Collection[int]) -> bytes:
    """``ids`` as PFADD arguments in the Redis protocol: each hash as its 8 bytes, signed
    little-endian (the elements a store's keys have always held)."""
    hashes = struct.pack(f"<{len(ids)}q", *ids)
    out = bytearray(_ELEMENT * len(ids))
    for i in range(8):
        out[4 + i::_ELEMENT_SIZE] = hashes[i::8]
    return bytes(out)


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


class _Batch:
    """A pipeline of commands written in the Redis protocol here: sent in one write, their
    replies read in order, the first error raised (with the command's name only) once every
    reply has been read, so the connection stays usable."""

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = []
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def command(self, name: str, *args: bytes) -> None:
        self._parts.append(b"*%d\r\n%b%b" % (len(args) + 1, _bulk(name.encode("ascii")),
                                              b"".join(map(_bulk, args))))
        self._names.append(name)

    def pfadd(self, key: bytes, elements: bytes, count: int) -> None:
        """PFADD of ``count`` hashes written by :func:`_elements`, PFADD_CHUNK a command."""
        view = memoryview(elements)
        for start in range(0, count, PFADD_CHUNK):
            n = min(PFADD_CHUNK, count - start)
            self._parts.append(b"*%d\r\n$5\r\nPFADD\r\n%b" % (n + 2, _bulk(key)))
            self._parts.append(view[start * _ELEMENT_SIZE:(start + n) * _ELEMENT_SIZE])
            self._names.append("PFADD")

    def execute(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(self._parts)])
            error: redis.ResponseError | None = None
            for name in self._names:
                try:
                    connection.read_response()
                except redis.ResponseError as exc:
                    if error is None:
                        exc.args = (f"{name} failed: {exc.args[0] if exc.args else ''}",
                                    *exc.args[1:])
                        error = exc
            if error is not None:
                raise error
        finally:
            pool.release(connection)


class WindowStoreError(RuntimeError):
    """The shared store cannot be used by this exporter; the message says what to do."""


class KeyLayout:
    """Names every key of the store under one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.meta = f"{prefix}meta"

    @staticmethod
    def group_tag(label: str | None, value: str = "") -> str:
        """The totals, or one breakdown value (hashed: values may hold any character)."""
        if label is None:
            return "total"
        if value == OVERFLOW_VALUE:
            return f"{label}=*"
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8)
        return f"{label}={digest.hexdigest()}"

    def data(self, width: int, kind: str, tag: str, bucket: int) -> str:
        """The HyperLogLog of one figure of one group in one bucket."""
        return f"{self.prefix}{{w{width}:{kind}:{tag}}}:{bucket}"

    def merged(self, width: int, kind: str, tag: str, first: int, last: int) -> str:
        """The union of the HyperLogLogs of buckets ``first`` to ``last``, both included."""
        return f"{self.prefix}{{w{width}:{kind}:{tag}}}:{first}-{last}"

    def values(self, label: str) -> str:
        """The sorted set of a breakdown's admitted values."""
        return f"{self.prefix}{{b:{label}}}:values"


@dataclass
class _Tier:
    width: int
    keep: int  # buckets, the current one included

    def oldest(self, now: float) -> int:
        return int(now) // self.width - self.keep + 1

    def ttl(self, bucket: int, now: float) -> int:
        """Seconds until no window covers ``bucket``, plus one bucket."""
        return max(1, math.ceil((bucket + self.keep + 1) * self.width - now))


@dataclass
class _Merge:
    """The older buckets of one window, figure and group, merged into one key."""

    width: int
    kind: str
    tag: str
    first: int
    last: int
    ttl: int  # seconds the merged key is kept once built


@dataclass
class _Result:
    at: float  # monotonic
    estimates: list[Estimate]


def connect(url: str) -> redis.Redis:
    """A client for ``url`` that fails fast: the store retries on its own schedule."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT,
        retry=Retry(NoBackoff(), 0), health_check_interval=30, client_name="kpi-exporter")


class RedisWindowStore(WindowStore):
    """The sliding-window sketches in a shared Redis or Valkey. Thread-safe.

    ``fingerprint`` names the identity salt (never the salt itself); ``clock`` is wall-clock
    seconds, the time events are bucketed by. :meth:`open` checks the store, :meth:`start`
    runs the sender and the reader, :meth:`close` sends what is left and disconnects."""

    def __init__(self, config: WindowsConfig, fingerprint: str,
                 clock: Callable[[], float] = time.time, max_label_length: int = 256,
                 client: redis.Redis | None = None):
        self.config = config
        self.fingerprint = fingerprint
        self.clock = clock
        self.max_label_length = max_label_length
        self.client = client if client is not None else connect(config.store)
        self.keys = KeyLayout(config.redis_prefix)
        self.where = f"{config.store_display} (prefix {config.redis_prefix!r})"
        self.lock = threading.Lock()
        self._tiers: dict[int, _Tier] = {}
        for w in config.windows:
            tier = self._tiers.get(w.bucket_seconds)
            if tier is None:
                self._tiers[w.bucket_seconds] = _Tier(w.bucket_seconds, w.buckets)
            else:
                tier.keep = max(tier.keep, w.buckets)
        self._slot = math.gcd(*self._tiers) if self._tiers else 1
        by_name = {w.name: w for w in config.windows}
        self._total_tiers = tuple(self._tiers.values())
        self._breakdown_tiers = tuple(
            tuple(self._tiers[t] for t in sorted({by_name[n].bucket_seconds for n in b.windows}))
            for b in config.breakdowns)
        # how long a breakdown value stays admitted after it was last seen: its longest
        # window, and the time a replica trusts an admission without telling the store
        # (the store's last-seen time may be that much older than the value's last event)
        self._value_life = tuple(
            max((by_name[n].seconds + by_name[n].bucket_seconds for n in b.windows), default=0)
            + int(ADMISSION_TTL) for b in config.breakdowns)
        # the bucket counts of the windows read through a merged key, by tier width: for
        # the totals, and for each breakdown
        merged = [w for w in config.windows if w.buckets > NEWEST + 1]
        self._total_spans = {
            t: tuple(sorted({w.buckets for w in merged if w.bucket_seconds == t}))
            for t in self._tiers}
        self._breakdown_spans = tuple(
            {t: tuple(sorted({w.buckets for w in merged
                              if w.bucket_seconds == t and w.name in b.windows}))
             for t in self._tiers}
            for b in config.breakdowns)
        self._admit = self.client.register_script(_ADMIT)
        self._window = self.client.register_script(_WINDOW)

        self.dropped = {"too_old": 0, "in_future": 0, "store_unavailable": 0}
        self.overflow = [0 for _ in config.breakdowns]
        self.accepted = 0
        self.errors = {"write": 0, "read": 0}
        self.up = False

        # buffered events: by raw group (breakdown values not yet admitted), then by slot
        self._pending: _Groups = {}
        self._pending_events: dict[tuple[Any, ...], int] = {}  # per breakdown group
        self._pending_count = 0
        # batches that failed to send, their groups admitted already
        self._retry: _Groups = {}
        self._retry_count = 0
        self._buffered = 0  # events in _pending and _retry
        self._last_error = ""
        # identity hashes already added, by (width, kind, group tag, bucket)
        self._sent: dict[tuple[int, int, str, int], set[int]] = {}
        self._sent_size = 0
        self._admitted: dict[tuple[int, str], tuple[str, float]] = {}
        self._verified = False
        self._server: dict[str, Any] = {}  # INFO server of the store, as last verified
        # a token the first replica to use the store writes into its meta key: another one
        # means the store lost its keys (and another replica noticed first)
        self._epoch: bytes | None = None
        self._failures = 0

        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._want_read = threading.Event()
        self._result: _Result | None = None
        self._result_cond = threading.Condition()
        self._size: int | None = None
        self._size_at = -math.inf
        self._threads: list[threading.Thread] = []

    # -- connection ---------------------------------------------------------------------------

    def open(self) -> None:
        """Checks the store: the salt fingerprint and key layout it holds must be this
        exporter's (they are written on first use). Raises :class:`WindowStoreError` when
        they differ; a store that cannot be reached now is retried in the background."""
        try:
            self._verify()
        except redis.RedisError as exc:
            self._mark_down("write", exc)  # logs what failed; the sender retries
            return
        self.up = True
        server = self._server
        version = (f"Valkey {server['valkey_version']}" if "valkey_version" in server
                   else f"Redis {server['redis_version']}" if "redis_version" in server
                   else "")
        log.info("KPI windows in %s%s", self.where, f" ({version})" if version else "")

    def _server_info(self) -> dict[str, Any]:
        """INFO server, or nothing where the server does not allow it."""
        try:
            return dict(self.client.info("server"))
        except redis.ResponseError:
            return {}

    def _verify(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(self.keys.meta, "salt_fingerprint", self.fingerprint)
        pipe.hsetnx(self.keys.meta, "layout", LAYOUT)
        pipe.hsetnx(self.keys.meta, "epoch", secrets.token_hex(8))
        pipe.hmget(self.keys.meta, ["salt_fingerprint", "layout", "epoch"])
        created, _, _, (fingerprint, layout, epoch) = pipe.execute()
        layout = (layout or b"").decode("ascii", "replace")
        fingerprint = (fingerprint or b"").decode("ascii", "replace")
        if layout != LAYOUT:
            raise WindowStoreError(
                f"the KPI window store {self.where} holds keys in layout {layout!r}, and this "
                f"kpi-exporter reads layout {LAYOUT!r}: give it another windows.redis_prefix, "
                f"or run the same kpi-exporter version on every replica")
        if fingerprint != self.fingerprint:
            raise WindowStoreError(
                f"the KPI window store {self.where} was filled by exporters with another "
                f"identity salt (salt fingerprint {fingerprint}, this exporter's is "
                f"{self.fingerprint}); sharing it would count every user twice. Set the same "
                f"privacy.salt or KPI_EXPORTER_SALT on every replica, or give this deployment "
                f"its own windows.redis_prefix (or delete the key {self.keys.meta} and the "
                f"keys under the prefix to start the windows afresh)")
        if created:
            self._forget_sent()
        self._epoch = epoch
        self._server = self._server_info()
        self._verified = True

    def _check(self, now: float) -> None:
        """Makes sure the store still holds what this exporter sent. A store that lost its
        keys raises nothing: Redis restarted between two sends (the client reconnects on
        its own) without persistence or without its last writes, FLUSHALL, a failover to a
        replica that missed writes. Then the identities remembered as sent to the current
        buckets would stay out of them until the buckets turn (a day for 30d): they are
        sent again, and the salt fingerprint is written again, with a new epoch: the other
        replicas find their epoch gone even when the first to notice has written the salt
        fingerprint back, and send theirs again too."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.meta, ["salt_fingerprint", "epoch"])
        run_id = self._server.get("run_id")
        if run_id is not None:
            pipe.info("server")
        answers = pipe.execute()
        fingerprint, epoch = answers[0]
        now_run = answers[1].get("run_id") if run_id is not None else None
        if (fingerprint == self.fingerprint.encode("ascii") and epoch == self._epoch
                and now_run == run_id):
            return
        why = ("restarted or failed over" if now_run != run_id
               else "lost its keys (flushed or evicted)")
        with self.lock:
            remembered = self._sent
        self._verified = False
        self._verify()
        sent = self._resend(remembered, now)
        log.warning("the KPI window store %s %s; sent again what this exporter had sent to "
                    "the current buckets (%d identity hashes over every window)", self.where,
                    why, sent)

    def _mark_down(self, operation: str, exc: BaseException) -> None:
        self.errors[operation] += 1
        self._failures += 1
        self._verified = False
        # After an outage the store may have lost keys (a restart without persistence): send
        # everything again rather than trust what it had.
        self._forget_sent()
        problem = str(exc) if isinstance(exc, WindowStoreError) else _describe(exc)
        if self.up or problem != self._last_error:
            if isinstance(exc, WindowStoreError):
                log.error("%s; the window gauges are left out of /metrics until it is fixed",
                          problem)
            else:
                log.error("the KPI window store %s failed (%s); the window gauges are left "
                          "out of /metrics and events wait in a bounded buffer until it "
                          "answers", self.where, problem)
            self._last_error = problem
        self.up = False

    def _mark_up(self) -> None:
        if not self.up:
            log.info("the KPI window store %s answers again", self.where)
        self.up = True
        self._failures = 0
        self._last_error = ""

    def _forget_sent(self) -> None:
        with self.lock:
            self._sent = {}
            self._sent_size = 0
            self._admitted = {}

    # -- threads ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background sender and reader."""
        for name, target in (("window-store-sender", self._send_loop),
                             ("window-store-reader", self._read_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Sends what is buffered (one try), stops the threads and disconnects."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._want_read.set()
        with self._result_cond:
            self._result_cond.notify_all()
        for t in self._threads:
            t.join(COMMAND_TIMEOUT + CONNECT_TIMEOUT + 1)
        if not self._threads and self._buffered:
            self.flush()
        with self.lock:
            left = self._buffered
        if left:
            self.dropped["store_unavailable"] += left
            log.warning("%d events of the KPI windows could not be sent to %s before the "
                        "exporter stopped", left, self.where)
        try:
            self.client.close()
        except redis.RedisError:
            pass

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(send_delay(self._failures))
            self._wake.clear()
            stopping = self._stop.is_set()
            self.flush()
            if stopping:
                return

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            self._want_read.wait()
            self._want_read.clear()
            if self._stop.is_set():
                return
            self.refresh()

    # -- writes -------------------------------------------------------------------------------

    def add(self, events: Iterable[Event]) -> None:
        """Buffers events: (time in seconds, user hash or None, session hash or None, is a
        conversion, breakdown values in config order). A time of 0 means now."""
        now = self.clock()
        now_s = int(now)
        horizon = now + self.config.max_future
        slot = self._slot
        breakdowns = range(len(self.config.breakdowns))
        earliest = min(((now_s // w.bucket_seconds - w.buckets + 1) * w.bucket_seconds
                        for w in self.config.windows), default=now_s)
        with self.lock:
            pending, counts = self._pending, self._pending_events
            room = self.config.redis_buffer - self._buffered
            accepted = full = 0
            for t, user, session, converted, values in events:
                if t > now_s:
                    if t > horizon:
                        self.dropped["in_future"] += 1
                        continue
                    t = now_s
                elif t < earliest:
                    if t > 0:
                        self.dropped["too_old"] += 1
                        continue
                    t = now_s
                if user is None and session is None:
                    continue
                if accepted >= room:
                    full += 1
                    continue
                accepted += 1
                at = t - t % slot
                by_slot = pending.get(TOTAL)
                if by_slot is None:
                    by_slot = pending[TOTAL] = {}
                entry = by_slot.get(at)
                if entry is None:
                    entry = by_slot[at] = (set(), set(), set())
                targets = [entry]
                for i in breakdowns:
                    group = (i, values[i])
                    counts[group] = counts.get(group, 0) + 1
                    by_slot = pending.get(group)
                    if by_slot is None:
                        by_slot = pending[group] = {}
                    e = by_slot.get(at)
                    if e is None:
                        e = by_slot[at] = (set(), set(), set())
                    targets.append(e)
                for e in targets:
                    if user is not None:
                        e[0].add(user)
                    if session is not None:
                        e[1].add(session)
                        if converted:
                            e[2].add(session)
            self.accepted += accepted
            self._pending_count += accepted
            self._buffered += accepted
            if full:
                self.dropped["store_unavailable"] += full
            if self._buffered > self.config.redis_buffer // 4 and self.up:
                self._wake.set()

    def flush(self) -> bool:
        """Sends the buffered events now; True when the store took them (or there were
        none and it answered)."""
        with self._flush_lock:
            with self.lock:
                pending, counts, n_pending = (self._pending, self._pending_events,
                                              self._pending_count)
                self._pending, self._pending_events, self._pending_count = {}, {}, 0
                retry, n_retry = self._retry, self._retry_count
                self._retry, self._retry_count = {}, 0
            now = self.clock()
            groups: _Groups | None = None
            try:
                if not self._verified:
                    self._verify()
                else:
                    self._check(now)
                groups = self._admit_groups(pending, counts, now)
                _merge(groups, retry)
                if groups:
                    self._send(groups, now)
            except (WindowStoreError, redis.RedisError) as exc:
                with self.lock:
                    if groups is None:
                        _merge(self._pending, pending)
                        for g, n in counts.items():
                            self._pending_events[g] = self._pending_events.get(g, 0) + n
                        self._pending_count += n_pending
                        _merge(self._retry, retry)
                        self._retry_count += n_retry
                    else:
                        # admitted already: kept apart, so a retry counts no overflow twice
                        _merge(self._retry, groups)
                        self._retry_count += n_pending + n_retry
                self._mark_down("write", exc)
                return False
            with self.lock:
                self._buffered -= n_pending + n_retry
                self._prune_sent(now)
            self._mark_up()
            return True

    def _clean(self, value: str) -> str:
        if len(value) > self.max_label_length or "\x00" in value:
            # cut to length; NUL is replaced so no value can pose as the overflow marker
            return value[:self.max_label_length].replace("\x00", "\ufffd")
        return value

    def _admit_groups(self, pending: _Groups, counts: dict[tuple[Any, ...], int],
                      now: float) -> _Groups:
        """The buffered groups with each breakdown value replaced by what the store admits
        it as: itself, or the overflow value once the breakdown has max_values."""
        breakdowns = self.config.breakdowns
        with self.lock:
            admitted = dict(self._admitted)
        ask: dict[int, list[str]] = {}
        for group in pending:
            if group:
                i, value = group[0], self._clean(group[1])
                known = admitted.get((i, value))
                if known is None or now - known[1] > ADMISSION_TTL:
                    if value not in ask.setdefault(i, []):
                        ask[i].append(value)
        if ask:
            pipe = self.client.pipeline(transaction=False)
            asked = []
            for i, values in ask.items():
                b = breakdowns[i]
                for start in range(0, len(values), 1000):
                    chunk = values[start:start + 1000]
                    self._admit(keys=[self.keys.values(b.label)],
                                args=[b.max_values - 1, int(now), int(now) - self._value_life[i],
                                      self._value_life[i], *chunk], client=pipe)
                    asked.append((i, chunk))
            for (i, chunk), answers in zip(asked, pipe.execute()):
                for value, ok in zip(chunk, answers):
                    admitted[(i, value)] = (value if ok else OVERFLOW_VALUE, now)
            with self.lock:
                if len(admitted) > ADMISSION_CACHE:
                    admitted = {k: v for k, v in admitted.items() if now - v[1] <= 1}
                self._admitted = admitted
        out: _Groups = {}
        for group, slots in pending.items():
            if not group:
                _merge(out, {TOTAL: slots})
                continue
            i = group[0]
            value = admitted[(i, self._clean(group[1]))][0]
            if value == OVERFLOW_VALUE:
                self.overflow[i] += counts.get(group, 0)
            _merge(out, {(i, value): slots})
        return out

    def _send(self, groups: _Groups, now: float) -> None:
        """One pipeline of PFADD and EXPIRE for ``groups``, leaving out the identities
        already added to a bucket; then remembers what it added."""
        batch = _Batch()
        added: list[tuple[tuple[int, int, str, int], set[int]]] = []
        with self.lock:
            sent = self._sent
        labels = [b.label for b in self.config.breakdowns]
        for group, slots in groups.items():
            if group:
                tiers = self._breakdown_tiers[group[0]]
                spans = self._breakdown_spans[group[0]]
                tag = self.keys.group_tag(labels[group[0]], group[1])
            else:
                tiers = self._total_tiers
                spans = self._total_spans
                tag = self.keys.group_tag(None)
            # a set of hashes written out once serves every tier it is new to (each tier
            # usually receives the same set: the events of the last second)
            written: dict[int, tuple[set[int], bytes]] = {}
            for tier in tiers:
                width = tier.width
                first = tier.oldest(now)
                by_bucket: dict[int, list[_Slot]] = {}
                for at, entry in slots.items():
                    bucket = at // width
                    if bucket >= first:
                        by_bucket.setdefault(bucket, []).append(entry)
                for bucket, entries in by_bucket.items():
                    ttl = 0
                    for k, kind in enumerate(KINDS):
                        ids = entries[0][k] if len(entries) == 1 else set().union(
                            *(e[k] for e in entries))
                        if not ids:
                            continue
                        known = sent.get((width, k, tag, bucket))
                        # isdisjoint first: without a repeat visit it only looks, where a
                        # difference builds a new set
                        new = ids if not known or ids.isdisjoint(known) else ids - known
                        if not new:
                            continue
                        if len(new) == len(ids):
                            hit = written.get(id(ids))
                            if hit is None or hit[0] is not ids:
                                hit = written[id(ids)] = (ids, _elements(ids))
                            elements = hit[1]
                        else:
                            elements = _elements(new)
                        ttl = ttl or tier.ttl(bucket, now)
                        self._add(batch, tier, kind, tag, bucket, elements, len(new), ttl,
                                  spans[width], now)
                        added.append(((width, k, tag, bucket), new))
        if added:
            batch.execute(self.client)
        self._remember(added)

    def _add(self, batch: _Batch, tier: _Tier, kind: str, tag: str, bucket: int,
             elements: bytes, count: int, ttl: int, spans: tuple[int, ...],
             now: float) -> None:
        """Adds ``count`` hashes to one bucket key and renews its TTL; then merges the
        bucket into the merged keys that hold it (of the windows of ``spans`` buckets),
        when it is older than a window's newest (an event that came late). Readers whose
        clocks are a bucket ahead of or behind this one's are covered."""
        width = tier.width
        key = self.keys.data(width, kind, tag, bucket).encode()
        batch.pfadd(key, elements, count)
        batch.command("EXPIRE", key, b"%d" % ttl)
        current = int(now) // width
        holders = [self.keys.merged(width, kind, tag, last + NEWEST + 1 - n, last).encode()
                   for n in spans
                   for last in range(max(bucket, current - NEWEST - 1), current - NEWEST + 2)
                   if last + NEWEST + 1 - n <= bucket]
        if holders:
            batch.command("EVAL", _MERGE_LATE, b"%d" % (len(holders) + 1), key, *holders)

    def _resend(self, remembered: dict[tuple[int, int, str, int], set[int]],
                now: float) -> int:
        """Sends again the identities of ``remembered`` whose buckets a window still covers;
        returns how many were sent."""
        batch = _Batch()
        added: list[tuple[tuple[int, int, str, int], set[int]]] = []
        for sent_key, ids in remembered.items():
            width, k, tag, bucket = sent_key
            tier = self._tiers[width]
            if bucket < tier.oldest(now) or not ids:
                continue
            # any window of the tier, whatever the group's breakdown covers
            self._add(batch, tier, KINDS[k], tag, bucket, _elements(ids), len(ids),
                      tier.ttl(bucket, now), self._total_spans[width], now)
            added.append((sent_key, ids))
        if added:
            batch.execute(self.client)
        self._remember(added)
        return sum(len(ids) for _, ids in added)

    def _remember(self, added: list[tuple[tuple[int, int, str, int], set[int]]]) -> None:
        """Keeps the identities just added, within SENT_BUDGET, so they are not sent twice."""
        with self.lock:
            budget = SENT_BUDGET - self._sent_size
            for sent_key, new in added:
                if budget <= 0:
                    break
                known = self._sent.get(sent_key)
                if known is None:
                    known = self._sent[sent_key] = set()
                before = len(known)
                known |= new
                grown = len(known) - before
                budget -= grown
                self._sent_size += grown

    def _prune_sent(self, now: float) -> None:
        """Forgets the identities sent to buckets older than the previous one of their tier."""
        current = {w: int(now) // w for w in self._tiers}
        stale = [k for k in self._sent if k[3] < current[k[0]] - 1]
        for k in stale:
            self._sent_size -= len(self._sent.pop(k))

    # -- reads --------------------------------------------------------------------------------

    def estimates(self) -> list[Estimate] | None:
        """The latest estimates, refreshed from the store when older than a second; None
        while the store cannot be reached or no estimate is fresh enough."""
        if not self.up:
            return None
        with self._result_cond:
            result = self._result
            if result is not None and time.monotonic() - result.at <= FRESH_FOR:
                return result.estimates
            asked = time.monotonic()
            self._want_read.set()
            self._result_cond.wait_for(
                lambda: self._stop.is_set() or (self._result is not None
                                                and self._result.at >= asked), SCRAPE_WAIT)
            result = self._result
        if result is None or not self.up or time.monotonic() - result.at > STALE_AFTER:
            return None
        return result.estimates

    def refresh(self) -> bool:
        """Reads every window's estimates from the store (and, once a minute, the size of
        its keys); True on success."""
        try:
            estimates = self._read(self.clock())
            if time.monotonic() - self._size_at >= SIZE_EVERY:
                self._size = self._measure(self.clock())
                self._size_at = time.monotonic()
        except redis.RedisError as exc:
            self._mark_down("read", exc)
            with self._result_cond:
                self._result_cond.notify_all()
            return False
        with self._result_cond:
            self._result = _Result(time.monotonic(), estimates)
            self._result_cond.notify_all()
        return True

    def _groups(self, now: float) -> list[list[str]]:
        """Every breakdown's admitted values, as the store holds them."""
        if not self.config.breakdowns:
            return []
        pipe = self.client.pipeline(transaction=False)
        for i, b in enumerate(self.config.breakdowns):
            pipe.zrangebyscore(self.keys.values(b.label), int(now) - self._value_life[i], "+inf")
        return [sorted(v.decode("utf-8", "replace") for v in values)
                for values in pipe.execute()]

    def _read(self, now: float) -> list[Estimate]:
        """Every window's estimates. A window's count is its newest buckets and the merged
        key of its older ones: a few keys per PFCOUNT rather than every bucket (up to 56
        for the 7d window), which made reads with breakdowns cost seconds of Redis CPU."""
        values = self._groups(now)
        breakdowns = self.config.breakdowns
        plan: list[tuple[str, tuple[Any, ...]]] = []
        # per count: the keys read; for a window read through a merged key, what it merges
        reads: list[tuple[list[str], _Merge | None]] = []
        for w in self.config.windows:
            width = w.bucket_seconds
            last = int(now) // width
            groups: list[tuple[Any, ...]] = [TOTAL]
            for i, b in enumerate(breakdowns):
                if w.name in b.windows:
                    groups += [(i, v) for v in values[i]] + [(i, OVERFLOW_VALUE)]
            merge = w.buckets > NEWEST + 1
            ttl = math.ceil((last + 2) * width - now)  # until the buckets turn, and one more
            for group in groups:
                tag = (self.keys.group_tag(breakdowns[group[0]].label, group[1]) if group
                       else self.keys.group_tag(None))
                for kind in KINDS:
                    if merge:
                        older = _Merge(width, kind, tag, last - w.buckets + 1, last - NEWEST,
                                       ttl)
                        keys = [self.keys.merged(width, kind, tag, older.first, older.last)]
                        keys += [self.keys.data(width, kind, tag, last - j)
                                 for j in range(NEWEST)]
                        reads.append((keys, older))
                    else:
                        reads.append(([self.keys.data(width, kind, tag, b)
                                       for b in range(last - w.buckets + 1, last + 1)], None))
                plan.append((w.name, group))
        counts = self._counts(reads, build=False)
        missing = [n for n, count in enumerate(counts) if count < 0]
        if missing:
            # merged keys not there (the buckets turned, or a late event reached one of them):
            # built from the older buckets by whichever replica reads first
            for n, count in zip(missing, self._counts([reads[n] for n in missing], build=True)):
                counts[n] = count
        out: list[Estimate] = []
        for n, (window, group) in enumerate(plan):
            users, sessions, conversions = (float(c) for c in counts[3 * n:3 * n + 3])
            if group and not (users or sessions):
                continue
            out.append(Estimate(window, group[0] if group else -1, group[1] if group else "",
                                users, sessions, conversions))
        return out

    def _counts(self, reads: list[tuple[list[str], _Merge | None]], build: bool) -> list[int]:
        """One pipeline of window counts: PFCOUNT over every bucket, or the newest buckets
        and the merged key, which is built where missing when ``build`` (-1 otherwise)."""
        pipe = self.client.pipeline(transaction=False)
        for keys, older in reads:
            if older is None:
                pipe.pfcount(*keys)
                continue
            if build:
                keys = keys + [self.keys.data(older.width, older.kind, older.tag, b)
                               for b in range(older.first, older.last + 1)]
            self._window(keys=keys, args=[NEWEST, older.ttl], client=pipe)
        return [int(c) for c in pipe.execute()]

    def _measure(self, now: float) -> int:
        """The bytes of every live key: what the windows take in the store."""
        values = self._groups(now)
        breakdowns = self.config.breakdowns
        pipe = self.client.pipeline(transaction=False)
        for tier in self._tiers.values():
            tags = [self.keys.group_tag(None)]
            for i, b in enumerate(breakdowns):
                if tier in self._breakdown_tiers[i]:
                    tags += [self.keys.group_tag(b.label, v)
                             for v in (*values[i], OVERFLOW_VALUE)]
            last = int(now) // tier.width
            for tag in tags:
                for kind in KINDS:
                    for bucket in range(last - tier.keep + 1, last + 1):
                        pipe.strlen(self.keys.data(tier.width, kind, tag, bucket))
        for w in self.config.windows:
            if w.buckets <= NEWEST + 1:
                continue
            last = int(now) // w.bucket_seconds
            tags = [self.keys.group_tag(None)]
            for i, b in enumerate(breakdowns):
                if w.name in b.windows:
                    tags += [self.keys.group_tag(b.label, v)
                             for v in (*values[i], OVERFLOW_VALUE)]
            for tag in tags:
                for kind in KINDS:
                    pipe.strlen(self.keys.merged(w.bucket_seconds, kind, tag,
                                                 last - w.buckets + 1, last - NEWEST))
        return sum(pipe.execute())

    def buffered_events(self) -> int:
        """Events waiting to be sent to the store."""
        return self._buffered

    def sketch_bytes(self) -> int | None:
        """What the windows' keys take in the store, measured once a minute; None before
        the first measure."""
        return self._size


def _merge(into: _Groups, groups: _Groups) -> None:
    for group, slots in groups.items():
        target = into.get(group)
        if target is None:
            into[group] = slots
            continue
        for at, entry in slots.items():
            mine = target.get(at)
            if mine is None:
                target[at] = entry
            else:
                for k in range(3):
                    mine[k].update(entry[k])


# redis-py quotes a failed pipeline command with its arguments: identity hashes and
# breakdown values, which the log never carries. Only the command's name is kept.
_PIPELINE_ERROR = re.compile(r"Command # \d+ \((\S*).*\) of pipeline caused error: ", re.DOTALL)


def _describe(exc: BaseException) -> str:
    text = _PIPELINE_ERROR.sub(r"\1 failed: ", str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
