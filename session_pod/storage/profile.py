"""The local profile directory: its version marker, atomic swaps, Chromium's stale locks."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from session_pod.storage.manifest import is_version
from whatsapp_common.files import atomic_write

MARKER = ".backup-version.json"
_SCRATCH_KINDS = ("backup", "restore", "old")


def read_marker(profile_dir: Path) -> str | None:
    """The backup version the profile corresponds to; None when unknown."""
    try:
        version = json.loads((profile_dir / MARKER).read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return version if is_version(version) else None


def write_marker(profile_dir: Path, version: str, sha256: str) -> None:
    atomic_write(profile_dir / MARKER, json.dumps({"version": version, "sha256": sha256}).encode())


def scratch_dir(profile_dir: Path, kind: str) -> Path:
    """A fresh directory beside the profile (same filesystem, so renames are atomic)."""
    profile_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=profile_dir.parent, prefix=f".{profile_dir.name}.{kind}-"))


def remove_leftovers(profile_dir: Path) -> None:
    """Scratch directories of a process killed mid-backup or mid-restore."""
    for kind in _SCRATCH_KINDS:
        for path in profile_dir.parent.glob(f".{profile_dir.name}.{kind}-*"):
            shutil.rmtree(path, ignore_errors=True)


def swap_in(new_dir: Path, profile_dir: Path) -> None:
    """Replaces the profile with `new_dir`. A crash in between leaves no profile (restore
    again), never a half-written one."""
    old = None
    if profile_dir.exists() or profile_dir.is_symlink():
        old = scratch_dir(profile_dir, "old")
        os.replace(profile_dir, old / "profile")
    os.replace(new_dir, profile_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_singletons(profile_dir: Path) -> list[str]:
    """Chromium's SingletonLock/Socket/Cookie left by a killed browser (maybe on another host)
    would make the next one refuse the profile."""
    removed = []
    for path in profile_dir.glob("Singleton*"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
