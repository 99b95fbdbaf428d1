"""Visits (sessions) that close: open visits in a store (this process's memory, or a shared
Redis or Valkey), closed after a timeout or an end event and counted once, exactly."""

from exporter.sessions.store import Delta, SessionStore, Visit

__all__ = ["Delta", "SessionStore", "Visit"]
