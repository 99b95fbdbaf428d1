"""Checks every config section shares: each value's type and range, unknown keys, durations.

Each problem reads ``line N: section.key: what was expected, got VALUE`` (the loader turns
``line N`` into ``file:N``); a section keeps checking after a problem, so that every problem is
reported at once. A value that fails its check is never used.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from typing import Any

from exporter.yamlload import line_of

__all__ = [
    "at", "path", "problem", "show", "unknown_keys", "open_section", "get_section", "get_bool",
    "get_int", "get_number", "get_text", "get_names", "get_duration", "parse_duration", "is_scalar",
    "as_finite", "MAX_DURATION",
]

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$", re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Longer than any window, TTL or interval means anything; far below what timers accept.
MAX_DURATION = 3650 * 86400.0

class _Short(reprlib.Repr):
    """reprlib's cut-short repr, also for the YAML loader's dict and list subclasses (reprlib
    picks its method by type name, and would give them the full, unbounded repr)."""

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        return super().repr1(x, level)


_repr = _Short()
_repr.maxstring = 120
_repr.maxother = 60
_repr.maxlong = 40
_repr.maxlevel = 2
_repr.maxlist = _repr.maxdict = _repr.maxset = 4


def show(value: Any) -> str:
    """A value as a problem quotes it: its repr, cut short (a config value can be a long
    string, a large number or a deeply nested list)."""
    if isinstance(value, int) and value.bit_length() > 14000:  # repr() refuses past 4300 digits
        return "a number of over 4000 digits"
    return _repr.repr(value)


def at(raw: Any, key: Any) -> str:
    """'line N: ' for ``key`` of a mapping (or item ``key`` of a list) from the YAML loader;
    '' when the line is unknown."""
    line = line_of(raw, key)
    return f"line {line}: " if line else ""


def path(where: str, key: Any) -> str:
    """The dotted path of ``key`` inside ``where`` ('server.cors' + 'max_age'), list items
    as [i]."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def problem(raw: Any, key: Any, where: str, message: str) -> str:
    """``line N: where.key: message``."""
    return f"{at(raw, key)}{path(where, key)}: {message}"


def is_scalar(value: Any) -> bool:
    """A string, a finite number, true/false or null: what a label value or a condition
    can be compared with."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def unknown_keys(raw: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    """A problem for each key of ``raw`` that is not ``allowed``, with the closest known key."""
    out = []
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key)[:100], allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
            out.append(f"{at(raw, key)}{where}: unknown key {show(key)}{hint}")
    return out


def open_section(raw: Any, name: str, allowed: tuple[str, ...], hint: str,
                 problems: list[str]) -> tuple[dict[Any, Any], str]:
    """A top-level section's mapping ({} when absent or not a mapping) and how problems name
    it ('windows'); unknown keys are reported. The loader has already reported a section that
    is not a mapping, with its line."""
    if raw is None:
        return {}, name
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping with keys like {hint}, got {show(raw)}")
        return {}, name
    problems.extend(unknown_keys(raw, allowed, name))
    return raw, name


def get_section(parent: dict[Any, Any], key: str, where: str, allowed: tuple[str, ...],
                hint: str, problems: list[str]) -> dict[Any, Any]:
    """``parent[key]`` when it is a mapping, its unknown keys reported; {} when absent or
    (reported) not a mapping. ``where`` names the parent ('server')."""
    raw = parent.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(problem(parent, key, where, f"expected a mapping with keys like {hint}, "
                                                    f"got {show(raw)}"))
        return {}
    problems.extend(unknown_keys(raw, allowed, path(where, key)))
    return raw


def get_bool(raw: dict[Any, Any], key: str, where: str, problems: list[str],
             default: bool) -> bool:
    """``raw[key]`` when it is true or false; ``default`` when absent or (reported) invalid."""
    if key not in raw:
        return default
    value = raw[key]
    if not isinstance(value, bool):
        problems.append(problem(raw, key, where, f"expected true or false, got {show(value)}"))
        return default
    return value


def get_int(raw: dict[Any, Any], key: str, where: str, problems: list[str], default: int,
            low: int = 1, high: int | None = None, hint: str = "") -> int:
    """``raw[key]`` when it is an integer from ``low`` to ``high``; ``default`` when absent or
    (reported) invalid."""
    if key not in raw:
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low or \
            (high is not None and value > high):
        what = (f"an integer from {low} to {high}" if high is not None else
                "a positive integer" if low == 1 else f"an integer of at least {low}")
        problems.append(problem(raw, key, where, f"expected {what}{hint}, got {show(value)}"))
        return default
    return value


def get_number(raw: dict[Any, Any], key: str, where: str, problems: list[str], default: float,
               what: str = "a finite number") -> float:
    """``raw[key]`` as a float when it is a finite number; ``default`` when absent or
    (reported) invalid."""
    if key not in raw:
        return default
    number = as_finite(raw[key])
    if number is None:
        problems.append(problem(raw, key, where, f"expected {what}, got {show(raw[key])}"))
        return default
    return number


def as_finite(value: Any) -> float | None:
    """An int or float as a finite float; None for anything else (strings included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def get_text(raw: dict[Any, Any], key: str, where: str, problems: list[str], default: str,
             what: str, empty: bool = False) -> str:
    """``raw[key]`` when it is a string (non-empty unless ``empty``); ``default`` when absent
    or (reported) invalid. ``what`` says what is expected ('an attribute name')."""
    if key not in raw:
        return default
    value = raw[key]
    if not isinstance(value, str) or not (value or empty):
        problems.append(problem(raw, key, where, f"expected {what}, got {show(value)}"))
        return default
    return value


def get_names(raw: dict[Any, Any], key: str, where: str, problems: list[str],
              example: str) -> tuple[str, ...] | None:
    """``raw[key]`` as a tuple of non-empty strings (one string counts as a list of one);
    None when absent or (reported) invalid."""
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(problem(raw, key, where, f"expected a list of {example}, got "
                                                 f"{show(raw[key])}"))
        return None
    return tuple(value)


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h', '7d' (or a number of seconds) in seconds, up to 3650d; ValueError
    otherwise."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = as_finite(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds is None or not 0 <= seconds <= MAX_DURATION:
        raise ValueError(f"{show(value)} is not a duration: write a number and a unit, like "
                         f"30s, 10m, 1h, 7d (at most 3650d)")
    return seconds


def get_duration(raw: dict[Any, Any], key: str, where: str, problems: list[str],
                 default: float) -> float:
    """``raw[key]`` in seconds when it is a duration; ``default`` when absent or (reported)
    invalid."""
    if key not in raw:
        return default
    try:
        return parse_duration(raw[key])
    except ValueError as exc:
        problems.append(problem(raw, key, where, str(exc)))
        return default
