"""Mapping rules: parsed and validated from YAML, compiled into fast predicates and getters.

One rule turns matching records into updates of one Prometheus metric. Several rules may
feed the same metric (they must then agree on its type, labels and buckets), and one record
may feed several rules. Every problem is found at load time and names the rule and key.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from exporter import naming
from exporter.configcheck import (as_finite, at, get_duration, get_int, get_number, get_text,
                                  is_scalar, parse_duration, path, problem, show, unknown_keys)
from exporter.records import LOG, METRIC, SIGNALS, SPAN, SPAN_KINDS, STATUS_CODES, Record
from exporter.yamlload import line_of

__all__ = [
    "Rule", "MetricDef", "LabelSpec", "ValueSpec", "RuleError", "parse_rules", "RecordError",
    "DEFAULT_BUCKETS", "label_str", "parse_duration", "COST_PARTS", "COST_DATA_POINT",
    "unknown_keys", "compile_regex", "MAX_SERIES", "SERIES_HINT",
]

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
METRIC_TYPES = (COUNTER, GAUGE, HISTOGRAM)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_SIGNAL_ALIASES = {"log": LOG, "logs": LOG, "event": LOG, "events": LOG, "span": SPAN,
                   "spans": SPAN, "trace": SPAN, "traces": SPAN, "metric": METRIC,
                   "metrics": METRIC}
_FIELDS = ("name", "signal", "span_kind", "span_status")
_GLOB_CHARS = re.compile(r"[*?\[]")
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
    """One or more problems in the rules; ``problems`` holds one message per problem, and
    ``rules`` the rules that were read without one, so that checks made across the config
    (an identity used as a label, say) can report their problems in the same pass."""

    def __init__(self, problems: list[str], rules: list["Rule"] | None = None):
        super().__init__("\n".join(problems))
        self.problems = problems
        self.rules = rules or []


class RecordError(ValueError):
    """A record that matched a rule but cannot be used by it; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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


# A series cap beyond this is no cap (and past 2**53 not even a number /metrics can show).
MAX_SERIES = 10_000_000
SERIES_HINT = " (series of one metric; past that, drop a label)"

_RULE_KEYS = ("metric", "type", "help", "match", "labels", "value", "scale", "buckets",
              "max_series", "series_ttl")
_MATCH_KEYS = ("signal", "name", "name_regex", "span_kind", "span_status", "attributes")
_LABEL_KEYS = ("attribute", "field", "value", "default", "on_error_status", "rewrite", "allow",
               "other")
_REWRITE_KEYS = ("regex", "replacement")
_CONDITION_KEYS = ("equals", "not_equals", "in", "not_in", "regex", "exists", "gt", "gte",
                   "lt", "lte")


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


def compile_regex(pattern: str) -> tuple[re.Pattern[str] | None, str]:
    """``pattern`` compiled, or None and why it is not a usable regular expression."""
    try:
        return re.compile(pattern), ""
    except re.error as exc:
        return None, f"not a valid regular expression: {exc}"
    except (OverflowError, RecursionError):  # a huge repeat count, thousands of nested groups
        return None, "not a usable regular expression: too large or nested too deeply"


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


def _clip(text: str) -> str:
    """A name or pattern as the landing page and ``explain`` show it."""
    return text if len(text) <= 100 else text[:97] + "..."


def _is_value(x: Any) -> bool:
    """A value an attribute can be compared with: a string, a finite number or true/false."""
    return x is not None and is_scalar(x)


_VALUE = "a string, a number or true/false"


def _compile_condition(key: str, attrs: dict[Any, Any], where: str, problems: list[str]
                       ) -> list[tuple[str, str, Predicate]]:
    spec = attrs[key]
    if not isinstance(spec, dict):
        # shorthand: `key: value` means equals
        if not _is_value(spec):
            problems.append(problem(attrs, key, where, f"expected {_VALUE}, or a condition like "
                                                       f"{{in: [a, b]}}, got {show(spec)}"))
            return []
        spec = {"equals": spec}
    cw = path(where, key)
    problems.extend(unknown_keys(spec, _CONDITION_KEYS, cw))
    out: list[tuple[str, str, Predicate]] = []
    for op, arg in spec.items():
        if op not in _CONDITION_KEYS:
            continue
        if op in ("equals", "not_equals"):
            if not _is_value(arg):
                problems.append(problem(spec, op, cw, f"expected {_VALUE}, got {show(arg)}"))
                continue
            out.append((key, f"{op} {arg!r}", _equals(label_str(arg), op == "equals")))
        elif op in ("in", "not_in"):
            if not isinstance(arg, list) or not arg or not all(_is_value(a) for a in arg):
                problems.append(problem(spec, op, cw, f"expected a non-empty list of values "
                                                      f"({_VALUE}), got {show(arg)}"))
                continue
            out.append((key, f"{op} {arg!r}",
                        _member(frozenset(label_str(a) for a in arg), op == "in")))
        elif op == "regex":
            if not isinstance(arg, str):
                problems.append(problem(spec, op, cw, f"expected a regular expression as a "
                                                      f"string, got {show(arg)}"))
                continue
            rx, why = compile_regex(arg)
            if rx is None:
                problems.append(problem(spec, op, cw, f"{show(arg)} is {why}"))
                continue
            out.append((key, f"to match /{_clip(arg)}/", _regex(rx)))
        elif op == "exists":
            if not isinstance(arg, bool):
                problems.append(problem(spec, op, cw, f"expected true or false, got {show(arg)}"))
                continue
            if arg:
                out.append((key, "it to exist", lambda v: v is not None))
            else:
                out.append((key, "it to be absent", lambda v: v is None))
        else:
            bound = _as_number(arg)
            if bound is None or not math.isfinite(bound):
                problems.append(problem(spec, op, cw, f"expected a finite number, got {show(arg)}"))
                continue
            cmp: Callable[[float, float], bool] = {
                "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
            }[op]

            def numeric(v: Any, b: float = bound, c: Callable[[float, float], bool] = cmp) -> bool:
                n = _as_number(v)
                return n is not None and c(n, b)

            out.append((key, f"{op} {arg!r}", numeric))
    return out


def _parse_labels(rule: dict[Any, Any], where: str, metric_type: str, problems: list[str]
                  ) -> tuple[LabelSpec, ...]:
    raw = rule.get("labels")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(problem(rule, "labels", where, f"expected a mapping of label name to "
                                                       f"attribute, got {show(raw)}"))
        return ()
    where = path(where, "labels")
    specs = []
    for label, spec in raw.items():
        if not isinstance(label, str):
            problems.append(problem(raw, label, where, "a label name must be a string like "
                                                       "'route'"))
            continue
        lw = path(where, label)
        before = len(problems)
        problems.extend(f"{at(raw, label)}{lw}: {p}"
                        for p in naming.check_label_name(label, metric_type))
        if isinstance(spec, str):
            spec = {"attribute": spec}
            holder, key = raw, label  # problems with the shorthand point at the label's line
        elif isinstance(spec, dict):
            holder, key = spec, "attribute"
        else:
            problems.append(problem(raw, label, where, f"expected an attribute name or a mapping "
                                                       f"with 'attribute', 'field' or 'value', "
                                                       f"got {show(spec)}"))
            continue
        problems.extend(unknown_keys(spec, _LABEL_KEYS, lw))
        sources = [k for k in ("attribute", "field", "value") if k in spec]
        if len(sources) != 1 and set(sources) != {"attribute", "field"}:
            problems.append(f"{at(raw, label)}{lw}: give exactly one of 'attribute', 'field' or "
                            f"'value'")
            continue
        attrs_raw = spec.get("attribute", [])
        attrs = [attrs_raw] if isinstance(attrs_raw, str) else attrs_raw
        if not isinstance(attrs, list) or ("attribute" in spec and not attrs) or \
                not all(isinstance(a, str) and a for a in attrs):
            problems.append(f"{at(holder, key)}{path(lw, 'attribute')}: expected an attribute "
                            f"name or a list of them, got {show(attrs_raw)}")
            continue
        for a in attrs:
            if naming.is_identity_attribute(a):
                problems.append(
                    f"{at(holder, key)}{lw}: attribute {show(a)} identifies a person, device or "
                    f"session and cannot be a label (one series per identity floods Prometheus "
                    f"and leaks identities). Count distinct users and sessions with the KPI "
                    f"windows instead: app_active_users and app_sessions (docs/kpis.md)"
                )
        fld = get_text(spec, "field", lw, problems, "", f"one of {', '.join(_FIELDS)}")
        if fld and fld not in _FIELDS:
            problems.append(problem(spec, "field", lw, f"{show(fld)} is not one of "
                                                       f"{', '.join(_FIELDS)}"))
        for k in ("value", "on_error_status"):
            if k in spec and not _is_value(spec[k]):
                problems.append(problem(spec, k, lw, f"expected {_VALUE}, got {show(spec[k])}"))
        if "default" in spec and not is_scalar(spec["default"]):
            problems.append(problem(spec, "default", lw, f"expected {_VALUE}, got "
                                                         f"{show(spec['default'])}"))
        transform = _parse_transform(spec, lw, problems)
        if transform is not None and "value" in spec:
            problems.append(f"{at(raw, label)}{lw}: 'rewrite', 'allow' and 'other' apply to "
                            f"values taken from an attribute or field, not to a constant 'value'")
        if len(problems) > before:
            continue
        constant = spec.get("value")
        err = spec.get("on_error_status")
        specs.append(LabelSpec(
            name=label, attributes=tuple(attrs), field=fld,
            constant=None if constant is None else label_str(constant),
            default=label_str(spec.get("default", "")),
            on_error_status=None if err is None else label_str(err),
            transform=transform,
        ))
    return tuple(specs)


def _pattern(raw: dict[Any, Any], key: str, where: str, problems: list[str]
             ) -> re.Pattern[str] | None:
    """``raw[key]`` compiled as a regular expression; None (and a problem) when it is not one."""
    text = raw.get(key)
    if not isinstance(text, str) or not text:
        problems.append(problem(raw, key, where, f"expected a regular expression as text, got "
                                                 f"{show(text)}"))
        return None
    rx, why = compile_regex(text)
    if rx is None:
        problems.append(problem(raw, key, where, f"{show(text)} is {why}"))
    return rx


def _replacement(rx: re.Pattern[str], item: dict[Any, Any], where: str, problems: list[str]
                 ) -> str | None:
    """A Prometheus-style replacement ($1, ${1}, ${name}, $$ for a dollar) as a template for
    :meth:`re.Match.expand`; None (and a problem) when it names a group the regex lacks."""
    raw = item["replacement"]
    if not isinstance(raw, str):
        problems.append(problem(item, "replacement", where, f"expected text such as '$1', got "
                                                            f"{show(raw)}"))
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
        problems.append(problem(item, "replacement", where,
                                f"{bad[0]} names a group the regex does not have "
                                f"({rx.groups} numbered groups)"))
        return None
    return template


def _parse_transform(spec: dict[Any, Any], where: str, problems: list[str]
                     ) -> LabelTransform | None:
    if not any(k in spec for k in ("rewrite", "allow", "other")):
        return None
    rewrites: list[tuple[re.Pattern[str], str]] = []
    raw_rewrites = spec.get("rewrite", [])
    if not isinstance(raw_rewrites, list):
        problems.append(problem(spec, "rewrite", where, f"expected a list of {{regex, "
                                                        f"replacement}}, got "
                                                        f"{show(raw_rewrites)}"))
        raw_rewrites = []
    rw = path(where, "rewrite")
    for i, item in enumerate(raw_rewrites):
        iw = path(rw, i)
        if not isinstance(item, dict) or "regex" not in item or "replacement" not in item:
            problems.append(problem(raw_rewrites, i, rw, f"expected a mapping with 'regex' and "
                                                         f"'replacement', got {show(item)}"))
            continue
        problems.extend(unknown_keys(item, _REWRITE_KEYS, iw))
        rx = _pattern(item, "regex", iw, problems)
        if rx is None:
            continue
        template = _replacement(rx, item, iw, problems)
        if template is not None:
            rewrites.append((rx, template))
    allow_values: frozenset[str] | None = None
    allow_pattern: re.Pattern[str] | None = None
    if "allow" in spec:
        allow = spec["allow"]
        if isinstance(allow, list) and allow and all(_is_value(a) for a in allow):
            allow_values = frozenset(label_str(a) for a in allow)
        elif isinstance(allow, dict) and set(allow) == {"regex"}:
            allow_pattern = _pattern(allow, "regex", path(where, "allow"), problems)
        else:
            problems.append(problem(spec, "allow", where, f"expected a non-empty list of values, "
                                                          f"or {{regex: R}} that every kept "
                                                          f"value matches, got {show(allow)}"))
    other = get_text(spec, "other", where, problems, "_OTHER", "text", empty=True)
    if "other" in spec and "allow" not in spec:
        problems.append(problem(spec, "other", where, "only used with 'allow'"))
    return LabelTransform(tuple(rewrites), allow_values, allow_pattern, other)


def _parse_value(rule: dict[Any, Any], scale: float, where: str, problems: list[str]
                 ) -> ValueSpec:
    raw = rule.get("value", 1)
    if raw is None:
        raw = 1
    number = as_finite(raw)
    if number is not None:
        return ValueSpec("constant", constant=number * scale)
    if isinstance(raw, str) and raw in ("duration", "data_point"):
        return ValueSpec(raw, scale=scale)
    if isinstance(raw, dict) and set(raw) == {"attribute"} and isinstance(raw["attribute"], str) \
            and raw["attribute"]:
        return ValueSpec("attribute", attribute=raw["attribute"], scale=scale)
    if isinstance(raw, dict) and set(raw) == {"cost"}:
        part = raw["cost"]
        if isinstance(part, str) and (part in COST_PARTS or part == COST_DATA_POINT):
            return ValueSpec("cost", part=part, scale=scale)
        problems.append(problem(raw, "cost", path(where, "value"),
                                f"expected one of {', '.join(COST_PARTS)} (spans) or "
                                f"{COST_DATA_POINT} (token usage metric points), got {show(part)}"))
        return ValueSpec("constant")
    problems.append(problem(rule, "value", where, f"expected a finite number, 'duration', "
                                                  f"'data_point', {{attribute: NAME}} or "
                                                  f"{{cost: PART}}, got {show(raw)}"))
    return ValueSpec("constant")


def _parse_enum_list(match: dict[Any, Any], key: str, names: tuple[str, ...], where: str,
                     problems: list[str]) -> frozenset[int] | None:
    raw = match.get(key)
    if raw is None:
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        problems.append(problem(match, key, where, f"expected one or a list of "
                                                   f"{', '.join(names)}, got {show(raw)}"))
        return None
    out = set()
    for item in items:
        if isinstance(item, str) and item.lower() in names:
            out.add(names.index(item.lower()))
        else:
            problems.append(problem(match, key, where, f"{show(item)} is not one of "
                                                       f"{', '.join(names)}"))
    return frozenset(out)


def _parse_rule(index: int, raw: Any, limits: dict[str, Any], problems: list[str],
                line: int = 0) -> Rule | None:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        problems.append((f"line {line}: " if line else "") + f"{where}: expected a mapping with "
                        f"'metric', 'type' and 'match', got {show(raw)}")
        return None
    line = line_of(raw) or line
    name = raw.get("metric")
    if isinstance(name, str) and 0 < len(name) <= 200:
        where += f" ({name})"
    before = len(problems)
    problems.extend(unknown_keys(raw, _RULE_KEYS, where))
    here = f"line {line}: " if line else ""
    name_known = isinstance(name, str) and bool(name)
    if "metric" not in raw:
        problems.append(f"{here}{where}: 'metric' is required: the Prometheus metric name, like "
                        f"app_signups_total")
    elif not name_known:
        problems.append(problem(raw, "metric", where, f"expected the Prometheus metric name, "
                                                      f"like app_signups_total, got {show(name)}"))
    if not isinstance(name, str) or not name:
        name = "invalid"  # never used: the rule is refused
    raw_type = raw.get("type")
    type_known = isinstance(raw_type, str) and raw_type in METRIC_TYPES
    mtype: str = raw_type if isinstance(raw_type, str) and type_known else COUNTER
    if not type_known:
        problems.append(problem(raw, "type", where, f"expected one of {', '.join(METRIC_TYPES)}, "
                                                    f"got {show(raw_type)}"))
    match = raw.get("match")
    if not isinstance(match, dict):
        if "match" in raw:
            problems.append(problem(raw, "match", where, f"expected a mapping with at least "
                                                         f"'signal' (log, span or metric), got "
                                                         f"{show(match)}"))
        else:
            problems.append(f"{here}{where}: 'match' is required, with at least 'signal' (log, "
                            f"span or metric)")
        match = {"signal": "log"}
    mw = path(where, "match")
    problems.extend(unknown_keys(match, _MATCH_KEYS, mw))
    sig = match.get("signal")
    signal = _SIGNAL_ALIASES.get(sig.lower()) if isinstance(sig, str) else None
    # an unknown signal is reported once, and what depends on the signal is not checked
    signal_known = signal is not None and isinstance(raw.get("match"), dict)
    if "signal" not in match:
        problems.append(problem(raw, "match", where, "'signal' is required: log, span or metric"))
        signal = LOG
    elif signal is None:
        problems.append(problem(match, "signal", mw, f"expected one of {', '.join(SIGNALS)}, "
                                                     f"got {show(sig)}"))
        signal = LOG
    name_exact: str | None = None
    name_pattern: re.Pattern[str] | None = None
    name_source = ""
    if "name" in match and "name_regex" in match:
        problems.append(problem(match, "name_regex", mw, "give 'name' or 'name_regex', not both"))
    elif "name" in match:
        n = get_text(match, "name", mw, problems, "", "a non-empty name or glob")
        if n and _GLOB_CHARS.search(n):
            name_pattern, why = compile_regex(fnmatch.translate(n))
            if name_pattern is None:
                problems.append(problem(match, "name", mw, f"{show(n)} is {why}"))
            name_source = f"glob {_clip(n)!r}"
        elif n:
            name_exact = n
            name_source = repr(_clip(n))
    elif "name_regex" in match:
        rx = get_text(match, "name_regex", mw, problems, "", "a regular expression")
        if rx:
            name_pattern, why = compile_regex(rx)
            if name_pattern is None:
                problems.append(problem(match, "name_regex", mw, f"{show(rx)} is {why}"))
            name_source = f"regex /{_clip(rx)}/"
    conditions: list[tuple[str, str, Predicate]] = []
    attrs = match.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        problems.append(problem(match, "attributes", mw, f"expected a mapping of attribute to "
                                                         f"condition, got {show(attrs)}"))
    elif attrs:
        aw = path(mw, "attributes")
        for key in attrs:
            if not isinstance(key, str) or not key:
                problems.append(problem(attrs, key, aw, "an attribute name must be a non-empty "
                                                        "string"))
                continue
            conditions += _compile_condition(key, attrs, aw, problems)
    span_kinds = _parse_enum_list(match, "span_kind", SPAN_KINDS, mw, problems)
    span_statuses = _parse_enum_list(match, "span_status", STATUS_CODES, mw, problems)
    if signal_known and signal != SPAN and (span_kinds is not None or
                                            span_statuses is not None):
        problems.append(problem(match, "span_kind" if "span_kind" in match else "span_status",
                                mw, "span_kind and span_status apply to spans only"))
    scale = get_number(raw, "scale", where, problems, 1.0, "a finite, non-zero number")
    if scale == 0:
        problems.append(problem(raw, "scale", where, "expected a finite, non-zero number, got 0"))
        scale = 1.0
    value = _parse_value(raw, scale, where, problems)
    if signal_known and value.kind == "duration" and signal != SPAN:
        problems.append(problem(raw, "value", where, "'duration' is only known for spans"))
    if signal_known and value.kind == "data_point" and signal != METRIC:
        problems.append(problem(raw, "value", where, "'data_point' is only known for metric "
                                                     "data points"))
    if value.kind == "cost":
        if "scale" in raw:
            problems.append(problem(raw, "scale", where, "a cost is in USD; 'scale' does not "
                                                         "apply to it"))
        if mtype != COUNTER:
            problems.append(problem(raw, "value", where, f"a cost feeds a counter (USD add up), "
                                                         f"not a {mtype}"))
        if signal_known and value.part == COST_DATA_POINT and signal != METRIC:
            problems.append(problem(raw, "value", where,
                                    f"{{cost: {COST_DATA_POINT}}} prices token usage metric "
                                    f"points; for spans name the part: {', '.join(COST_PARTS)}"))
        elif signal_known and value.part != COST_DATA_POINT and signal != SPAN:
            problems.append(problem(raw, "value", where,
                                    f"{{cost: {value.part}}} prices a span's token usage; for "
                                    f"metric points use {{cost: {COST_DATA_POINT}}}"))
    if value.kind == "constant" and (not math.isfinite(value.constant)
                                     or (mtype == COUNTER and value.constant < 0)):
        problems.append(problem(raw, "value" if "value" in raw else "scale", where,
                                "a constant value must be finite, and not negative for a "
                                "counter (counters only go up)"))
    if mtype == GAUGE and value.kind == "constant":
        problems.append(problem(raw, "value", where, "a gauge set to a constant says nothing; "
                                                     "take the value from an attribute, the "
                                                     "duration or the data point"))
    labels = _parse_labels(raw, where, mtype, problems)
    unit_hint = "seconds" if value.kind == "duration" and value.scale == 1 else None
    if type_known and name_known:  # the name rules depend on the type; no guesses on a typo
        problems.extend(f"{at(raw, 'metric')}{path(where, 'metric')}: {p}"
                        for p in naming.check_metric_name(name, mtype, unit_hint))
    buckets: tuple[float, ...] = ()
    if mtype == HISTOGRAM:
        rb = raw.get("buckets")
        numbers = [as_finite(b) for b in rb] if isinstance(rb, list) else []
        if rb is None and value.kind == "data_point":
            problems.append(problem(raw, "type", where, "a histogram fed by data points needs "
                                                        "its buckets: list some of the "
                                                        "instrumentation's bucket bounds"))
        elif rb is None:
            buckets = DEFAULT_BUCKETS
        elif not numbers or any(b is None for b in numbers):
            problems.append(problem(raw, "buckets", where, f"expected a non-empty list of finite "
                                                           f"numbers, got {show(rb)}"))
        elif any(b >= c for b, c in zip(numbers, numbers[1:])):  # type: ignore[operator]
            problems.append(problem(raw, "buckets", where, "bucket bounds must be strictly "
                                                           "increasing"))
        else:
            buckets = tuple(b for b in numbers if b is not None)
    elif "buckets" in raw:
        problems.append(problem(raw, "buckets", where, "only histograms have buckets"))
    max_series = get_int(raw, "max_series", where, problems,
                         limits.get("max_series_per_metric", 2000), high=MAX_SERIES,
                         hint=SERIES_HINT)
    ttl = get_duration(raw, "series_ttl", where, problems, 0.0)
    help_text = get_text(raw, "help", where, problems, "", "a string", empty=True)
    if len(problems) > before:
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
        raise RuleError([f"rules: expected a list of rules, got {show(raw_rules)}"])
    rules: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        rule = _parse_rule(i, raw, limits or {}, problems, line_of(raw_rules, i))
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
                (f"line {rule.line}: " if rule.line else "") +
                f"{rule.title}: feeds {b.name!r} like {seen.title} but with a different "
                f"{'type' if a.type != b.type else 'label set' if a.label_names != b.label_names else 'bucket list' if a.buckets != b.buckets else 'max_series or series_ttl'}"
                f" ({a.type} {list(a.label_names)} vs {b.type} {list(b.label_names)}); rules "
                f"feeding one metric must agree on its type, labels (same order) and buckets"
            )
        elif b.help and not a.help:
            first[rule.metric.name] = rule
    if problems:
        raise RuleError(problems, rules)
    # Every rule of a metric shares one MetricDef (the first with a help text).
    for rule in rules:
        rule.metric = first[rule.metric.name].metric
    return rules
