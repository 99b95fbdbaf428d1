"""Mapping rules: parsed and validated from YAML, compiled into fast predicates and getters.

One rule turns matching records into updates of one Prometheus metric. Several rules may
feed the same metric (they must then agree on its type, labels and buckets), and one record
may feed several rules. Every problem is found at load time and names the rule and key.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from exporter import naming
from exporter.records import LOG, METRIC, SIGNALS, SPAN, SPAN_KINDS, STATUS_CODES, Record
from exporter.yamlload import line_of

__all__ = [
    "Rule", "MetricDef", "LabelSpec", "ValueSpec", "RuleError", "parse_rules", "RecordError",
    "DEFAULT_BUCKETS", "label_str", "parse_duration", "COST_PARTS", "COST_DATA_POINT",
]

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
METRIC_TYPES = (COUNTER, GAUGE, HISTOGRAM)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_SIGNAL_ALIASES = {"log": LOG, "logs": LOG, "event": LOG, "events": LOG, "span": SPAN,
                   "spans": SPAN, "trace": SPAN, "traces": SPAN, "metric": METRIC,
                   "metrics": METRIC}
_FIELDS = ("name", "signal", "span_kind", "span_status")
_GLOB_CHARS = re.compile(r"[*?\[]")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# What a `value: {cost: PART}` rule prices: a span's input tokens not read from or written to
# a cache, its cache reads, its cache writes, its output tokens, a per-request fee; or a
# metric point's tokens at the price of its gen_ai.token.type.
COST_PARTS = ("input", "cache_read", "cache_write", "output", "request")
COST_DATA_POINT = "data_point"
# A label's rewritten values are remembered, up to this many distinct inputs of at most this
# many characters (longer ones are rewritten each time).
_TRANSFORM_CACHE = 4096
_TRANSFORM_CACHED_LENGTH = 256
_REPLACEMENT_REF = re.compile(r"\$(?:(\d+)|\{(\w+)\}|(\$))")


class RuleError(ValueError):
    """One or more problems in the rules; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class RecordError(ValueError):
    """A record that matched a rule but cannot be used by it; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h', '7d' (or a number of seconds) in seconds; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration: write a number and a unit, like 30s, 10m, 1h, 7d")


def label_str(value: Any) -> str:
    """An attribute value as a label value: strings as they are, others in a stable text form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class MetricDef:
    """A Prometheus metric that one or more rules feed."""

    name: str
    type: str
    help: str
    label_names: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    max_series: int = 2000
    series_ttl: float = 0.0

    def same_shape(self, other: "MetricDef") -> bool:
        """True when series of ``other`` can be kept as series of this metric across a reload."""
        return (self.type, self.label_names, self.buckets) == (
            other.type, other.label_names, other.buckets)


@dataclass(frozen=True)
class LabelTransform:
    """Rewrites and bounds the values a label takes from an attribute: the first ``rewrite``
    whose regex matches the whole value replaces it; a value then not ``allow``ed becomes
    ``other``. Results are cached per distinct input."""

    rewrite: tuple[tuple[re.Pattern[str], str], ...] = ()
    allow_values: frozenset[str] | None = None
    allow_pattern: re.Pattern[str] | None = None
    other: str = "_OTHER"
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def apply(self, value: str) -> str:
        """The label value for an attribute's value."""
        cache = self._cache
        out = cache.get(value)
        if out is not None:
            return out
        out = value
        for rx, template in self.rewrite:
            m = rx.fullmatch(value)
            if m is not None:
                out = m.expand(template)
                break
        if self.allow_values is not None and out not in self.allow_values:
            out = self.other
        elif self.allow_pattern is not None and self.allow_pattern.fullmatch(out) is None:
            out = self.other
        if len(value) <= _TRANSFORM_CACHED_LENGTH:  # a sender's oversized values are not kept
            if len(cache) >= _TRANSFORM_CACHE:
                cache.clear()  # values come from senders: keep the cache bounded
            cache[value] = out
        return out


@dataclass(frozen=True)
class LabelSpec:
    """Where one label's value comes from."""

    name: str
    attributes: tuple[str, ...] = ()
    field: str = ""
    constant: str | None = None
    default: str = ""
    on_error_status: str | None = None
    transform: LabelTransform | None = None

    def get(self, record: Record) -> str:
        """This label's value for a record."""
        if self.constant is not None:
            return self.constant
        attrs = record.attributes
        for key in self.attributes:
            v = attrs.get(key)
            if v is not None and v != "":
                text = v if type(v) is str else label_str(v)
                return text if self.transform is None else self.transform.apply(text)
        if self.field:
            found = self._field(record)
            if found is not None:
                return found if self.transform is None else self.transform.apply(found)
        if self.on_error_status is not None and record.status == 2:
            return self.on_error_status
        return self.default

    def _field(self, record: Record) -> str | None:
        if self.field == "name":
            return record.name or None
        if self.field == "signal":
            return record.signal
        if self.field == "span_kind":
            k = record.kind
            return SPAN_KINDS[k] if 0 <= k < len(SPAN_KINDS) else str(k)
        if self.field == "span_status":
            s = record.status
            return STATUS_CODES[s] if 0 <= s < len(STATUS_CODES) else str(s)
        return None


@dataclass(frozen=True)
class ValueSpec:
    """What number a matching record contributes: a constant, an attribute, the span's
    duration or the data point's value, times ``scale``."""

    kind: str  # "constant" | "attribute" | "duration" | "data_point" | "cost"
    constant: float = 1.0
    attribute: str = ""
    scale: float = 1.0
    part: str = ""  # of a cost: one of COST_PARTS, or COST_DATA_POINT

    def describe(self) -> str:
        if self.kind == "constant":
            return repr(self.constant)
        if self.kind == "cost":
            return f"cost of {self.part}" + (f" x {self.scale}" if self.scale != 1 else "")
        if self.kind == "attribute":
            return f"attribute {self.attribute!r}" + (f" x {self.scale}" if self.scale != 1 else "")
        return self.kind + (f" x {self.scale}" if self.scale != 1 else "")


Predicate = Callable[[Any], bool]


@dataclass
class Rule:
    """One compiled mapping rule."""

    index: int
    metric: MetricDef
    signal: str
    name_exact: str | None
    name_pattern: re.Pattern[str] | None
    name_source: str
    conditions: tuple[tuple[str, str, Predicate], ...]
    span_kinds: frozenset[int] | None
    span_statuses: frozenset[int] | None
    labels: tuple[LabelSpec, ...]
    value: ValueSpec
    line: int = 0
    source: str = ""
    order: int = 0
    label_getter: Callable[[Record], tuple[str, ...]] = field(init=False, repr=False)
    # Hot-path shortcuts: whether why_not() has anything to check, and the value when it is a
    # constant (valid for counters and histograms, the only types a constant may feed).
    checks: bool = field(init=False, repr=False)
    constant_value: float | None = field(init=False, repr=False)
    # The part of a cost this rule counts (the mapper asks its pricer), else None.
    cost_part: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.checks = bool(self.conditions) or self.span_kinds is not None \
            or self.span_statuses is not None
        self.constant_value = self.value.constant if self.value.kind == "constant" else None
        self.cost_part = self.value.part if self.value.kind == "cost" else None
        specs = self.labels
        simple = all(s.constant is None and len(s.attributes) == 1 and not s.field
                     and s.on_error_status is None and s.transform is None for s in specs)
        if simple and specs:
            # The common case, one attribute per label: a tight tuple of dict lookups.
            keys = tuple((s.attributes[0], s.default) for s in specs)

            def getter(record: Record) -> tuple[str, ...]:
                attrs = record.attributes
                out = []
                for key, default in keys:
                    v = attrs.get(key)
                    out.append(default if v is None or v == "" else
                               v if type(v) is str else label_str(v))
                return tuple(out)
        else:
            def getter(record: Record) -> tuple[str, ...]:
                return tuple([s.get(record) for s in specs])
        self.label_getter = getter

    @property
    def title(self) -> str:
        where = "built-in rules" if self.source == "built-in" else "rules"
        return f"{where}[{self.index}] ({self.metric.name})"

    def matches_name(self, name: str) -> bool:
        if self.name_exact is not None:
            return name == self.name_exact
        if self.name_pattern is not None:
            return bool(name) and self.name_pattern.fullmatch(name) is not None
        return True

    def why_not(self, record: Record) -> str | None:
        """None when the record passes this rule's conditions, else the first reason it fails.

        The signal and name were matched by the dispatch table already.
        """
        if self.span_kinds is not None and record.kind not in self.span_kinds:
            return f"span kind is {record.kind}, the rule wants {sorted(self.span_kinds)}"
        if self.span_statuses is not None and record.status not in self.span_statuses:
            return f"span status is {record.status}, the rule wants {sorted(self.span_statuses)}"
        attrs = record.attributes
        for key, text, pred in self.conditions:
            if not pred(attrs.get(key)):
                return f"attribute {key!r} is {attrs.get(key)!r}, the rule wants {text}"
        return None

    def value_of(self, record: Record) -> Any:
        """The value this record contributes, None when the rule's value is absent from the
        record (the rule then does not apply), or raises :class:`RecordError`."""
        v = self.value
        if v.kind == "constant":
            return v.constant
        if v.kind == "attribute":
            raw = record.attributes.get(v.attribute)
            if raw is None:
                return None
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise RecordError("non_numeric_value",
                                  f"{self.title}: attribute {v.attribute!r} is {raw!r}, not a number")
            try:
                number = float(raw) * v.scale
            except (ValueError, OverflowError):
                raise RecordError("non_numeric_value",
                                  f"{self.title}: attribute {v.attribute!r} is {raw!r}, not a number"
                                  ) from None
        elif v.kind == "duration":
            if record.duration is None:
                return None
            number = record.duration * v.scale
        elif v.kind == "cost":
            raise TypeError(f"{self.title}: a cost is priced by the mapping's pricer")
        else:  # data_point
            raw = record.value
            if raw is None:
                return None
            if not isinstance(raw, float):
                return raw  # a Histogram point; the store merges it
            if self.metric.type != GAUGE and record.point_kind == "sum" and not record.monotonic:
                raise RecordError("non_monotonic_sum",
                                  f"{self.title}: {record.name!r} is a non-monotonic sum; it can "
                                  f"feed a gauge, not a {self.metric.type}")
            number = raw * v.scale
        if not math.isfinite(number):
            raise RecordError("non_finite_value", f"{self.title}: value {number!r} is not finite")
        if self.metric.type == COUNTER and number < 0:
            raise RecordError("negative_counter_increment",
                              f"{self.title}: a counter cannot go down (value {number!r})")
        return number


# --------------------------------------------------------------------------------------------
# Parsing


_RULE_KEYS = ("metric", "type", "help", "match", "labels", "value", "scale", "buckets",
              "max_series", "series_ttl")
_MATCH_KEYS = ("signal", "name", "name_regex", "span_kind", "span_status", "attributes")
_LABEL_KEYS = ("attribute", "field", "value", "default", "on_error_status", "rewrite", "allow",
               "other")
_REWRITE_KEYS = ("regex", "replacement")
_CONDITION_KEYS = ("equals", "not_equals", "in", "not_in", "regex", "exists", "gt", "gte",
                   "lt", "lte")


def unknown_keys(keys: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
            out.append(f"{where}: unknown key {key!r}{hint}")
    return out


def _as_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        if isinstance(x, (int, float)):
            return float(x)
        if isinstance(x, str):
            return float(x)
    except (ValueError, OverflowError):
        return None
    return None


def _equals(target: str, positive: bool) -> Predicate:
    if positive:
        return lambda v: v is not None and label_str(v) == target
    return lambda v: v is None or label_str(v) != target


def _member(targets: frozenset[str], positive: bool) -> Predicate:
    if positive:
        return lambda v: v is not None and label_str(v) in targets
    return lambda v: v is None or label_str(v) not in targets


def _regex(rx: re.Pattern[str]) -> Predicate:
    return lambda v: v is not None and rx.fullmatch(label_str(v)) is not None


def _compile_condition(key: str, spec: Any, where: str, problems: list[str]
                       ) -> list[tuple[str, str, Predicate]]:
    if not isinstance(spec, dict):
        # shorthand: `key: value` means equals
        spec = {"equals": spec}
    problems.extend(unknown_keys(spec, _CONDITION_KEYS, where))
    out: list[tuple[str, str, Predicate]] = []
    for op, arg in spec.items():
        if op not in _CONDITION_KEYS:
            continue
        text = f"{op} {arg!r}"
        if op in ("equals", "not_equals"):
            out.append((key, text, _equals(label_str(arg), op == "equals")))
        elif op in ("in", "not_in"):
            if not isinstance(arg, list) or not arg:
                problems.append(f"{where}.{op}: expected a non-empty list of values")
                continue
            out.append((key, text, _member(frozenset(label_str(a) for a in arg), op == "in")))
        elif op == "regex":
            try:
                rx = re.compile(str(arg))
            except re.error as exc:
                problems.append(f"{where}.regex: {arg!r} is not a valid regular expression: {exc}")
                continue
            out.append((key, f"to match /{arg}/", _regex(rx)))
        elif op == "exists":
            if not isinstance(arg, bool):
                problems.append(f"{where}.exists: expected true or false, got {arg!r}")
                continue
            if arg:
                out.append((key, "it to exist", lambda v: v is not None))
            else:
                out.append((key, "it to be absent", lambda v: v is None))
        else:
            bound = _as_number(arg)
            if bound is None:
                problems.append(f"{where}.{op}: expected a number, got {arg!r}")
                continue
            cmp: Callable[[float, float], bool] = {
                "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
            }[op]

            def numeric(v: Any, b: float = bound, c: Callable[[float, float], bool] = cmp) -> bool:
                n = _as_number(v)
                return n is not None and c(n, b)

            out.append((key, text, numeric))
    return out


def _parse_labels(raw: Any, where: str, metric_type: str, problems: list[str]
                  ) -> tuple[LabelSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of label name to attribute")
        return ()
    specs = []
    for label, spec in raw.items():
        lw = f"{where}.{label}"
        problems.extend(f"{lw}: {p}" for p in naming.check_label_name(str(label), metric_type))
        if isinstance(spec, str):
            spec = {"attribute": spec}
        if not isinstance(spec, dict):
            problems.append(f"{lw}: expected an attribute name or a mapping with 'attribute', "
                            f"'field' or 'value'")
            continue
        problems.extend(unknown_keys(spec, _LABEL_KEYS, lw))
        sources = [k for k in ("attribute", "field", "value") if k in spec]
        if len(sources) != 1 and not ("attribute" in spec and "field" in spec):
            problems.append(f"{lw}: give exactly one of 'attribute', 'field' or 'value'")
            continue
        attrs_raw = spec.get("attribute", [])
        attrs = (attrs_raw,) if isinstance(attrs_raw, str) else tuple(attrs_raw or ())
        if not all(isinstance(a, str) and a for a in attrs):
            problems.append(f"{lw}.attribute: expected an attribute name or a list of them")
            continue
        for a in attrs:
            if naming.is_identity_attribute(a):
                problems.append(
                    f"{lw}: attribute {a!r} identifies a person, device or session and cannot "
                    f"be a label (one series per identity floods Prometheus and leaks identities). "
                    f"Count distinct users and sessions with the KPI windows instead: "
                    f"app_active_users and app_sessions (docs/kpis.md)"
                )
        fld = spec.get("field", "")
        if fld and fld not in _FIELDS:
            problems.append(f"{lw}.field: {fld!r} is not one of {', '.join(_FIELDS)}")
        constant = spec.get("value")
        default = spec.get("default", "")
        err = spec.get("on_error_status")
        transform = _parse_transform(spec, lw, problems)
        if transform is not None and constant is not None:
            problems.append(f"{lw}: 'rewrite', 'allow' and 'other' apply to values taken from "
                            f"an attribute or field, not to a constant 'value'")
        specs.append(LabelSpec(
            name=str(label), attributes=attrs, field=fld,
            constant=None if constant is None else label_str(constant),
            default=label_str(default), on_error_status=None if err is None else label_str(err),
            transform=transform,
        ))
    return tuple(specs)


def _compile_regex(raw: Any, where: str, problems: list[str]) -> re.Pattern[str] | None:
    if not isinstance(raw, str) or not raw:
        problems.append(f"{where}: expected a regular expression as text, got {raw!r}")
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        problems.append(f"{where}: {raw!r} is not a valid regular expression: {exc}")
        return None


def _replacement(rx: re.Pattern[str], raw: Any, where: str, problems: list[str]) -> str | None:
    """A Prometheus-style replacement ($1, ${1}, ${name}, $$ for a dollar) as a template for
    :meth:`re.Match.expand`; None (and a problem) when it names a group the regex lacks."""
    if not isinstance(raw, str):
        problems.append(f"{where}: expected text such as '$1', got {raw!r}")
        return None
    bad: list[str] = []

    def convert(m: re.Match[str]) -> str:
        number, name, dollar = m.groups()
        if dollar:
            return "$"
        ref = number if number is not None else name
        if ref.isdigit() and int(ref) > rx.groups or not ref.isdigit() and ref not in rx.groupindex:
            bad.append(m.group(0))
        return f"\\g<{ref}>"

    template = _REPLACEMENT_REF.sub(convert, raw.replace("\\", "\\\\"))
    if bad:
        problems.append(f"{where}: {bad[0]} names a group the regex does not have "
                        f"({rx.groups} numbered groups)")
        return None
    return template


def _parse_transform(spec: dict[str, Any], where: str, problems: list[str]
                     ) -> LabelTransform | None:
    if not any(k in spec for k in ("rewrite", "allow", "other")):
        return None
    rewrites: list[tuple[re.Pattern[str], str]] = []
    raw_rewrites = spec.get("rewrite", [])
    if not isinstance(raw_rewrites, list):
        problems.append(f"{where}.rewrite: expected a list of {{regex, replacement}}")
        raw_rewrites = []
    for i, item in enumerate(raw_rewrites):
        iw = f"{where}.rewrite[{i}]"
        if not isinstance(item, dict) or "regex" not in item or "replacement" not in item:
            problems.append(f"{iw}: expected a mapping with 'regex' and 'replacement'")
            continue
        problems.extend(unknown_keys(item, _REWRITE_KEYS, iw))
        rx = _compile_regex(item["regex"], f"{iw}.regex", problems)
        if rx is None:
            continue
        template = _replacement(rx, item["replacement"], f"{iw}.replacement", problems)
        if template is not None:
            rewrites.append((rx, template))
    allow_values: frozenset[str] | None = None
    allow_pattern: re.Pattern[str] | None = None
    if "allow" in spec:
        allow = spec["allow"]
        if isinstance(allow, list) and allow and all(
                isinstance(a, (str, int, float, bool)) for a in allow):
            allow_values = frozenset(label_str(a) for a in allow)
        elif isinstance(allow, dict) and set(allow) == {"regex"}:
            allow_pattern = _compile_regex(allow["regex"], f"{where}.allow.regex", problems)
        else:
            problems.append(f"{where}.allow: expected a non-empty list of values, or "
                            f"{{regex: R}} that every kept value matches")
    other = spec.get("other", "_OTHER")
    if not isinstance(other, str):
        problems.append(f"{where}.other: expected text, got {other!r}")
        other = "_OTHER"
    if "other" in spec and "allow" not in spec:
        problems.append(f"{where}.other: only used with 'allow'")
    return LabelTransform(tuple(rewrites), allow_values, allow_pattern, other)


def _parse_value(raw: Any, scale: float, where: str, problems: list[str]) -> ValueSpec:
    if raw is None:
        raw = 1
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return ValueSpec("constant", constant=float(raw) * scale)
    if raw in ("duration", "data_point"):
        return ValueSpec(str(raw), scale=scale)
    if isinstance(raw, dict) and set(raw) == {"attribute"} and isinstance(raw["attribute"], str):
        return ValueSpec("attribute", attribute=raw["attribute"], scale=scale)
    if isinstance(raw, dict) and set(raw) == {"cost"}:
        part = raw["cost"]
        if part in COST_PARTS or part == COST_DATA_POINT:
            return ValueSpec("cost", part=str(part), scale=scale)
        problems.append(f"{where}.cost: expected one of {', '.join(COST_PARTS)} (spans) or "
                        f"{COST_DATA_POINT} (token usage metric points), got {part!r}")
        return ValueSpec("constant")
    problems.append(f"{where}: expected a number, 'duration', 'data_point', "
                    f"{{attribute: NAME}} or {{cost: PART}}, got {raw!r}")
    return ValueSpec("constant")


def _parse_enum_list(raw: Any, names: tuple[str, ...], where: str, problems: list[str]
                     ) -> frozenset[int] | None:
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else raw
    out = set()
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, str) and item.lower() in names:
            out.add(names.index(item.lower()))
        else:
            problems.append(f"{where}: {item!r} is not one of {', '.join(names)}")
    return frozenset(out)


def _parse_rule(index: int, raw: Any, limits: dict[str, Any], problems: list[str]) -> Rule | None:
    if not isinstance(raw, dict):
        problems.append(f"rules[{index}]: expected a mapping with 'metric', 'type' and 'match'")
        return None
    line = line_of(raw)
    where = f"rules[{index}]" + (f" ({raw['metric']})" if isinstance(raw.get("metric"), str) else "")
    before = len(problems)
    problems.extend(unknown_keys(raw, _RULE_KEYS, where))
    name = raw.get("metric")
    mtype: str = str(raw.get("type"))
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: 'metric' (the Prometheus metric name) is required")
        name = "invalid"
    type_known = mtype in METRIC_TYPES
    if not type_known:
        problems.append(f"{where}.type: expected one of {', '.join(METRIC_TYPES)}, got {mtype!r}")
        mtype = COUNTER
    match = raw.get("match")
    if not isinstance(match, dict) or "signal" not in match:
        problems.append(f"{where}.match: required, with at least 'signal' (log, span or metric)")
        match = {"signal": "log"}
    problems.extend(unknown_keys(match, _MATCH_KEYS, where + ".match"))
    signal = _SIGNAL_ALIASES.get(str(match.get("signal")).lower())
    if signal is None:
        problems.append(f"{where}.match.signal: expected one of {', '.join(SIGNALS)}, "
                        f"got {match.get('signal')!r}")
        signal = LOG
    name_exact: str | None = None
    name_pattern: re.Pattern[str] | None = None
    name_source = ""
    if "name" in match and "name_regex" in match:
        problems.append(f"{where}.match: give 'name' or 'name_regex', not both")
    elif "name" in match:
        n = match["name"]
        if not isinstance(n, str) or not n:
            problems.append(f"{where}.match.name: expected a non-empty name or glob")
        elif _GLOB_CHARS.search(n):
            name_pattern = re.compile(fnmatch.translate(n))
            name_source = f"glob {n!r}"
        else:
            name_exact = n
            name_source = repr(n)
    elif "name_regex" in match:
        try:
            name_pattern = re.compile(str(match["name_regex"]))
            name_source = f"regex /{match['name_regex']}/"
        except re.error as exc:
            problems.append(f"{where}.match.name_regex: not a valid regular expression: {exc}")
    conditions: list[tuple[str, str, Predicate]] = []
    attrs = match.get("attributes") or {}
    if not isinstance(attrs, dict):
        problems.append(f"{where}.match.attributes: expected a mapping of attribute to condition")
        attrs = {}
    for key, spec in attrs.items():
        conditions += _compile_condition(str(key), spec, f"{where}.match.attributes.{key}", problems)
    span_kinds = _parse_enum_list(match.get("span_kind"), SPAN_KINDS, where + ".match.span_kind",
                                  problems)
    span_statuses = _parse_enum_list(match.get("span_status"), STATUS_CODES,
                                     where + ".match.span_status", problems)
    if signal != SPAN and (span_kinds is not None or span_statuses is not None):
        problems.append(f"{where}.match: span_kind and span_status apply to spans only")
    scale = raw.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale == 0:
        problems.append(f"{where}.scale: expected a non-zero number, got {scale!r}")
        scale = 1
    value = _parse_value(raw.get("value"), float(scale), where + ".value", problems)
    if value.kind == "duration" and signal != SPAN:
        problems.append(f"{where}.value: 'duration' is only known for spans")
    if value.kind == "data_point" and signal != METRIC:
        problems.append(f"{where}.value: 'data_point' is only known for metric data points")
    if value.kind == "cost":
        if "scale" in raw:
            problems.append(f"{where}.scale: a cost is in USD; 'scale' does not apply to it")
        if mtype != COUNTER:
            problems.append(f"{where}.value: a cost feeds a counter (USD add up), not a {mtype}")
        if value.part == COST_DATA_POINT and signal != METRIC:
            problems.append(f"{where}.value: {{cost: {COST_DATA_POINT}}} prices token usage "
                            f"metric points; for spans name the part: "
                            f"{', '.join(COST_PARTS)}")
        elif value.part != COST_DATA_POINT and signal != SPAN:
            problems.append(f"{where}.value: {{cost: {value.part}}} prices a span's token "
                            f"usage; for metric points use {{cost: {COST_DATA_POINT}}}")
    if value.kind == "constant" and (not math.isfinite(value.constant)
                                     or (mtype == COUNTER and value.constant < 0)):
        problems.append(f"{where}.value: a constant value must be finite, and not negative "
                        f"for a counter (counters only go up)")
    if mtype == GAUGE and value.kind == "constant":
        problems.append(f"{where}.value: a gauge set to a constant says nothing; take the value "
                        f"from an attribute, the duration or the data point")
    labels = _parse_labels(raw.get("labels"), where + ".labels", mtype, problems)
    unit_hint = "seconds" if value.kind == "duration" and value.scale == 1 else None
    if type_known:  # the name rules depend on the type; don't pile guesses on a typo
        problems.extend(f"{where}.metric: {p}"
                        for p in naming.check_metric_name(name, mtype, unit_hint))
    buckets: tuple[float, ...] = ()
    if mtype == HISTOGRAM:
        rb = raw.get("buckets")
        if rb is None and value.kind == "data_point":
            problems.append(f"{where}.buckets: a histogram fed by data points needs its "
                            f"buckets: list some of the instrumentation's bucket bounds")
        elif rb is None:
            buckets = DEFAULT_BUCKETS
        elif (not isinstance(rb, list) or not rb
              or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                         and math.isfinite(b) for b in rb)):
            problems.append(f"{where}.buckets: expected a non-empty list of finite numbers")
        elif any(b >= c for b, c in zip(rb, rb[1:])):
            problems.append(f"{where}.buckets: bucket bounds must be strictly increasing")
        else:
            buckets = tuple(float(b) for b in rb)
    elif "buckets" in raw:
        problems.append(f"{where}.buckets: only histograms have buckets")
    max_series = raw.get("max_series", limits.get("max_series_per_metric", 2000))
    if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
        problems.append(f"{where}.max_series: expected a positive integer, got {max_series!r}")
        max_series = 2000
    ttl = 0.0
    if "series_ttl" in raw:
        try:
            ttl = parse_duration(raw["series_ttl"])
        except ValueError as exc:
            problems.append(f"{where}.series_ttl: {exc}")
    help_text = raw.get("help", "")
    if not isinstance(help_text, str):
        problems.append(f"{where}.help: expected a string")
        help_text = ""
    if len(problems) > before:
        if line:
            problems[before:] = [f"line {line}: {p}" for p in problems[before:]]
        return None
    metric = MetricDef(name=name, type=mtype, help=help_text,
                       label_names=tuple(s.name for s in labels), buckets=buckets,
                       max_series=max_series, series_ttl=ttl)
    return Rule(index=index, metric=metric, signal=signal, name_exact=name_exact,
                name_pattern=name_pattern, name_source=name_source,
                conditions=tuple(conditions), span_kinds=span_kinds,
                span_statuses=span_statuses, labels=labels, value=value, line=line)


def parse_rules(raw_rules: Any, limits: dict[str, Any] | None = None,
                source: str = "") -> list[Rule]:
    """Parses and validates a YAML list of rules; raises :class:`RuleError` listing every problem.

    Rules that feed the same metric must agree on its type, labels and buckets; the first
    non-empty help wins.
    """
    problems: list[str] = []
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise RuleError(["rules: expected a list of rules"])
    rules: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(i, raw, limits or {}, problems)
        if rule is not None:
            rule.source = source
            rules.append(rule)
    first: dict[str, Rule] = {}
    for rule in rules:
        seen = first.get(rule.metric.name)
        if seen is None:
            first[rule.metric.name] = rule
            continue
        a, b = seen.metric, rule.metric
        if not a.same_shape(b) or a.max_series != b.max_series or a.series_ttl != b.series_ttl:
            problems.append(
                f"{rule.title}: feeds {b.name!r} like {seen.title} but with a different "
                f"{'type' if a.type != b.type else 'label set' if a.label_names != b.label_names else 'bucket list' if a.buckets != b.buckets else 'max_series or series_ttl'}"
                f" ({a.type} {list(a.label_names)} vs {b.type} {list(b.label_names)}); rules "
                f"feeding one metric must agree on its type, labels (same order) and buckets"
            )
        elif b.help and not a.help:
            first[rule.metric.name] = rule
    if problems:
        raise RuleError(problems)
    # Every rule of a metric shares one MetricDef (the first with a help text).
    for rule in rules:
        rule.metric = first[rule.metric.name].metric
    return rules
