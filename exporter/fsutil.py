"""File-system helpers shared by the state, salt, config and token files: atomic writes,
what an interrupted one leaves behind, and bounded reads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["fsync_dir", "read_limited", "write_atomic", "remove_leftovers"]


def fsync_dir(path: Path) -> None:
    """Flushes a directory entry to disk, so a file just renamed into it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_limited(path: str, limit: int) -> bytes:
    """The bytes of the file at ``path``, which a config names: OSError when it cannot be
    read, ValueError when the path holds a NUL or the file has more than ``limit`` bytes (a
    device like /dev/zero never ends). Opening never waits: a FIFO without a writer reads as
    empty."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
                raise ValueError(f"it is larger than {size}")
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves either the old file or the new one
    (temp file in the same directory, fsync, rename, fsync of the directory); mode 0600."""
    # one temp file per process and thread: two writers of one path never share it
    tmp = path.with_name(f"{_temp_prefix(path)}{os.getpid()}-{threading.get_ident()}")
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


def remove_leftovers(path: Path) -> list[Path]:
    """Removes the temp files of :func:`write_atomic` for ``path`` that a crash left
    behind (never the file itself); returns them. Call it only while no other process can
    be writing ``path`` (under the state directory's lock)."""
    prefix = _temp_prefix(path)
    removed = []
    for leftover in path.parent.glob(prefix + "*"):
        if leftover.name.startswith(prefix) and leftover.is_file():
            try:
                leftover.unlink()
            except OSError:
                continue
            removed.append(leftover)
    return removed
