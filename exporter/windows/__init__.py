"""KPI windows: distinct users, distinct sessions and converting sessions over sliding windows.

``config`` parses the ``windows`` section; ``store`` is the interface every window store
offers, ``memory`` the embedded one; ``observer`` feeds a store from the pipeline's events.
"""

from exporter.windows.config import (
    BreakdownSpec, WindowSpec, WindowsConfig, breakdown_metric_names, format_duration,
    parse_windows, relative_error_bound, window_spec, WINDOW_METRICS,
)
from exporter.windows.memory import MemoryWindowStore
from exporter.windows.observer import EventObserver
from exporter.windows.store import OVERFLOW_VALUE, Estimate, Event, WindowStore

__all__ = [
    "BreakdownSpec", "WindowSpec", "WindowsConfig", "breakdown_metric_names", "format_duration",
    "parse_windows", "relative_error_bound", "window_spec", "WINDOW_METRICS",
    "MemoryWindowStore", "EventObserver", "OVERFLOW_VALUE", "Estimate", "Event", "WindowStore",
]
