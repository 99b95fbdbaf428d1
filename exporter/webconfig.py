"""The web config file (``--web.config.file``) in the format of Prometheus' exporter-toolkit:
``tls_server_config`` for every listener, ``basic_auth_users`` (bcrypt hashes),
``http_server_config.headers`` and ``rate_limit`` for the HTTP listeners.

Loading validates like the toolkit (unknown keys, enum values, bcrypt hashes, header values,
and the certificate and key actually load), and refuses at load, with the reason, the few
settings Python's ``ssl`` module cannot honour: a client certificate requested or required
without being verified, TLS 1.0 and 1.1, and more than one curve. Relative file names are
relative to the web config file's directory, as in the toolkit.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import yamlload
from exporter.fsutil import read_limited

__all__ = ["WebConfig", "TLSSettings", "WebConfigError", "load_web_config", "peer_sans",
           "file_stamp", "BCRYPT_HASH"]

MAX_WEB_CONFIG_SIZE = 1024 * 1024

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type",
             "client_ca_file", "cipher_suites", "curve_preferences", "min_version",
             "max_version", "prefer_server_cipher_suites", "client_allowed_sans")
_HTTP_KEYS = ("http2", "headers")
_RATE_KEYS = ("interval", "burst")

# Go crypto/tls names (tls.CipherSuites(), and the CHACHA20 names before Go 1.16) -> IANA id.
_GO_CIPHERS = {
    "TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": 0xCCA8, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": 0xCCA9,
}
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
           "X25519": "X25519"}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OLD_VERSIONS = ("TLS10", "TLS11")
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Go can ask for a client certificate without verifying it; Python's ssl cannot.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# The response headers the toolkit lets a config set, and their allowed values (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None,
    "Content-Security-Policy": None}
# $2a$, $2b$ and $2y$ (htpasswd) hashes; Python's bcrypt checks all three.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


class WebConfigError(ValueError):
    """The web config file cannot be used; ``problems`` holds one message each, naming the
    file, line and key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class TLSSettings:
    """The ``tls_server_config`` of a web config, with file names made absolute."""

    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = field(default="", repr=False)
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    # None: any client (that passed client_auth_type); else one SAN must be in the set.
    client_allowed_sans: frozenset[str] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The certificate, key and CA files: a change of any of them reloads the TLS."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)

    def context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server SSLContext with the files read now (call again to reload). ``alpn``: the
        application protocols to offer (``("h2",)`` for gRPC). Raises OSError (ssl.SSLError
        included) or ValueError when the material does not load."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.min_version]
        ctx.maximum_version = _VERSIONS[self.max_version]
        if not self.prefer_server_cipher_suites:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        _load_cert_chain(ctx, self.cert_file or None, self.cert, self.key_file or None, self.key)
        mode = _CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
        elif self.client_ca:
            ctx.load_verify_locations(cadata=self.client_ca)
        elif mode != ssl.CERT_NONE:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Go: no ClientCAs = system roots
        ctx.verify_mode = mode
        if self.cipher_suites:
            # OpenSSL wants its own names: map by the IANA id, keeping the config's order.
            by_id = {c["id"] & 0xFFFF: c["name"] for c in ctx.get_ciphers()
                     if c["protocol"] != "TLSv1.3"}
            names = [by_id[_GO_CIPHERS[c]] for c in self.cipher_suites
                     if _GO_CIPHERS[c] in by_id]
            if names:
                ctx.set_ciphers(":".join(names))
        if self.curve_preferences:
            ctx.set_ecdh_curve(_CURVES[self.curve_preferences[0]])
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


@dataclass(frozen=True)
class WebConfig:
    """A loaded and validated web config file."""

    path: str
    tls: TLSSettings | None = None
    users: dict[str, str] = field(default_factory=dict, repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    # Token bucket: one request per rate_interval seconds, bursts of rate_burst; 0: no limit.
    rate_interval: float = 0.0
    rate_burst: int = 0

    @property
    def files(self) -> tuple[str, ...]:
        """The file itself and those it names: a change of any reloads it."""
        return (self.path, *(self.tls.files if self.tls else ()))

    def stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What changes when any of :attr:`files` is written, replaced or removed (a renewed
        certificate, a Kubernetes secret's new version)."""
        return tuple(file_stamp(f) for f in self.files)


def file_stamp(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, following symbolic links; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def peer_sans(cert: dict[str, Any]) -> set[str]:
    """The subject alternative names of a ``getpeercert()`` dict, written as Go's x509 does
    (IP addresses in canonical form), for ``client_allowed_sans``."""
    out = set()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        out.add(value)
    return out


def _load_cert_chain(ctx: ssl.SSLContext, cert_file: str | None, cert: str,
                     key_file: str | None, key: str) -> None:
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
        return
    # ssl wants file names: inline PEM goes through an anonymous in-memory file.
    pem = ((Path(cert_file).read_text() if cert_file else cert).strip() + "\n"
           + (Path(key_file).read_text() if key_file else key).strip() + "\n").encode()
    try:
        fd = os.memfd_create("kpi-exporter-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or a seccomp filter without memfd_create
        fd = -1
    if fd >= 0:
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="kpi-exporter-tls-") as tmp:  # mode 0700
        path = Path(tmp) / "chain.pem"
        path.write_bytes(pem)
        ctx.load_cert_chain(str(path))


def _go_duration(value: Any) -> float | None:
    """A Go duration ('1s', '100ms', '1m30s', or an integer of nanoseconds) in seconds."""
    seconds: float | None = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        seconds = value / 1e9 if value < 2 ** 63 else None  # Go durations are int64 nanoseconds
    elif isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        if _GO_DURATION.match(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _GO_DURATION_PART.findall(text))
    return seconds if seconds is not None and math.isfinite(seconds) else None


class _Checker:
    """Collects problems as 'FILE:LINE: key: what'."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[str] = []

    def add(self, where: Any, key: str, message: str) -> None:
        line = yamlload.line_of(where)
        self.problems.append(f"{self.path}:{line}: {key}: {message}" if line
                             else f"{self.path}: {key}: {message}")

    def section(self, doc: dict[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(doc, key, f"expected a mapping, got {type(value).__name__}")
            return {}
        for k in value:
            if k not in allowed:
                self.add(value, f"{key}.{k}", f"unknown key; known keys: {', '.join(allowed)}")
        return value

    def text(self, raw: dict[str, Any], key: str, where: str) -> str:
        value = raw.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.add(raw, f"{where}.{key}", f"expected a string, got {type(value).__name__}")
            return ""
        return value

    def names(self, raw: dict[str, Any], key: str, where: str,
              known: Any = None) -> tuple[str, ...]:
        value = raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.add(raw, f"{where}.{key}", "expected a list of strings")
            return ()
        if known is not None:
            bad = [v for v in value if v not in known]
            if bad:
                self.add(raw, f"{where}.{key}", f"unknown {', '.join(map(repr, bad))}; known: "
                         f"{', '.join(sorted(set(known)))}")
                return ()
        return tuple(value)


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Reads, validates and tries the TLS material of a web config file; raises
    :class:`WebConfigError` with every problem found."""
    name = str(path)
    check = _Checker(name)
    try:
        data = read_limited(name, MAX_WEB_CONFIG_SIZE)
    except OSError as exc:
        raise WebConfigError([f"{name}: cannot read the web config file: "
                              f"{exc.strerror or exc}"]) from None
    except ValueError as exc:  # a NUL in the path, or a file that never ends
        raise WebConfigError([f"{name}: cannot read the web config file: {exc}"]) from None
    try:
        doc = yamlload.load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WebConfigError([f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    except yamlload.YAMLLoadError as exc:
        text = str(exc)
        m = re.match(r"^line (\d+)(?:, column \d+)?: (.*)$", text, re.S)
        raise WebConfigError([f"{name}:{m.group(1)}: {m.group(2)}" if m
                              else f"{name}: {text}"]) from None
    if doc is None:
        doc = yamlload.Mapping()
    if not isinstance(doc, dict):
        raise WebConfigError([f"{name}: expected a YAML mapping with keys like "
                              f"tls_server_config and basic_auth_users"])
    for k in doc:
        if k not in _TOP_KEYS:
            check.add(doc, str(k), f"unknown key; known keys: {', '.join(_TOP_KEYS)}")
    base = Path(name).resolve().parent

    tls_raw = check.section(doc, "tls_server_config", _TLS_KEYS)
    tls = _parse_tls(tls_raw, base, check)

    http = check.section(doc, "http_server_config", _HTTP_KEYS)
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        check.add(http, "http_server_config.http2", "expected true or false")
        http2 = True
    headers: list[tuple[str, str]] = []
    raw_headers = http.get("headers") or {}
    if not isinstance(raw_headers, dict):
        check.add(http, "http_server_config.headers", "expected a mapping of header to value")
        raw_headers = {}
    for header, value in raw_headers.items():
        where = f"http_server_config.headers.{header}"
        if header not in _HEADERS:
            check.add(raw_headers, where, f"this header can not be configured; the ones that "
                      f"can: {', '.join(_HEADERS)}")
        elif not isinstance(value, str):
            check.add(raw_headers, where, "expected a string")
        elif _HEADERS[header] is not None and value not in (_HEADERS[header] or ()):
            check.add(raw_headers, where, f"expected one of {', '.join(_HEADERS[header] or ())}, "
                      f"got {value!r}")
        elif value:  # blank: unset, as in the toolkit
            headers.append((str(header), value))

    users: dict[str, str] = {}
    raw_users = doc.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        check.add(doc, "basic_auth_users", "expected a mapping of user name to bcrypt hash")
        raw_users = {}
    for user, hashed in raw_users.items():
        m = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if not isinstance(user, str) or not user or ":" in user:
            check.add(raw_users, f"basic_auth_users.{user}", "a user name is a non-empty string "
                      "without ':'")
        elif m is None or not 4 <= int(m.group(1)) <= 31:
            check.add(raw_users, f"basic_auth_users.{user}",
                      "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31); make one with "
                      "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
        else:
            users[user] = hashed

    rate = check.section(doc, "rate_limit", _RATE_KEYS)
    interval = _go_duration(rate.get("interval", 0))
    if interval is None:
        check.add(rate, "rate_limit.interval", f"expected a duration like 1s or 100ms, got "
                  f"{rate.get('interval')!r}")
        interval = 0.0
    burst = rate.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        check.add(rate, "rate_limit.burst", f"expected a whole number of requests, got {burst!r}")
        burst = 0
    if interval and not burst:
        check.add(rate, "rate_limit.burst", "with an interval, a burst of 0 would refuse every "
                  "request: give at least 1")

    if check.problems:
        raise WebConfigError(check.problems)
    config = WebConfig(path=str(Path(name).resolve()), tls=tls, users=users,
                       headers=tuple(headers), http2=http2, rate_interval=interval,
                       rate_burst=burst)
    if tls is not None:
        try:
            tls.context()
        except (OSError, ValueError) as exc:
            raise WebConfigError([f"{name}: tls_server_config: the certificate, key or client "
                                  f"CA does not load: {exc}"]) from None
    return config


def _parse_tls(raw: dict[str, Any], base: Path, check: _Checker) -> TLSSettings | None:
    where = "tls_server_config"
    before = len(check.problems)

    def path(key: str) -> str:
        value = check.text(raw, key, where)
        return str(base / value) if value else ""

    cert_file, key_file, ca_file = path("cert_file"), path("key_file"), path("client_ca_file")
    cert, key, ca = (check.text(raw, k, where) for k in ("cert", "key", "client_ca"))
    auth = check.text(raw, "client_auth_type", where) or "NoClientCert"
    enabled = any((cert_file, key_file, ca_file, cert, key, ca, raw.get("client_auth_type")))
    versions = {}
    for key_name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = check.text(raw, key_name, where) or default
        if value in _OLD_VERSIONS:
            check.add(raw, f"{where}.{key_name}", f"{value} is not offered: OpenSSL 3 refuses "
                      f"TLS 1.0 and 1.1 at its default security level; use TLS12 or TLS13")
        elif value not in _VERSIONS:
            check.add(raw, f"{where}.{key_name}", f"expected TLS12 or TLS13, got {value!r}")
        versions[key_name] = value if value in _VERSIONS else default
    if _VERSIONS[versions["min_version"]] > _VERSIONS[versions["max_version"]]:
        check.add(raw, f"{where}.min_version", "is above max_version")
    ciphers = check.names(raw, "cipher_suites", where, _GO_CIPHERS)
    curves = check.names(raw, "curve_preferences", where, _CURVES)
    if len(curves) > 1:
        check.add(raw, f"{where}.curve_preferences", "Python's ssl module can offer one curve "
                  "only: list the one to use (the others would be refused, not preferred less)")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        check.add(raw, f"{where}.prefer_server_cipher_suites", "expected true or false")
        prefer = True
    sans_list = check.names(raw, "client_allowed_sans", where) if "client_allowed_sans" in raw \
        else None
    if auth in _UNVERIFIED_CLIENT_AUTH:
        check.add(raw, f"{where}.client_auth_type", f"{auth} asks for a client certificate "
                  f"without verifying it, which Python's ssl module cannot do; use "
                  f"RequireAndVerifyClientCert (with client_ca_file) or VerifyClientCertIfGiven")
    elif auth not in _CLIENT_AUTH:
        check.add(raw, f"{where}.client_auth_type", f"expected one of "
                  f"{', '.join(_CLIENT_AUTH)}, got {auth!r}")
    if not enabled:
        if sans_list is not None or ciphers or curves:
            check.add(raw, where, "has settings but no certificate: give cert_file and key_file")
        return None
    if cert_file and cert:
        check.add(raw, f"{where}.cert", "give cert_file or cert, not both")
    if key_file and key:
        check.add(raw, f"{where}.key", "give key_file or key, not both")
    if ca_file and ca:
        check.add(raw, f"{where}.client_ca", "give client_ca_file or client_ca, not both")
    if not (cert_file or cert):
        check.add(raw, where, "missing one of cert or cert_file")
    if not (key_file or key):
        check.add(raw, where, "missing one of key or key_file")
    if (ca_file or ca) and auth == "NoClientCert":
        check.add(raw, f"{where}.client_auth_type", "client CA's have been configured without "
                  "a Client Auth Policy: set client_auth_type to RequireAndVerifyClientCert")
    if sans_list is not None and auth != "RequireAndVerifyClientCert":
        check.add(raw, f"{where}.client_allowed_sans", "needs client_auth_type "
                  "RequireAndVerifyClientCert: without a verified client certificate there is "
                  "no SAN to check")
    if len(check.problems) > before:
        return None
    return TLSSettings(
        cert_file=cert_file, key_file=key_file, cert=cert, key=key, client_ca_file=ca_file,
        client_ca=ca, client_auth_type=auth, min_version=versions["min_version"],
        max_version=versions["max_version"], cipher_suites=ciphers, curve_preferences=curves,
        prefer_server_cipher_suites=prefer,
        client_allowed_sans=frozenset(sans_list) if sans_list is not None else None)
