"""The shared open-visit store: every replica's visits in the Redis or Valkey that holds the
KPI windows, so a visit whose events reach several replicas is one visit, opened once and
closed once.

Three keys under the windows' prefix (one Redis Cluster slot)::

    kpi:{sessions}:open      sorted set: visit key -> when it is due to close (server time)
    kpi:{sessions}:records   hash: visit key -> the open visit, as a JSON array
    kpi:{sessions}:new       sorted set: visit key -> when it opened, until counted as started

Replicas buffer their updates (merged per visit) and send them every second; a Lua script
applies a chunk of them atomically: it merges each into its record (the dimensions are those
of the earliest activity, whichever replica passes it on first), opens the visits it does not
know, pushes each visit's deadline to the server's clock plus the timeout (plus a short
grace for an ended visit), and closes the least recently active visits beyond
``windows.max_open_sessions``. A visit is counted as started once its dimensions have
settled: a claim (ZRANGEBYSCORE and ZREM in one script) takes the visits opened more than
``START_GRACE`` (30 s) ago, or the visit is counted as started when it closes sooner.
Closing claims the visits whose deadline has passed the same way (ZREM and HDEL in one atomic
step), so no two replicas can count the same visit, started or closed.

Both scripts keep their answer under a key of the request's own id for a few minutes: a
request whose answer was lost (a connection cut after the server ran it) is sent again with
the same id and gets the same answer, so no update is applied twice and no claimed visit is
lost or counted twice.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
import uuid
from typing import Any

import redis

from exporter.sessions.store import (
    END, ENDED, EVICTED, TIMEOUT, Delta, Dims, SessionStore, Visit,
)
from exporter.windows.config import WindowsConfig
from exporter.windows.redis import send_delay

__all__ = ["RedisSessionStore", "END_GRACE", "START_GRACE", "CHUNK"]

log = logging.getLogger("kpi_exporter")

# An ended visit waits this long (server time) for events still in another replica's buffer.
END_GRACE = 5.0
# A visit is counted as started this long (server time) after it opened, with the dimensions
# of its earliest activity by then: a replica with a backlog may pass on the landing page
# view well after another replica opened the visit with a later event. A visit that closes
# sooner is counted as started when it closes.
START_GRACE = 30.0
CHUNK = 500  # visits per script call
CLAIM_LIMIT = 1000
DONE_TTL = 300  # seconds an answer is kept for a retry
MEASURE_EVERY = 5.0
SIZE_EVERY = 60.0
_SEP = "\x1f"
_KEY = struct.Struct("<Q")

# KEYS: open, records, done marker, new. ARGV: timeout, grace, max open, done TTL, then 11
# per visit: key, first, last, page views, interactions, flags, entry, entry route, exit,
# exit route, dims. A record: [first, last, page views, interactions, flags, entry,
# entry route, exit, exit route, dims]; times in ms, -1 for none. A visit's dimensions are
# those of its earliest activity. New visits wait in "new" until they are counted as started.
_UPDATE = """
local done = redis.call('GET', KEYS[3])
if done then return done end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local timeout, grace, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local evicted = {}
for i = 5, #ARGV, 11 do
  local key = ARGV[i]
  local first, last = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local flags = tonumber(ARGV[i + 5])
  local entry, exit = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 8])
  local raw = redis.call('HGET', KEYS[2], key)
  local r = nil
  if raw then
    r = cjson.decode(raw)
    if first >= 0 then
      if first < r[1] then r[1] = first; r[10] = ARGV[i + 10] end
      if last > r[2] then r[2] = last end
    end
    r[3] = r[3] + tonumber(ARGV[i + 3])
    r[4] = math.min(3, r[4] + tonumber(ARGV[i + 4]))
    r[5] = bit.bor(r[5], flags)
    if entry >= 0 and (r[6] < 0 or entry < r[6]) then r[6] = entry; r[7] = ARGV[i + 7] end
    if exit >= 0 and (r[8] < 0 or exit >= r[8]) then r[8] = exit; r[9] = ARGV[i + 9] end
  elseif first >= 0 then
    r = {first, last, tonumber(ARGV[i + 3]), math.min(3, tonumber(ARGV[i + 4])), flags,
         entry, ARGV[i + 7], exit, ARGV[i + 9], ARGV[i + 10]}
    redis.call('ZADD', KEYS[4], now, key)
  end
  if r then
    redis.call('HSET', KEYS[2], key, cjson.encode(r))
    if bit.band(r[5], 2) == 2 then
      redis.call('ZADD', KEYS[1], now + grace, key)
    else
      redis.call('ZADD', KEYS[1], now + timeout, key)
    end
  end
end
local total = redis.call('ZCARD', KEYS[1])
if total > cap then
  local over = redis.call('ZPOPMIN', KEYS[1], total - cap)
  for j = 1, #over, 2 do
    local raw = redis.call('HGET', KEYS[2], over[j])
    redis.call('HDEL', KEYS[2], over[j])
    local unstarted = redis.call('ZREM', KEYS[4], over[j])
    if raw then evicted[#evicted + 1] = {raw, unstarted} end
  end
end
local reply = cjson.encode(evicted)
redis.call('SET', KEYS[3], reply, 'EX', ARGV[4])
return reply
"""

# KEYS: open, records, done marker, new. ARGV: how many at most, done TTL. Answers
# [record, 1 when it was not counted as started yet] per visit claimed.
_CLAIM = """
local done = redis.call('GET', KEYS[3])
if done then return done end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[1], key)
  local raw = redis.call('HGET', KEYS[2], key)
  redis.call('HDEL', KEYS[2], key)
  local unstarted = redis.call('ZREM', KEYS[4], key)
  if raw then out[#out + 1] = {raw, unstarted} end
end
local reply = cjson.encode(out)
redis.call('SET', KEYS[3], reply, 'EX', ARGV[2])
return reply
"""

# KEYS: new, records, done marker. ARGV: grace, how many at most, done TTL. Claims the visits
# opened more than the grace ago (their dimensions settled) for counting as started.
_START = """
local done = redis.call('GET', KEYS[3])
if done then return done end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0,
                       tonumber(ARGV[2]))
local out = {}
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[1], key)
  local raw = redis.call('HGET', KEYS[2], key)
  if raw then out[#out + 1] = raw end
end
local reply = cjson.encode(out)
redis.call('SET', KEYS[3], reply, 'EX', ARGV[3])
return reply
"""


def _list(value: Any) -> list[Any]:
    # cjson writes an empty Lua table as {}
    return value if isinstance(value, list) else []


def _dims(text: str) -> Dims:
    values = (text.split(_SEP) + ["unknown"] * 8)[:8]
    return (values[0], values[1], values[2], values[3], values[4], values[5], values[6],
            values[7])


def _visit(raw: str) -> Visit:
    r = json.loads(raw)
    dims = _dims(r[9])
    return Visit(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]),
                 r[6] if r[5] >= 0 else None, r[8] if r[7] >= 0 else None, dims)


def _args(d: Delta) -> list[Any]:
    return [_KEY.pack(d.key), d.first, d.last, d.page_views, d.interactions, d.flags, d.entry,
            d.entry_route, d.exit, d.exit_route,
            _SEP.join(v.replace(_SEP, " ") for v in d.dims)]


class RedisSessionStore(SessionStore):
    """Open visits in the shared store. ``client`` and ``prefix`` are the window store's
    (its salt fingerprint check covers these keys too). Deadlines follow the server's
    clock, so the replicas' clocks do not matter; ``now`` arguments are ignored."""

    def __init__(self, config: WindowsConfig, client: redis.Redis, prefix: str,
                 end_grace: float = END_GRACE, start_grace: float = START_GRACE):
        super().__init__()
        self.config = config
        self.client = client
        self.timeout = config.session_timeout
        self.max_open = config.max_open_sessions
        self.end_grace = end_grace
        self.start_grace = start_grace
        self.open_key = f"{prefix}{{sessions}}:open"
        self.records_key = f"{prefix}{{sessions}}:records"
        self.new_key = f"{prefix}{{sessions}}:new"
        self._done = f"{prefix}{{sessions}}:done:"
        self._update = client.register_script(_UPDATE)
        self._claim = client.register_script(_CLAIM)
        self._start = client.register_script(_START)
        self.dropped = {"store_unavailable": 0}
        self.errors = {"write": 0, "close": 0}
        self.lock = threading.Lock()
        self._pending: dict[int, Delta] = {}
        # chunks sent but not known to be applied: (id, deltas), sent again with the same id
        self._unsent: list[tuple[str, list[Delta]]] = []
        self._claim_id: str | None = None
        self._start_id: str | None = None
        self._flush_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._failures = 0
        self._open: int | None = None
        self._bytes: int | None = None
        self._measured = self._sized = -1e18
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writes ---------------------------------------------------------------------------

    def buffered(self) -> int:
        with self.lock:
            return len(self._pending) + sum(len(c) for _, c in self._unsent)

    def add(self, deltas: list[Delta], now: float) -> None:
        """Buffers the updates, merged per visit; sent within about a second."""
        with self.lock:
            pending = self._pending
            room = self.config.redis_buffer - len(pending) - sum(len(c) for _, c in self._unsent)
            full = 0
            for d in deltas:
                known = pending.get(d.key)
                if known is not None:
                    known.merge(d)
                elif room > 0:
                    pending[d.key] = d
                    room -= 1
                else:
                    full += 1
            self.dropped["store_unavailable"] += full

    def flush(self) -> bool:
        """Sends what is buffered now; True when the store took all of it."""
        with self._flush_lock:
            with self.lock:
                pending = list(self._pending.values())
                self._pending = {}
                chunks = self._unsent + [(uuid.uuid4().hex, pending[i:i + CHUNK])
                                         for i in range(0, len(pending), CHUNK)]
                self._unsent = []
            if not chunks:
                return True
            try:
                pipe = self.client.pipeline(transaction=False)
                for chunk_id, chunk in chunks:
                    args: list[Any] = [self.timeout, self.end_grace, self.max_open, DONE_TTL]
                    for d in chunk:
                        args += _args(d)
                    self._update(keys=[self.open_key, self.records_key, self._done + chunk_id,
                                       self.new_key], args=args, client=pipe)
                replies = pipe.execute()
            except redis.RedisError as exc:
                with self.lock:
                    self._unsent = chunks + self._unsent
                self._failed("write", exc)
                return False
            evicted = [pair for reply in replies for pair in _list(json.loads(reply))]
            self._succeeded()
        self._hand_on(evicted, EVICTED)
        return True

    def _hand_on(self, claimed: list[Any], reason: str) -> None:
        """Counts claimed visits as closed ([record, not started yet] pairs), the ones not
        counted as started yet as started first."""
        if not claimed:
            return
        visits = [_visit(raw) for raw, _ in claimed]
        unstarted = [v.dims for v, (_, flag) in zip(visits, claimed) if flag]
        if unstarted:
            self.on_started(unstarted)
        if reason != EVICTED:
            ended = [v for v in visits if v.flags & ENDED]
            if ended:
                self.on_closed(ended, END)
            visits = [v for v in visits if not v.flags & ENDED]
        if visits:
            self.on_closed(visits, reason)

    # -- closing --------------------------------------------------------------------------

    def close_due(self, now: float) -> int:
        """Counts the visits opened more than the start grace ago as started, then claims the
        visits whose deadline passed (server time) and counts them as closed."""
        closed = 0
        with self._close_lock:
            while True:  # started: a visit's dimensions have settled after the grace
                if self._start_id is None:
                    self._start_id = uuid.uuid4().hex
                try:
                    reply = self._start(keys=[self.new_key, self.records_key,
                                              self._done + self._start_id],
                                        args=[self.start_grace, CLAIM_LIMIT, DONE_TTL])
                except redis.RedisError as exc:
                    self._failed("close", exc)
                    return closed  # the same id is sent again next time
                self._start_id = None
                raws = _list(json.loads(reply))
                if raws:
                    self.on_started([_dims(json.loads(raw)[9]) for raw in raws])
                if len(raws) < CLAIM_LIMIT:
                    break
            while True:
                if self._claim_id is None:
                    self._claim_id = uuid.uuid4().hex
                try:
                    reply = self._claim(keys=[self.open_key, self.records_key,
                                              self._done + self._claim_id, self.new_key],
                                        args=[CLAIM_LIMIT, DONE_TTL])
                except redis.RedisError as exc:
                    self._failed("close", exc)
                    return closed  # the same id is claimed again next time
                self._claim_id = None
                claimed = _list(json.loads(reply))
                self._hand_on(claimed, TIMEOUT)
                closed += len(claimed)
                if len(claimed) < CLAIM_LIMIT:
                    return closed

    # -- health ---------------------------------------------------------------------------

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors[operation] += 1
        self._failures += 1
        if self.up:
            log.error("the shared open-visit store failed (%s: %s); visit updates wait in a "
                      "bounded buffer and visits close once it answers", type(exc).__name__,
                      exc)
        self.up = False

    def _succeeded(self) -> None:
        if not self.up:
            log.info("the shared open-visit store answers again")
        self.up = True
        self._failures = 0

    def open_sessions(self) -> int | None:
        return self._open

    def store_bytes(self) -> int | None:
        return self._bytes

    def measure(self) -> None:
        """Reads how many visits are open and, once a minute, what their keys take."""
        now = time.monotonic()
        try:
            if now - self._measured >= MEASURE_EVERY:
                self._open = int(self.client.zcard(self.open_key))
                self._measured = now
            if now - self._sized >= SIZE_EVERY:
                pipe = self.client.pipeline(transaction=False)
                pipe.memory_usage(self.open_key)
                pipe.memory_usage(self.records_key)
                self._bytes = sum(int(n or 0) for n in pipe.execute())
                self._sized = now
        except redis.RedisError:
            pass  # the write path reports the store's health

    # -- threads --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._send_loop, name="session-store-sender",
                                        daemon=True)
        self._thread.start()

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(send_delay(self._failures))
            self._wake.clear()
            stopping = self._stop.is_set()
            self.flush()
            self.measure()
            if stopping:
                return

    def close(self) -> None:
        """Sends what is buffered (one try) and stops the sender; the client is the window
        store's, which closes it."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)
        else:
            self.flush()
        left = self.buffered()
        if left:
            self.dropped["store_unavailable"] += left
            log.warning("%d visit updates could not be sent to the shared store before the "
                        "exporter stopped", left)
