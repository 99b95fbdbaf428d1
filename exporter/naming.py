"""Prometheus naming rules and the identity attributes that must never become labels."""

from __future__ import annotations

import fnmatch
import re

__all__ = [
    "METRIC_NAME_RE", "LABEL_NAME_RE", "check_metric_name", "check_label_name",
    "is_identity_attribute", "SELF_PREFIX",
]

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SELF_PREFIX = "kpi_exporter_"
OVERFLOW_LABEL = "otel_metric_overflow"

# Names the exporter's process, platform and garbage-collector collectors (prometheus_client)
# serve on the same /metrics: a rule's metric must not collide with them.
_RUNTIME_PREFIXES = ("process_", "python_gc_")
_RUNTIME_NAMES = ("python_info",)

# Suffixes that name a unit Prometheus wants in its base unit instead.
_NON_BASE_UNITS = {
    "milliseconds": ("seconds", "0.001"), "ms": ("seconds", "0.001"),
    "microseconds": ("seconds", "0.000001"), "us": ("seconds", "0.000001"),
    "nanoseconds": ("seconds", "0.000000001"), "ns": ("seconds", "0.000000001"),
    "minutes": ("seconds", "60"), "hours": ("seconds", "3600"), "days": ("seconds", "86400"),
    "percent": ("ratio", "0.01"), "kilobytes": ("bytes", "1000"), "megabytes": ("bytes", "1e6"),
    "kb": ("bytes", "1000"), "mb": ("bytes", "1e6"), "gb": ("bytes", "1e9"),
}

# Attributes that identify a person, a device or a session. They are counted by the KPI
# windows (as salted hashes), never turned into labels: one series per person is both a
# cardinality explosion and a privacy leak.
_IDENTITY_EXACT = {
    "user.id", "user.name", "user.full_name", "user.email", "user.hash", "user.roles",
    "session.id", "session.previous_id", "enduser.id", "enduser.pseudo.id",
    "client.address", "client.ip", "source.address", "net.peer.ip", "net.sock.peer.addr",
    "network.peer.address", "http.client_ip", "device.id", "app.installation.id",
}
_IDENTITY_GLOBS = ("enduser.*", "*email*", "*phone*", "*ip_address*", "*.ssn", "*password*")


def is_identity_attribute(key: str) -> bool:
    """True for attribute keys that identify a person, device or session."""
    k = key.lower()
    return k in _IDENTITY_EXACT or any(fnmatch.fnmatchcase(k, g) for g in _IDENTITY_GLOBS)


def check_metric_name(name: str, metric_type: str, unit_hint: str | None = None) -> list[str]:
    """Problems with a metric name under Prometheus conventions (empty when it is fine).

    ``unit_hint`` is "seconds" when the value is a duration, so the name must say so.
    """
    problems: list[str] = []
    if not METRIC_NAME_RE.match(name):
        return [f"{name!r} is not a valid Prometheus metric name: use letters, digits and "
                f"underscores, not starting with a digit"]
    if name.startswith("__"):
        problems.append(f"{name!r}: names starting with '__' are reserved by Prometheus")
    if name.startswith(SELF_PREFIX):
        problems.append(f"{name!r}: the prefix {SELF_PREFIX!r} is reserved for the exporter's "
                        f"own metrics; pick another prefix such as 'app_'")
    if name.startswith(_RUNTIME_PREFIXES) or name in _RUNTIME_NAMES:
        problems.append(f"{name!r}: process_*, python_gc_* and python_info are the exporter's "
                        f"own process and runtime metrics on the same /metrics; pick another "
                        f"name, such as one starting with 'app_'")
    if ":" in name:
        problems.append(f"{name!r}: colons are reserved for recording rules; use underscores")
    base = name
    if metric_type == "counter":
        if not name.endswith("_total"):
            problems.append(f"{name!r}: a counter's name must end in '_total' "
                            f"(rename it to {name + '_total'!r})")
        base = name[: -len("_total")]
    elif name.endswith("_total"):
        problems.append(f"{name!r}: only counters end in '_total'; a {metric_type} does not")
    for suffix in ("_bucket", "_count", "_sum", "_created", "_info"):
        if name.endswith(suffix):
            problems.append(f"{name!r}: the suffix {suffix!r} is reserved for the samples "
                            f"Prometheus derives from a metric; pick another name")
    last = base.rsplit("_", 1)[-1].lower()
    if last in _NON_BASE_UNITS:
        unit, factor = _NON_BASE_UNITS[last]
        problems.append(
            f"{name!r}: Prometheus wants base units; name it with '_{unit}' and convert "
            f"with 'scale: {factor}'"
        )
    if unit_hint == "seconds" and not base.endswith("_seconds"):
        problems.append(f"{name!r}: the value is a duration in seconds, so the name must end "
                        f"in '_seconds'{' before _total' if metric_type == 'counter' else ''}")
    return problems


def check_label_name(label: str, metric_type: str) -> list[str]:
    """Problems with a label name (empty when it is fine)."""
    if not LABEL_NAME_RE.match(label):
        return [f"label {label!r} is not a valid Prometheus label name: use letters, digits and "
                f"underscores, not starting with a digit (for 'url.path' write 'url_path')"]
    if label.startswith("__"):
        return [f"label {label!r}: names starting with '__' are reserved by Prometheus"]
    if label == OVERFLOW_LABEL:
        return [f"label {label!r} is reserved for the overflow series"]
    if metric_type == "histogram" and label == "le":
        return ["label 'le' is reserved for histogram buckets"]
    if label == "quantile":
        return ["label 'quantile' is reserved for summaries"]
    return []
