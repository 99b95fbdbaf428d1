"""Restart-safe state: the store's series and the window sketches in one snapshot file.

The snapshot is gzip-compressed JSON, written atomically (a temp file in the same directory,
fsync, rename, fsync of the directory) every ``state.interval`` and at shutdown, and read
back at start. A snapshot that cannot be read is moved aside, never overwritten, so nothing
is lost that a person might still want to recover.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from exporter import __version__
from exporter.configcheck import get_bool, open_section
from exporter.fsutil import fsync_dir
from exporter.privacy import IdentityHasher, SaltError, load_or_create_salt
from exporter.rules import COUNTER, parse_duration
from exporter.store import Store

if TYPE_CHECKING:
    from exporter.collectors.windows import StateMetrics
    from exporter.pipeline import Pipeline
    from exporter.server import Server
    from exporter.windows import Windows

__all__ = [
    "StateConfig", "parse_state", "StateError", "SnapshotError", "StateManager", "attach",
    "snapshot_store", "parse_store", "apply_store", "write_atomic", "read_snapshot", "FORMAT", "VERSION",
    "STATE_FILE", "DEFAULT_DIR",
]

log = logging.getLogger("kpi_exporter")

FORMAT = "kpi-exporter-state"
VERSION = 1
STATE_FILE = "state.json.gz"
LOCK_FILE = "lock"
DEFAULT_DIR = "./data"
STATE_DIR_ENV = "KPI_EXPORTER_STATE_DIR"
_STATE_KEYS = ("enabled", "dir", "interval")

# Upgrades from an older format version to the next, applied in turn at restore. A version
# with no way forward is refused.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass
class StateConfig:
    """The ``state`` section, with ``--state-dir`` and ``KPI_EXPORTER_STATE_DIR`` applied."""

    enabled: bool = True
    dir: str = DEFAULT_DIR
    interval: float = 30.0


def parse_state(raw: Any, env: Mapping[str, str], overrides: Mapping[str, Any],
                problems: list[str]) -> StateConfig:
    """Parses the ``state`` section. The directory comes from ``--state-dir``, then
    ``KPI_EXPORTER_STATE_DIR``, then ``state.dir``, then ``./data``."""
    cfg = StateConfig()
    raw, where = open_section(raw, "state", _STATE_KEYS, "'dir' and 'interval'", problems)
    cfg.enabled = get_bool(raw, "enabled", where, problems, cfg.enabled)
    directory = overrides.get("state_dir") or env.get(STATE_DIR_ENV) or raw.get("dir")
    if directory is not None:
        if not isinstance(directory, str) or not directory.strip():
            problems.append(f"{where}: dir: expected a directory path, got {directory!r}")
        else:
            cfg.dir = directory
    if "interval" in raw:
        try:
            interval = parse_duration(raw["interval"])
        except ValueError as exc:
            problems.append(f"{where}: interval: {exc}")
        else:
            if interval < 1:
                problems.append(f"{where}: interval: save at most once a second (got "
                                f"{raw['interval']!r}); 30s is the default")
            else:
                cfg.interval = interval
    return cfg


class StateError(RuntimeError):
    """The state directory cannot be used; the message says what to do."""


class SnapshotError(ValueError):
    """A snapshot file that cannot be restored. ``kind`` is 'corrupt' or 'unsupported'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# -- the store ---------------------------------------------------------------------------------

def _tuplify(x: Any) -> Any:
    # JSON has no tuples; stream keys are nested tuples and must hash the same after restore.
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def snapshot_store(store: Store) -> dict[str, Any]:
    """A JSON-ready copy of every metric's series, overflow count and cumulative streams."""
    out = []
    with store.lock:
        for state in store.metrics.values():
            d = state.definition
            copy: Callable[[Any], Any] = (lambda v: v) if d.type == COUNTER else list
            out.append({
                "name": d.name, "type": d.type, "labels": list(d.label_names),
                "buckets": list(d.buckets),
                "series": [[list(k), copy(v)] for k, v in state.series.items()],
                "overflow_updates": state.overflow_updates, "expired": state.expired,
                "streams": [[k, start, v if not isinstance(v, list) else list(v)]
                            for k, (start, v) in state.streams.items()],
            })
    return {"metrics": out}


_Staged = list[tuple[Any, dict[tuple[str, ...], Any], dict[Any, tuple[int, Any]], int, int]]


def parse_store(store: Store, doc: Any) -> tuple[_Staged, list[str]]:
    """Reads a store document without changing the store; raises ValueError when it is
    malformed."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise ValueError("store: expected an object with a 'metrics' list")
    staged: _Staged = []
    notes = []
    for m in doc["metrics"]:
        try:
            name, mtype = m["name"], m["type"]
            labels, buckets = tuple(m["labels"]), tuple(float(b) for b in m["buckets"])
            series = {tuple(k): v for k, v in m["series"]}
            streams = {_tuplify(k): (int(start), v) for k, start, v in m["streams"]}
            overflow, expired = int(m["overflow_updates"]), int(m["expired"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"store: a metric entry is malformed ({exc!r})") from None
        if not all(isinstance(x, str) for k in series for x in k):
            raise ValueError(f"store: {name}: label values must be strings")
        state = store.metrics.get(name)
        if state is None:
            if series:
                notes.append(f"{name} is no longer configured")
            continue
        d = state.definition
        if (d.type, d.label_names, d.buckets) != (mtype, labels, buckets):
            if series:
                notes.append(f"{name} changed its type, labels or buckets")
            continue
        width = len(d.buckets) + 3
        for v in series.values():
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) if mtype == COUNTER
                  else isinstance(v, list) and len(v) == (2 if mtype == "gauge" else width))
            if not ok:
                raise ValueError(f"store: {name}: a series value does not fit a {mtype}")
        staged.append((state, series, streams, overflow, expired))
    return staged, notes


def apply_store(store: Store, staged: _Staged) -> None:
    """Puts series read by :func:`parse_store` into the store."""
    now = store.clock()
    with store.lock:
        for state, series, streams, overflow, expired in staged:
            state.series = series
            state.streams = streams
            state.overflow_updates = overflow
            state.expired = expired
            # idle times do not survive a restart: every series gets a full TTL again
            state.touched = {k: now for k in series} if state.definition.series_ttl else {}


# -- files -------------------------------------------------------------------------------------



def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves either the old file or the new one
    (temp file in the same directory, fsync, rename, fsync of the directory); mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def encode_snapshot(doc: dict[str, Any]) -> bytes:
    """The file bytes of a snapshot document."""
    text = json.dumps(doc, separators=(",", ":"))
    return gzip.compress(text.encode("utf-8"), compresslevel=1, mtime=0)


def read_snapshot(path: Path) -> dict[str, Any]:
    """Reads and checks a snapshot file, migrating an older format version; raises
    :class:`SnapshotError` when it cannot be used and OSError when it cannot be read."""
    raw = path.read_bytes()
    try:
        doc = json.loads(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError("corrupt", f"not a readable gzip-compressed JSON snapshot "
                                       f"({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError("corrupt", f"not a kpi-exporter state file (no \"format\": "
                                       f"\"{FORMAT}\")")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SnapshotError("corrupt", "the snapshot has no format version")
    if version > VERSION:
        raise SnapshotError("unsupported", f"it has format version {version}, written by a "
                                           f"newer kpi-exporter; this one reads up to version "
                                           f"{VERSION}")
    while version < VERSION:
        migrate = _MIGRATIONS.get(version)
        if migrate is None:
            raise SnapshotError("unsupported", f"it has format version {version}, which this "
                                               f"kpi-exporter cannot migrate (it reads "
                                               f"version {VERSION})")
        doc = migrate(doc)
        version = doc["version"]
    return doc


# -- the manager -------------------------------------------------------------------------------

class StateManager:
    """Saves and restores one state directory: periodic saves in a background thread, one
    more at shutdown, and the restore at start."""

    def __init__(self, directory: Path, store: Store, windows: "Windows | None",
                 hasher: IdentityHasher, metrics: "StateMetrics | None" = None,
                 wall_clock: Callable[[], float] = time.time):
        self.directory = directory
        self.path = directory / STATE_FILE
        self.store = store
        self.windows = windows
        self.hasher = hasher
        self.metrics = metrics
        self.wall_clock = wall_clock
        self._save_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    # -- directory -------------------------------------------------------------------------

    def open(self) -> None:
        """Creates the directory (mode 0700) and takes its lock, so that two exporters never
        write one state file."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.directory}: "
                             f"{exc.strerror or exc}; set --state-dir, "
                             f"{STATE_DIR_ENV} or state.dir to a writable directory") from None
        lock_path = self.directory / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot write in the state directory {self.directory}: "
                             f"{exc.strerror or exc}; make it writable or choose another with "
                             f"--state-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(f"another kpi-exporter is using the state directory "
                             f"{self.directory}; give each exporter its own --state-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        """Releases the directory's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- restore ---------------------------------------------------------------------------

    def _move_aside(self, suffix: str) -> Path | None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.wall_clock()))
        aside = self.path.with_name(f"{self.path.name}.{suffix}-{stamp}")
        try:
            os.replace(self.path, aside)
            return aside
        except OSError as exc:
            log.error("cannot move the state file %s aside: %s", self.path, exc.strerror or exc)
            return None

    def restore(self) -> bool:
        """Loads the snapshot, if there is one. Returns True when something was restored; an
        unusable snapshot is moved aside with a log line and the exporter starts fresh."""
        if not self.path.exists():
            log.info("no state file at %s; starting with empty state", self.path)
            return False
        notes: list[str] = []
        windows_staged = None
        try:
            doc = read_snapshot(self.path)
            saved_at = doc.get("saved_at", 0)
            if not isinstance(saved_at, (int, float)):
                raise ValueError("'saved_at' is not a number")
            # Everything is read and checked before anything is applied, so a bad part
            # never leaves the state half restored.
            store_staged, store_notes = parse_store(self.store, doc.get("store"))
            notes += store_notes
            windows_doc = doc.get("windows")
            if self.windows is not None:
                if windows_doc is None:
                    notes.append("the snapshot has no window sketches")
                elif doc.get("salt_fingerprint") != self.hasher.fingerprint:
                    notes.append("the salt changed since the snapshot, so its window sketches "
                                 "(hashed with the old salt) would count every returning user "
                                 "twice; the windows start empty")
                else:
                    windows_staged, window_notes = self.windows.parse_state(windows_doc)
                    notes += window_notes
        except OSError as exc:
            aside = self._move_aside("unreadable")
            log.error("cannot read the state file %s (%s); %s; starting with empty state",
                      self.path, exc.strerror or exc,
                      f"moved it to {aside}" if aside else "left it in place")
            return False
        except SnapshotError as exc:
            aside = self._move_aside(exc.kind)
            log.error("the state file %s cannot be restored: %s; %s; starting with empty state",
                      self.path, exc, f"moved it to {aside}" if aside else "left it in place")
            return False
        except ValueError as exc:
            aside = self._move_aside("corrupt")
            log.error("the state file %s is corrupt (%s); %s; starting with empty state",
                      self.path, exc, f"moved it to {aside}" if aside else "left it in place")
            return False
        apply_store(self.store, store_staged)
        if self.windows is not None and windows_staged is not None:
            self.windows.apply_state(windows_staged)
        if self.metrics is not None:
            self.metrics.bytes.set(self.path.stat().st_size)
            self.metrics.last_save.set(saved_at)
        age = max(0.0, self.wall_clock() - saved_at)
        log.info("restored state from %s (saved %.0fs ago): %d metrics%s%s", self.path, age,
                 len(store_staged), ", window sketches" if windows_staged is not None else "",
                 "".join(f"; not restored: {n}" for n in notes))
        return True

    # -- save ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The snapshot document of the current state."""
        return {
            "format": FORMAT, "version": VERSION, "saved_at": self.wall_clock(),
            "exporter_version": __version__, "salt_fingerprint": self.hasher.fingerprint,
            "store": snapshot_store(self.store),
            "windows": self.windows.export_state() if self.windows is not None else None,
        }

    def save(self) -> bool:
        """Writes the snapshot; True on success. Failures are logged and counted, never
        raised: the exporter keeps serving and tries again at the next interval."""
        with self._save_lock:
            started = time.perf_counter()
            try:
                data = encode_snapshot(self.snapshot())
                write_atomic(self.path, data)
            except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
                if self.metrics is not None:
                    self.metrics.saves.labels("failure").inc()
                log.error("cannot save the state to %s: %s (the next save is tried at the next "
                          "interval)", self.path,
                          exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
                return False
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.saves.labels("success").inc()
                self.metrics.save_duration.observe(elapsed)
                self.metrics.bytes.set(len(data))
                self.metrics.last_save.set(self.wall_clock())
            log.debug("saved the state to %s: %d bytes in %.3fs", self.path, len(data), elapsed)
            return True

    def start(self, interval: float) -> None:
        """Saves every ``interval`` seconds in a background thread."""
        def loop() -> None:
            while not self._stop.wait(interval):
                self.save()

        self._thread = threading.Thread(target=loop, name="state-saver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the periodic saves, saves once more and releases the directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.save():
            log.info("saved the state to %s", self.path)
        self.close()


def attach(pipeline: "Pipeline", server: "Server") -> StateManager | None:
    """Wires the state directory into a serving exporter: takes the directory's lock, loads
    (or creates) the salt, restores the snapshot, saves on an interval and at shutdown.
    Returns None when ``state.enabled`` is false; raises :class:`StateError` when the
    directory cannot be used."""
    from exporter.collectors.windows import StateMetrics

    cfg = pipeline.config.state
    runtime = pipeline.kpi
    if not cfg.enabled:
        log.warning("state persistence is off (state.enabled: false): counts and windows start "
                    "from zero at every start")
        return None
    manager = StateManager(Path(cfg.dir), pipeline.store, runtime.windows, runtime.hasher,
                           StateMetrics(pipeline.registry))
    manager.open()
    if not runtime.salt_from_config:
        try:
            runtime.hasher.set_salt(load_or_create_salt(manager.directory))
        except (SaltError, OSError) as exc:
            manager.close()
            raise StateError(str(exc)) from None
    manager.restore()
    manager.start(cfg.interval)
    server.shutdown_hooks.append(manager.stop)
    return manager
