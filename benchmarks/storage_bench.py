"""Backup and restore of synthetic WhatsApp profiles against SeaweedFS on 127.0.0.1, side by
side with the seed's RemoteAuth zip of the same profile.

    python -m benchmarks.storage_bench [--runs 3]

Profiles have Chromium's real layout: the login (Local Storage + WhatsApp's IndexedDB) of the
seed's two sizes, about 1.5 MB and 32 MB, plus caches, a service worker and another origin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from session_pod.storage import BackupManager, S3Store, sealed
from session_pod.storage.archive import remote_auth_zip
from tests.support.s3 import SeaweedS3
from whatsapp_common.keys import KeyRing, NamedKey

ORIGIN = "https://web.whatsapp.com/"
WA = "Default/IndexedDB/https_web.whatsapp.com_0.indexeddb"
MB = 1024 * 1024


def leveldb_bytes(rng: random.Random, size: int) -> bytes:
    """Half incompressible (snappy blocks, keys, media thumbnails), half repetitive records."""
    noise = rng.randbytes(size // 2)
    record = b'{"id":"true_5491100000000@c.us_3EB0%06X","t":17000000%02d,"ack":3,"type":"chat"}'
    text = bytearray()
    while len(text) < size - len(noise):
        text += record % (rng.randrange(1 << 24), rng.randrange(100))
    return noise + bytes(text[: size - len(noise)])


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_profile(root: Path, login_size: int, cache_size: int, seed: int) -> None:
    rng = random.Random(seed)
    local_storage = root / "Default/Local Storage/leveldb"
    for name in ("CURRENT", "LOCK", "LOG"):
        write(local_storage / name, b"MANIFEST-000001\n" if name == "CURRENT" else b"")
    write(local_storage / "MANIFEST-000001", rng.randbytes(200))
    write(local_storage / "000003.log", leveldb_bytes(rng, 64 * 1024))
    idb = root / f"{WA}.leveldb"
    for name in ("CURRENT", "LOCK", "LOG"):
        write(idb / name, b"MANIFEST-000001\n" if name == "CURRENT" else b"")
    remaining = login_size - 64 * 1024
    blob_size = remaining // 10
    write(idb / "000004.log", leveldb_bytes(rng, min(4 * MB, remaining // 4)))
    table_bytes = remaining - blob_size - min(4 * MB, remaining // 4)
    for number in range(max(1, table_bytes // (2 * MB))):
        size = table_bytes // max(1, table_bytes // (2 * MB))
        write(idb / f"{number + 5:06d}.ldb", leveldb_bytes(rng, size))
    write(root / f"{WA}.blob/1/00/1", rng.randbytes(blob_size))
    write(root / "Default/IndexedDB/https_example.org_0.indexeddb.leveldb/000003.log", b"x" * 4096)
    caches = [
        "Default/Cache/Cache_Data",
        "Default/Code Cache/js",
        "Default/Service Worker/CacheStorage/0a1b",
        "Default/Service Worker/ScriptCache",
        "GrShaderCache",
    ]
    for number in range(cache_size // (512 * 1024)):
        directory = root / caches[number % len(caches)]
        write(directory / f"f_{number:06x}", rng.randbytes(512 * 1024))
    write(root / "Default/Preferences", b"{}" * 1000)
    write(root / "Local State", b"{}" * 500)


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def remote_auth_backup(profile: Path, work: Path, store: S3Store, key: str) -> int:
    """What RemoteAuth did: copy the live profile, zip what it keeps, upload the zip."""
    copy = work / "remote-auth-copy"
    await asyncio.to_thread(shutil.copytree, profile, copy, symlinks=True)
    await asyncio.to_thread(remote_auth_zip, copy, work / "RemoteAuth.zip")
    await store.put(key, work / "RemoteAuth.zip")
    size = (work / "RemoteAuth.zip").stat().st_size
    await asyncio.to_thread(shutil.rmtree, copy)
    return size


BENCH_MASTERS = KeyRing((NamedKey("bench", os.urandom(32)),))


async def remote_auth_restore(work: Path, store: S3Store, key: str) -> None:
    await store.get(key, work / "download.zip")
    target = work / "remote-auth-restored"
    shutil.rmtree(target, ignore_errors=True)
    with zipfile.ZipFile(work / "download.zip") as zf:
        await asyncio.to_thread(zf.extractall, target)


def crypto_share(
    work: Path, size: int, keys: KeyRing, location: str, runs: int
) -> tuple[list[float], list[float]]:
    """What sealing and unsealing an archive of `size` bytes cost, alone: the difference
    between an encrypted backup or restore and the same without encryption."""
    plain = work / "plain.bin"
    plain.write_bytes(os.urandom(size))
    seals, unseals = [], []
    for _ in range(runs):
        start = time.perf_counter()
        sealed.seal(plain, b"{}", work / "sealed.bin", keys.current, location, "v")
        seals.append(time.perf_counter() - start)
        start = time.perf_counter()
        sealed.unseal(work / "sealed.bin", work / "unsealed.bin", keys, location, "v")
        unseals.append(time.perf_counter() - start)
    return seals, unseals


async def bench(
    server: SeaweedS3, work: Path, name: str, login: int, cache: int, runs: int
) -> list[str]:
    profile = work / name / "profile"
    build_profile(profile, login, cache, seed=login)
    store = S3Store(
        server.bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )
    keys = BENCH_MASTERS.derive("backup", name)
    manager = BackupManager(store, "bench", name, keep=2, keys=lambda: keys)
    backups, restores = [], []
    for _ in range(runs):
        record = await manager.backup(profile, ORIGIN)
        backups.append(record.duration_seconds)
        target = work / name / "restored"
        shutil.rmtree(target, ignore_errors=True)
        restores.append(await timed(lambda t=target: manager.restore(t)))
    ra_backups, ra_restores = [], []
    for _ in range(runs):
        start = time.perf_counter()
        zip_size = await remote_auth_backup(profile, work / name, store, f"bench/{name}.zip")
        ra_backups.append(time.perf_counter() - start)
        ra_restores.append(
            await timed(lambda: remote_auth_restore(work / name, store, f"bench/{name}.zip"))
        )
    seal_seconds, unseal_seconds = crypto_share(work / name, record.size, keys, name, runs)
    remote_auth_zip(profile, work / name / "whole.zip", prune=False)
    whole_zip = (work / name / "whole.zip").stat().st_size
    login_bytes = tree_size(profile / "Default/Local Storage") + sum(
        tree_size(p) for p in (profile / "Default/IndexedDB").glob("https_web.whatsapp.com_0*")
    )
    median = statistics.median
    return [
        f"profile {name}: whole {tree_size(profile) / MB:.1f} MB, "
        f"login data {login_bytes / MB:.1f} MB",
        f"  this library : archive {record.size / MB:6.2f} MB, backup {median(backups):.3f} s, "
        f"restore {median(restores):.3f} s",
        f"    of which AES-256-GCM: seal {median(seal_seconds):.3f} s, "
        f"unseal {median(unseal_seconds):.3f} s (the archive's size, on this CPU)",
        f"  RemoteAuth   : zip     {zip_size / MB:6.2f} MB, backup {median(ra_backups):.3f} s, "
        f"restore {median(ra_restores):.3f} s (copy + zip of Default/IndexedDB + Local Storage)",
        f"  whole-profile zip: {whole_zip / MB:.2f} MB",
    ]


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        work = Path(tmp)
        with SeaweedS3(work / "s3") as server:
            lines = [
                f"SeaweedFS at {server.endpoint_url}; median of {runs} runs; cpu {os.cpu_count()}"
            ]
            lines += await bench(server, work, "small", int(1.5 * MB), 12 * MB, runs)
            lines += await bench(server, work, "large", 32 * MB, 48 * MB, runs)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
