"""Scrape work that gives way to request threads.

A scrape and the export requests it runs beside share one interpreter lock. A thread that
holds the lock keeps it until it blocks or for the interpreter's switch interval (5 ms), so a
scrape running flat out takes about half of the lock from the requests while it lasts, and
their latency doubles. Scrape work therefore pauses briefly after every slice of it: a
request thread waiting for the lock takes it and keeps it for its own switch interval, and
when no thread waits the pause costs only itself. Scrapes get slower when requests are
busy (the work still completes; a scrape of a few milliseconds takes a few more), requests
are not slowed by them. A pacer stops pausing once it has run for ``BUDGET_SECONDS``: a very
large page scraped while requests arrive flat out would otherwise give way so often that it
could near Prometheus' scrape timeout; past the budget it finishes at full speed.

:class:`Pacer` is the pause; :class:`PacedRegistry` gives a registry's metric families to the
exposition with a pacer between them and between every few samples of a family (a family of
thousands of series takes tens of milliseconds to format). Long computations in a collector
(the KPI windows' sketch merges, the mapped metrics' collector building a family of
thousands of series) use a pacer of their own.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Pacer", "PacedRegistry", "WORK_SECONDS", "PAUSE_SECONDS", "BUDGET_SECONDS"]

# Work done between two pauses, and the length of a pause. Measured with
# benchmarks/window_scrapes.py (a scrape back to back against small export requests on two
# cores): shorter slices or longer pauses cost scrape time for little ingest latency.
WORK_SECONDS = 0.0005
PAUSE_SECONDS = 0.0002
# How long a pacer pauses at all (from when it is made): a bound on what pacing adds to one
# scrape, far under Prometheus' default scrape timeout of 10 s.
BUDGET_SECONDS = 1.0
# Samples formatted between two looks at the clock (each takes a few microseconds).
SAMPLES_PER_LOOK = 16


class Pacer:
    """Call :meth:`pace` between steps of a long computation: after each ``work`` seconds
    of it, sleeps ``pause`` seconds so that waiting threads run first; ``budget`` seconds
    after it was made it no longer pauses."""

    __slots__ = ("work", "pause", "clock", "sleep", "_until", "_end", "pauses")

    def __init__(self, work: float = WORK_SECONDS, pause: float = PAUSE_SECONDS,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep,
                 budget: float = BUDGET_SECONDS):
        self.work, self.pause, self.clock, self.sleep = work, pause, clock, sleep
        start = clock()
        self._until = start + work
        self._end = start + budget
        self.pauses = 0

    def pace(self) -> None:
        now = self.clock()
        if now > self._until:
            if now > self._end:
                self._until = float("inf")  # past the budget: never again
                return
            self.sleep(self.pause)
            self.pauses += 1
            self._until = self.clock() + self.work


class PacedRegistry(Collector):
    """A registry seen through a pacer: the exposition (``make_wsgi_app``,
    ``generate_latest``) reads the same families, in the same order, with a pause after
    every slice of the work of collecting and formatting them (looking at the clock between
    families and every ``SAMPLES_PER_LOOK`` samples within one)."""

    def __init__(self, registry: Any, pacer: Callable[[], Pacer] = Pacer):
        self.registry = registry
        self._pacer = pacer

    def collect(self) -> Iterator[Metric]:
        pacer = self._pacer()
        for family in self.registry.collect():
            # formatted by the caller before it asks for the next one, a sample at a time:
            # a family of thousands of series pauses while it is formatted, too
            paced = copy.copy(family)
            paced.samples = _PacedSamples(family.samples, pacer)
            yield paced
            pacer.pace()

    def restricted_registry(self, names: Iterable[str]) -> "PacedRegistry":
        """The registry of a scrape that names the series it wants (``name[]=``): every
        family is collected and only the samples of those names are kept (prometheus_client's
        own restriction finds collectors by the names they describe, and the exporter's
        collectors describe none)."""
        return PacedRegistry(_Restricted(self.registry, set(names)), self._pacer)


class _PacedSamples(list[Any]):
    """A family's samples that pace whoever reads them."""

    def __init__(self, samples: Iterable[Any], pacer: Pacer):
        super().__init__(samples)
        self.pacer = pacer

    def __iter__(self) -> Iterator[Any]:
        pace = self.pacer.pace
        for i, sample in enumerate(super().__iter__()):
            if i and not i % SAMPLES_PER_LOOK:
                pace()
            yield sample


class _Restricted(Collector):
    """The samples of a registry whose names are in ``names``."""

    def __init__(self, registry: Any, names: set[str]):
        self.registry, self.names = registry, names

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if s.name in self.names]
            if samples:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = samples
                yield kept
