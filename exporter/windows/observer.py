"""The pipeline observer that feeds a window store: the identities of every event (a log
record with an event name) are hashed with the secret salt and counted; raw identity values go
no further."""

from __future__ import annotations

from typing import Any

from exporter.privacy import IdentityHasher
from exporter.records import LOG, Batch
from exporter.rules import label_str
from exporter.windows.store import Event, WindowStore

__all__ = ["EventObserver"]


class EventObserver:
    """Feeds a window store from the events of every batch the pipeline used.

    ``attributes`` names the attribute keys it reads, so decoders can skip the rest."""

    def __init__(self, windows: WindowStore, hasher: IdentityHasher):
        self.windows = windows
        self.hasher = hasher
        cfg = windows.config
        self._user = cfg.user_attribute
        self._session = cfg.session_attribute
        self._conversions = frozenset(cfg.conversion_events)
        self._breakdowns = tuple((b.attribute, b.default) for b in cfg.breakdowns)
        self.attributes = frozenset((*cfg.identity_keys, *(b.attribute for b in cfg.breakdowns)))

    def __call__(self, batch: Batch) -> None:
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

