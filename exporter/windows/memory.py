"""The embedded window store: HyperLogLog sketches (Apache DataSketches) in this process.

Every window is cut into event-time buckets (about 30 to 60 of them: 10 s buckets for 5m,
one day for 30d), and each bucket holds sketches of the salted identity hashes seen in it. A
scrape merges the buckets a window covers. Memory is a function of the windows and the sketch
precision, never of the number of users. The sketches survive a restart in the exporter's
snapshot.

Scrapes never stall ingest. A scrape holds the lock only to pick the sketches it needs, and
merges them after letting it go. It keeps, per window and group, the union of the window's
closed buckets (all but the current one), so most scrapes merge that union with the current
bucket only. A closed bucket changes only when a late event lands in it: that bumps the
group's version, and the unions cut at that bucket width are built again at the next scrape.
A new union is kept only if no late event came in while it was being built.

A record lands in the bucket of its own timestamp, so a batch that arrives late is counted
where it belongs. Records older than every window, or further in the future than
``max_future``, are dropped and counted by reason.
"""

from __future__ import annotations

import atexit
import base64
import collections
import math
import threading
import time
import weakref
from typing import Any, Callable, Iterable

import datasketches

from exporter.pacing import Pacer
from exporter.windows.config import WindowSpec, WindowsConfig
from exporter.windows.store import OVERFLOW_VALUE, Estimate, Event, WindowStore

__all__ = ["MemoryWindowStore"]


class _Cell:
    """The sketches of one bucket of one group: users, sessions, converting sessions.
    ``changes`` counts, per figure, the batches that updated its sketch (under the lock);
    ``size`` is the serialized size of the three as of ``sized_at`` (the sum of the
    changes), so a scrape merges and sizes again only what changed."""

    __slots__ = ("users", "sessions", "conversions", "changes", "size", "sized_at")

    def __init__(self) -> None:
        self.users: Any = None
        self.sessions: Any = None
        self.conversions: Any = None
        self.changes = [0, 0, 0]
        self.size = 0
        self.sized_at = -1


# The group of the totals; a breakdown's groups are (breakdown index, value).
TOTAL: tuple[Any, ...] = ()

# One time slot's identity hashes: users, sessions, converting sessions.
_Slot = tuple[set[int], set[int], set[int]]

_KINDS = ("users", "sessions", "conversions")


class _Closed:
    """The union of a window's closed buckets for one group: one sketch (or None) and its
    estimate per figure, valid while the window's current bucket is ``current`` and the
    group's version at its bucket width is ``version``. ``live`` remembers the current
    bucket and, per figure, the last estimate merged with it and that figure's changes then,
    reused while the figure's sketch in the bucket has not changed. (Each is replaced in one
    assignment, so concurrent scrapes never pair an estimate with the wrong changes.)"""

    __slots__ = ("current", "version", "sketches", "estimates", "live")

    def __init__(self, current: int, version: int, sketches: tuple[Any, Any, Any]):
        self.current = current
        self.version = version
        self.sketches = sketches
        self.estimates = tuple(0.0 if s is None else float(s.get_estimate()) for s in sketches)
        self.live: tuple[_Cell, list[tuple[int, float]]] | None = None

# Runs an iterator to its end in C: the sketch updates of a set without a Python loop.
_consume: Callable[[Iterable[Any]], None] = collections.deque(maxlen=0).extend


class _Tier:
    """Buckets of one width, shared by the windows cut at that width."""

    def __init__(self, width: int, keep: int):
        self.width = width
        self.keep = keep  # buckets, the newest (current) one included
        self.cells: dict[tuple[Any, ...], dict[int, _Cell]] = {}
        self.floor = 0  # the oldest bucket kept; older ones have been dropped

    def oldest(self, now: float) -> int:
        return int(now) // self.width - self.keep + 1


# Every memory store, so that their sketches can be freed before the interpreter shuts down:
# the sketch library reports sketches still alive at that point as leaks, and a pipeline is
# usually in a reference cycle that the final garbage collection reaches too late.
_LIVE: "weakref.WeakSet[MemoryWindowStore]" = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    for windows in list(_LIVE):
        windows.release()


class MemoryWindowStore(WindowStore):
    """The sliding-window sketches. Thread-safe; ``clock`` is wall-clock seconds."""

    def __init__(self, config: WindowsConfig, clock: Callable[[], float] = time.time,
                 max_label_length: int = 256):
        self.config = config
        self.clock = clock
        self.max_label_length = max_label_length
        self.lock = threading.Lock()
        self.lg_k = config.precision
        self._tiers: dict[int, _Tier] = {}
        for w in config.windows:
            tier = self._tiers.get(w.bucket_seconds)
            if tier is None:
                self._tiers[w.bucket_seconds] = _Tier(w.bucket_seconds, w.buckets)
            else:
                tier.keep = max(tier.keep, w.buckets)
        self._slot = math.gcd(*self._tiers) if self._tiers else 1
        all_tiers = tuple(self._tiers.values())
        self._total_tiers = all_tiers
        by_name = {w.name: w for w in config.windows}
        self._breakdown_tiers = tuple(
            tuple(self._tiers[t] for t in sorted({by_name[n].bucket_seconds for n in b.windows}))
            for b in config.breakdowns)
        self._admitted: list[dict[str, None]] = [{} for _ in config.breakdowns]
        # (bucket width, group) -> how many batches put late events into a closed bucket
        self._versions: dict[tuple[int, tuple[Any, ...]], int] = {}
        # (window name, group) -> the union of its closed buckets
        self._closed: dict[tuple[str, tuple[Any, ...]], _Closed] = {}
        self._tier_windows = {width: tuple(w.name for w in config.windows
                                           if w.bucket_seconds == width)
                              for width in self._tiers}
        self.dropped = {"too_old": 0, "in_future": 0}
        self.overflow = [0 for _ in config.breakdowns]
        self.accepted = 0
        _LIVE.add(self)

    def release(self) -> None:
        """Frees every sketch (at exit; the windows count from empty afterwards)."""
        with self.lock:
            for tier in self._tiers.values():
                tier.cells = {}
            self._closed = {}

    # -- writes -------------------------------------------------------------------------------

    def _start(self, w: WindowSpec, now: float) -> int:
        """The first second a window covers at ``now`` (the start of its oldest bucket)."""
        return (int(now) // w.bucket_seconds - w.buckets + 1) * w.bucket_seconds

    def _admit(self, index: int, value: str) -> str:
        admitted = self._admitted[index]
        if value in admitted:
            return value
        if len(value) > self.max_label_length or "\x00" in value:
            # cut to length; NUL is replaced so no value can pose as the overflow marker
            value = value[:self.max_label_length].replace("\x00", "\ufffd")
            if value in admitted:
                return value
        # The overflow value takes the last of max_values, as the store's overflow series does.
        if len(admitted) >= self.config.breakdowns[index].max_values - 1:
            self.overflow[index] += 1
            return OVERFLOW_VALUE
        admitted[value] = None
        return value

    def add(self, events: Iterable[Event]) -> None:
        """Counts events: (time in seconds, user hash or None, session hash or None,
        is a conversion, breakdown values in config order). A time of 0 means now."""
        slot = self._slot
        breakdowns = range(len(self.config.breakdowns))
        # Identities are gathered into sets per time slot first: a batch mostly repeats a few
        # users and sessions within a few seconds, and each sketch then sees each once.
        totals: dict[int, _Slot] = {}
        split: dict[tuple[Any, ...], dict[int, _Slot]] = {}
        with self.lock:
            # The time is read under the lock, so a scrape that took it before sees this
            # batch's current bucket as current (or later), never a closed bucket changing
            # without a version bump.
            now = self.clock()
            now_s = int(now)
            horizon = now + self.config.max_future
            self._rotate(now)
            earliest = min((self._start(w, now) for w in self.config.windows), default=now_s)
            accepted = 0
            for t, user, session, converted, values in events:
                if t > now_s:
                    if t > horizon:
                        self.dropped["in_future"] += 1
                        continue
                    t = now_s  # a client clock a little ahead: counted as now
                elif t < earliest:
                    if t > 0:
                        self.dropped["too_old"] += 1
                        continue
                    t = now_s  # no timestamp at all: the time it arrived
                if user is None and session is None:
                    continue
                accepted += 1
                at = t - t % slot
                entry = totals.get(at)
                if entry is None:
                    entry = totals[at] = (set(), set(), set())
                targets = [entry]
                for i in breakdowns:
                    by_slot = split.setdefault((i, self._admit(i, values[i])), {})
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
            if totals:
                self._apply(TOTAL, self._total_tiers, totals, now)
            for group, by_slot in split.items():
                self._apply(group, self._breakdown_tiers[group[0]], by_slot, now)

    def _apply(self, group: tuple[Any, ...], tiers: tuple[_Tier, ...], slots: dict[int, _Slot],
               now: float) -> None:
        lg_k = self.lg_k
        hll = datasketches.hll_sketch
        hll4 = datasketches.tgt_hll_type.HLL_4
        for tier in tiers:
            width = tier.width
            first = tier.oldest(now)
            by_bucket: dict[int, list[_Slot]] = {}
            for at, entry in slots.items():
                bucket = at // width
                if bucket >= first:
                    by_bucket.setdefault(bucket, []).append(entry)
            if not by_bucket:
                continue
            if min(by_bucket) < int(now) // width:  # late events in a closed bucket
                key = (width, group)
                self._versions[key] = self._versions.get(key, 0) + 1
            cells = tier.cells.get(group)
            if cells is None:
                cells = tier.cells[group] = {}
            for bucket, entries in by_bucket.items():
                cell = cells.get(bucket)
                if cell is None:
                    cell = cells[bucket] = _Cell()
                if len(entries) == 1:
                    users, sessions, conversions = entries[0]
                else:
                    users = set().union(*(e[0] for e in entries))
                    sessions = set().union(*(e[1] for e in entries))
                    conversions = set().union(*(e[2] for e in entries))
                changes = cell.changes
                if users:
                    if cell.users is None:
                        cell.users = hll(lg_k, hll4)
                    _consume(map(cell.users.update, users))
                    changes[0] += 1
                if sessions:
                    if cell.sessions is None:
                        cell.sessions = hll(lg_k, hll4)
                    _consume(map(cell.sessions.update, sessions))
                    changes[1] += 1
                if conversions:
                    if cell.conversions is None:
                        cell.conversions = hll(lg_k, hll4)
                    _consume(map(cell.conversions.update, conversions))
                    changes[2] += 1

    def _rotate(self, now: float) -> None:
        """Drops buckets no window covers any more; frees breakdown values with no data."""
        changed = False
        for tier in self._tiers.values():
            oldest = tier.oldest(now)
            if oldest <= tier.floor:
                continue
            tier.floor = oldest
            for group, cells in list(tier.cells.items()):
                for b in [b for b in cells if b < oldest]:
                    del cells[b]
                    changed = True
                if not cells:
                    del tier.cells[group]
                    # no window covers its data any more: nor do its unions, and the buckets
                    # moved on since they were made
                    self._versions.pop((tier.width, group), None)
                    for name in self._tier_windows[tier.width]:
                        self._closed.pop((name, group), None)
        if changed and self._admitted:
            live = {g for tier in self._tiers.values() for g in tier.cells}
            for i, admitted in enumerate(self._admitted):
                for value in [v for v in admitted if (i, v) not in live]:
                    del admitted[value]

    # -- reads --------------------------------------------------------------------------------

    def estimates(self) -> list[Estimate]:
        """Every window's estimates: the totals (always), then each breakdown value seen.
        Holds the lock only to pick the sketches; merges them without it."""
        plan: list[tuple[WindowSpec, tuple[Any, ...], int, int, _Closed | None, list[_Cell],
                         _Cell | None]] = []
        with self.lock:
            now = self.clock()
            self._rotate(now)
            for w in self.config.windows:
                tier = self._tiers[w.bucket_seconds]
                current = int(now) // w.bucket_seconds
                first = current - w.buckets + 1
                groups: list[tuple[Any, ...]] = [TOTAL]
                groups += sorted((g for g in tier.cells if g and
                                  w.name in self.config.breakdowns[g[0]].windows),
                                 key=lambda g: (g[0], g[1] == OVERFLOW_VALUE, g[1]))
                for group in groups:
                    cells = tier.cells.get(group, {})
                    version = self._versions.get((w.bucket_seconds, group), 0)
                    closed = self._closed.get((w.name, group))
                    closed_cells: list[_Cell] = []
                    if closed is None or closed.current != current or closed.version != version:
                        closed = None
                        closed_cells = [c for b, c in cells.items() if first <= b < current]
                    plan.append((w, group, current, version, closed, closed_cells,
                                 cells.get(current)))
        out: list[Estimate] = []
        built: list[tuple[tuple[str, tuple[Any, ...]], int, _Closed]] = []
        # Sketch merges hold the interpreter lock while they run: after every slice of them,
        # a request thread that waits for it goes first.
        pacer = Pacer()
        for w, group, current, version, closed, closed_cells, live in plan:
            pacer.pace()
            if closed is None:
                closed = _Closed(current, version, tuple(
                    self._union([getattr(c, kind) for c in closed_cells]) for kind in _KINDS))
                built.append(((w.name, group), w.bucket_seconds, closed))
            users, sessions, conversions = self._with_current(closed, live)
            if group and not (users or sessions):
                continue
            out.append(Estimate(w.name, group[0] if group else -1,
                                group[1] if group else "", users, sessions, conversions))
        if built:
            with self.lock:
                for key, width, closed in built:
                    # kept only if no late event landed in its buckets while it was built,
                    # and its group still has data (else rotation has forgotten it)
                    if self._versions.get((width, key[1]), 0) == closed.version and (
                            not key[1] or key[1] in self._tiers[width].cells):
                        self._closed[key] = closed
        return out

    def _union(self, sketches: list[Any]) -> Any:
        """A new sketch of the union of ``sketches`` (None when all are None), in HLL_8: a
        union takes an HLL_8 sketch of its own precision as a plain copy, where an HLL_4 one
        costs a conversion at every scrape."""
        present = [s for s in sketches if s is not None]
        if not present:
            return None
        union = datasketches.hll_union(self.lg_k)
        for s in present:
            union.update(s)
        return union.get_result(datasketches.tgt_hll_type.HLL_8)

    def _with_current(self, closed: _Closed, live: _Cell | None) -> tuple[float, ...]:
        """A window's figures: the closed buckets' union merged with the current bucket; a
        figure whose sketch in that bucket has not changed since the last merge keeps its
        estimate. (A union's estimate reads every register: the costly part.)"""
        if live is None:
            return closed.estimates
        remembered = closed.live
        if remembered is None or remembered[0] is not live:
            remembered = closed.live = (live, [(-1, 0.0)] * 3)
        merged = remembered[1]
        for i, kind in enumerate(_KINDS):
            changes = live.changes[i]  # read first: a change during the merge is seen next
            if merged[i][0] == changes:
                continue
            sketch, base = getattr(live, kind), closed.sketches[i]
            if sketch is None:
                figure = closed.estimates[i]
            elif base is None:
                figure = float(sketch.get_estimate())
            else:
                union = datasketches.hll_union(self.lg_k)
                union.update(base)
                union.update(sketch)
                figure = float(union.get_estimate())
            merged[i] = (changes, figure)
        return tuple(figure for _changes, figure in merged)

    def sketch_bytes(self) -> int:
        """What the sketches would take serialized: a measure of the windows' memory. Only
        the cells that changed since the last call are sized again, outside the lock."""
        with self.lock:
            cells = [c for tier in self._tiers.values() for by_bucket in tier.cells.values()
                     for c in by_bucket.values()]
        total = 0
        for c in cells:
            changes = sum(c.changes)
            if c.sized_at != changes:
                c.size = sum(s.get_compact_serialization_bytes()
                             for s in (c.users, c.sessions, c.conversions) if s is not None)
                c.sized_at = changes
            total += c.size
        return total

    # -- state --------------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """The sketches as a JSON-ready document (sketches base64, compact form)."""
        def enc(s: Any) -> str | None:
            return None if s is None else base64.b64encode(s.serialize_compact()).decode("ascii")

        with self.lock:
            tiers = []
            for width, tier in self._tiers.items():
                cells = []
                for group, by_bucket in tier.cells.items():
                    g: list[str] | None = None
                    if group:
                        b = self.config.breakdowns[group[0]]
                        g = [b.attribute, b.label, group[1]]
                    for bucket, c in by_bucket.items():
                        cells.append([g, bucket, enc(c.users), enc(c.sessions),
                                      enc(c.conversions)])
                tiers.append({"width": width, "cells": cells})
            return {"precision": self.lg_k, "tiers": tiers}

    def parse_state(self, doc: Any, complete: bool
                    ) -> tuple[dict[int, dict[tuple[Any, ...], dict[int, _Cell]]], list[str]]:
        """Reads an exported document without changing anything: (sketches by tier width,
        notes). Raises ValueError when it is malformed. The sketches are restored even when
        more was counted after the export (``complete`` False): an older sketch misses the
        identities seen since, but never counts one twice."""
        if not isinstance(doc, dict) or not isinstance(doc.get("tiers"), list):
            raise ValueError("windows: expected an object with 'tiers'")
        notes: list[str] = []
        breakdowns = {(b.attribute, b.label): i for i, b in enumerate(self.config.breakdowns)}
        staged: dict[int, dict[tuple[Any, ...], dict[int, _Cell]]] = {}
        unknown_groups: set[str] = set()
        for t in doc["tiers"]:
            if not isinstance(t, dict) or not isinstance(t.get("width"), int) \
                    or not isinstance(t.get("cells"), list):
                raise ValueError("windows: a tier needs an integer 'width' and a list of 'cells'")
            width = t["width"]
            if width not in self._tiers:
                notes.append(f"window buckets of {width}s are no longer configured")
                continue
            cells_by_group = staged.setdefault(width, {})
            for cell in t["cells"]:
                if not isinstance(cell, list) or len(cell) != 5 or not isinstance(cell[1], int):
                    raise ValueError("windows: a cell is [group, bucket, users, sessions, "
                                     "conversions]")
                g, bucket = cell[0], cell[1]
                group: tuple[Any, ...] = TOTAL
                if g is not None:
                    if not (isinstance(g, list) and len(g) == 3
                            and all(isinstance(x, str) for x in g)):
                        raise ValueError("windows: a breakdown group is [attribute, label, value]")
                    index = breakdowns.get((g[0], g[1]))
                    if index is None:
                        unknown_groups.add(f"{g[0]} as {g[1]}")
                        continue
                    group = (index, g[2])
                c = _Cell()
                for kind, data in zip(("users", "sessions", "conversions"), cell[2:]):
                    if data is None:
                        continue
                    if not isinstance(data, str):
                        raise ValueError("windows: a sketch is a base64 string")
                    try:
                        setattr(c, kind, datasketches.hll_sketch.deserialize(
                            base64.b64decode(data, validate=True)))
                    except Exception as exc:  # noqa: BLE001 - the library raises several kinds
                        raise ValueError(f"windows: a sketch cannot be read: {exc}") from None
                cells_by_group.setdefault(group, {})[bucket] = c
        notes += [f"the breakdown by {g} is no longer configured" for g in sorted(unknown_groups)]
        return staged, notes

    def apply_state(self, staged: dict[int, dict[tuple[Any, ...], dict[int, _Cell]]]) -> None:
        """Replaces the sketches with ones read by :meth:`parse_state`."""
        now = self.clock()
        with self.lock:
            for tier in self._tiers.values():
                tier.cells = staged.get(tier.width, {})
                tier.floor = 0
            self._closed = {}
            self._admitted = [{} for _ in self.config.breakdowns]
            for tier in self._tiers.values():
                for group in tier.cells:
                    if group and group[1] != OVERFLOW_VALUE:
                        self._admitted[group[0]].setdefault(group[1], None)
            self._rotate(now)

    def close(self) -> None:
        self.release()
        _LIVE.discard(self)
