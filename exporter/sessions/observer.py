"""The pipeline observer that feeds the open-visit store: the events of each batch are folded
into one update per visit, keyed by the salted hash of the session id.

An event is one of:

- a page view (``web_analytics.page_view_events``): counts as a page view and an interaction, and
  moves the entry or exit page when it is the earliest or latest page view;
- an end marker (``web_analytics.session_end_events``): ends the visit; no activity of its own;
- ``session.start`` (the semantic conventions' marker): no activity of its own;
- any other event: activity, and an interaction unless it says ``app.interactive: false``.

The visit's dimensions (service, source, medium, campaign, device, browser, OS, country)
come from its earliest activity. Their values are admitted per
dimension up to ``web_analytics.max_values`` (routes up to ``web_analytics.max_routes``);
later ones are counted as ``(other)``, so label sets stay bounded whatever the pages send.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from exporter.acquisition import DIRECT, NO_CAMPAIGN, NO_MEDIUM
from exporter.devices import UNKNOWN
from exporter.enrich import (
    BROWSER, CAMPAIGN, COUNTRY, DEVICE, INTERACTIVE, MEDIUM, OS, ROUTE, SERVICE, SOURCE,
    country_code,
)
from exporter.privacy import IdentityHasher
from exporter.records import LOG, Batch
from exporter.rules import label_str
from exporter.sessions.store import (
    CONVERTED, ENDED, KEY_BITS, OTHER, Delta, Dims, SessionStore,
)
from exporter.web_analytics import WebAnalyticsConfig
from exporter.windows.config import WindowsConfig

__all__ = ["SessionObserver", "Admission", "START_MARKERS", "UNKNOWN_SERVICE"]

START_MARKERS = frozenset({"session.start"})
# Dimension tuples remembered by the raw attribute values they came from; admission never
# changes its mind about a value, so a remembered tuple stays right.
_DIMS_CACHE = 4096
UNKNOWN_SERVICE = "unknown_service"
UNKNOWN_ROUTE = "unknown"
_KEY_MASK = (1 << KEY_BITS) - 1
# (attribute, default) of each dimension after the service, in Dims order
_DIMENSIONS = ((SOURCE, DIRECT), (MEDIUM, NO_MEDIUM), (CAMPAIGN, NO_CAMPAIGN),
               (DEVICE, UNKNOWN), (BROWSER, UNKNOWN), (OS, UNKNOWN))


class Admission:
    """Distinct values per dimension, first come first admitted up to ``limit``; later ones
    become ``(other)``. Values are cut to ``max_length``. Thread-safe."""

    def __init__(self, dimensions: int, limit: int, max_length: int):
        self.limit = limit
        self.max_length = max_length
        self._admitted: list[set[str]] = [set() for _ in range(dimensions)]
        self._lock = threading.Lock()
        self.refused = [0] * dimensions

    def admitted(self, i: int) -> set[str]:
        """The values admitted so far (read only: a look-up before calling is a shortcut)."""
        return self._admitted[i]

    def __call__(self, i: int, value: str) -> str:
        admitted = self._admitted[i]
        if value in admitted:
            return value
        if len(value) > self.max_length:
            value = value[:self.max_length]
            if value in admitted:
                return value
        with self._lock:
            if value in admitted:
                return value
            if len(admitted) >= self.limit:
                self.refused[i] += 1
                return OTHER
            admitted.add(value)
            return value


class SessionObserver:
    """Folds the events of every batch into visit updates for ``store``. ``attributes``
    names what it reads, so decoders extract it."""

    name = "sessions"

    def __init__(self, store: SessionStore, hasher: IdentityHasher, windows: WindowsConfig,
                 web_analytics: WebAnalyticsConfig, clock: Callable[[], float] = time.time,
                 max_label_length: int = 256):
        self.store = store
        self.hasher = hasher
        self.clock = clock
        self.max_future_ms = int(windows.max_future * 1000)
        self._session = windows.session_attribute
        self._page_views = frozenset(web_analytics.page_view_events)
        self._ends = frozenset(web_analytics.session_end_events)
        self._conversions = frozenset(windows.conversion_events)
        # service, the six enriched dimensions, country
        self.admit = Admission(8, web_analytics.max_values, max_label_length)
        self.admit_route = Admission(1, web_analytics.max_routes, max_label_length)
        self.attributes = frozenset({self._session, SERVICE, ROUTE, INTERACTIVE, COUNTRY,
                                     *(a for a, _ in _DIMENSIONS)})
        self._dims_keys = (SERVICE, *(a for a, _ in _DIMENSIONS), COUNTRY)
        self._dims_cache: dict[tuple[Any, ...], Dims] = {}

    def _dims(self, attrs: dict[str, Any]) -> Dims:
        raw = tuple(map(attrs.get, self._dims_keys))
        try:
            found = self._dims_cache.get(raw)
        except TypeError:  # an unhashable value (an array attribute)
            return self._admit_dims(attrs)
        if found is None:
            if len(self._dims_cache) >= _DIMS_CACHE:
                self._dims_cache = {}
            found = self._dims_cache[raw] = self._admit_dims(attrs)
        return found

    def _admit_dims(self, attrs: dict[str, Any]) -> Dims:
        admit = self.admit
        service = attrs.get(SERVICE)
        values = [admit(0, service if type(service) is str and service else UNKNOWN_SERVICE)]
        for i, (key, default) in enumerate(_DIMENSIONS, 1):
            v = attrs.get(key)
            values.append(admit(i, v if type(v) is str and v else
                                default if v is None or v == "" else label_str(v)))
        values.append(admit(7, country_code(attrs.get(COUNTRY)) or UNKNOWN))
        return tuple(values)  # type: ignore[return-value]

    def __call__(self, batch: Batch) -> None:
        if batch.signal != LOG:
            return
        now = self.clock()
        now_ms = int(now * 1000)
        horizon = now_ms + self.max_future_ms
        session_key = self._session
        page_views, ends, conversions = self._page_views, self._ends, self._conversions
        hash_id = self.hasher.hash
        routes = self.admit_route.admitted(0)
        deltas: dict[int, Delta] = {}
        for record in batch.records:
            name = record.name
            if not name:
                continue
            attrs = record.attributes
            s = attrs.get(session_key)
            if s is None or s == "":
                continue
            key = hash_id(s) & _KEY_MASK
            d = deltas.get(key)
            if name in ends or name in START_MARKERS:
                if d is None:
                    d = deltas[key] = Delta(key, self._dims(attrs))
                if name in ends:
                    d.flags |= ENDED
                continue
            t = record.time_ns // 1_000_000
            if t <= 0 or t > horizon:
                t = now_ms  # no timestamp, or a client clock far ahead: when it arrived
            if d is None:
                d = deltas[key] = Delta(key, self._dims(attrs), t)
            elif d.first == -1 or t < d.first:
                d.dims = self._dims(attrs)  # those of the earliest activity, never a marker
                d.active(t)
            elif t > d.last:
                d.last = t
            if name in page_views:
                route = attrs.get(ROUTE)
                if route not in routes:
                    route = self.admit_route(0, route if type(route) is str and route else
                                             UNKNOWN_ROUTE if route is None or route == ""
                                             else label_str(route))
                d.page_view(t, route)
                d.interactions += 1
            elif attrs.get(INTERACTIVE) not in (False, "false"):
                d.interactions += 1
            if name in conversions:
                d.flags |= CONVERTED
        if deltas:
            self.store.add(list(deltas.values()), now)
