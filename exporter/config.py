"""The exporter's configuration: YAML file, environment and command line, validated at load.

Precedence, highest first: command-line flags, ``KPI_EXPORTER_*`` environment variables, the
config file, built-in defaults. Every problem is reported with the file, line and key.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping as TMapping

from exporter import yamlload
from exporter.configcheck import (at, get_bool, get_duration, get_int, get_names, get_section,
                                  get_text, open_section, problem, show, unknown_keys)
from exporter.fsutil import read_limited
from exporter.genai.config import GenAIConfig, parse_genai
from exporter.privacy import SALT_ENV, PrivacyConfig, parse_privacy
from exporter.rules import MAX_SERIES, SERIES_HINT, Rule, RuleError, parse_rules
from exporter.state import StateConfig, parse_state
from exporter.web_analytics import WebAnalyticsConfig, parse_web_analytics
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.windows.config import WindowsConfig, parse_windows

__all__ = ["Config", "ServerConfig", "ConfigError", "load_config", "default_rules_text",
           "parse_listen", "parse_size", "LIFECYCLE_ENV"]

DEFAULT_OTLP_LISTEN = "0.0.0.0:4318"
DEFAULT_OTLP_GRPC_LISTEN = "0.0.0.0:4317"
DEFAULT_METRICS_LISTEN = "0.0.0.0:9464"
DEFAULT_MAX_BODY = 64 * 1024 * 1024

_TOP_KEYS = ("server", "limits", "default_rules", "rules", "windows", "web_analytics", "state",
             "privacy", "genai")
_SERVER_KEYS = ("otlp_listen", "otlp_grpc_listen", "metrics_listen", "reuse_port",
                "web_config_file", "max_body_size", "max_concurrent_requests", "threads", "auth",
                "cors", "enable_lifecycle")
LIFECYCLE_ENV = "KPI_EXPORTER_WEB_ENABLE_LIFECYCLE"
_ENV_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_AUTH_KEYS = ("bearer_tokens", "bearer_token_file")
_CORS_KEYS = ("allowed_origins", "max_age")
_LIMIT_KEYS = ("max_series_per_metric", "max_label_value_length", "max_streams_per_metric",
               "stream_ttl")
# An idle cumulative stream is forgotten after stream_ttl, and its next point is only a
# baseline: a TTL near an export interval would turn every point into one.
_MIN_STREAM_TTL = 60.0
_SIZE_RE = re.compile(r"^(\d{1,15})\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$",
                      re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
               "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4}
_MAX_SIZE = 1024 ** 4
_ORIGIN_RE = re.compile(r"^https?://[^/\s]+$")
_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?:\.(?!-)[A-Za-z0-9-]{1,63})*\.?$", re.ASCII)
# A config or token file beyond these sizes is a mistake (or a device that never ends).
MAX_CONFIG_SIZE = 16 * 1024 * 1024
MAX_TOKEN_FILE_SIZE = 1024 * 1024
# waitress starts every worker thread up front; past this, add processes instead.
MAX_THREADS = 1024
# Browsers cap a preflight's cache at 2 hours (Chromium) or 24 hours (Firefox).
MAX_CORS_MAX_AGE = 86400
# A bearer token travels in an HTTP header: visible ASCII, no spaces.
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


class ConfigError(ValueError):
    """The configuration cannot be used. ``problems`` holds one actionable message each."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems = [_locate(source, p) for p in problems]
        super().__init__("\n".join(self.problems))


def _locate(source: str, problem: str) -> str:
    # "line 12: ..." from the parsers becomes the conventional "file.yaml:12: ..."
    m = re.match(r"^line (\d+)(?:, column \d+)?: (.*)$", problem, re.DOTALL)
    if source and m:
        return f"{source}:{m.group(1)}: {m.group(2)}"
    return f"{source}: {problem}" if source else problem


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', or '[::1]:PORT') as (host, port); ValueError otherwise. HOST
    is an IP address or a host name."""
    m = re.match(r"^(?:\[([^\]]+)\]|([^:\[\]]*)):(\d{1,5})$", value.strip(), re.ASCII)
    if not m or not 0 <= int(m.group(3)) <= 65535 or not _valid_host(m.group(1) or m.group(2)):
        raise ValueError(f"{show(value)} is not HOST:PORT (for example 0.0.0.0:4318 or "
                         f"127.0.0.1:9464; HOST is an IP address or a host name, PORT 0 to 65535)")
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, int(m.group(3))


def parse_listen_or_none(value: str) -> tuple[str, int] | None:
    """parse_listen, or None for an address already reported as invalid."""
    try:
        return parse_listen(value)
    except ValueError:
        return None


def _valid_host(host: str) -> bool:
    if not host:
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOSTNAME_RE.match(host) is not None


def parse_size(value: Any) -> int:
    """A byte size: an integer, or a string like '64MiB'; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_SIZE:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if m:
            size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
            if 0 < size <= _MAX_SIZE:
                return size
    raise ValueError(f"{show(value)} is not a size: write bytes, or a number with KiB, MiB or "
                     f"GiB (more than 0, at most 1TiB)")


@dataclass
class ServerConfig:
    """Listeners and the receiver's request handling."""

    otlp_listen: str = DEFAULT_OTLP_LISTEN
    # OTLP/gRPC; "" turns the gRPC listener off.
    otlp_grpc_listen: str = DEFAULT_OTLP_GRPC_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    # Several processes may bind otlp_listen and otlp_grpc_listen together (SO_REUSEPORT);
    # the kernel spreads connections over them.
    reuse_port: bool = False
    # The exporter-toolkit web config file (TLS, basic auth) and what it holds; "" for none.
    web_config_file: str = ""
    web: WebConfig | None = None
    max_body_size: int = DEFAULT_MAX_BODY
    max_concurrent_requests: int = 16
    threads: int = 8
    bearer_tokens: tuple[str, ...] = ()
    cors_allowed_origins: tuple[str, ...] = ()
    cors_max_age: int = 600
    # POST /-/reload answers 403 unless this is on (as Prometheus' --web.enable-lifecycle)
    enable_lifecycle: bool = False

    @property
    def buffer_limit(self) -> int:
        """The most bytes a listener takes in for one request before the receiver sees it
        (twice max_body_size, and at least 1 MiB more), so a request over the limit by
        less is answered by the receiver, with the setting's name, and counted."""
        return max(2 * self.max_body_size, self.max_body_size + 2 ** 20)


@dataclass
class Config:
    """Everything the exporter runs on."""

    server: ServerConfig = field(default_factory=ServerConfig)
    rules: list[Rule] = field(default_factory=list)
    max_series_per_metric: int = 2000
    max_label_value_length: int = 256
    # None: 4 x each metric's max_series
    max_streams_per_metric: int | None = None
    stream_ttl: float = 3600.0
    default_rules: bool = True
    user_rule_count: int = 0
    source: str = "built-in defaults"
    raw: dict[str, Any] = field(default_factory=dict)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    web_analytics: WebAnalyticsConfig = field(default_factory=WebAnalyticsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    state: StateConfig = field(default_factory=StateConfig)
    genai: GenAIConfig = field(default_factory=GenAIConfig)

    def describe(self) -> str:
        """One line for the log and the landing page."""
        return (f"{self.source}: {len(self.rules)} rules feeding "
                f"{len({r.metric.name for r in self.rules})} metrics")


def default_rules_text() -> str:
    """The built-in rule set shipped inside the package."""
    return resources.files("exporter").joinpath("defaults/rules.yaml").read_text("utf-8")


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yamlload.load(text)
    except yamlload.YAMLLoadError as exc:
        raise ConfigError([str(exc)], source) from None


@functools.cache
def _default_rules_doc() -> Any:
    # Parsed once per process: every load and reload reads the same packaged file.
    return _load_yaml(default_rules_text(), "built-in rules")


def _default_rules(limits: dict[str, Any]) -> list[Rule]:
    doc = _default_rules_doc()
    try:
        return parse_rules(doc.get("rules"), limits, source="built-in")
    except RuleError as exc:  # a packaging bug, not a user error
        raise ConfigError(exc.problems, "built-in rules") from None


def _read_token_file(path: str) -> list[str]:
    """The tokens of a token file (one a line, # comments); OSError or ValueError (with what
    to do) when it cannot be used."""
    if "\x00" in path:
        raise ValueError("a path cannot contain a NUL character")
    try:
        text = read_limited(path, MAX_TOKEN_FILE_SIZE).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _check_tokens(tokens: list[str], source: str, problems: list[str]) -> None:
    bad = sum(1 for t in tokens if not _TOKEN_RE.match(t))
    if bad:
        problems.append(f"{source}: {bad} token(s) hold spaces, control or non-ASCII characters; "
                        f"a bearer token travels in an HTTP header: use visible ASCII only, "
                        f"like the output of `openssl rand -hex 32`")


def load_config(path: str | None = None, env: TMapping[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Loads, merges and validates the configuration; raises :class:`ConfigError`.

    ``overrides`` are command-line values (``otlp_listen``, ``otlp_grpc_listen``,
    ``metrics_listen``, ``web_config_file``, ``state_dir``, ``windows_store``, ``reuse_port``,
    ``enable_lifecycle``) that win over everything else.
    """
    env = os.environ if env is None else env
    overrides = overrides or {}
    source = path or "built-in defaults"
    doc: Any = {}
    if path:
        try:
            data = read_limited(path, MAX_CONFIG_SIZE)
        except OSError as exc:
            raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], path) from None
        except ValueError as exc:  # too large, or a NUL in the path
            raise ConfigError([f"cannot read the config file: {exc}"], path) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigError([f"line {line}: the file is not UTF-8 text (byte {exc.start}); "
                               f"save it as UTF-8"], path) from None
        doc = _load_yaml(text, path)
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError([f"the config file must be a YAML mapping with keys like 'server' "
                               f"and 'rules', got {show(doc)}"], path)
    problems: list[str] = unknown_keys(doc, _TOP_KEYS, "top level")
    cfg = Config(source=source, raw=dict(doc))

    def top(key: str, kind: type, what: str) -> Any:
        value = doc.get(key)
        if value is not None and not isinstance(value, kind):
            problems.append(problem(doc, key, "", f"expected {what}, got {show(value)}"))
            return None
        return value

    server = open_section(top("server", dict, "a mapping with keys like 'otlp_listen'"),
                          "server", _SERVER_KEYS, "'otlp_listen' and 'auth'", problems)[0]
    limits = open_section(top("limits", dict, "a mapping with keys like "
                                              "'max_series_per_metric'"),
                          "limits", _LIMIT_KEYS, "'max_series_per_metric'", problems)[0]
    auth = get_section(server, "auth", "server", _AUTH_KEYS, "'bearer_tokens'", problems)
    cors = get_section(server, "cors", "server", _CORS_KEYS, "'allowed_origins'", problems)
    s = cfg.server

    for key, flag in (("otlp_listen", "--otlp-listen"), ("metrics_listen", "--metrics-listen")):
        env_key = f"KPI_EXPORTER_{key.upper()}"
        if overrides.get(key):
            value, name, where = overrides[key], flag, ""
        elif env.get(env_key):
            value, name, where = env[env_key], env_key, ""
        elif key in server:
            value, name, where = server[key], f"server.{key}", at(server, key)
        else:
            continue
        if not isinstance(value, str):
            problems.append(f"{where}{name}: expected HOST:PORT as a string, like "
                            f"0.0.0.0:4318, got {show(value)}")
            continue
        try:
            parse_listen(value)
            setattr(s, key, value)
        except ValueError as exc:
            problems.append(f"{where}{name}: {exc}")
    # gRPC: "" (flag, environment or file) turns the listener off.
    grpc_listen, grpc_name = overrides.get("otlp_grpc_listen"), "--otlp-grpc-listen"
    if grpc_listen is None:
        grpc_listen, grpc_name = (env.get("KPI_EXPORTER_OTLP_GRPC_LISTEN"),
                                  "KPI_EXPORTER_OTLP_GRPC_LISTEN")
    if grpc_listen is None:
        grpc_listen, grpc_name = (server.get("otlp_grpc_listen"),
                                  f"{at(server, 'otlp_grpc_listen')}server.otlp_grpc_listen")
    if grpc_listen is not None:
        if not isinstance(grpc_listen, str):
            problems.append(f"{grpc_name}: expected HOST:PORT as a string, or '' for no gRPC "
                            f"listener, got {show(grpc_listen)}")
        elif grpc_listen.strip():
            try:
                parse_listen(grpc_listen)
                s.otlp_grpc_listen = grpc_listen.strip()
            except ValueError as exc:
                problems.append(f"{grpc_name}: {exc}; or '' for no gRPC listener")
        else:
            s.otlp_grpc_listen = ""
    addresses = {key: parse_listen_or_none(getattr(s, key)) for key in
                 ("otlp_listen", "metrics_listen", "otlp_grpc_listen") if getattr(s, key)}
    if "otlp_grpc_listen" in addresses and addresses["otlp_grpc_listen"] is not None \
            and addresses["otlp_grpc_listen"][1] != 0:
        for key in ("otlp_listen", "metrics_listen"):
            if addresses.get(key) == addresses["otlp_grpc_listen"]:
                problems.append(f"{grpc_name}: {s.otlp_grpc_listen} is also {key}; gRPC needs "
                                f"its own port (the OTLP default is 4317)")
    s.reuse_port = bool(overrides.get("reuse_port")) or get_bool(
        server, "reuse_port", "server", problems, s.reuse_port)
    if s.reuse_port and parse_listen_or_none(s.otlp_listen) == parse_listen_or_none(
            s.metrics_listen):
        problems.append(f"{at(server, 'reuse_port')}server.reuse_port: shares otlp_listen with "
                        f"other processes, so metrics_listen needs its own address (each "
                        f"process's /metrics is scraped on its own port)")
    web_file, web_name = overrides.get("web_config_file"), "--web.config.file"
    if not web_file:
        web_file, web_name = env.get("KPI_EXPORTER_WEB_CONFIG_FILE"), "KPI_EXPORTER_WEB_CONFIG_FILE"
    if not web_file:
        web_file, web_name = (server.get("web_config_file"),
                              f"{at(server, 'web_config_file')}server.web_config_file")
    if web_file is not None and not isinstance(web_file, str):
        problems.append(f"{web_name}: expected the path of a web config file, got "
                        f"{show(web_file)}")
    elif web_file and "\x00" in web_file:
        problems.append(f"{web_name}: a path cannot contain a NUL character")
    elif web_file:
        s.web_config_file = web_file
        try:
            s.web = load_web_config(web_file)
        except WebConfigError as exc:
            problems.extend(f"{web_name}: {p}" for p in exc.problems)
    if "max_body_size" in server:
        try:
            s.max_body_size = parse_size(server["max_body_size"])
        except ValueError as exc:
            problems.append(problem(server, "max_body_size", "server", str(exc)))
    s.max_concurrent_requests = get_int(server, "max_concurrent_requests", "server", problems,
                                        s.max_concurrent_requests)
    s.threads = get_int(server, "threads", "server", problems, s.threads, high=MAX_THREADS,
                        hint=" (past that, run more processes)")

    # The lifecycle API (POST /-/reload): flag, then environment, then file.
    s.enable_lifecycle = get_bool(server, "enable_lifecycle", "server", problems, False)
    lifecycle_name, lifecycle_line = "server.enable_lifecycle", at(server, "enable_lifecycle")
    env_lifecycle = env.get(LIFECYCLE_ENV)
    if overrides.get("enable_lifecycle"):
        s.enable_lifecycle, lifecycle_name, lifecycle_line = True, "--web.enable-lifecycle", ""
    elif env_lifecycle is not None:
        if env_lifecycle.strip().lower() in _ENV_BOOLS:
            s.enable_lifecycle = _ENV_BOOLS[env_lifecycle.strip().lower()]
            lifecycle_name, lifecycle_line = LIFECYCLE_ENV, ""
        else:
            problems.append(f"{LIFECYCLE_ENV}: expected true or false, got "
                            f"{show(env_lifecycle)}")
    otlp_address = parse_listen_or_none(s.otlp_listen)
    if s.enable_lifecycle and otlp_address is not None and otlp_address == parse_listen_or_none(
            s.metrics_listen):
        # the line of the setting that turned it on, or else of the address that is shared
        shared_line = lifecycle_line or at(server, "metrics_listen") or at(server, "otlp_listen")
        problems.append(f"{shared_line}{lifecycle_name}: the OTLP receiver and the metrics "
                        f"listener share {s.metrics_listen}, so whoever can send could reload "
                        f"the config; give server.metrics_listen a port of its own, or leave "
                        f"the lifecycle API off and reload with SIGHUP")

    tokens = list(get_names(auth, "bearer_tokens", "server.auth", problems,
                            "non-empty strings") or ())
    _check_tokens(tokens, f"{at(auth, 'bearer_tokens')}server.auth.bearer_tokens", problems)
    token_files = []
    if env.get("KPI_EXPORTER_BEARER_TOKEN_FILE"):
        token_files.append((env["KPI_EXPORTER_BEARER_TOKEN_FILE"], "KPI_EXPORTER_BEARER_TOKEN_FILE"))
    else:
        name = get_text(auth, "bearer_token_file", "server.auth", problems, "",
                        "the path of a file with one token a line")
        if name:
            token_files.append((name, f"{at(auth, 'bearer_token_file')}"
                                      f"server.auth.bearer_token_file"))
    for name, where in token_files:
        try:
            from_file = _read_token_file(name)
        except OSError as exc:
            problems.append(f"{where}: cannot read {name!r}: {exc.strerror or exc}")
            continue
        except ValueError as exc:
            problems.append(f"{where}: cannot read {name!r}: {exc}")
            continue
        _check_tokens(from_file, f"{where}: {name!r}", problems)
        tokens += from_file
    if env.get("KPI_EXPORTER_BEARER_TOKEN"):
        _check_tokens([env["KPI_EXPORTER_BEARER_TOKEN"]], "KPI_EXPORTER_BEARER_TOKEN", problems)
        tokens.append(env["KPI_EXPORTER_BEARER_TOKEN"])
    s.bearer_tokens = tuple(tokens)

    origins = get_names(cors, "allowed_origins", "server.cors", problems,
                        "origins like 'https://app.example.com' (or '*')")
    if origins is not None:
        bad = [o for o in origins if o != "*" and not _ORIGIN_RE.match(o)]
        if bad:
            problems.append(problem(cors, "allowed_origins", "server.cors",
                                    f"{show(bad[0])} is not an origin: write "
                                    f"scheme://host[:port] with no path, or '*'"))
        else:
            s.cors_allowed_origins = tuple(origins)
    s.cors_max_age = get_int(cors, "max_age", "server.cors", problems, s.cors_max_age, low=0,
                             high=MAX_CORS_MAX_AGE, hint=" seconds (browsers cap it lower)")

    cfg.max_series_per_metric = get_int(limits, "max_series_per_metric", "limits", problems,
                                        cfg.max_series_per_metric, high=MAX_SERIES,
                                        hint=SERIES_HINT)
    cfg.max_label_value_length = get_int(limits, "max_label_value_length", "limits", problems,
                                         cfg.max_label_value_length)
    cfg.max_streams_per_metric = get_int(limits, "max_streams_per_metric", "limits", problems,
                                         0, high=4 * MAX_SERIES,
                                         hint=" (default: 4 x each metric's max_series)") or None
    ttl = get_duration(limits, "stream_ttl", "limits", problems, cfg.stream_ttl)
    if ttl < _MIN_STREAM_TTL:
        problems.append(problem(limits, "stream_ttl", "limits",
                                f"{show(limits['stream_ttl'])} is shorter than a minute; a "
                                f"stream forgotten between two of its exports counts from its "
                                f"next point again, so keep it well above your export interval "
                                f"(the default is 1h)"))
    else:
        cfg.stream_ttl = ttl

    cfg.default_rules = get_bool(doc, "default_rules", "", problems, True)
    rule_limits = {"max_series_per_metric": cfg.max_series_per_metric}
    user_rules: list[Rule] = []
    try:
        user_rules = parse_rules(top("rules", list, "a list of rules"), rule_limits,
                                 source=source)
    except RuleError as exc:
        problems.extend(exc.problems)
        # the rules without a problem of their own are still checked against the rest of the
        # config (identities as labels, ...), so that one pass names every problem
        user_rules = exc.rules
    cfg.windows = parse_windows(top("windows", dict, "a mapping with keys like 'durations'"),
                                user_rules, problems, env, overrides)
    cfg.web_analytics = parse_web_analytics(
        top("web_analytics", dict, "a mapping with keys like 'session_labels'"), user_rules,
        problems)
    windows = doc.get("windows") if isinstance(doc.get("windows"), dict) else {}
    identity_where = {getattr(cfg.windows, k): f"{at(windows, k)}windows.{k}"
                      for k in ("user_attribute", "session_attribute") if k in windows}
    cfg.privacy = parse_privacy(top("privacy", dict, "a mapping with keys like 'salt'"), env,
                                cfg.windows.identity_keys, user_rules, problems, identity_where)
    if cfg.windows.enabled and cfg.windows.shared and cfg.privacy.salt is None:
        problems.append(f"{at(windows, 'store')}windows.store: the replicas sharing "
                        f"{cfg.windows.store_display} must hash identities with one salt, and a "
                        f"salt generated in each state directory differs: set privacy.salt or "
                        f"{SALT_ENV} to the same secret on every replica (for example the output "
                        f"of `openssl rand -hex 32`)")
    cfg.state = parse_state(top("state", dict, "a mapping with keys like 'dir'"), env,
                            overrides, problems)
    cfg.genai = parse_genai(top("genai", dict, "a mapping with keys like 'prices'"), problems)
    builtin: list[Rule] = []
    if cfg.default_rules:
        # A user rule for a metric the defaults also feed replaces the defaults' rules for it.
        mine = {r.metric.name for r in user_rules}
        builtin = [r for r in _default_rules(rule_limits) if r.metric.name not in mine]
        # a built-in rule labelled by a configured identity: the setting that chose it is wrong
        problems.extend(cfg.windows.identity_label_problems(
            builtin, {getattr(cfg.windows, k): at(windows, k)
                      for k in ("user_attribute", "session_attribute") if k in windows}))
    if problems:
        raise ConfigError(problems, source if path else "")
    cfg.user_rule_count = len(user_rules)
    rules = builtin + user_rules
    for order, rule in enumerate(rules):
        rule.order = order
    cfg.rules = rules
    return cfg
