"""What every KPI window store offers: events in, per-window estimates out.

A window store keeps, for every event-time bucket of every window, sketches of the salted
identity hashes seen in it (users, sessions, converting sessions), and answers a window's
figures by merging the buckets it covers. Where the sketches live is the store's business;
the observer that feeds it and the collector that reads it know only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable

from exporter.windows.config import WindowsConfig

__all__ = ["WindowStore", "Event", "Estimate", "OVERFLOW_VALUE"]

# Breakdown values past a breakdown's cap are counted under this value, rendered as the
# otel_metric_overflow="true" series like any capped label.
OVERFLOW_VALUE = "\x00overflow"

# (event time in seconds, user hash, session hash, is a conversion, breakdown values)
Event = tuple[int, int | None, int | None, bool, tuple[str, ...]]


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


class WindowStore(ABC):
    """The sliding-window sketches of one exporter. Implementations are thread-safe.

    ``dropped`` counts events not counted, by reason; ``overflow`` counts, per breakdown,
    events counted under its overflow value; ``accepted`` counts events that were counted.
    ``up`` is False while the store cannot be used (a shared store that does not answer);
    ``errors`` counts failed operations on a shared store, by operation (write, read).
    """

    config: WindowsConfig
    dropped: dict[str, int]
    overflow: list[int]
    accepted: int
    up: bool = True
    errors: dict[str, int] = {}

    def start(self) -> None:
        """Starts the store's background work, if it has any. Called once, at start."""

    def buffered_events(self) -> int:
        """Events taken in but not yet in the sketches (a shared store sends them in
        batches); 0 for a store that updates its sketches at once."""
        return 0

    @abstractmethod
    def add(self, events: Iterable[Event]) -> None:
        """Counts events: (time in seconds, user hash or None, session hash or None, is a
        conversion, breakdown values in config order). A time of 0 means now."""

    @abstractmethod
    def estimates(self) -> list[Estimate] | None:
        """Every window's estimates: the totals, then each breakdown value seen. None when
        the store cannot answer now: the gauges are then left out, never reported stale."""

    @abstractmethod
    def sketch_bytes(self) -> int | None:
        """What the sketches take, serialized: a measure of the windows' memory. None when
        it is not known (yet)."""

    def close(self) -> None:
        """Releases what the store holds (sketches, connections). Called once, at stop; a
        store that buffers sends what it holds first."""

    # -- state (a store that keeps nothing across restarts of its own keeps its sketches in
    # the exporter's snapshot) -------------------------------------------------------------

    def export_state(self) -> Any:
        """The sketches as a JSON-ready document, or None when the store keeps them itself."""
        return None

    def parse_state(self, doc: Any, complete: bool) -> tuple[Any, list[str]]:
        """Reads an exported document without changing anything: (staged, notes). Raises
        ValueError when the document is malformed. ``complete`` says whether it holds
        everything counted (sketches are unions: an older one is safe to restore either
        way)."""
        return None, ["the window store keeps its own sketches"]

    def apply_state(self, staged: Any) -> None:
        """Replaces the sketches with ones read by :meth:`parse_state`."""
