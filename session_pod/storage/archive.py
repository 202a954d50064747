"""Archives: the backup's tar.gz of a snapshot, and the seed's RemoteAuth zip (for comparison)."""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

COMPRESS_LEVEL = 6  # level 9 costs much more time for ~1% on LevelDB data
REMOTE_AUTH_DIRS = ("IndexedDB", "Local Storage")  # what RemoteAuth keeps of `Default/`


def write_tar_gz(source_dir: Path, files: Iterable[str], dest: Path) -> None:
    """Writes `files` (relative to `source_dir`) to `dest`, in sorted order, without owners."""
    with tarfile.open(dest, "w:gz", compresslevel=COMPRESS_LEVEL) as tar:
        for relative in sorted(files):
            info = tar.gettarinfo(source_dir / relative, arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with (source_dir / relative).open("rb") as data:
                tar.addfile(info, data)


def extract_tar_gz(archive: Path, dest: Path) -> list[str]:
    """Extracts regular files only, refusing anything outside `dest`; returns their paths."""
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise tarfile.TarError(f"unexpected member type: {member.name}")
        tar.extractall(dest, members=members, filter="data")
    return [member.name for member in members if member.isfile()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def remote_auth_zip(profile_dir: Path, dest: Path, *, prune: bool = True) -> None:
    """A zip as whatsapp-web.js's RemoteAuth made it: of the live profile, keeping only
    `Default/IndexedDB` (every origin) and `Default/Local Storage` (`prune=False`: everything)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as zf:
        for directory, _dirs, names in os.walk(profile_dir):
            for name in names:
                path = Path(directory, name)
                relative = path.relative_to(profile_dir)
                if path.is_symlink() or (prune and not _kept_by_remote_auth(relative)):
                    continue
                zf.write(path, relative.as_posix())


def _kept_by_remote_auth(relative: Path) -> bool:
    parts = relative.parts
    return len(parts) > 2 and parts[0] == "Default" and parts[1] in REMOTE_AUTH_DIRS
