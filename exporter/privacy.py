"""Privacy at ingest: the secret salt, keyed hashing of identities, the attribute denylist.

Identities (``user.id``, ``session.id``) reach the KPI windows only as 64-bit keyed BLAKE2b
hashes; without the salt nobody can test a guessed id against a sketch. Attributes on the
denylist (emails, phone numbers, IP addresses by default) are removed from every record before
the rules see it, so they can never become a label, a log line or ``explain`` output.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from exporter import naming
from exporter.configcheck import get_bool, get_names, open_section, problem, show
from exporter.fsutil import remove_leftovers, write_atomic
from exporter.records import METRIC, Batch, Record
from exporter.rules import Rule, label_str

__all__ = [
    "PrivacyConfig", "DEFAULT_DENYLIST", "parse_privacy", "IdentityHasher", "AttributeScrubber",
    "load_or_create_salt", "scrub_records", "SALT_FILE", "SALT_ENV", "SaltError", "MIN_SALT_LENGTH",
]

log = logging.getLogger("kpi_exporter")

SALT_ENV = "KPI_EXPORTER_SALT"
SALT_FILE = "salt"
MIN_SALT_LENGTH = 16

# Attribute keys (globs, matched case-insensitively) that carry contact details or network
# addresses. OpenTelemetry's semantic conventions put client IPs in several places over its
# versions; all of them are listed.
DEFAULT_DENYLIST: tuple[str, ...] = (
    "*email*", "*e-mail*", "*phone*", "*msisdn*",
    "*ip_address*", "*.ip", "ip", "client.address", "source.address", "network.peer.address",
    "net.peer.ip", "net.sock.peer.addr", "http.client_ip",
)

_PRIVACY_KEYS = ("salt", "attribute_denylist", "default_denylist")

# A flood of distinct attribute keys must not grow the decision cache without bound.
_KEY_CACHE_LIMIT = 10_000


@dataclass
class PrivacyConfig:
    """The ``privacy`` section. ``salt`` is None when it comes from the state directory."""

    salt: str | None = field(default=None, repr=False)
    salt_source: str = ""
    default_denylist: bool = True
    attribute_denylist: tuple[str, ...] = ()

    @property
    def denylist(self) -> tuple[str, ...]:
        """The patterns in effect: the defaults (unless turned off) plus the configured ones."""
        return (DEFAULT_DENYLIST if self.default_denylist else ()) + self.attribute_denylist


def denied_by(key: str, patterns: Iterable[str]) -> str | None:
    """The first denylist pattern that matches ``key``, or None."""
    k = key.lower()
    for p in patterns:
        if fnmatch.fnmatchcase(k, p.lower()):
            return p
    return None


def parse_privacy(raw: Any, env: Mapping[str, str], identity_keys: tuple[str, ...],
                  user_rules: list[Rule], problems: list[str],
                  identity_where: Mapping[str, str] | None = None) -> PrivacyConfig:
    """Parses the ``privacy`` section; problems name the key and what to do.

    ``identity_keys`` are the attributes the KPI windows read: the denylist must not drop
    them. ``user_rules`` are checked for attributes the denylist would remove before they
    could be used; ``identity_where`` says where each identity key was configured ('line 9:
    windows.user_attribute'), for a default denylist pattern that matches it. The salt's value
    in ``raw`` is replaced by a placeholder, so that the parsed document a Config keeps never
    holds it.
    """
    cfg = PrivacyConfig()
    raw, where = open_section(raw, "privacy", _PRIVACY_KEYS, "'salt' and 'attribute_denylist'",
                              problems)

    env_salt = env.get(SALT_ENV)
    if env_salt is not None:
        if len(env_salt) < MIN_SALT_LENGTH:
            problems.append(f"{SALT_ENV}: the salt is shorter than {MIN_SALT_LENGTH} characters; "
                            f"use a long random value, for example the output of "
                            f"`openssl rand -hex 32`")
        cfg.salt, cfg.salt_source = env_salt, SALT_ENV
    elif raw.get("salt") is not None:
        salt = raw["salt"]
        if not isinstance(salt, str) or len(salt) < MIN_SALT_LENGTH:
            # never quote the value: it is meant to be a secret
            problems.append(problem(raw, "salt", where,
                                    f"expected a string of at least {MIN_SALT_LENGTH} random "
                                    f"characters, for example the output of `openssl rand -hex "
                                    f"32`; or leave it out and the exporter generates one in "
                                    f"the state directory"))
        else:
            cfg.salt, cfg.salt_source = salt, "privacy.salt"
    if "salt" in raw:
        raw["salt"] = "<redacted>"

    cfg.default_denylist = get_bool(raw, "default_denylist", where, problems,
                                    cfg.default_denylist)
    patterns = get_names(raw, "attribute_denylist", where, problems,
                         "attribute names or globs, like ['customer.email', 'billing.*']")
    if patterns is not None:
        cfg.attribute_denylist = patterns

    for key in identity_keys:
        p = denied_by(key, cfg.denylist)
        if p is None:
            continue
        if p in cfg.attribute_denylist or key not in (identity_where or {}):
            head = problem(raw, "attribute_denylist" if p in cfg.attribute_denylist
                           else "default_denylist", where, "")
        else:  # a built-in pattern: the attribute chosen in the windows section is the cause
            head = f"{(identity_where or {})[key]}: "
        problems.append(f"{head}the denylist pattern {show(p)} matches {show(key)}, which the KPI "
                        f"windows count (as a salted hash); narrow the pattern, or set "
                        f"windows.user_attribute / windows.session_attribute")
    for rule in user_rules:
        used = [a for spec in rule.labels for a in spec.attributes]
        used += [key for key, _text, _pred in rule.conditions]
        if rule.value.kind == "attribute":
            used.append(rule.value.attribute)
        for a in used:
            p = denied_by(a, cfg.denylist)
            if p is not None:
                problems.append(
                    (f"line {rule.line}: " if rule.line else "") +
                    f"{rule.title}: attribute {show(a)} is dropped at ingest by the privacy "
                    f"denylist (pattern {show(p)}), so this rule would never see it; use another "
                    f"attribute, or change privacy.attribute_denylist / privacy.default_denylist")
    return cfg


class SaltError(RuntimeError):
    """The salt file exists but cannot be used; the message says what to do."""


def load_or_create_salt(state_dir: Path) -> str:
    """The salt kept in ``state_dir``, created (random, mode 0600) on first use. It is
    written atomically: a crash while creating it leaves no salt file (a temp file at most,
    removed at the next start), never a short one. Call it under the state directory's
    lock."""
    path = state_dir / SALT_FILE
    for leftover in remove_leftovers(path):
        log.info("removed %s, left by a start that was interrupted while creating the salt",
                 leftover)
    try:
        st = path.stat()
    except FileNotFoundError:
        salt = secrets.token_hex(32)
        write_atomic(path, (salt + "\n").encode("ascii"))
        log.info("generated a new identity salt in %s (keep it with the state: the window "
                 "sketches are only meaningful with it)", path)
        return salt
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning("the salt file %s was readable by others; its mode is now 0600", path)
    try:
        salt = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SaltError(f"cannot read the salt file {path}: {exc}; fix its permissions, or set "
                        f"{SALT_ENV} or privacy.salt") from None
    if len(salt) < MIN_SALT_LENGTH:
        raise SaltError(f"the salt file {path} is damaged (too short); move it away to let the "
                        f"exporter generate a new one (the window sketches then start empty)")
    return salt




class IdentityHasher:
    """Keyed BLAKE2b over identity values: 64-bit signed integers, which the sketches take
    as they are. The same salt gives the same hashes across restarts and replicas."""

    # Recently hashed identities, keyed by Python's own string hash: SipHash under a random
    # per-process key, so the cache holds no raw id, lives only in this process's memory, and
    # saves the BLAKE2b call for users and sessions seen again (most events of a busy app).
    CACHE_SIZE = 65_536

    def __init__(self, salt: str):
        self._cache: dict[int, int] = {}
        self.set_salt(salt)

    def set_salt(self, salt: str) -> None:
        """Switches to another salt (at start, before any record is hashed)."""
        # BLAKE2b keys are at most 64 bytes; deriving one keeps any salt length usable.
        key = hashlib.blake2b(salt.encode("utf-8"), digest_size=32,
                              person=b"kpi-exp-salt").digest()
        self._base = hashlib.blake2b(key=key, digest_size=8)
        self._cache = {}
        self._fingerprint = hashlib.blake2b(b"kpi-exporter salt fingerprint", key=key,
                                            digest_size=8).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Names the salt without revealing it: a snapshot made with another salt is told
        apart by this."""
        return self._fingerprint

    def hash(self, value: Any) -> int:
        """The identity's 64-bit hash (strings as they are, other values in label form)."""
        text = value if type(value) is str else label_str(value)
        token = hash(text)
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        h = self._base.copy()
        h.update(text.encode("utf-8", "surrogatepass"))
        result = int.from_bytes(h.digest(), "little", signed=True)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = result
        return result


class AttributeScrubber:
    """Removes denylisted attributes from every record of a batch, in place.

    The decision is made once per distinct attribute KEY and cached, so a record costs two
    set operations over its keys. On metric data points, identity attributes are replaced by
    their salted hash: the store keeps a cumulative stream's attributes to compute increases,
    and a raw identity must not be kept (or written to the state file) that way.
    """

    def __init__(self, patterns: tuple[str, ...], identity_keys: tuple[str, ...] = (),
                 hasher: IdentityHasher | None = None):
        self.patterns = tuple(p.lower() for p in patterns)
        self._identity_keys = frozenset(identity_keys)
        self._hasher = hasher
        self._drop: set[str] = set()
        self._identity: set[str] = set()
        # Keys that need nothing done: on events and spans, and on metric points (where
        # identities are hashed). A record whose keys are all in the set costs one subset test.
        self._pass: set[str] = set()
        self._pass_metric: set[str] = set()
        self._lock = threading.Lock()

    def _learn(self, keys: Iterable[str]) -> None:
        # Called under self._lock. Full caches are replaced, never cleared in place: a thread
        # on the lock-free fast path may still be reading the old sets.
        if len(self._pass) + len(self._drop) > _KEY_CACHE_LIMIT:
            self._drop, self._identity, self._pass, self._pass_metric = set(), set(), set(), set()
        for key in list(keys):
            if key in self._pass or key in self._drop:
                continue
            if denied_by(key, self.patterns) is not None:
                self._drop.add(key)
                continue
            self._pass.add(key)
            if key in self._identity_keys or naming.is_identity_attribute(key):
                self._identity.add(key)
            else:
                self._pass_metric.add(key)

    def scrub(self, records: list[Record], signal: str) -> None:
        """Drops denylisted attributes (and hashes identities on metric points) in place."""
        hasher = self._hasher
        hash_identities = signal == METRIC and hasher is not None
        clean = self._pass_metric if hash_identities else self._pass
        for record in records:
            attrs = record.attributes
            if clean.issuperset(attrs):
                continue
            with self._lock:
                keys = list(attrs)
                if not all(k in self._pass or k in self._drop for k in keys):
                    self._learn(keys)
                to_drop = self._drop.intersection(keys)
                to_hash = self._identity.intersection(keys) if hash_identities else ()
            for key in to_drop:
                del attrs[key]
            if to_hash:
                assert hasher is not None
                for key in to_hash:
                    attrs[key] = f"hashed:{hasher.hash(attrs[key]) & 0xFFFFFFFFFFFFFFFF:016x}"

    def __call__(self, batch: Batch) -> None:
        self.scrub(batch.records, batch.signal)


def scrub_records(records: list[Record], config: PrivacyConfig) -> list[Record]:
    """Drops denylisted attributes from records outside the pipeline (``explain``)."""
    AttributeScrubber(config.denylist).scrub(records, "")
    return records
