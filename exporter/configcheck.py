"""Small checks every config section shares: its mapping, its unknown keys, booleans and
lists of names, each problem naming the section, line and key."""

from __future__ import annotations

from typing import Any

from exporter.rules import unknown_keys
from exporter.yamlload import line_of

__all__ = ["open_section", "get_bool", "get_names"]


def open_section(raw: Any, name: str, allowed: tuple[str, ...], hint: str,
                 problems: list[str]) -> tuple[dict[str, Any], str]:
    """The section's mapping ({} when absent or not a mapping) and how problems name it
    ("windows (line 12)"); unknown keys are reported."""
    if raw is None:
        return {}, name
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping with keys like {hint}")
        return {}, name
    line = line_of(raw)
    where = name + (f" (line {line})" if line else "")
    problems.extend(unknown_keys(raw, allowed, where))
    return raw, where


def get_bool(raw: dict[str, Any], key: str, where: str, problems: list[str],
             default: bool) -> bool:
    """``raw[key]`` when it is true or false; ``default`` when absent or (reported) invalid."""
    if key not in raw:
        return default
    value = raw[key]
    if not isinstance(value, bool):
        problems.append(f"{where}: {key}: expected true or false, got {value!r}")
        return default
    return value


def get_names(raw: dict[str, Any], key: str, where: str, problems: list[str],
              example: str) -> tuple[str, ...] | None:
    """``raw[key]`` as a tuple of non-empty strings (one string counts as a list of one);
    None when absent or (reported) invalid."""
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: {key}: expected a list of {example}")
        return None
    return tuple(value)
