"""A consistent copy of the profile's login data, taken while Chromium may be writing it.

The "stable copy": stat the file set (name, size, mtime_ns), copy it, wait `settle` seconds,
stat it again. When nothing changed, the copy equals one instant of the directories, which
LevelDB (crash-safe by design) opens like the state after a power cut. Otherwise try again
(bounded).

Why the wait: IndexedDB writes reach the files at once, but Chromium commits localStorage
changes later (about 1 s with --enable-aggressive-domstorage-flushing, measured; 5 s or more
without). A page that wrote both just before the copy would leave the copy with the new
IndexedDB half and the old localStorage half. Any such pending commit lands within `settle`
seconds (when it exceeds the commit delay), changes the files, and forces another copy.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

from session_pod.storage.errors import NothingToBackUp, SnapshotUnstable
from whatsapp_common.backoff import backoff_delay
from whatsapp_common.logs import get_logger

log = get_logger(__name__)

LOCAL_STORAGE = "Default/Local Storage/leveldb"
INDEXED_DB = "Default/IndexedDB"
# LevelDB's lock file and its human-readable info logs are not needed to open a database.
_SKIPPED_NAMES = frozenset({"LOCK", "LOG", "LOG.old"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

FileSet = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


def origin_identifier(origin: str) -> str:
    """Chromium's directory name of an origin: `https://web.whatsapp.com/` ->
    `https_web.whatsapp.com_0` (port 0 = the scheme's default), `http://127.0.0.1:8080` ->
    `http_127.0.0.1_8080`."""
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an origin URL: {origin!r}")
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        port = 0
    return f"{parts.scheme}_{parts.hostname}_{port}"


def login_roots(origin: str) -> list[str]:
    """The profile directories (relative) that hold the login of `origin`."""
    name = origin_identifier(origin)
    return [
        LOCAL_STORAGE,
        f"{INDEXED_DB}/{name}.indexeddb.leveldb",
        f"{INDEXED_DB}/{name}.indexeddb.blob",
    ]


def scan(profile_dir: Path, roots: list[str]) -> FileSet:
    """Regular files under `roots` with their size and mtime; symlinks and lock files skipped."""
    files: FileSet = {}
    for root in roots:
        for directory, _dirs, names in os.walk(profile_dir / root):
            for name in names:
                if name in _SKIPPED_NAMES:
                    continue
                path = Path(directory, name)
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                files[path.relative_to(profile_dir).as_posix()] = (st.st_size, st.st_mtime_ns)
    return files


def _copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def stable_copy(
    profile_dir: Path,
    origin: str,
    dest: Path,
    settle: float = 0.0,
    attempts: int = 8,
    pause: float = 0.05,
) -> FileSet:
    """Copies the login files of `origin` into the empty directory `dest`, consistently.

    Returns the copied file set. Raises NothingToBackUp or SnapshotUnstable.
    """
    roots = login_roots(origin)
    for attempt in range(1, attempts + 1):
        before = scan(profile_dir, roots)
        if not before:
            raise NothingToBackUp(f"no login data of {origin} in {profile_dir}")
        copied = _copy_all(profile_dir, dest, before)
        if copied and settle:
            time.sleep(settle)
        if copied and scan(profile_dir, roots) == before:
            return before
        log.info("profile changed during the copy; copying again", attempt=attempt)
        shutil.rmtree(dest)
        dest.mkdir()
        time.sleep(backoff_delay(attempt, pause, 1.0))
    raise SnapshotUnstable(f"{profile_dir} kept changing during {attempts} copies")


def _copy_all(profile_dir: Path, dest: Path, files: FileSet) -> bool:
    """False when a file vanished during the copy (the set changed)."""
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _copy_file(profile_dir / relative, target)
        except FileNotFoundError:
            return False
    return True
