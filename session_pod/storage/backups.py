"""Versioned backups of one location's WhatsApp login, and restoring the newest good one.

Crash safety comes from the order of writes: the data object first, its manifest last. A
backup exists only once its manifest does, so a crash at any moment leaves the previous one.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import tarfile
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from session_pod import __version__
from session_pod.storage.archive import extract_tar_gz, sha256_of, write_tar_gz
from session_pod.storage.manifest import Layout, Manifest, new_version
from session_pod.storage.profile import (
    read_marker,
    remove_leftovers,
    remove_singletons,
    scratch_dir,
    swap_in,
    write_marker,
)
from session_pod.storage.retry import OnRetry, RetryPolicy, retrying
from session_pod.storage.snapshot import stable_copy
from whatsapp_common.logs import get_logger
from whatsapp_common.objectstore import BackupStore, ObjectNotFound, StoreError, delete_location

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BackupRecord:
    version: str
    sha256: str
    size: int
    created: datetime
    duration_seconds: float


@dataclass(frozen=True)
class SkippedBackup:
    version: str
    reason: str


@dataclass(frozen=True)
class RestoreResult:
    """`version`: the backup the profile now corresponds to (None: unknown, when every backup
    was unusable). `restored`: False when the local profile was kept."""

    version: str | None
    restored: bool
    skipped: list[SkippedBackup] = field(default_factory=list)
    size: int = 0
    duration_seconds: float = 0.0


class _Unusable(Exception):
    """This backup version cannot be restored (corrupt, incomplete); try the previous one."""


class BackupManager:
    """Backups of one location, under `<prefix>/<location>/` of the store; one operation at a
    time. Call `restore` before the browser starts and before any backup."""

    def __init__(
        self,
        store: BackupStore,
        prefix: str,
        location: str,
        keep: int = 5,
        *,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        settle_seconds: float = 0.0,
    ) -> None:
        """`settle_seconds`: how long the login files must stay unchanged after being copied
        (see snapshot.stable_copy)."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.store = store
        self.prefix = prefix
        self.location = location
        self.keep = keep
        self.layout = Layout(prefix, location)
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._settle = settle_seconds
        self._lock = asyncio.Lock()

    async def backup(self, profile_dir: Path, origin: str) -> BackupRecord:
        """Snapshots the login of `origin` (the browser may be running) and uploads it.

        Raises SnapshotError, StoreUnavailable or StoreAccessDenied (nothing is retried here:
        the previous backup stays the newest).
        """
        async with self._lock:
            start = time.monotonic()
            created = datetime.now(UTC)
            version = new_version(created)
            work = await asyncio.to_thread(scratch_dir, profile_dir, "backup")
            try:
                manifest = await asyncio.to_thread(
                    self._pack, profile_dir, origin, work, version, created
                )
                await self.store.put(self.layout.data_key(version), work / "data.tar.gz")
                await self.store.put(self.layout.manifest_key(version), work / "manifest.json")
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
            await asyncio.to_thread(write_marker, profile_dir, version, manifest.sha256)
            record = BackupRecord(
                version, manifest.sha256, manifest.size, created, time.monotonic() - start
            )
            log.info(
                "backup saved",
                location=self.location,
                version=version,
                size=record.size,
                files=len(manifest.files),
                duration_seconds=round(record.duration_seconds, 3),
            )
            await self._prune()
            return record

    def _pack(
        self, profile_dir: Path, origin: str, work: Path, version: str, created: datetime
    ) -> Manifest:
        copy = work / "copy"
        copy.mkdir()
        files = stable_copy(profile_dir, origin, copy, settle=self._settle)
        archive = work / "data.tar.gz"
        write_tar_gz(copy, files, archive)
        manifest = Manifest(
            version=version,
            sha256=sha256_of(archive),
            size=archive.stat().st_size,
            created=created.isoformat(),
            program_version=__version__,
            location=self.location,
            origin=origin,
            files={path: size for path, (size, _mtime) in sorted(files.items())},
        )
        (work / "manifest.json").write_bytes(manifest.to_json())
        return manifest

    async def _prune(self) -> None:
        """Keeps the newest `keep` backups; drops manifests before their data, and data objects
        of backups that never got a manifest (a crash mid-upload) once a newer backup exists."""
        try:
            keys = await self.store.list(self.layout.root)
            manifests = self.layout.manifest_versions(keys)
            dropped = manifests[: -self.keep]
            kept = set(manifests[-self.keep :])
            newest = manifests[-1] if manifests else ""
            data = [v for v in self.layout.data_versions(keys) if v not in kept and v < newest]
            if dropped:
                await self.store.delete([self.layout.manifest_key(v) for v in dropped])
            if data:
                await self.store.delete([self.layout.data_key(v) for v in data])
                data = [v for v in data if v not in dropped]
        except StoreError as exc:
            log.warning("pruning old backups failed; next backup tries again", error=str(exc))
            return
        if dropped or data:
            log.info("old backups pruned", location=self.location, dropped=dropped, orphans=data)

    async def restore(self, profile_dir: Path) -> RestoreResult | None:
        """Brings the profile to the newest good backup, unless it is already there or newer.

        None only when the store answered and has no backup of this location. StoreUnavailable
        is retried per the retry policy (then raised); StoreAccessDenied is raised at once.
        """
        async with self._lock:
            start = time.monotonic()
            until = self._retry.until()
            await asyncio.to_thread(remove_leftovers, profile_dir)
            keys = await self._retrying(partial(self.store.list, self.layout.root), "list", until)
            versions = self.layout.manifest_versions(keys)
            if not versions:
                log.info("no backup to restore", location=self.location)
                return None
            local = await asyncio.to_thread(read_marker, profile_dir)
            skipped: list[SkippedBackup] = []
            for version in reversed(versions):
                if local is not None and local >= version:
                    await asyncio.to_thread(remove_singletons, profile_dir)
                    log.info("local profile is up to date; keeping it", version=local)
                    return RestoreResult(local, False, skipped, 0, time.monotonic() - start)
                try:
                    size = await self._restore_version(profile_dir, version, until)
                except _Unusable as exc:
                    skipped.append(SkippedBackup(version, str(exc)))
                    log.warning(
                        "backup unusable; trying the previous one", version=version, reason=str(exc)
                    )
                    continue
                result = RestoreResult(version, True, skipped, size, time.monotonic() - start)
                log.info(
                    "profile restored",
                    location=self.location,
                    version=version,
                    size=size,
                    skipped=len(skipped),
                    duration_seconds=round(result.duration_seconds, 3),
                )
                return result
            log.error("no usable backup; keeping the local profile", location=self.location)
            await asyncio.to_thread(remove_singletons, profile_dir)
            return RestoreResult(local, False, skipped, 0, time.monotonic() - start)

    async def _restore_version(self, profile_dir: Path, version: str, until: float | None) -> int:
        """Downloads, verifies and swaps in one version; raises _Unusable when it is bad."""
        work = await asyncio.to_thread(scratch_dir, profile_dir, "restore")
        try:
            raw = await self._download(self.layout.manifest_key(version), work, until, "manifest")
            try:
                manifest = Manifest.from_json(await asyncio.to_thread(raw.read_bytes))
            except ValueError as exc:
                raise _Unusable(str(exc)) from exc
            if manifest.version != version or manifest.location != self.location:
                raise _Unusable("manifest names another version or location")
            archive = await self._download(self.layout.data_key(version), work, until, "data")
            await asyncio.to_thread(_unpack, archive, manifest, work / "profile")
            await asyncio.to_thread(swap_in, work / "profile", profile_dir)
            await asyncio.to_thread(remove_singletons, profile_dir)
            return manifest.size
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _download(self, key: str, work: Path, until: float | None, what: str) -> Path:
        path = work / what
        try:
            await self._retrying(partial(self.store.get, key, path), f"get {what}", until)
        except ObjectNotFound as exc:
            raise _Unusable(f"{what} object missing: {key}") from exc
        return path

    async def _retrying(
        self, call: Callable[[], Awaitable[T]], what: str, until: float | None
    ) -> T:
        return await retrying(call, what, self._retry, until, self._on_retry)

    async def delete_all(self) -> int:
        """Removes every object of this location (explicit logout only); returns how many."""
        async with self._lock:
            deleted = await delete_location(self.store, self.prefix, self.location)
            log.info("all backups deleted", location=self.location, objects=deleted)
            return deleted


def _unpack(archive: Path, manifest: Manifest, dest: Path) -> None:
    """Verifies size, checksum and file list, then extracts into `dest` with a marker."""
    size = archive.stat().st_size
    if size != manifest.size:
        raise _Unusable(f"size {size} differs from the manifest's {manifest.size}")
    digest = sha256_of(archive)
    if digest != manifest.sha256:
        raise _Unusable(f"sha256 {digest} differs from the manifest's {manifest.sha256}")
    dest.mkdir()
    try:
        names = extract_tar_gz(archive, dest)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _Unusable(f"unreadable archive: {exc}") from exc
    if sorted(names) != sorted(manifest.files):
        raise _Unusable("archive contents differ from the manifest's file list")
    write_marker(dest, manifest.version, manifest.sha256)
