"""Renders the small subset of Prometheus alert templating our descriptions use, so the
generated promtool tests can state the exact annotations an alert must carry.

Supported: ``{{ $labels.NAME }}``, ``{{ $value | humanize }}`` and
``{{ $value | humanizePercentage }}``, formatted as Prometheus' template functions do.
"""

from __future__ import annotations

import math
import re

__all__ = ["render", "humanize", "humanize_percentage"]

_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def _g4(v: float) -> str:
    # Go's fmt "%.4g" and Python's agree for finite values.
    return "%.4g" % v


def humanize(v: float) -> str:
    """Prometheus' ``humanize``: SI prefixes, four significant digits."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return _g4(v) + prefix


def humanize_percentage(v: float) -> str:
    """Prometheus' ``humanizePercentage``: 0.1234 -> '12.34%'."""
    return _g4(v * 100) + "%"


def render(template: str, labels: dict[str, str], value: float) -> str:
    """``template`` with the labels and value of one alert filled in."""
    def action(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("$labels."):
            return labels.get(expr[len("$labels."):], "<no value>")
        if expr == "$value | humanize":
            return humanize(value)
        if expr == "$value | humanizePercentage":
            return humanize_percentage(value)
        raise ValueError(f"template action {{{{ {expr} }}}} is not supported by "
                         f"mixin/templating.py; use $labels.X, $value | humanize or "
                         f"$value | humanizePercentage")
    return _ACTION.sub(action, template)
