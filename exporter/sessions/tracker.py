"""Runs the visits: the open-visit store, the visit metrics it reports to, and the timer
that closes inactive visits.

Closing happens on the timer only (never during a scrape): every ``tick`` seconds, the visits
due are claimed from the store and counted, each exactly once. A visit closes at most one
tick after it is due, so a scrape may show it a few seconds later than a clock would.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from exporter.sessions.metrics import VisitMetrics
from exporter.sessions.store import SessionStore

__all__ = ["SessionTracker", "tick_for"]

log = logging.getLogger("kpi_exporter")


def tick_for(timeout: float) -> float:
    """How often to look for visits due: a tenth of the timeout, between 0.2 and 5 seconds."""
    return max(0.2, min(5.0, timeout / 10))


class SessionTracker:
    """Wires a store to its metrics and closes visits on a timer thread."""

    def __init__(self, store: SessionStore, metrics: VisitMetrics, timeout: float,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.tick = tick_for(timeout)
        self.failures = 0
        store.on_started = metrics.started
        store.on_closed = metrics.closed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def close_due(self) -> int:
        """Closes (and counts) the visits due now; returns how many."""
        return self.store.close_due(self.clock())

    def start(self) -> None:
        """Starts the store's background work and the closing timer."""
        self.store.start()
        self._thread = threading.Thread(target=self._run, name="session-closer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.close_due()
            except Exception:  # noqa: BLE001 - the timer must keep going
                self.failures += 1
                log.exception("closing the visits due failed; trying again in %.1fs",
                              self.tick)

    def close(self) -> None:
        """Stops the timer and releases the store; open visits stay open (in the snapshot,
        or in the shared store) and go on after a restart."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.store.close()
