"""The exporter's configuration: YAML file, environment and command line, validated at load.

Precedence, highest first: command-line flags, ``KPI_EXPORTER_*`` environment variables, the
config file, built-in defaults. Every problem is reported with the file, line and key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping as TMapping

from exporter import yamlload
from exporter.configcheck import get_bool, get_names
from exporter.genai.config import GenAIConfig, parse_genai
from exporter.privacy import SALT_ENV, PrivacyConfig, parse_privacy
from exporter.rules import Rule, RuleError, unknown_keys, parse_rules
from exporter.state import StateConfig, parse_state
from exporter.web_analytics import WebAnalyticsConfig, parse_web_analytics
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.windows.config import WindowsConfig, parse_windows

__all__ = ["Config", "ServerConfig", "ConfigError", "load_config", "default_rules_text",
           "parse_listen", "parse_size"]

DEFAULT_OTLP_LISTEN = "0.0.0.0:4318"
DEFAULT_OTLP_GRPC_LISTEN = "0.0.0.0:4317"
DEFAULT_METRICS_LISTEN = "0.0.0.0:9464"
DEFAULT_MAX_BODY = 64 * 1024 * 1024

_TOP_KEYS = ("server", "limits", "default_rules", "rules", "windows", "web_analytics", "state",
             "privacy", "genai")
_SERVER_KEYS = ("otlp_listen", "otlp_grpc_listen", "metrics_listen", "reuse_port",
                "web_config_file", "max_body_size", "max_concurrent_requests", "threads", "auth",
                "cors")
_AUTH_KEYS = ("bearer_tokens", "bearer_token_file")
_CORS_KEYS = ("allowed_origins", "max_age")
_LIMIT_KEYS = ("max_series_per_metric", "max_label_value_length")
_SIZE_RE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "kb": 1000,
               "mb": 1000 ** 2, "gb": 1000 ** 3}


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
    """'HOST:PORT' (or ':PORT', or '[::1]:PORT') as (host, port); ValueError otherwise."""
    m = re.match(r"^(?:\[([^\]]+)\]|([^:\[\]]*)):(\d{1,5})$", value.strip())
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 0.0.0.0:4318 or 127.0.0.1:9464)")
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, int(m.group(3))


def parse_listen_or_none(value: str) -> tuple[str, int] | None:
    """parse_listen, or None for an address already reported as invalid."""
    try:
        return parse_listen(value)
    except ValueError:
        return None


def parse_size(value: Any) -> int:
    """A byte size: an integer, or a string like '64MiB'; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if m:
            return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ValueError(f"{value!r} is not a size: write bytes, or a number with KiB, MiB or GiB")


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


def _default_rules(limits: dict[str, Any]) -> list[Rule]:
    doc = _load_yaml(default_rules_text(), "built-in rules")
    try:
        return parse_rules(doc.get("rules"), limits, source="built-in")
    except RuleError as exc:  # a packaging bug, not a user error
        raise ConfigError(exc.problems, "built-in rules") from None


def _read_token_file(path: str) -> list[str]:
    text = Path(path).read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def load_config(path: str | None = None, env: TMapping[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Loads, merges and validates the configuration; raises :class:`ConfigError`.

    ``overrides`` are command-line values (``otlp_listen``, ``otlp_grpc_listen``,
    ``metrics_listen``, ``web_config_file``, ``state_dir``, ``windows_store``, ``reuse_port``)
    that win over everything else.
    """
    env = os.environ if env is None else env
    source = path or "built-in defaults"
    doc: Any = {}
    if path:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"], path) from None
        doc = _load_yaml(text, path)
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(["the config file must be a YAML mapping with keys like 'server' "
                               "and 'rules'"], path)
    problems: list[str] = unknown_keys(doc, _TOP_KEYS, "top level")
    cfg = Config(source=source, raw=dict(doc))

    def section(key: str, allowed: tuple[str, ...], where: str, parent: Any = doc) -> dict[str, Any]:
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping")
            return {}
        line = yamlload.line_of(value)
        problems.extend(unknown_keys(value, allowed, f"{where}" + (f" (line {line})" if line else "")))
        return value

    server = section("server", _SERVER_KEYS, "server")
    limits = section("limits", _LIMIT_KEYS, "limits")
    auth = section("auth", _AUTH_KEYS, "server.auth", server)
    cors = section("cors", _CORS_KEYS, "server.cors", server)
    s = cfg.server

    for key in ("otlp_listen", "metrics_listen"):
        value = (overrides or {}).get(key) or env.get(f"KPI_EXPORTER_{key.upper()}") or server.get(key)
        if value is None:
            continue
        try:
            parse_listen(str(value))
            setattr(s, key, str(value))
        except ValueError as exc:
            problems.append(f"server.{key}: {exc}")
    # gRPC: "" (flag, environment or file) turns the listener off.
    grpc_listen = (overrides or {}).get("otlp_grpc_listen")
    if grpc_listen is None:
        grpc_listen = env.get("KPI_EXPORTER_OTLP_GRPC_LISTEN")
    if grpc_listen is None:
        grpc_listen = server.get("otlp_grpc_listen")
    if grpc_listen is not None:
        if not isinstance(grpc_listen, str):
            problems.append(f"server.otlp_grpc_listen: expected HOST:PORT as a string, or '' "
                            f"for no gRPC listener, got {grpc_listen!r}")
        elif grpc_listen.strip():
            try:
                parse_listen(grpc_listen)
                s.otlp_grpc_listen = grpc_listen.strip()
            except ValueError as exc:
                problems.append(f"server.otlp_grpc_listen: {exc}; or '' for no gRPC listener")
        else:
            s.otlp_grpc_listen = ""
    addresses = {key: parse_listen_or_none(getattr(s, key)) for key in
                 ("otlp_listen", "metrics_listen", "otlp_grpc_listen") if getattr(s, key)}
    if "otlp_grpc_listen" in addresses and addresses["otlp_grpc_listen"] is not None \
            and addresses["otlp_grpc_listen"][1] != 0:
        for key in ("otlp_listen", "metrics_listen"):
            if addresses.get(key) == addresses["otlp_grpc_listen"]:
                problems.append(f"server.otlp_grpc_listen: {s.otlp_grpc_listen} is also "
                                f"{key}; gRPC needs its own port (the OTLP default is 4317)")
    s.reuse_port = bool((overrides or {}).get("reuse_port")) or get_bool(
        server, "reuse_port", "server", problems, s.reuse_port)
    if s.reuse_port and parse_listen_or_none(s.otlp_listen) == parse_listen_or_none(
            s.metrics_listen):
        problems.append("server.reuse_port: shares otlp_listen with other processes, so "
                        "metrics_listen needs its own address (each process's /metrics is "
                        "scraped on its own port)")
    web_file = (overrides or {}).get("web_config_file") or env.get(
        "KPI_EXPORTER_WEB_CONFIG_FILE") or server.get("web_config_file")
    if web_file is not None and not isinstance(web_file, str):
        problems.append(f"server.web_config_file: expected the path of a web config file, "
                        f"got {web_file!r}")
    elif web_file:
        s.web_config_file = web_file
        try:
            s.web = load_web_config(web_file)
        except WebConfigError as exc:
            problems.extend(f"server.web_config_file: {p}" for p in exc.problems)
    if "max_body_size" in server:
        try:
            s.max_body_size = parse_size(server["max_body_size"])
        except ValueError as exc:
            problems.append(f"server.max_body_size: {exc}")
    for key in ("max_concurrent_requests", "threads"):
        if key in server:
            v = server[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"server.{key}: expected a positive integer, got {v!r}")
            else:
                setattr(s, key, v)

    tokens = list(get_names(auth, "bearer_tokens", "server.auth", problems,
                            "non-empty strings") or ())
    token_file = env.get("KPI_EXPORTER_BEARER_TOKEN_FILE") or auth.get("bearer_token_file")
    if token_file:
        try:
            tokens += _read_token_file(str(token_file))
        except OSError as exc:
            problems.append(f"server.auth.bearer_token_file: cannot read {token_file!r}: "
                            f"{exc.strerror or exc}")
    if env.get("KPI_EXPORTER_BEARER_TOKEN"):
        tokens.append(env["KPI_EXPORTER_BEARER_TOKEN"])
    s.bearer_tokens = tuple(tokens)

    origins = get_names(cors, "allowed_origins", "server.cors", problems,
                        "origins like 'https://app.example.com' (or '*')")
    if origins is not None:
        bad = [o for o in origins if o != "*" and not re.match(r"^https?://[^/]+$", o)]
        if bad:
            problems.append(f"server.cors.allowed_origins: {bad[0]!r} is not an origin: write "
                            f"scheme://host[:port] with no path, or '*'")
        s.cors_allowed_origins = tuple(origins)
    if "max_age" in cors:
        v = cors["max_age"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"server.cors.max_age: expected seconds as an integer, got {v!r}")
        else:
            s.cors_max_age = v

    for key in _LIMIT_KEYS:
        if key in limits:
            v = limits[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"limits.{key}: expected a positive integer, got {v!r}")
            else:
                setattr(cfg, key, v)

    cfg.default_rules = get_bool(doc, "default_rules", "top level", problems, True)
    rule_limits = {"max_series_per_metric": cfg.max_series_per_metric}
    user_rules: list[Rule] = []
    try:
        user_rules = parse_rules(doc.get("rules"), rule_limits, source=source)
    except RuleError as exc:
        problems.extend(exc.problems)
    cfg.windows = parse_windows(doc.get("windows"), user_rules, problems, env, overrides)
    cfg.web_analytics = parse_web_analytics(doc.get("web_analytics"), user_rules, problems)
    cfg.privacy = parse_privacy(doc.get("privacy"), env, cfg.windows.identity_keys, user_rules,
                                problems)
    if cfg.windows.enabled and cfg.windows.shared and cfg.privacy.salt is None:
        problems.append(f"windows.store: the replicas sharing {cfg.windows.store_display} must "
                        f"hash identities with one salt, and a salt generated in each state "
                        f"directory differs: set privacy.salt or {SALT_ENV} to the same secret "
                        f"on every replica (for example the output of `openssl rand -hex 32`)")
    cfg.state = parse_state(doc.get("state"), env, overrides or {}, problems)
    cfg.genai = parse_genai(doc.get("genai"), problems)
    if problems:
        raise ConfigError(problems, source if path else "")
    cfg.user_rule_count = len(user_rules)
    rules = list(user_rules)
    if cfg.default_rules:
        # A user rule for a metric the defaults also feed replaces the defaults' rules for it.
        mine = {r.metric.name for r in user_rules}
        builtin = [r for r in _default_rules(rule_limits) if r.metric.name not in mine]
        rules = builtin + user_rules
    for order, rule in enumerate(rules):
        rule.order = order
    cfg.rules = rules
    return cfg
