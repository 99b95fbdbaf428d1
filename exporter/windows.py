"""KPI windows: distinct users, distinct sessions and converting sessions over sliding windows.

Every window is cut into event-time buckets (about 30 to 60 of them: 10 s buckets for 5m,
one day for 30d), and each bucket holds HyperLogLog sketches (Apache DataSketches) of the
salted identity hashes seen in it. A scrape merges the buckets a window covers. Memory is a
function of the windows and the sketch precision, never of the number of users.

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
import weakref
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import datasketches

from exporter.privacy import AttributeScrubber, IdentityHasher
from exporter.records import LOG, Batch
from exporter.configcheck import get_bool, get_names, open_section
from exporter.rules import Rule, unknown_keys, label_str, parse_duration
from exporter.yamlload import line_of

if TYPE_CHECKING:
    from exporter.mapper import MapResult
    from exporter.pipeline import Pipeline

__all__ = [
    "WindowSpec", "BreakdownSpec", "WindowsConfig", "parse_windows", "Windows", "Estimate",
    "EventObserver", "KpiRuntime", "install", "format_duration", "relative_error_bound",
    "OVERFLOW_VALUE", "WINDOW_METRICS", "Event",
]

DEFAULT_DURATIONS = ("5m", "1h", "1d", "7d", "30d")
# Bucket widths a window may be cut into; the largest that divides the window into at least
# _MIN_BUCKETS buckets is used, so a window's trailing edge is accurate to 1/30 of it or better.
_BUCKET_LADDER = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                  86400)
_MIN_BUCKETS = 30
_MAX_WINDOW = 400 * 86400
# The standard deviations the stated error bound covers (99.7% of estimates).
BOUND_STDDEVS = 3

# Breakdown values past a breakdown's cap are counted under this value, rendered as the
# otel_metric_overflow="true" series like any capped label.
OVERFLOW_VALUE = "\x00overflow"

WINDOW_METRICS = ("app_active_users", "app_sessions", "app_conversion_rate_ratio")
_WINDOWS_KEYS = ("enabled", "durations", "precision", "max_future", "user_attribute",
                 "session_attribute", "conversion_events", "breakdowns")
_BREAKDOWN_KEYS = ("attribute", "label", "max_values", "default", "windows")

# (event time in seconds, user hash, session hash, is a conversion, breakdown values)
Event = tuple[int, int | None, int | None, bool, tuple[str, ...]]


def format_duration(seconds: int) -> str:
    """A window's label value: the largest unit that divides it exactly (7d, 1h, 90s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def relative_error_bound(precision: int) -> float:
    """The relative error the window gauges stay within (3 standard deviations, merged
    sketches), as DataSketches computes it for HLL sketches of ``2**precision`` registers."""
    return abs(datasketches.hll_sketch.get_rel_err(True, True, precision, BOUND_STDDEVS))


@dataclass(frozen=True)
class WindowSpec:
    """One sliding window: its label value, length and bucket width in seconds."""

    name: str
    seconds: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        return self.seconds // self.bucket_seconds


def window_spec(seconds: int) -> WindowSpec:
    """The spec of a window of ``seconds``, with its bucket width chosen from the ladder."""
    width = 1
    for w in _BUCKET_LADDER:
        if seconds % w == 0 and seconds // w >= _MIN_BUCKETS:
            width = w
    return WindowSpec(format_duration(seconds), seconds, width)


@dataclass(frozen=True)
class BreakdownSpec:
    """Window gauges split by one bounded attribute (a platform, a plan tier)."""

    attribute: str
    label: str
    max_values: int = 20
    default: str = "unknown"
    windows: tuple[str, ...] = ()


@dataclass
class WindowsConfig:
    """The ``windows`` section."""

    enabled: bool = True
    windows: tuple[WindowSpec, ...] = tuple(
        window_spec(int(parse_duration(d))) for d in DEFAULT_DURATIONS)
    precision: int = 14
    max_future: float = 600.0
    user_attribute: str = "user.id"
    session_attribute: str = "session.id"
    conversion_events: tuple[str, ...] = ("app.conversion",)
    breakdowns: tuple[BreakdownSpec, ...] = ()

    @property
    def identity_keys(self) -> tuple[str, ...]:
        return (self.user_attribute, self.session_attribute)


def _breakdown_family(base: str, label: str) -> str:
    if base.endswith("_ratio"):
        return f"{base[:-len('_ratio')]}_by_{label}_ratio"
    return f"{base}_by_{label}"


def breakdown_metric_names(label: str) -> tuple[str, ...]:
    """The metric names a breakdown by ``label`` is exposed as."""
    return tuple(_breakdown_family(m, label) for m in WINDOW_METRICS)


def parse_windows(raw: Any, user_rules: list[Rule], problems: list[str]) -> WindowsConfig:
    """Parses the ``windows`` section; each problem names the key and what to do."""
    from exporter import naming  # naming is light; imported here to keep the top tidy

    cfg = WindowsConfig()
    raw, where = open_section(raw, "windows", _WINDOWS_KEYS, "'durations' and 'breakdowns'",
                              problems)
    cfg.enabled = get_bool(raw, "enabled", where, problems, cfg.enabled)
    if "durations" in raw:
        durations = raw["durations"]
        if not isinstance(durations, list) or not durations:
            problems.append(f"{where}: durations: expected a list of durations like "
                            f"[5m, 1h, 1d, 7d, 30d]")
        else:
            specs: dict[int, WindowSpec] = {}
            for d in durations:
                try:
                    seconds = parse_duration(d)
                except ValueError as exc:
                    problems.append(f"{where}: durations: {exc}")
                    continue
                if seconds != int(seconds) or not 10 <= seconds <= _MAX_WINDOW:
                    problems.append(f"{where}: durations: {d!r} must be a whole number of "
                                    f"seconds between 10s and 400d")
                    continue
                specs[int(seconds)] = window_spec(int(seconds))
            cfg.windows = tuple(specs[s] for s in sorted(specs))
    if "precision" in raw:
        p = raw["precision"]
        if isinstance(p, bool) or not isinstance(p, int) or not 8 <= p <= 18:
            problems.append(f"{where}: precision: expected an integer from 8 to 18 (log2 of the "
                            f"sketch registers; 14 gives {relative_error_bound(14):.1%}), "
                            f"got {p!r}")
        else:
            cfg.precision = p
    if "max_future" in raw:
        try:
            cfg.max_future = parse_duration(raw["max_future"])
        except ValueError as exc:
            problems.append(f"{where}: max_future: {exc}")
    for key in ("user_attribute", "session_attribute"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, str) or not v:
                problems.append(f"{where}: {key}: expected an attribute name, got {v!r}")
            else:
                setattr(cfg, key, v)
    if cfg.user_attribute == cfg.session_attribute:
        problems.append(f"{where}: user_attribute and session_attribute are both "
                        f"{cfg.user_attribute!r}; sessions and users need their own attributes")
    events = get_names(raw, "conversion_events", where, problems,
                       "event names, like [app.conversion]")
    if events is not None:
        cfg.conversion_events = events

    names = {w.name for w in cfg.windows}
    breakdowns = raw.get("breakdowns", [])
    if not isinstance(breakdowns, list):
        problems.append(f"{where}: breakdowns: expected a list of "
                        f"{{attribute: ..., label: ...}} mappings")
        breakdowns = []
    parsed: list[BreakdownSpec] = []
    for i, b in enumerate(breakdowns):
        bw = f"windows.breakdowns[{i}]" + (f" (line {line_of(b)})" if line_of(b) else "")
        if not isinstance(b, dict):
            problems.append(f"{bw}: expected a mapping like {{attribute: app.platform, "
                            f"label: platform}}")
            continue
        problems.extend(unknown_keys(b, _BREAKDOWN_KEYS, bw))
        attribute = b.get("attribute")
        if not isinstance(attribute, str) or not attribute:
            problems.append(f"{bw}: attribute: expected an attribute name like app.platform")
            continue
        if naming.is_identity_attribute(attribute) or attribute in cfg.identity_keys:
            problems.append(f"{bw}: attribute {attribute!r} identifies a person, device or "
                            f"session; a breakdown needs a bounded attribute such as a "
                            f"platform or a plan tier")
            continue
        label = b.get("label", attribute.replace(".", "_").replace("-", "_"))
        problems.extend(f"{bw}: {p}" for p in naming.check_label_name(str(label), "gauge"))
        if label == "window":
            problems.append(f"{bw}: label 'window' is taken by the window itself; pick another")
        max_values = b.get("max_values", 20)
        if isinstance(max_values, bool) or not isinstance(max_values, int) or \
                not 2 <= max_values <= 1000:
            problems.append(f"{bw}: max_values: expected an integer from 2 to 1000 (each value "
                            f"costs as much memory as the totals), got {max_values!r}")
            max_values = 20
        default = b.get("default", "unknown")
        bwindows = b.get("windows", sorted(names, key=lambda n: parse_duration(n)))
        if isinstance(bwindows, str):
            bwindows = [bwindows]
        chosen: list[str] = []
        if not isinstance(bwindows, list) or not bwindows:
            problems.append(f"{bw}: windows: expected a list of window durations, like [1d, 7d] "
                            f"(leave it out for every window)")
        else:
            for w in bwindows:
                try:
                    n = format_duration(int(parse_duration(w)))
                except ValueError as exc:
                    problems.append(f"{bw}: windows: {exc}")
                    continue
                if n not in names:
                    problems.append(f"{bw}: windows: {w!r} is not one of windows.durations "
                                    f"({', '.join(w.name for w in cfg.windows)})")
                    continue
                chosen.append(n)
        parsed.append(BreakdownSpec(attribute, str(label), max_values, label_str(default),
                                    tuple(dict.fromkeys(chosen))))
    labels = [b.label for b in parsed]
    for label in {x for x in labels if labels.count(x) > 1}:
        problems.append(f"{where}: breakdowns: the label {label!r} is used twice; give each "
                        f"breakdown its own label")
    cfg.breakdowns = tuple(parsed)

    if cfg.enabled:
        reserved = set(WINDOW_METRICS)
        for b in cfg.breakdowns:
            reserved.update(breakdown_metric_names(b.label))
        for rule in user_rules:
            if rule.metric.name in reserved:
                problems.append(f"{rule.title}: {rule.metric.name!r} is a KPI window metric "
                                f"(docs/kpis.md); rename the rule's metric, or set "
                                f"windows.enabled: false")
    return cfg


class _Cell:
    """The sketches of one bucket of one group: users, sessions, converting sessions."""

    __slots__ = ("users", "sessions", "conversions")

    def __init__(self) -> None:
        self.users: Any = None
        self.sessions: Any = None
        self.conversions: Any = None


# The group of the totals; a breakdown's groups are (breakdown index, value).
TOTAL: tuple[Any, ...] = ()

# One time slot's identity hashes: users, sessions, converting sessions.
_Slot = tuple[set[int], set[int], set[int]]

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


@dataclass
class Estimate:
    """One window's figures for the totals or one breakdown value."""

    window: str
    breakdown: int  # -1 for the totals
    value: str
    users: float
    sessions: float
    conversions: float

    @property
    def conversion_rate(self) -> float:
        """Converting sessions over sessions; 0 when there were no sessions."""
        if self.sessions <= 0:
            return 0.0
        return min(1.0, self.conversions / self.sessions)


# Every Windows object, so that their sketches can be freed before the interpreter shuts down:
# the sketch library reports sketches still alive at that point as leaks, and a pipeline is
# usually in a reference cycle that the final garbage collection reaches too late.
_LIVE: "weakref.WeakSet[Windows]" = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    for windows in list(_LIVE):
        windows.release()


class Windows:
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
        self.dropped = {"too_old": 0, "in_future": 0}
        self.overflow = [0 for _ in config.breakdowns]
        self.accepted = 0
        _LIVE.add(self)

    def release(self) -> None:
        """Frees every sketch (at exit; the windows count from empty afterwards)."""
        with self.lock:
            for tier in self._tiers.values():
                tier.cells = {}

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
        now = self.clock()
        now_s = int(now)
        horizon = now + self.config.max_future
        slot = self._slot
        breakdowns = range(len(self.config.breakdowns))
        # Identities are gathered into sets per time slot first: a batch mostly repeats a few
        # users and sessions within a few seconds, and each sketch then sees each once.
        totals: dict[int, _Slot] = {}
        split: dict[tuple[Any, ...], dict[int, _Slot]] = {}
        with self.lock:
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
                if users:
                    if cell.users is None:
                        cell.users = hll(lg_k, hll4)
                    _consume(map(cell.users.update, users))
                if sessions:
                    if cell.sessions is None:
                        cell.sessions = hll(lg_k, hll4)
                    _consume(map(cell.sessions.update, sessions))
                if conversions:
                    if cell.conversions is None:
                        cell.conversions = hll(lg_k, hll4)
                    _consume(map(cell.conversions.update, conversions))

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
        if changed and self._admitted:
            live = {g for tier in self._tiers.values() for g in tier.cells}
            for i, admitted in enumerate(self._admitted):
                for value in [v for v in admitted if (i, v) not in live]:
                    del admitted[value]

    # -- reads --------------------------------------------------------------------------------

    def estimates(self) -> list[Estimate]:
        """Every window's estimates: the totals (always), then each breakdown value seen."""
        now = self.clock()
        out: list[Estimate] = []
        with self.lock:
            self._rotate(now)
            for w in self.config.windows:
                tier = self._tiers[w.bucket_seconds]
                first = int(now) // w.bucket_seconds - w.buckets + 1
                groups: list[tuple[Any, ...]] = [TOTAL]
                groups += sorted((g for g in tier.cells if g and
                                  w.name in self.config.breakdowns[g[0]].windows),
                                 key=lambda g: (g[0], g[1] == OVERFLOW_VALUE, g[1]))
                for group in groups:
                    cells = [c for b, c in tier.cells.get(group, {}).items() if b >= first]
                    users, sessions, conversions = (
                        self._merge([getattr(c, kind) for c in cells])
                        for kind in ("users", "sessions", "conversions"))
                    if group and not (users or sessions):
                        continue
                    out.append(Estimate(w.name, group[0] if group else -1,
                                        group[1] if group else "", users, sessions, conversions))
        return out

    def _merge(self, sketches: list[Any]) -> float:
        present = [s for s in sketches if s is not None]
        if not present:
            return 0.0
        if len(present) == 1:
            return float(present[0].get_estimate())
        union = datasketches.hll_union(self.lg_k)
        for s in present:
            union.update(s)
        return float(union.get_estimate())

    def sketch_bytes(self) -> int:
        """What the sketches would take serialized: a measure of the windows' memory."""
        total = 0
        with self.lock:
            for tier in self._tiers.values():
                for cells in tier.cells.values():
                    for c in cells.values():
                        for s in (c.users, c.sessions, c.conversions):
                            if s is not None:
                                total += s.get_compact_serialization_bytes()
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

    def parse_state(self, doc: Any) -> tuple[dict[int, dict[tuple[Any, ...], dict[int, _Cell]]],
                                             list[str]]:
        """Reads an exported document without changing anything: (sketches by tier width,
        notes). Raises ValueError when the document is malformed."""
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
            self._admitted = [{} for _ in self.config.breakdowns]
            for tier in self._tiers.values():
                for group in tier.cells:
                    if group and group[1] != OVERFLOW_VALUE:
                        self._admitted[group[0]].setdefault(group[1], None)
            self._rotate(now)


class EventObserver:
    """The pipeline observer feeding the windows: identities of every event (a log record
    with an event name) are hashed and counted; raw identity values go no further."""

    def __init__(self, windows: Windows, hasher: IdentityHasher):
        self.windows = windows
        self.hasher = hasher
        cfg = windows.config
        self._user = cfg.user_attribute
        self._session = cfg.session_attribute
        self._conversions = frozenset(cfg.conversion_events)
        self._breakdowns = tuple((b.attribute, b.default) for b in cfg.breakdowns)

    def __call__(self, batch: Batch, _result: MapResult | None = None) -> None:
        if batch.signal != LOG:
            return
        user_key, session_key = self._user, self._session
        conversions, breakdowns = self._conversions, self._breakdowns
        hash_id = self.hasher.hash
        seen: dict[Any, int] = {}
        events: list[Event] = []
        for record in batch.records:
            name = record.name
            if not name:
                continue  # a plain log line, not an event
            attrs = record.attributes
            user: int | None = None
            session: int | None = None
            u = attrs.get(user_key)
            if u is not None and u != "":
                if type(u) is not str:
                    u = label_str(u)
                user = seen.get(u)
                if user is None:
                    user = seen[u] = hash_id(u)
            s = attrs.get(session_key)
            if s is not None and s != "":
                if type(s) is not str:
                    s = label_str(s)
                session = seen.get(s)
                if session is None:
                    session = seen[s] = hash_id(s)
            values: tuple[str, ...] = ()
            if breakdowns:
                values = tuple(_value(attrs.get(a), d) for a, d in breakdowns)
            events.append((record.time_ns // 1_000_000_000, user, session,
                           name in conversions, values))
        if events:
            self.windows.add(events)


def _value(v: Any, default: str) -> str:
    if v is None or v == "":
        return default
    return v if type(v) is str else label_str(v)


@dataclass
class KpiRuntime:
    """What :func:`install` wired into a pipeline, for the state module to reach."""

    hasher: IdentityHasher
    scrubber: AttributeScrubber
    windows: Windows | None = None
    salt_from_config: bool = False
    notes: list[str] = field(default_factory=list)


def install(pipeline: Pipeline, clock: Callable[[], float] = time.time) -> KpiRuntime:
    """Wires privacy and the KPI windows into a pipeline: the denylist runs on every batch
    before mapping, the windows observe every batch after it, and their gauges are collected
    from the pipeline's registry. Until the state module sets the persistent salt, identities
    are hashed with the configured salt or a random one."""
    import secrets

    from exporter.collectors.windows import WindowsCollector

    cfg = pipeline.config
    salt = cfg.privacy.salt or secrets.token_hex(32)
    hasher = IdentityHasher(salt)
    scrubber = AttributeScrubber(cfg.privacy.denylist, cfg.windows.identity_keys, hasher)
    runtime = KpiRuntime(hasher, scrubber, salt_from_config=cfg.privacy.salt is not None)
    pipeline.filters.append(_ReloadAware(pipeline, runtime))
    if cfg.windows.enabled:
        windows = Windows(cfg.windows, clock=clock, max_label_length=cfg.max_label_value_length)
        runtime.windows = windows
        pipeline.add_observer(EventObserver(windows, hasher), attributes=(
            *cfg.windows.identity_keys, *(b.attribute for b in cfg.windows.breakdowns)))
        pipeline.registry.register(WindowsCollector(windows))
    return runtime


class _ReloadAware:
    """The scrubber, re-made when a reload changes the denylist. The windows keep the
    settings they started with; a change to them is reported as needing a restart."""

    def __init__(self, pipeline: Pipeline, runtime: KpiRuntime):
        self._pipeline = pipeline
        self._runtime = runtime
        self._config = pipeline.config

    def __call__(self, batch: Batch) -> None:
        config = self._pipeline.config
        if config is not self._config:
            self._reconfigure(config)
        self._runtime.scrubber(batch)

    def _reconfigure(self, config: Any) -> None:
        import logging

        old, self._config = self._config, config
        rt = self._runtime
        if config.privacy.denylist != old.privacy.denylist:
            rt.scrubber = AttributeScrubber(config.privacy.denylist,
                                            config.windows.identity_keys, rt.hasher)
        if config.windows != old.windows or config.privacy.salt != old.privacy.salt:
            logging.getLogger("kpi_exporter").warning(
                "the windows or the salt changed in the config; restart to apply them")
