"""Restart-safe state: everything that exports and imports its state (the store's series, the
window sketches) in one snapshot file.

The snapshot is gzip-compressed JSON, written atomically (a temp file in the same directory,
fsync, rename, fsync of the directory) every ``state.interval`` and at shutdown, and read
back at start. A snapshot that cannot be read is moved aside, never overwritten, so nothing
is lost that a person might still want to recover.

Counters must never go back to an older value Prometheus has already passed: it would read
the drop as a reset and count their whole history again. So a snapshot gives its counters
back only when it is *complete*, holding everything the stopped process counted; otherwise
the parts are told to start their counters from zero, a reset Prometheus handles.

Snapshots are numbered (``generation``). Before the first change to the counts after a
snapshot is taken, the store calls :meth:`StateManager.mark_unsaved`, which writes that
snapshot's number durably to the file ``unsaved``. At start, a snapshot is complete when
that file names an older snapshot (or does not exist): nothing was counted after it was
taken. So a clean stop (SIGTERM: the listeners close, then the final save, marked
``"clean": true``) is complete, and so is a kill -9 or a crash that came after a save with
no traffic since; a crash after counting more is not, and neither is a crash of a run that
restored a snapshot and counted more since (its first change marked it).

When the mark cannot be written (a full disk), the snapshot is renamed to
``state-incomplete.json.gz`` (a rename needs no free space), which is only ever restored as
incomplete, and the mark is tried again at the next change. A later save replaces it.
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
from typing import Any, Callable, Mapping, Protocol

from exporter import __version__
from exporter.collectors.selfmetrics import StateMetrics
from exporter.configcheck import at, get_bool, get_duration, open_section, path, problem, show
from exporter.fsutil import fsync_dir, remove_leftovers, write_atomic

__all__ = [
    "StateConfig", "parse_state", "StateError", "SnapshotError", "StateManager", "StatePart",
    "write_atomic", "encode_snapshot", "read_snapshot", "FORMAT", "VERSION", "STATE_FILE",
    "INCOMPLETE_FILE", "UNSAVED_FILE",
    "DEFAULT_DIR",
]

log = logging.getLogger("kpi_exporter")

FORMAT = "kpi-exporter-state"
VERSION = 1
STATE_FILE = "state.json.gz"
# A snapshot withdrawn because the mark after it could not be written: never complete.
INCOMPLETE_FILE = "state-incomplete.json.gz"
UNSAVED_FILE = "unsaved"
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
    if overrides.get("state_dir"):
        directory, name, holder = overrides["state_dir"], "--state-dir", None
    elif env.get(STATE_DIR_ENV):
        directory, name, holder = env[STATE_DIR_ENV], STATE_DIR_ENV, None
    else:
        directory, name, holder = raw.get("dir"), path(where, "dir"), raw
    if directory is not None:
        line = at(holder, "dir") if holder is not None else ""
        if not isinstance(directory, str) or not directory.strip():
            problems.append(f"{line}{name}: expected a directory path, got {show(directory)}")
        elif "\x00" in directory:
            problems.append(f"{line}{name}: a path cannot contain a NUL character")
        else:
            cfg.dir = directory
    interval = get_duration(raw, "interval", where, problems, cfg.interval)
    if interval < 1:
        problems.append(problem(raw, "interval", where, f"save at most once a second (got "
                                                        f"{show(raw['interval'])}); 30s is the "
                                                        f"default"))
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


class StatePart(Protocol):
    """Something whose state the snapshot keeps: it exports a JSON-ready document, reads one
    back without changing anything (raising ValueError when it is malformed), then applies
    what it read. ``complete`` is False when more was counted after the snapshot was taken:
    the part must then leave out anything Prometheus reads as a counter (see the module
    docstring)."""

    def export_state(self) -> Any: ...

    def parse_state(self, doc: Any, complete: bool) -> tuple[Any, list[str]]: ...

    def apply_state(self, staged: Any) -> None: ...


# -- files -------------------------------------------------------------------------------------

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
    more at shutdown, and the restore at start.

    ``parts`` are saved under their names. Those named in ``salted`` hold identity hashes:
    they are restored only when the snapshot was made with the same salt (``fingerprint``
    names it without revealing it)."""

    def __init__(self, directory: Path, metrics: StateMetrics | None = None,
                 wall_clock: Callable[[], float] = time.time):
        self.directory = directory
        self.path = directory / STATE_FILE
        self.unsaved_path = directory / UNSAVED_FILE
        self.incomplete_path = directory / INCOMPLETE_FILE
        # The number of the latest snapshot taken (restored, or written since).
        self.generation = 0
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.parts: dict[str, StatePart] = {}
        self.salted: set[str] = set()
        self.fingerprint = ""
        self._save_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        # The snapshot number whose mark could not be written (None: every change is marked);
        # guarded by _files_lock, as are the renames of the snapshot file.
        self._unmarked: int | None = None
        self._files_lock = threading.Lock()
        # The snapshot number the ``unsaved`` file was last written with (None: not yet in
        # this run): every part marks its first change after each snapshot, and one write per
        # snapshot says it for all of them. Guarded by _mark_lock.
        self._marked: int | None = None
        self._mark_lock = threading.Lock()

    def add(self, name: str, part: StatePart, salted: bool = False) -> None:
        """Keeps ``part``'s state in the snapshot under ``name``."""
        self.parts[name] = part
        if salted:
            self.salted.add(name)

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
        for leftover in remove_leftovers(self.path) + remove_leftovers(self.unsaved_path):
            log.info("removed %s, left by a save a crash interrupted", leftover)

    def close(self) -> None:
        """Releases the directory's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- restore ---------------------------------------------------------------------------

    def _move_aside(self, source: Path, suffix: str) -> Path | None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.wall_clock()))
        aside = source.with_name(f"{source.name}.{suffix}-{stamp}")
        try:
            os.replace(source, aside)
            return aside
        except OSError as exc:
            log.error("cannot move the state file %s aside: %s", source, exc.strerror or exc)
            return None

    def restore(self) -> bool:
        """Loads the snapshot, if there is one. Returns True when something was restored; an
        unusable snapshot is moved aside with a log line and the exporter starts fresh."""
        unsaved = self._read_unsaved()
        # Numbers go on from the mark even without a usable snapshot, so that an old mark
        # never names a newer snapshot.
        self.generation = max(self.generation, unsaved or 0)
        source = self.path
        if not source.exists():
            if not self.incomplete_path.exists():
                log.info("no state file at %s; starting with empty state", self.path)
                return False
            source = self.incomplete_path  # withdrawn: its mark could not be written
        withdrawn = source == self.incomplete_path
        notes: list[str] = []
        staged: dict[str, Any] = {}
        try:
            doc = read_snapshot(source)
            saved_at = doc.get("saved_at", 0)
            if not isinstance(saved_at, (int, float)):
                raise ValueError("'saved_at' is not a number")
            generation = doc.get("generation")
            if generation is not None and (not isinstance(generation, int)
                                           or isinstance(generation, bool)):
                raise ValueError("'generation' is not an integer")
            # Snapshots of versions that did not number them cannot be told complete.
            complete = (generation is not None and unsaved is not None and unsaved < generation
                        and not withdrawn)
            # Everything is read and checked before anything is applied, so a bad part
            # never leaves the state half restored.
            for name, part in self.parts.items():
                part_doc = doc.get(name)
                if part_doc is None:
                    notes.append(f"the snapshot has no {name}")
                elif name in self.salted and doc.get("salt_fingerprint") != self.fingerprint:
                    notes.append(f"the salt changed since the snapshot, so its {name} (hashed "
                                 f"with the old salt) would count every returning user twice; "
                                 f"they start empty")
                else:
                    staged[name], part_notes = part.parse_state(part_doc, complete)
                    notes += part_notes
        except OSError as exc:
            aside = self._move_aside(source, "unreadable")
            log.error("cannot read the state file %s (%s); %s; starting with empty state",
                      source, exc.strerror or exc,
                      f"moved it to {aside}" if aside else "left it in place")
            return False
        except SnapshotError as exc:
            aside = self._move_aside(source, exc.kind)
            log.error("the state file %s cannot be restored: %s; %s; starting with empty state",
                      source, exc, f"moved it to {aside}" if aside else "left it in place")
            return False
        except ValueError as exc:
            aside = self._move_aside(source, "corrupt")
            log.error("the state file %s is corrupt (%s); %s; starting with empty state",
                      source, exc, f"moved it to {aside}" if aside else "left it in place")
            return False
        self.generation = max(self.generation, generation or 0)
        size = source.stat().st_size
        if unsaved is None and generation is not None and not withdrawn:
            # An unreadable mark: keep this snapshot marked incomplete, readably, until the
            # next one is taken.
            self.mark_unsaved()
        for name, value in staged.items():
            self.parts[name].apply_state(value)
        if self.metrics is not None:
            self.metrics.bytes.set(size)
            self.metrics.last_save.set(saved_at)
        age = max(0.0, self.wall_clock() - saved_at)
        if not complete:
            log.warning("the exporter counted more after the state file %s was written (it "
                        "was killed or crashed, or failed its final save): counters and "
                        "histograms start from zero, which Prometheus reads as a counter "
                        "reset; gauges and window sketches are restored as saved %.0fs ago",
                        source, age)
        how = ("at a clean stop" if doc.get("clean") is True else
               "nothing counted after it" if complete else "counters not restored")
        log.info("restored state from %s (saved %.0fs ago, %s): %s%s", source, age, how,
                 ", ".join(staged) or "nothing", "".join(f"; not restored: {n}" for n in notes))
        return True

    def _read_unsaved(self) -> int | None:
        """The snapshot number the ``unsaved`` file names: -1 when there is none, None when
        it cannot be read (then no snapshot counts as complete)."""
        try:
            text = self.unsaved_path.read_text("ascii")
        except FileNotFoundError:
            return -1
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read %s (%s)", self.unsaved_path, exc)
            return None
        try:
            return int(text.strip())
        except ValueError:
            log.error("%s does not hold a snapshot number", self.unsaved_path)
            return None

    def mark_unsaved(self) -> bool:
        """Writes, durably, that the counts change after the latest snapshot taken: called
        by the store, under its lock, before the first change after each snapshot. True when
        the mark is written. When it cannot be (a full disk), the snapshot is withdrawn
        (renamed, which needs no free space) so it is never restored as complete, and False
        tells the store to try the mark again at its next change. Stores marking at the same
        time (the mapped and the visit counters, each under its own lock) wait for one
        another, and a snapshot already marked is not written again."""
        with self._mark_lock:
            generation = self.generation
            if self._marked == generation:
                return True
            try:
                write_atomic(self.unsaved_path, f"{generation}\n".encode("ascii"))
            except OSError as exc:
                with self._files_lock:
                    first = self._unmarked is None
                    self._unmarked = generation
                    self._withdraw()
                if first:
                    log.error("cannot write %s (%s): the state file is renamed to %s, whose "
                              "counters are not restored; the mark is tried again at each "
                              "change", self.unsaved_path, exc.strerror or exc,
                              self.incomplete_path.name)
                return False
            self._marked = generation
        with self._files_lock:
            if self._unmarked is not None and self._unmarked <= generation:
                self._unmarked = None
                log.info("wrote %s again", self.unsaved_path)
        return True

    def _withdraw(self) -> None:
        """Renames the snapshot to the name restored only as incomplete. Called under
        _files_lock."""
        try:
            os.replace(self.path, self.incomplete_path)
        except FileNotFoundError:
            return  # no snapshot yet, or withdrawn already
        except OSError as exc:
            log.error("cannot rename %s to %s (%s): if the exporter stops without saving "
                      "again, its counters may be restored from an older state", self.path,
                      self.incomplete_path.name, exc.strerror or exc)
            return
        try:
            fsync_dir(self.directory)
        except OSError as exc:
            log.error("cannot flush the state directory %s (%s)", self.directory,
                      exc.strerror or exc)

    # -- save ------------------------------------------------------------------------------

    def snapshot(self, clean: bool = False) -> dict[str, Any]:
        """The snapshot document of the current state, with the next snapshot number;
        ``clean`` marks the final save of a stop (for the log of the next start)."""
        # Numbered before the parts export: a change marked in between names this snapshot,
        # which then counts as incomplete (safe), never the other way round.
        self.generation += 1
        doc: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "saved_at": self.wall_clock(),
            "exporter_version": __version__, "salt_fingerprint": self.fingerprint,
            "generation": self.generation, "clean": clean,
        }
        for name, part in self.parts.items():
            doc[name] = part.export_state()
        return doc

    def save(self, clean: bool = False) -> bool:
        """Writes the snapshot; True on success. Failures are logged and counted, never
        raised: the exporter keeps serving and tries again at the next interval. ``clean``
        marks the final save of a stop."""
        with self._save_lock:
            started = time.perf_counter()
            try:
                doc = self.snapshot(clean)
                data = encode_snapshot(doc)
                write_atomic(self.path, data)
                self._settle(doc["generation"])
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

    def _settle(self, generation: int) -> None:
        """After snapshot ``generation`` is written: withdrawn at once when a change it may
        lack could not be marked; otherwise it replaces a withdrawn one."""
        with self._files_lock:
            if self._unmarked is not None and self._unmarked >= generation:
                self._withdraw()
                return
            try:
                self.incomplete_path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # the newer snapshot is restored first anyway
                log.warning("cannot remove %s (%s)", self.incomplete_path, exc.strerror or exc)

    def start(self, interval: float) -> None:
        """Saves every ``interval`` seconds in a background thread."""
        def loop() -> None:
            while not self._stop.wait(interval):
                self.save()

        self._thread = threading.Thread(target=loop, name="state-saver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the periodic saves, saves once more (a clean snapshot: nothing is counted
        after it) and releases the directory. Called once the listeners are closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.save(clean=True):
            log.info("saved the state to %s", self.path)
        self.close()
