"""File-system helpers shared by the state, salt, config and token files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "read_limited"]


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
