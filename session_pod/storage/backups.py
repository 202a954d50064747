"""Versioned, encrypted backups of one location's WhatsApp login, and restoring the newest
good one.

Each backup is one sealed object (manifest and archive, encrypted and authenticated with the
location's key: see sealed.py), written by one PUT: it exists whole or not at all, so a
crash at any moment leaves the previous one. Backups written before encryption (a data
object, then its manifest) are still restored, and re-encrypted by `reencrypt`.
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
from session_pod.storage.errors import KeysUnavailable
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
from session_pod.storage.sealed import SealError, key_name, seal, unseal
from session_pod.storage.snapshot import stable_copy
from whatsapp_common.keys import KeyRing
from whatsapp_common.logs import get_logger
from whatsapp_common.objectstore import BackupStore, ObjectNotFound, StoreError, delete_location

log = get_logger(__name__)
T = TypeVar("T")
# The location's backup keys, read at each operation (a mounted Secret changes in place).
KeySource = Callable[[], KeyRing]


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


@dataclass(frozen=True)
class ReencryptResult:
    """`rewritten`: versions now sealed with the current key; `current`: already were."""

    key: str
    rewritten: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    skipped: list[SkippedBackup] = field(default_factory=list)


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
        keys: KeySource | None = None,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        settle_seconds: float = 0.0,
    ) -> None:
        """`keys`: the location's backup keys (required to back up, restore or re-encrypt;
        deleting needs none). `settle_seconds`: how long the login files must stay unchanged
        after being copied (see snapshot.stable_copy)."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.store = store
        self.prefix = prefix
        self.location = location
        self.keep = keep
        self.layout = Layout(prefix, location)
        self._keys = keys
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry
        self._settle = settle_seconds
        self._lock = asyncio.Lock()

    async def backup(self, profile_dir: Path, origin: str) -> BackupRecord:
        """Snapshots the login of `origin` (the browser may be running) and uploads it.

        Raises SnapshotError, StoreUnavailable or StoreAccessDenied (KeysUnavailable among
        them; nothing is retried here: the previous backup stays the newest).
        """
        async with self._lock:
            start = time.monotonic()
            created = datetime.now(UTC)
            version = new_version(created)
            ring = self._ring()
            work = await asyncio.to_thread(scratch_dir, profile_dir, "backup")
            try:
                manifest = await asyncio.to_thread(
                    self._pack, profile_dir, origin, work, version, created, ring
                )
                await self.store.put(self.layout.sealed_key(version), work / "sealed")
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
                key=ring.current.name,
                duration_seconds=round(record.duration_seconds, 3),
            )
            await self._prune()
            return record

    def _ring(self) -> KeyRing:
        if self._keys is None:
            raise KeysUnavailable(f"no backup keys were given for location {self.location}")
        return self._keys()

    def _pack(
        self,
        profile_dir: Path,
        origin: str,
        work: Path,
        version: str,
        created: datetime,
        ring: KeyRing,
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
        seal(archive, manifest.to_json(), work / "sealed", ring.current, self.location, version)
        return manifest

    async def _prune(self) -> None:
        """Keeps the newest `keep` backups (sealed or not); drops an unencrypted one's manifest
        before its data, and data objects of unencrypted backups that never got a manifest (a
        crash mid-upload) once a newer backup exists."""
        try:
            keys = await self.store.list(self.layout.root)
            listing = self.layout.listing(keys)
            versions = listing.versions
            dropped = versions[: -self.keep]
            kept = set(versions[-self.keep :])
            newest = versions[-1] if versions else ""
            data = [v for v in self.layout.data_versions(keys) if v not in kept and v < newest]
            gone = [self.layout.sealed_key(v) for v in dropped if v in listing.sealed]
            gone += [self.layout.manifest_key(v) for v in dropped if v in listing.legacy]
            if gone:
                await self.store.delete(gone)
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
            listing = self.layout.listing(keys)
            versions = listing.versions
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
                    size = await self._restore_version(
                        profile_dir, version, version in listing.sealed, until
                    )
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

    async def _restore_version(
        self, profile_dir: Path, version: str, sealed: bool, until: float | None
    ) -> int:
        """Downloads, verifies and swaps in one version; raises _Unusable when it is bad."""
        work = await asyncio.to_thread(scratch_dir, profile_dir, "restore")
        try:
            archive, manifest = await self._fetch(version, sealed, work, until)
            await asyncio.to_thread(_unpack, archive, manifest, work / "profile")
            await asyncio.to_thread(swap_in, work / "profile", profile_dir)
            await asyncio.to_thread(remove_singletons, profile_dir)
            return manifest.size
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _fetch(
        self, version: str, sealed: bool, work: Path, until: float | None
    ) -> tuple[Path, Manifest]:
        """The archive of `version` in `work` and its manifest, verified against each other."""
        if sealed:
            raw = await self._download(self.layout.sealed_key(version), work, until, "sealed")
            return await self._open_sealed(raw, version, work)
        raw = await self._download(self.layout.manifest_key(version), work, until, "manifest")
        text = await asyncio.to_thread(raw.read_bytes)
        archive = await self._download(self.layout.data_key(version), work, until, "data")
        return archive, await self._checked(text, archive, version)

    async def _open_sealed(self, raw: Path, version: str, work: Path) -> tuple[Path, Manifest]:
        archive = work / "archive.tar.gz"
        ring = self._ring()
        try:
            text = await asyncio.to_thread(unseal, raw, archive, ring, self.location, version)
        except SealError as exc:
            raise _Unusable(str(exc)) from exc
        return archive, await self._checked(text, archive, version)

    async def _checked(self, text: bytes, archive: Path, version: str) -> Manifest:
        try:
            manifest = Manifest.from_json(text)
        except ValueError as exc:
            raise _Unusable(str(exc)) from exc
        if manifest.version != version or manifest.location != self.location:
            raise _Unusable("manifest names another version or location")
        await asyncio.to_thread(_verify, archive, manifest)
        return manifest

    async def reencrypt(self, work_dir: Path) -> ReencryptResult:
        """Seals every version with the current key: those sealed with an older key and those
        written before encryption (whose two objects are then deleted). Each version is one
        PUT, so a crash leaves it under its old key or its new one, never lost. A version that
        cannot be opened is left as it is and reported."""
        async with self._lock:
            ring = self._ring()
            result = ReencryptResult(ring.current.name)
            listing = self.layout.listing(await self.store.list(self.layout.root))
            for version in listing.versions:
                work = await asyncio.to_thread(scratch_dir, work_dir / "profile", "backup")
                try:
                    done = await self._reencrypt_version(
                        version, version in listing.sealed, ring, work
                    )
                except _Unusable as exc:
                    result.skipped.append(SkippedBackup(version, str(exc)))
                    log.warning("backup not re-encrypted", version=version, reason=str(exc))
                    continue
                finally:
                    await asyncio.to_thread(shutil.rmtree, work, True)
                (result.rewritten if done else result.current).append(version)
                if version in listing.legacy:
                    await self.store.delete(
                        [self.layout.manifest_key(version), self.layout.data_key(version)]
                    )
            log.info(
                "backups re-encrypted",
                location=self.location,
                key=result.key,
                rewritten=len(result.rewritten),
                current=len(result.current),
                skipped=len(result.skipped),
            )
            return result

    async def _reencrypt_version(
        self, version: str, sealed: bool, ring: KeyRing, work: Path
    ) -> bool:
        """False when the version was already sealed with the current key."""
        if sealed:
            raw = await self._download(self.layout.sealed_key(version), work, None, "sealed")
            try:
                with raw.open("rb") as source:
                    if key_name(source) == ring.current.name:
                        return False
            except SealError as exc:
                raise _Unusable(str(exc)) from exc
            archive, manifest = await self._open_sealed(raw, version, work)
        else:
            archive, manifest = await self._fetch(version, False, work, None)
        await asyncio.to_thread(
            seal, archive, manifest.to_json(), work / "new", ring.current, self.location, version
        )
        await self.store.put(self.layout.sealed_key(version), work / "new")
        return True

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


def _verify(archive: Path, manifest: Manifest) -> None:
    size = archive.stat().st_size
    if size != manifest.size:
        raise _Unusable(f"size {size} differs from the manifest's {manifest.size}")
    digest = sha256_of(archive)
    if digest != manifest.sha256:
        raise _Unusable(f"sha256 {digest} differs from the manifest's {manifest.sha256}")


def _unpack(archive: Path, manifest: Manifest, dest: Path) -> None:
    """Checks the file list while extracting into `dest` (verified by _verify) with a marker."""
    dest.mkdir()
    try:
        names = extract_tar_gz(archive, dest)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _Unusable(f"unreadable archive: {exc}") from exc
    if sorted(names) != sorted(manifest.files):
        raise _Unusable("archive contents differ from the manifest's file list")
    write_marker(dest, manifest.version, manifest.sha256)
