"""Writing a file so that a crash at any moment leaves either the old file or the whole new
one, never a half-written one: write beside it, then rename over it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PARTIAL = ".partial"


@contextlib.contextmanager
def atomic_file(target: Path, *, durable: bool = True, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yields a file to write `target`'s new content into; it replaces `target` only when the
    block ends without an error. `durable`: fsync the data and the directory, so the new file
    also survives a power loss (not needed for scratch files). `mode`: the new file's
    permissions, set before any byte is written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}{PARTIAL}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if durable:
        fsync_dir(target.parent)


def atomic_write(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_file(target, mode=mode) as out:
        out.write(data)


def fsync_dir(directory: Path) -> None:
    """Makes a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
