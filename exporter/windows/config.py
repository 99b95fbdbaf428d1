"""The ``windows`` section: which sliding windows the KPI gauges cover, how their buckets are
cut, the identity attributes they count and the breakdowns they are split by."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

import datasketches

from exporter import naming
from exporter.configcheck import (at, get_bool, get_duration, get_int, get_names, get_text,
                                  is_scalar, open_section, parse_duration, path, problem, show,
                                  unknown_keys)
from exporter.rules import Rule, label_str

__all__ = [
    "WindowSpec", "BreakdownSpec", "WindowsConfig", "parse_windows", "window_spec",
    "format_duration", "relative_error_bound", "breakdown_metric_names", "WINDOW_METRICS",
    "DEFAULT_DURATIONS", "BOUND_STDDEVS", "MEMORY_STORE", "REDIS_PRECISION", "REDIS_ERROR_BOUND",
    "STORE_ENV",
    "redact_url",
]

DEFAULT_DURATIONS = ("5m", "1h", "1d", "7d", "30d")
# Bucket widths a window may be cut into; the largest that divides the window into at least
# _MIN_BUCKETS buckets is used, so a window's trailing edge is accurate to 1/30 of it or better.
_BUCKET_LADDER = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                  86400)
_MIN_BUCKETS = 30
_MAX_WINDOW = 400 * 86400
# The standard deviations the stated error bound covers (99.7% of estimates).
BOUND_STDDEVS = 3

WINDOW_METRICS = ("app_active_users", "app_sessions", "app_conversion_rate_ratio")
_WINDOWS_KEYS = ("enabled", "store", "redis_prefix", "redis_buffer", "durations", "precision", "max_future",
                 "user_attribute", "session_attribute", "conversion_events", "breakdowns",
                 "session_timeout", "max_open_sessions")
# A visit ends after this long without events (Plausible's and PostHog's 30 minutes).
DEFAULT_SESSION_TIMEOUT = 1800.0
_SESSION_TIMEOUT_RANGE = (1.0, 86400.0)
MEMORY_STORE = "memory"
STORE_ENV = "KPI_EXPORTER_WINDOWS_STORE"
# Redis and Valkey HyperLogLogs have 2**14 registers, fixed by the server; their standard
# error is 1.04 / sqrt(2**14) = 0.81%, and the bound covers BOUND_STDDEVS of it.
REDIS_PRECISION = 14
REDIS_ERROR_BOUND = 3 * 1.04 / 2 ** (REDIS_PRECISION / 2)
# TLS settings a rediss:// URL may carry as query options (redis-py reads them from there).
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:/-]{0,64}$")
_BREAKDOWN_KEYS = ("attribute", "label", "max_values", "default", "windows")


def format_duration(seconds: int) -> str:
    """A window's label value: the largest unit that divides it exactly (7d, 1h, 90s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def relative_error_bound(precision: int) -> float:
    """The relative error the window gauges stay within (3 standard deviations, merged
    sketches), as DataSketches computes it for HLL sketches of ``2**precision`` registers."""
    return abs(datasketches.hll_sketch.get_rel_err(True, True, precision, BOUND_STDDEVS))


def redact_url(url: str) -> str:
    """A store URL fit for logs and pages: the password replaced by ``***``. Everything up
    to the last ``@`` is taken for the user and password, so that a password holding
    characters a URL reserves (``/ ? # @``, not percent-encoded) is hidden too."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


_ENCODE_HINT = ("percent-encode the characters / ? # @ : [ ] of a user name or password "
                "(for example / as %2F, # as %23)")


def _check_store_url(url: str) -> str | None:
    """What is wrong with a Redis store URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # the parser's own message may quote part of the password
        return (f"{redact_url(url)!r} is not a URL: write redis://[user:password@]host:port/db"
                f", and {_ENCODE_HINT}")
    if "@" in url and "@" not in parts.netloc:
        return (f"{redact_url(url)!r}: the host part ends before the '@': {_ENCODE_HINT}")
    if parts.scheme not in ("redis", "rediss"):
        return (f"{redact_url(url)!r} is neither 'memory' nor a redis:// or rediss:// URL "
                f"(for example redis://redis:6379/0, or rediss://user:password@host:6380/0 "
                f"with TLS)")
    if not parts.hostname:
        return f"{redact_url(url)!r} names no host (write redis://HOST:PORT/DB)"
    if port == 0:
        return f"{redact_url(url)!r}: port 0 is not a port"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"{redact_url(url)!r}: the database after the host must be a number, like /0"
    if parts.fragment:
        return f"{redact_url(url)!r}: a URL with a '#' fragment is not a store address"
    for name in parse_qs(parts.query, keep_blank_values=True):
        if name not in _TLS_OPTIONS:
            return (f"{redact_url(url)!r}: unknown option {name!r}; the options after '?' "
                    f"are the TLS settings of rediss:// URLs: {', '.join(_TLS_OPTIONS)}")
        if parts.scheme != "rediss":
            return f"{redact_url(url)!r}: {name} applies to rediss:// (TLS) URLs only"
    return None


@dataclass(frozen=True)
class WindowSpec:
    """One sliding window: its label value, length and bucket width in seconds."""

    name: str
    seconds: int
    bucket_seconds: int

    @property
    def buckets(self) -> int:
        return self.seconds // self.bucket_seconds


def window_spec(seconds: int) -> WindowSpec:
    """The spec of a window of ``seconds``, with its bucket width chosen from the ladder."""
    width = 1
    for w in _BUCKET_LADDER:
        if seconds % w == 0 and seconds // w >= _MIN_BUCKETS:
            width = w
    return WindowSpec(format_duration(seconds), seconds, width)


@dataclass(frozen=True)
class BreakdownSpec:
    """Window gauges split by one bounded attribute (a platform, a plan tier)."""

    attribute: str
    label: str
    max_values: int = 20
    default: str = "unknown"
    windows: tuple[str, ...] = ()


@dataclass
class WindowsConfig:
    """The ``windows`` section."""

    enabled: bool = True
    # "memory" (in this process, kept in the state snapshot) or a redis:// / rediss:// URL of
    # a Redis or Valkey that every replica shares. Holds a password: never log it as it is.
    store: str = field(default=MEMORY_STORE, repr=False)
    redis_prefix: str = "kpi:"
    # Events a shared store's sender holds while the store is slow or unreachable.
    redis_buffer: int = 250_000
    windows: tuple[WindowSpec, ...] = tuple(
        window_spec(int(parse_duration(d))) for d in DEFAULT_DURATIONS)
    precision: int = 14
    max_future: float = 600.0
    user_attribute: str = "user.id"
    session_attribute: str = "session.id"
    conversion_events: tuple[str, ...] = ("app.conversion",)
    breakdowns: tuple[BreakdownSpec, ...] = ()
    # Visits: how long without events ends one, and how many may be open at once (the
    # oldest are closed early beyond it).
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    max_open_sessions: int = 250_000

    @property
    def identity_keys(self) -> tuple[str, ...]:
        return (self.user_attribute, self.session_attribute)

    @property
    def shared(self) -> bool:
        """True when the sketches live in a store every replica shares (Redis, Valkey)."""
        return self.store != MEMORY_STORE

    @property
    def error_bound(self) -> float:
        """The relative error the window gauges stay within (3 standard deviations)."""
        return REDIS_ERROR_BOUND if self.shared else relative_error_bound(self.precision)

    @property
    def store_display(self) -> str:
        """The store for logs and pages, without a password."""
        return redact_url(self.store)

    def identity_label_problems(self, rules: list[Rule],
                                lines: Mapping[str, str] | None = None) -> list[str]:
        """A problem for every rule that would make a label of the attribute the windows
        count as a user or a session (whatever its name, and whether the windows are on):
        that would put raw identities on /metrics. Each names the rule and its line; for a
        built-in rule, the line of the setting that chose the attribute (``lines``: 'line N: '
        by attribute)."""
        keys = {self.user_attribute: "windows.user_attribute",
                self.session_attribute: "windows.session_attribute"}
        problems = []
        for rule in rules:
            for spec in rule.labels:
                for attribute in spec.attributes:
                    key = keys.get(attribute)
                    if key is None:
                        continue
                    if rule.source == "built-in":
                        where = (lines or {}).get(attribute, "")
                    else:
                        where = f"line {rule.line}: " if rule.line else ""
                    fix = ("set windows.user_attribute and windows.session_attribute to the "
                           "attributes that hold the ids, or replace this built-in rule with "
                           "one of your own" if rule.source == "built-in" else
                           "count distinct users and sessions with the KPI windows instead: "
                           "app_active_users and app_sessions (docs/kpis.md)")
                    problems.append(
                        f"{where}{rule.title}.labels.{spec.name}: attribute {attribute!r} is "
                        f"{key}, an identity the KPI windows count; it cannot be a label (one "
                        f"series per identity floods Prometheus and puts raw ids on /metrics); "
                        f"{fix}")
        return problems


def _breakdown_family(base: str, label: str) -> str:
    if base.endswith("_ratio"):
        return f"{base[:-len('_ratio')]}_by_{label}_ratio"
    return f"{base}_by_{label}"


def breakdown_metric_names(label: str) -> tuple[str, ...]:
    """The metric names a breakdown by ``label`` is exposed as."""
    return tuple(_breakdown_family(m, label) for m in WINDOW_METRICS)


def parse_windows(raw: Any, user_rules: list[Rule], problems: list[str],
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> WindowsConfig:
    """Parses the ``windows`` section; each problem names the key and what to do. The store
    comes from ``--windows-store`` (``overrides['windows_store']``), then
    ``KPI_EXPORTER_WINDOWS_STORE``, then ``windows.store``."""
    cfg = WindowsConfig()
    raw, where = open_section(raw, "windows", _WINDOWS_KEYS, "'durations' and 'breakdowns'",
                              problems)
    cfg.enabled = get_bool(raw, "enabled", where, problems, cfg.enabled)
    store, store_source = raw.get("store"), f"{at(raw, 'store')}{path(where, 'store')}"
    if store is not None and isinstance(store, str) and "@" in store:
        raw["store"] = redact_url(store)  # the parsed document a Config keeps holds no password
    if (env or {}).get(STORE_ENV):
        store, store_source = (env or {})[STORE_ENV], STORE_ENV
    if (overrides or {}).get("windows_store"):
        store, store_source = (overrides or {})["windows_store"], "--windows-store"
    if store is not None:
        if not isinstance(store, str) or not store.strip():
            problems.append(f"{store_source}: expected 'memory' or a redis:// URL, got "
                            f"{show(store)}")
        elif store.strip() != MEMORY_STORE:
            wrong = _check_store_url(store.strip())
            if wrong:
                problems.append(f"{store_source}: {wrong}")
            else:
                cfg.store = store.strip()
    cfg.redis_buffer = get_int(raw, "redis_buffer", where, problems, cfg.redis_buffer, low=100,
                               high=10_000_000, hint=" (the events to hold while the store is "
                                                     "unreachable; default 250000)")
    if "redis_prefix" in raw:
        prefix = raw["redis_prefix"]
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            problems.append(problem(raw, "redis_prefix", where,
                                    f"expected up to 64 letters, digits and '_.:/-' (no braces: "
                                    f"they would change the keys' Cluster slots), like 'kpi:' or "
                                    f"'shop-prod:kpi:', got {show(prefix)}"))
        else:
            cfg.redis_prefix = prefix
    if "durations" in raw:
        durations = raw["durations"]
        if not isinstance(durations, list) or not durations:
            problems.append(problem(raw, "durations", where, f"expected a list of durations like "
                                                             f"[5m, 1h, 1d, 7d, 30d], got "
                                                             f"{show(durations)}"))
        else:
            specs: dict[int, WindowSpec] = {}
            for i, d in enumerate(durations):
                seconds = _window_seconds(d)
                if seconds is None:
                    problems.append(problem(durations, i, path(where, "durations"),
                                            f"{show(d)} is not a window: write a whole number "
                                            f"of seconds from 10s to 400d, like 5m, 1h or 7d"))
                    continue
                specs[seconds] = window_spec(seconds)
            cfg.windows = tuple(specs[s] for s in sorted(specs))
    cfg.precision = get_int(raw, "precision", where, problems, cfg.precision, low=8, high=18,
                            hint=f" (log2 of the sketch registers; 14 gives "
                                 f"{relative_error_bound(14):.1%})")
    if cfg.shared and "precision" in raw and cfg.precision != REDIS_PRECISION:
        problems.append(problem(raw, "precision", where,
                                f"a Redis or Valkey store keeps HyperLogLogs of "
                                f"2**{REDIS_PRECISION} registers (fixed by the server, "
                                f"{REDIS_ERROR_BOUND:.1%} error bound); precision applies to the "
                                f"memory store only, so remove it or set it to "
                                f"{REDIS_PRECISION}"))
    cfg.max_future = get_duration(raw, "max_future", where, problems, cfg.max_future)
    for key in ("user_attribute", "session_attribute"):
        setattr(cfg, key, get_text(raw, key, where, problems, getattr(cfg, key),
                                   "an attribute name"))
    if cfg.user_attribute == cfg.session_attribute:
        problems.append(problem(raw, "session_attribute", where,
                                f"user_attribute and session_attribute are both "
                                f"{show(cfg.user_attribute)}; sessions and users need their own "
                                f"attributes"))
    events = get_names(raw, "conversion_events", where, problems,
                       "event names, like [app.conversion]")
    if events is not None:
        cfg.conversion_events = events
    if "session_timeout" in raw:
        low, high = _SESSION_TIMEOUT_RANGE
        timeout = get_duration(raw, "session_timeout", where, problems, cfg.session_timeout)
        if not low <= timeout <= high:
            problems.append(problem(raw, "session_timeout", where,
                                    f"a visit ends after between 1s and 1d without events "
                                    f"(default 30m, as Plausible and PostHog), got "
                                    f"{show(raw['session_timeout'])}"))
        else:
            cfg.session_timeout = timeout
    cfg.max_open_sessions = get_int(raw, "max_open_sessions", where, problems,
                                    cfg.max_open_sessions, low=100, high=100_000_000,
                                    hint=" (visits open at once, about 200 bytes each in the "
                                         "memory store; default 250000)")

    names = {w.name for w in cfg.windows}
    breakdowns = raw.get("breakdowns", [])
    if not isinstance(breakdowns, list):
        problems.append(problem(raw, "breakdowns", where, f"expected a list of {{attribute: ..., "
                                                          f"label: ...}} mappings, got "
                                                          f"{show(breakdowns)}"))
        breakdowns = []
    parsed: list[BreakdownSpec] = []
    for i, b in enumerate(breakdowns):
        bw = path(path(where, "breakdowns"), i)
        if not isinstance(b, dict):
            problems.append(problem(breakdowns, i, path(where, "breakdowns"),
                                    f"expected a mapping like {{attribute: app.platform, "
                                    f"label: platform}}, got {show(b)}"))
            continue
        before = len(problems)
        problems.extend(unknown_keys(b, _BREAKDOWN_KEYS, bw))
        attribute = get_text(b, "attribute", bw, problems, "",
                             "an attribute name like app.platform")
        if not attribute:
            if "attribute" not in b:
                problems.append(f"{at(breakdowns, i)}{bw}: 'attribute' is required: an "
                                f"attribute name like app.platform")
            continue
        if naming.is_identity_attribute(attribute) or attribute in cfg.identity_keys:
            problems.append(problem(b, "attribute", bw,
                                    f"{show(attribute)} identifies a person, device or "
                                    f"session; a breakdown needs a bounded attribute such as a "
                                    f"platform or a plan tier"))
            continue
        label = get_text(b, "label", bw, problems,
                         attribute.replace(".", "_").replace("-", "_"), "a label name")
        problems.extend(f"{at(b, 'label' if 'label' in b else 'attribute')}{bw}.label: {p}"
                        for p in naming.check_label_name(label, "gauge"))
        if label == "window":
            problems.append(problem(b, "label", bw, "'window' is taken by the window itself; "
                                                    "pick another"))
        max_values = get_int(b, "max_values", bw, problems, 20, low=2, high=1000,
                             hint=" (each value costs as much memory as the totals)")
        default = b.get("default", "unknown")
        if not is_scalar(default) or default is None:
            problems.append(problem(b, "default", bw, f"expected a string, got {show(default)}"))
        bwindows = b.get("windows", sorted(names, key=lambda n: parse_duration(n)))
        if isinstance(bwindows, str):
            bwindows = [bwindows]
        chosen: list[str] = []
        if not isinstance(bwindows, list) or not bwindows:
            problems.append(problem(b, "windows", bw, f"expected a list of window durations, "
                                                      f"like [1d, 7d] (leave it out for every "
                                                      f"window), got {show(bwindows)}"))
        else:
            for w in bwindows:
                seconds = _window_seconds(w)
                n = format_duration(seconds) if seconds is not None else None
                if n not in names:
                    problems.append(problem(b, "windows", bw,
                                            f"{show(w)} is not one of windows.durations "
                                            f"({', '.join(w.name for w in cfg.windows)})"))
                    continue
                chosen.append(n)
        if len(problems) > before:
            continue
        parsed.append(BreakdownSpec(attribute, label, max_values, label_str(default),
                                    tuple(dict.fromkeys(chosen))))
    labels = [b.label for b in parsed]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(problem(raw, "breakdowns", where, f"the label {show(label)} is used "
                                                          f"twice; give each breakdown its own "
                                                          f"label"))
    cfg.breakdowns = tuple(parsed)

    problems.extend(cfg.identity_label_problems(user_rules))
    if cfg.enabled:
        reserved = set(WINDOW_METRICS)
        for b in cfg.breakdowns:
            reserved.update(breakdown_metric_names(b.label))
        for rule in user_rules:
            if rule.metric.name in reserved:
                problems.append((f"line {rule.line}: " if rule.line else "") +
                                f"{rule.title}: {rule.metric.name!r} is a KPI window metric "
                                f"(docs/kpis.md); rename the rule's metric, or set "
                                f"windows.enabled: false")
    return cfg


def _window_seconds(value: Any) -> int | None:
    """A window's length in whole seconds, 10s to 400d; None when it is not one."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        return None
    if seconds != int(seconds) or not 10 <= seconds <= _MAX_WINDOW:
        return None
    return int(seconds)
