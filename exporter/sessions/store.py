"""What every open-visit store offers: visit updates in, closed visits out.

An open visit is keyed by the salted hash of its session id (never the id itself) and holds
only what the figures need: its first and last activity time, page views, whether it had a
second interaction (a visit with at most one is a bounce), whether it converted or was ended
by the page, its entry and exit page, and its dimensions (service, source, medium, campaign,
device class, browser, OS, country), those of its earliest activity (by event time, so the
order in which replicas pass events on does not matter).

A store hands every visit it closes to ``on_closed`` exactly once, and reports every visit it
opens to ``on_started`` exactly once; the shared store keeps that promise across replicas.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

__all__ = ["SessionStore", "Delta", "Visit", "Dims", "CONVERTED", "ENDED", "NO_TIME",
           "KEY_BITS", "TIMEOUT", "END", "EVICTED", "REASONS", "OTHER"]

# Dims = (service_name, source, medium, campaign, device, browser, os, country)
Dims = tuple[str, str, str, str, str, str, str, str]

# Visit flags.
CONVERTED = 1
ENDED = 2
NO_TIME = -1  # a delta without activity (only an end marker) or without page views
# Session keys are the salted 64-bit identity hashes cut to 60 bits: two machine words in a
# Python int rather than three (a collision among a million open visits: 4e-7).
KEY_BITS = 60

# The value of a dimension or route past its cap of distinct values.
OTHER = "(other)"

# Why a visit closed.
TIMEOUT, END, EVICTED = "timeout", "end", "evicted"
REASONS = (TIMEOUT, END, EVICTED)


class Delta:
    """What one batch says about one visit. Times are event times in milliseconds since the
    epoch; ``first``/``last`` span its activity (every event but end markers), ``entry`` and
    ``exit`` are its earliest and latest page view."""

    __slots__ = ("key", "first", "last", "page_views", "interactions", "flags", "entry",
                 "entry_route", "exit", "exit_route", "dims")

    def __init__(self, key: int, dims: Dims, t: int = NO_TIME):
        self.key = key
        self.first = t
        self.last = t
        self.page_views = 0
        self.interactions = 0
        self.flags = 0
        self.entry = NO_TIME
        self.entry_route = ""
        self.exit = NO_TIME
        self.exit_route = ""
        self.dims = dims

    def active(self, t: int) -> None:
        """Counts an event at ``t`` (ms) toward the visit's time span."""
        if self.first == NO_TIME or t < self.first:
            self.first = t
        if t > self.last:
            self.last = t

    def page_view(self, t: int, route: str) -> None:
        """Counts a page view of ``route`` at ``t`` (ms)."""
        self.page_views += 1
        if self.entry == NO_TIME or t < self.entry:
            self.entry, self.entry_route = t, route
        if t >= self.exit:
            self.exit, self.exit_route = t, route

    def merge(self, later: Delta) -> None:
        """Folds in a later batch's update of the same visit."""
        if later.first != NO_TIME:
            if self.first == NO_TIME or later.first < self.first:
                self.dims = later.dims  # the dimensions of the earliest activity
            self.active(later.first)
            self.active(later.last)
        self.page_views += later.page_views
        self.interactions += later.interactions
        self.flags |= later.flags
        if later.entry != NO_TIME and (self.entry == NO_TIME or later.entry < self.entry):
            self.entry, self.entry_route = later.entry, later.entry_route
        if later.exit != NO_TIME and later.exit >= self.exit:
            self.exit, self.exit_route = later.exit, later.exit_route

    def __repr__(self) -> str:
        return "Delta(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class Visit:
    """A closed visit, as the visit metrics count it."""

    __slots__ = ("first", "last", "page_views", "interactions", "flags", "entry_route",
                 "exit_route", "dims")

    def __init__(self, first: int, last: int, page_views: int, interactions: int, flags: int,
                 entry_route: str | None, exit_route: str | None, dims: Dims):
        self.first = first
        self.last = last
        self.page_views = page_views
        self.interactions = interactions
        self.flags = flags
        self.entry_route = entry_route
        self.exit_route = exit_route
        self.dims = dims

    @property
    def duration(self) -> float:
        """Seconds from its first to its last activity; 0 for a single event."""
        return max(0, self.last - self.first) / 1000.0

    @property
    def bounced(self) -> bool:
        """At most one interactive event (a page view, or any event not marked
        non-interactive): Plausible's bounce."""
        return self.interactions <= 1

    @property
    def converted(self) -> bool:
        return bool(self.flags & CONVERTED)

    def __repr__(self) -> str:
        return "Visit(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class SessionStore(ABC):
    """The open visits of one exporter (or of every replica, for a shared store).
    Implementations are thread-safe.

    ``on_started(dims)`` is called with the dimensions of visits the store opened;
    ``on_closed(visits, reason)`` with visits it closed, each exactly once. ``dropped``
    counts updates not applied, by reason; ``errors`` failed operations on a shared store;
    ``up`` is False while a shared store does not answer."""

    def __init__(self) -> None:
        self.on_started: Callable[[list[Dims]], None] = lambda dims: None
        self.on_closed: Callable[[list[Visit], str], None] = lambda visits, reason: None
        self.dropped: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.up = True

    def start(self) -> None:
        """Starts the store's background work, if any. Called once, at start."""

    def close(self) -> None:
        """Releases what the store holds; a buffering store sends what it buffers first.
        Open visits are kept (in the snapshot, or in the shared store): they go on after a
        restart."""

    @abstractmethod
    def add(self, deltas: list[Delta], now: float) -> None:
        """Applies one batch's updates (``now``: the arrival time, wall-clock seconds)."""

    @abstractmethod
    def close_due(self, now: float) -> int:
        """Closes the visits due at ``now``: inactive for the timeout, or ended by the page
        (after a short grace for events still on their way); returns how many."""

    @abstractmethod
    def open_sessions(self) -> int | None:
        """Visits open now; None when not known (yet)."""

    def store_bytes(self) -> int | None:
        """Memory the open visits take (estimated, or measured in the shared store)."""
        return None

    def buffered(self) -> int:
        """Updates taken in but not yet applied (a shared store sends them in batches)."""
        return 0

    # -- state: a store that keeps nothing across restarts of its own keeps its visits in the
    # exporter's snapshot ----------------------------------------------------------------------

    def export_state(self) -> Any:
        return None

    def parse_state(self, doc: Any, complete: bool) -> tuple[Any, list[str]]:
        return None, ["the session store keeps its own visits"]

    def apply_state(self, staged: Any) -> None:
        pass
