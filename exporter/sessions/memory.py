"""The embedded open-visit store: one dict in this process, kept in the state snapshot.

Each open visit is a 31-byte record (a 64-byte ``bytes`` object) under a 60-bit key::

    seen        u32  when its last event arrived (wall-clock seconds, rounded up)
    first       u32  its first activity, seconds since the epoch
    first_ms    u16    and the milliseconds
    last        u32  last activity, ms after first
    entry       u32  its earliest page view, ms after first (0xFFFFFFFF: none)
    exit        u32  its latest page view, ms after first (0xFFFFFFFF: none)
    page_views  u16
    bits        u8   interactions (0..3, saturating), converted (4), ended (8)
    entry_route u16  index into the route table
    exit_route  u16
    dims        u16  index into the table of dimension tuples

Routes and dimension tuples are interned: visits share a few hundred of them. The dict is
kept in the order of the visits' last activity (an update moves its visit to the end), so
closing the inactive ones reads from the front and stops at the first that is not due, and
the oldest is the one closed early when ``windows.max_open_sessions`` is reached.
"""

from __future__ import annotations

import base64
import math
import struct
import sys
import threading
from typing import Any

from exporter.sessions.store import (
    CONVERTED, ENDED, END, EVICTED, NO_TIME, OTHER, TIMEOUT, Delta, Dims, SessionStore, Visit,
)

__all__ = ["MemorySessionStore", "RECORD"]

RECORD = struct.Struct("<IIHIIIHBHHH")
_SEEN = struct.Struct("<I")
_KEY = struct.Struct("<Q")
_NONE = 0xFFFFFFFF
_U32 = 0xFFFFFFFE
_U16 = 0xFFFF
_TABLE_MAX = 0xFFFF  # ids are u16
_OTHER_DIMS: Dims = (OTHER,) * 8
_STATE_VERSION = 1


def _offset(t: int, first: int) -> int:
    return min(_U32, max(0, t - first))


class MemorySessionStore(SessionStore):
    """Open visits in this process. ``timeout``: seconds without events that end a visit;
    ``max_open``: visits kept open at most (the least recently active are closed early);
    ``end_grace``: seconds an ended visit waits for events still on their way."""

    def __init__(self, timeout: float, max_open: int, end_grace: float = 0.0):
        super().__init__()
        self.timeout = timeout
        self.max_open = max_open
        self.end_grace = end_grace
        self.lock = threading.Lock()
        self._open: dict[int, bytes] = {}
        self._ended: dict[int, float] = {}
        self._routes: list[str] = [OTHER]
        self._route_ids: dict[str, int] = {OTHER: 0}
        self._dims: list[Dims] = [_OTHER_DIMS]
        self._dim_ids: dict[Dims, int] = {_OTHER_DIMS: 0}

    # -- interning ------------------------------------------------------------------------

    def _route(self, route: str) -> int:
        i = self._route_ids.get(route)
        if i is None:
            if len(self._routes) >= _TABLE_MAX:
                return 0
            i = self._route_ids[route] = len(self._routes)
            self._routes.append(route)
        return i

    def _dim(self, dims: Dims) -> int:
        i = self._dim_ids.get(dims)
        if i is None:
            if len(self._dims) >= _TABLE_MAX:
                return 0
            i = self._dim_ids[dims] = len(self._dims)
            self._dims.append(dims)
        return i

    # -- writes ---------------------------------------------------------------------------

    def add(self, deltas: list[Delta], now: float) -> None:
        seen = math.ceil(now)
        started: list[Dims] = []
        evicted: list[bytes] = []
        pack, unpack = RECORD.pack, RECORD.unpack
        with self.lock:
            store = self._open
            for d in deltas:
                key = d.key
                old = store.pop(key, None)
                if old is None:
                    if d.first == NO_TIME:
                        continue  # an end marker for a visit already closed, or never seen
                    first = d.first
                    entry = _offset(d.entry, first) if d.entry != NO_TIME else _NONE
                    exit_ = _offset(d.exit, first) if d.exit != NO_TIME else _NONE
                    bits = min(3, d.interactions) | (CONVERTED << 2 if d.flags & CONVERTED
                                                     else 0) | (ENDED << 2 if d.flags & ENDED
                                                                else 0)
                    store[key] = pack(
                        seen, first // 1000, first % 1000, _offset(d.last, first), entry, exit_,
                        min(_U16, d.page_views), bits,
                        self._route(d.entry_route) if entry != _NONE else 0,
                        self._route(d.exit_route) if exit_ != _NONE else 0, self._dim(d.dims))
                    started.append(d.dims)
                else:
                    store[key] = self._merge(unpack(old), d, seen, pack)
                if d.flags & ENDED:
                    self._ended[key] = now + self.end_grace
            while len(store) > self.max_open:
                key = next(iter(store))
                evicted.append(store.pop(key))
                self._ended.pop(key, None)
        if started:
            self.on_started(started)
        if evicted:
            self.on_closed([self._visit(r) for r in evicted], EVICTED)

    def _merge(self, r: tuple[int, ...], d: Delta, seen: int, pack: Any) -> bytes:
        (_, first_s, first_ms, last_off, entry_off, exit_off, page_views, bits, entry_route,
         exit_route, dims) = r
        first = first_s * 1000 + first_ms
        last = first + last_off
        entry = first + entry_off if entry_off != _NONE else NO_TIME
        exit_ = first + exit_off if exit_off != _NONE else NO_TIME
        if d.first != NO_TIME:
            if d.first < first:
                first = d.first
                dims = self._dim(d.dims)  # the dimensions of the earliest activity
            if d.last > last:
                last = d.last
        if d.entry != NO_TIME and (entry == NO_TIME or d.entry < entry):
            entry, entry_route = d.entry, self._route(d.entry_route)
        if d.exit != NO_TIME and (exit_ == NO_TIME or d.exit >= exit_):
            exit_, exit_route = d.exit, self._route(d.exit_route)
        bits = (min(3, (bits & 3) + d.interactions) | (bits & ~3)
                | ((d.flags & (CONVERTED | ENDED)) << 2))
        return bytes(pack(seen, first // 1000, first % 1000, _offset(last, first),
                          _offset(entry, first) if entry != NO_TIME else _NONE,
                          _offset(exit_, first) if exit_ != NO_TIME else _NONE,
                          min(_U16, page_views + d.page_views), bits, entry_route, exit_route,
                          dims))

    def close_due(self, now: float) -> int:
        cutoff = now - self.timeout
        timed_out: list[bytes] = []
        ended: list[bytes] = []
        seen_of = _SEEN.unpack_from
        with self.lock:
            store = self._open
            due = []
            for key, rec in store.items():
                if seen_of(rec)[0] > cutoff:
                    break
                due.append(key)
            for key in due:
                timed_out.append(store.pop(key))
                self._ended.pop(key, None)
            if self._ended:
                for key in [k for k, deadline in self._ended.items() if deadline <= now]:
                    del self._ended[key]
                    if key in store:
                        ended.append(store.pop(key))
        if timed_out:
            self.on_closed([self._visit(r) for r in timed_out], TIMEOUT)
        if ended:
            self.on_closed([self._visit(r) for r in ended], END)
        return len(timed_out) + len(ended)

    def _visit(self, rec: bytes) -> Visit:
        (_, first_s, first_ms, last_off, entry_off, exit_off, page_views, bits, entry_route,
         exit_route, dims) = RECORD.unpack(rec)
        first = first_s * 1000 + first_ms
        return Visit(first, first + last_off, page_views, bits & 3, bits >> 2,
                     self._routes[entry_route] if entry_off != _NONE else None,
                     self._routes[exit_route] if exit_off != _NONE else None, self._dims[dims])

    # -- reads ----------------------------------------------------------------------------

    def open_sessions(self) -> int:
        return len(self._open)

    def store_bytes(self) -> int:
        """The dict, its keys and records, and the ended-visit and interning tables."""
        with self.lock:
            n = len(self._open)
            size = sys.getsizeof(self._open) + sys.getsizeof(self._ended)
            if n:
                key = next(iter(self._open))
                size += n * (sys.getsizeof(key) + sys.getsizeof(self._open[key]))
            size += sum(sys.getsizeof(r) for r in self._routes)
            size += len(self._dims) * (sys.getsizeof(_OTHER_DIMS) + 8 * 8)
            return size

    # -- state ----------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """The open visits as a JSON-ready document: the interning tables and one base64
        string of (key, record) pairs in order of last activity."""
        with self.lock:
            blob = b"".join(_KEY.pack(k) + r for k, r in self._open.items())
            return {"version": _STATE_VERSION, "routes": list(self._routes),
                    "dims": [list(d) for d in self._dims],
                    "records": base64.b64encode(blob).decode("ascii"),
                    "ended": [[k, deadline] for k, deadline in self._ended.items()]}

    def parse_state(self, doc: Any, complete: bool) -> tuple[dict[str, Any], list[str]]:
        """Reads an exported document without changing anything; raises ValueError when it
        is malformed. When more was counted after the export (``complete`` False: a crash
        after traffic), the open visits are left out: some of them may have ended, and been
        counted and scraped, before the crash, and would be counted again when they end after
        it."""
        if not isinstance(doc, dict) or doc.get("version") != _STATE_VERSION:
            raise ValueError(f"sessions: expected an object with version {_STATE_VERSION}")
        routes, dims, blob, ended = (doc.get("routes"), doc.get("dims"), doc.get("records"),
                                     doc.get("ended"))
        if not (isinstance(routes, list) and routes and all(isinstance(r, str) for r in routes)
                and len(routes) <= _TABLE_MAX):
            raise ValueError("sessions: 'routes' must be a list of strings")
        if not (isinstance(dims, list) and dims and len(dims) <= _TABLE_MAX and all(
                isinstance(d, list) and len(d) == 8 and all(isinstance(x, str) for x in d)
                for d in dims)):
            raise ValueError("sessions: 'dims' must be a list of 8 strings each")
        if not isinstance(blob, str) or not isinstance(ended, list):
            raise ValueError("sessions: 'records' must be a base64 string, 'ended' a list")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            raise ValueError("sessions: 'records' is not base64") from None
        width = _KEY.size + RECORD.size
        if len(raw) % width:
            raise ValueError("sessions: 'records' has a partial record")
        records: dict[int, bytes] = {}
        for at in range(0, len(raw), width):
            key = _KEY.unpack_from(raw, at)[0]
            rec = raw[at + _KEY.size:at + width]
            fields = RECORD.unpack(rec)
            if max(fields[8], fields[9]) >= len(routes) or fields[10] >= len(dims):
                raise ValueError("sessions: a record names a route or dimensions not in the "
                                 "tables")
            records[key] = rec
        deadlines: dict[int, float] = {}
        for item in ended:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                    and isinstance(item[1], (int, float))):
                raise ValueError("sessions: 'ended' holds [key, deadline] pairs")
            if item[0] in records:
                deadlines[item[0]] = float(item[1])
        if not complete:
            return {"routes": routes, "dims": [tuple(d) for d in dims], "records": {},
                    "ended": {}}, [f"{len(records)} open visits (the exporter counted more after "
                                   f"the state file was written)"]
        return {"routes": routes, "dims": [tuple(d) for d in dims], "records": records,
                "ended": deadlines}, []

    def apply_state(self, staged: dict[str, Any]) -> None:
        """Replaces the open visits with ones read by :meth:`parse_state`."""
        with self.lock:
            self._routes = list(staged["routes"])
            self._route_ids = {r: i for i, r in enumerate(self._routes)}
            self._dims = list(staged["dims"])
            self._dim_ids = {d: i for i, d in enumerate(self._dims)}
            self._open = dict(staged["records"])
            self._ended = dict(staged["ended"])
