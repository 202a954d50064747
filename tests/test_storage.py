"""Session storage against a real S3 server (SeaweedFS on 127.0.0.1, credentials enforced)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from session_pod import __version__
from session_pod.storage import (
    BackupManager,
    LocalStore,
    ObjectNotFound,
    S3Store,
    SnapshotUnstable,
    StorageSettings,
    StoreAccessDenied,
    StoreUnavailable,
    build_store,
    sealed,
    snapshot,
)
from session_pod.storage.archive import sha256_of, write_tar_gz
from session_pod.storage.manifest import Layout, Manifest, new_version
from session_pod.storage.profile import MARKER
from session_pod.storage.retry import RetryPolicy
from session_pod.storage.snapshot import origin_identifier, stable_copy
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import TEST_MASTERS, location_keys
from whatsapp_common.keys import KeyRing, NamedKey

T = TypeVar("T")
ORIGIN = "https://web.whatsapp.com/"
WA = "Default/IndexedDB/https_web.whatsapp.com_0.indexeddb"
CREDENTIALS = {"access_key_id": "k", "secret_access_key": "s", "region": "us-east-1"}
FAST_RETRY = RetryPolicy(deadline=30, base_delay=0.1, max_delay=0.5)


def keyed(
    store: Any,
    prefix: str,
    location: str,
    keep: int = 5,
    masters: KeyRing = TEST_MASTERS,
    **kw: Any,
) -> BackupManager:
    """A manager holding `location`'s backup keys, derived from `masters` as the operator does."""
    ring = masters.derive("backup", location)
    return BackupManager(store, prefix, location, keep, keys=lambda: ring, **kw)


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


def s3_store(server: SeaweedS3, **overrides: Any) -> S3Store:
    return S3Store(
        server.bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=overrides.get("access_key_id", server.access_key_id),
        secret_access_key=overrides.get("secret_access_key", server.secret_access_key),
        connect_timeout=2,
        max_attempts=1,
    )


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of its own for each test, so tests sharing the server never see each other."""
    return f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{os.getpid()}"


def make_profile(profile: Path, tag: str) -> None:
    """A profile with Chromium's real layout: login data, other origins, caches, locks."""
    files = {
        "Default/Local Storage/leveldb/CURRENT": b"MANIFEST-000001\n",
        "Default/Local Storage/leveldb/MANIFEST-000001": b"manifest " + tag.encode(),
        "Default/Local Storage/leveldb/000003.log": b"last-wid-md=" + tag.encode() * 50,
        "Default/Local Storage/leveldb/LOCK": b"",
        "Default/Local Storage/leveldb/LOG": b"info log",
        f"{WA}.leveldb/CURRENT": b"MANIFEST-000001\n",
        f"{WA}.leveldb/MANIFEST-000001": b"idb manifest",
        f"{WA}.leveldb/000005.ldb": os.urandom(4096) + tag.encode(),
        f"{WA}.leveldb/000004.log": b"wawc " + tag.encode() * 100,
        f"{WA}.leveldb/LOCK": b"",
        f"{WA}.blob/1/00/2": b"blob " + tag.encode(),
        "Default/IndexedDB/https_other.example_0.indexeddb.leveldb/000003.log": b"other",
        "Default/Cache/Cache_Data/data_0": os.urandom(2048),
        "Default/Service Worker/CacheStorage/abc/index": os.urandom(2048),
        "Default/Preferences": b"{}",
        "Local State": b"{}",
    }
    for relative, data in files.items():
        (profile / relative).parent.mkdir(parents=True, exist_ok=True)
        (profile / relative).write_bytes(data)
    if not (profile / "SingletonLock").is_symlink():
        (profile / "SingletonLock").symlink_to("other-host-4242")


def login_files(profile: Path) -> dict[str, bytes]:
    """What a restore must bring back: the login data of the WhatsApp origin, lock files aside."""
    roots = [profile / "Default/Local Storage/leveldb", profile / f"{WA}.leveldb"]
    roots.append(profile / f"{WA}.blob")
    return {
        path.relative_to(profile).as_posix(): path.read_bytes()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in ("LOCK", "LOG")
    }


def test_round_trip_restores_only_the_login(s3: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    expected = login_files(profile)
    manager = keyed(s3_store(s3), prefix, "13", retry=FAST_RETRY)

    record = run(manager.backup(profile, ORIGIN))

    assert s3.keys(f"{prefix}/") == [f"{prefix}/13/sealed/{record.version}"]
    assert json.loads((profile / MARKER).read_text())["version"] == record.version

    (profile / "Default/Local Storage/leveldb/000003.log").write_bytes(b"changed later")
    for path in sorted(profile.rglob("*"), reverse=True):  # the pod's volume is wiped
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    profile.rmdir()

    result = run(keyed(s3_store(s3), prefix, "13", retry=FAST_RETRY).restore(profile))

    assert result is not None and result.restored and result.version == record.version
    assert result.skipped == [] and result.size == record.size
    assert login_files(profile) == expected
    assert not (profile / "Default/Cache").exists()
    assert not (profile / "Default/Service Worker").exists()
    assert not list(profile.rglob("LOCK")) and not list(profile.glob("Singleton*"))
    assert json.loads((profile / MARKER).read_text())["version"] == record.version
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_restore_keeps_a_local_profile_that_is_current(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    manager = keyed(s3_store(s3), prefix, "13", retry=FAST_RETRY)
    first = run(manager.backup(profile, ORIGIN))
    (profile / "newer-than-backup").write_text("kept")

    kept = run(manager.restore(profile))

    assert kept is not None and not kept.restored and kept.version == first.version
    assert (profile / "newer-than-backup").exists()
    assert not list(profile.glob("Singleton*"))  # a killed browser's locks are gone

    second_profile = tmp_path / "elsewhere"
    make_profile(second_profile, "two")
    second = run(manager.backup(second_profile, ORIGIN))

    restored = run(manager.restore(profile))  # the local profile is older than the newest backup

    assert restored is not None and restored.restored and restored.version == second.version
    assert login_files(profile) == login_files(second_profile)
    assert not (profile / "newer-than-backup").exists()


def test_no_backup_is_none_only_when_the_listing_succeeded(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    assert run(keyed(s3_store(s3), prefix, "13").restore(tmp_path / "p")) is None
    down = S3Store(s3.bucket, endpoint_url="http://127.0.0.1:9", max_attempts=1, **CREDENTIALS)
    manager = keyed(down, prefix, "13", retry=RetryPolicy(deadline=0.5, base_delay=0.1))
    with pytest.raises(StoreUnavailable):
        run(manager.restore(tmp_path / "p"))


def corrupt_flip(s3: SeaweedS3, key: str) -> None:
    data = bytearray(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))


def corrupt_truncate(s3: SeaweedS3, key: str) -> None:
    data = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=data[:100])


def corrupt_replace(s3: SeaweedS3, key: str) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"torn upload")


def corrupt_last_chunk_dropped(s3: SeaweedS3, key: str) -> None:
    """A multi-chunk object cut at a chunk boundary: every remaining chunk is authentic."""
    data = s3.get(key)
    header = len(sealed.MAGIC) + 1 + data[len(sealed.MAGIC)] + sealed.SALT_BYTES
    whole = (len(data) - header) // (sealed.CHUNK + sealed.TAG_BYTES)
    assert whole >= 1, "the backup must span more than one chunk"
    cut = header + whole * (sealed.CHUNK + sealed.TAG_BYTES)
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=data[:cut])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (corrupt_flip, "failed authentication"),
        (corrupt_truncate, "failed authentication"),
        (corrupt_last_chunk_dropped, "failed authentication"),
        (corrupt_replace, "not a sealed backup object"),
    ],
)
def test_corrupt_newest_backup_falls_back_to_the_previous(
    s3: SeaweedS3, prefix: str, tmp_path: Path, damage: Any, reason: str
) -> None:
    manager = keyed(s3_store(s3), prefix, "13", retry=FAST_RETRY)
    make_profile(tmp_path / "v1", "one")
    make_profile(tmp_path / "v2", "two")
    # Incompressible bulk: the newest backup spans several chunks.
    (tmp_path / f"v2/{WA}.leveldb/000009.ldb").write_bytes(os.urandom(sealed.CHUNK * 2))
    good = run(manager.backup(tmp_path / "v1", ORIGIN))
    bad = run(manager.backup(tmp_path / "v2", ORIGIN))
    damage(s3, f"{prefix}/13/sealed/{bad.version}")

    result = run(manager.restore(tmp_path / "restored"))

    assert result is not None and result.restored and result.version == good.version
    assert [s.version for s in result.skipped] == [bad.version]
    assert reason in result.skipped[0].reason
    assert login_files(tmp_path / "restored") == login_files(tmp_path / "v1")


class CrashDuringUpload:
    """A store whose process "dies" while the backup's object is being uploaded."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    async def put(self, key: str, path: Path) -> None:
        raise KeyboardInterrupt("killed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_crash_mid_backup_leaves_the_previous_backup(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    good = run(keyed(s3_store(s3), prefix, "13").backup(profile, ORIGIN))
    expected = login_files(profile)
    make_profile(profile, "two")
    with pytest.raises(KeyboardInterrupt):
        run(keyed(CrashDuringUpload(s3_store(s3)), prefix, "13").backup(profile, ORIGIN))
    assert s3.keys(f"{prefix}/13/") == [f"{prefix}/13/sealed/{good.version}"]

    result = run(keyed(s3_store(s3), prefix, "13").restore(tmp_path / "new"))

    assert result is not None and result.version == good.version and result.skipped == []
    assert login_files(tmp_path / "new") == expected


def test_s3_down_at_restore_is_retried_until_it_is_back(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "s3")
    server.start()
    try:
        profile = tmp_path / "profile"
        make_profile(profile, "one")
        attempts: list[int] = []
        manager = keyed(
            s3_store(server),
            "p",
            "13",
            retry=RetryPolicy(deadline=None, base_delay=0.2, max_delay=0.5),
            on_retry=lambda attempt, _exc, _delay: attempts.append(attempt),
        )
        record = run(manager.backup(profile, ORIGIN))
        server.stop()

        async def scenario() -> Any:
            restore = asyncio.create_task(manager.restore(tmp_path / "restored"))
            while len(attempts) < 3:
                assert not restore.done(), restore
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.start)
            return await restore

        result = run(scenario())

        assert len(attempts) >= 3
        assert result is not None and result.restored and result.version == record.version
        assert login_files(tmp_path / "restored") == login_files(profile)
    finally:
        server.stop()


def test_wrong_credentials_are_a_clear_error_and_delete_nothing(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    run(keyed(s3_store(s3), prefix, "13").backup(profile, ORIGIN))
    before_keys = s3.keys(f"{prefix}/")
    before_files = login_files(profile)
    retried: list[int] = []
    for credentials in ({"secret_access_key": "wrong"}, {"access_key_id": "nobody"}):
        manager = keyed(
            s3_store(s3, **credentials),
            prefix,
            "13",
            retry=RetryPolicy(deadline=None),
            on_retry=lambda attempt, _e, _d: retried.append(attempt),
        )
        with pytest.raises(StoreAccessDenied):
            run(manager.restore(profile), timeout=10)
        with pytest.raises(StoreAccessDenied):
            run(manager.backup(profile, ORIGIN), timeout=10)
        with pytest.raises(StoreAccessDenied):
            run(manager.delete_all(), timeout=10)

    assert retried == []
    assert s3.keys(f"{prefix}/") == before_keys
    assert login_files(profile) == before_files


def test_two_locations_never_touch_each_other(s3: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    one = keyed(s3_store(s3), prefix, "1", keep=1)
    thirteen = keyed(s3_store(s3), prefix, "13", keep=1)  # "1" is a prefix of "13"
    make_profile(tmp_path / "p1", "location-one")
    make_profile(tmp_path / "p13", "location-thirteen")
    run(thirteen.backup(tmp_path / "p13", ORIGIN))
    for _ in range(2):  # pruning of "1" must not see "13"
        run(one.backup(tmp_path / "p1", ORIGIN))
    run(thirteen.backup(tmp_path / "p13", ORIGIN))

    run(one.restore(tmp_path / "r1"))
    run(thirteen.restore(tmp_path / "r13"))
    assert login_files(tmp_path / "r1") == login_files(tmp_path / "p1")
    assert login_files(tmp_path / "r13") == login_files(tmp_path / "p13")

    assert run(one.delete_all()) == 1
    assert s3.keys(f"{prefix}/1/") == []
    assert len(s3.keys(f"{prefix}/13/")) == 1
    assert run(one.restore(tmp_path / "r1-again")) is None


def test_keeps_the_newest_n_backups(s3: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    manager = keyed(s3_store(s3), prefix, "13", keep=2)
    make_profile(tmp_path / "p", "one")
    versions = [run(manager.backup(tmp_path / "p", ORIGIN)).version for _ in range(4)]

    assert s3.keys(f"{prefix}/13/") == [f"{prefix}/13/sealed/{v}" for v in versions[2:]]


def test_delete_all_removes_every_object_of_the_location(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    manager = keyed(s3_store(s3), prefix, "13")
    make_profile(tmp_path / "p", "one")
    for _ in range(3):
        run(manager.backup(tmp_path / "p", ORIGIN))

    assert run(manager.delete_all()) == 3
    assert s3.keys(f"{prefix}/13/") == []
    assert run(manager.restore(tmp_path / "r")) is None


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    manager = keyed(store, "whatsapp-sessions", "13", keep=2)
    make_profile(tmp_path / "p", "one")
    for _ in range(3):
        record = run(manager.backup(tmp_path / "p", ORIGIN))

    result = run(manager.restore(tmp_path / "r"))

    assert result is not None and result.version == record.version
    assert login_files(tmp_path / "r") == login_files(tmp_path / "p")
    keys = run(store.list("whatsapp-sessions/13/"))
    assert len(keys) == 2 and run(store.list("whatsapp-sessions/1")) == keys
    assert run(store.list("whatsapp-sessions/13/s")) == keys
    assert run(store.list("whatsapp-sessions/13/v")) == []
    assert not list((tmp_path / "backups").rglob("*.partial"))
    with pytest.raises(ObjectNotFound):
        run(store.get("whatsapp-sessions/13/nothing", tmp_path / "x"))


def test_store_errors_are_never_no_backup(s3: SeaweedS3, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        run(s3_store(s3).get("no/such/key", tmp_path / "x"))
    down = S3Store("bucket", endpoint_url="http://127.0.0.1:9", max_attempts=1, **CREDENTIALS)
    with pytest.raises(StoreUnavailable):
        run(down.list("p/13/"))
    missing_bucket = S3Store(
        "no-such-bucket",
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )
    with pytest.raises(StoreAccessDenied):
        run(missing_bucket.list("p/13/"))


def test_stable_copy_copies_again_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    log_file = profile / f"{WA}.leveldb/000004.log"
    copies: list[Path] = []
    real_copy = snapshot._copy_file

    def copy_while_chromium_writes(source: Path, target: Path) -> None:
        real_copy(source, target)
        copies.append(source)
        if len(copies) == 2:  # during the first pass, after some files were copied
            with log_file.open("ab") as log:
                log.write(b"a record written during the copy")

    monkeypatch.setattr(snapshot, "_copy_file", copy_while_chromium_writes)
    dest = tmp_path / "copy"
    dest.mkdir()

    files = stable_copy(profile, ORIGIN, dest, pause=0)

    assert len(copies) == 2 * len(files)  # two full passes
    assert (dest / log_file.relative_to(profile)).read_bytes() == log_file.read_bytes()
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == set(files)


def test_stable_copy_gives_up_when_the_profile_never_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "profile"
    make_profile(profile, "one")
    real_copy = snapshot._copy_file

    def copy_while_chromium_always_writes(source: Path, target: Path) -> None:
        real_copy(source, target)
        with (profile / f"{WA}.leveldb/000004.log").open("ab") as log:
            log.write(b"x")

    monkeypatch.setattr(snapshot, "_copy_file", copy_while_chromium_always_writes)
    dest = tmp_path / "copy"
    dest.mkdir()
    with pytest.raises(SnapshotUnstable):
        stable_copy(profile, ORIGIN, dest, attempts=3, pause=0)


def test_origin_identifier_matches_chromium() -> None:
    assert origin_identifier("https://web.whatsapp.com/") == "https_web.whatsapp.com_0"
    assert origin_identifier("https://web.whatsapp.com:443") == "https_web.whatsapp.com_0"
    # Checked against Chromium: an explicit port is part of the name, with no "_0" after it.
    assert origin_identifier("http://127.0.0.1:38897/") == "http_127.0.0.1_38897"
    with pytest.raises(ValueError):
        origin_identifier("web.whatsapp.com")


def test_settings_read_the_seed_variables() -> None:
    seed = StorageSettings.from_env(
        {
            "AWS_S3_BUCKET_NAME": "seed-bucket",
            "AWS_S3_REGION": "sa-east-1",
            "AWS_S3_FOLDER_NAME": "/sessions/",
            "AWS_S3_ACCESS_KEY_ID": "AKIASEED",
            "AWS_S3_SECRET_ACCES_KEY_ID": "misspelled-secret",
        }
    )
    assert (seed.bucket, seed.region, seed.prefix) == ("seed-bucket", "sa-east-1", "sessions")
    assert (seed.access_key_id, seed.secret_access_key) == ("AKIASEED", "misspelled-secret")
    assert "misspelled-secret" not in repr(seed)
    assert isinstance(build_store(seed), S3Store)

    alias = StorageSettings.from_env(
        {"AWS_S3_ACCESS_KEY_ID": "a", "AWS_S3_SECRET_ACCESS_KEY_ID": "spelled-right"}
    )
    assert alias.secret_access_key == "spelled-right"

    new = StorageSettings.from_env(
        {
            "S3_BUCKET": "new",
            "AWS_S3_BUCKET_NAME": "seed",
            "S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "S3_PREFIX": "p",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_S3_SECRET_ACCES_KEY_ID": "seed-secret",
            "BACKUP_KEEP": "3",
            "BACKUP_INTERVAL_SECONDS": "60",
        }
    )
    assert (new.bucket, new.endpoint_url, new.prefix) == ("new", "http://127.0.0.1:8333", "p")
    assert (new.secret_access_key, new.keep, new.interval_seconds) == ("s", 3, 60.0)


def test_settings_defaults_and_errors(tmp_path: Path) -> None:
    default = StorageSettings.from_env({"DATA_DIR": str(tmp_path)})
    assert default.bucket is None and default.prefix == "whatsapp-sessions"
    assert (default.keep, default.interval_seconds) == (5, 900.0)
    store = build_store(default)
    assert isinstance(store, LocalStore) and store.directory == tmp_path / "backups"
    local = StorageSettings.from_env({"LOCAL_BACKUP_DIR": str(tmp_path / "b")})
    assert local.local_dir == tmp_path / "b"
    for env in (
        {"BACKUP_KEEP": "0"},
        {"BACKUP_KEEP": "2.5"},
        {"BACKUP_INTERVAL_SECONDS": "soon"},
        {"AWS_ACCESS_KEY_ID": "only-the-key"},
    ):
        with pytest.raises(ValueError):
            StorageSettings.from_env(env)


OLD_MASTERS = KeyRing((NamedKey("2026-06", b"o" * 32),))
NEW_MASTERS = KeyRing((NamedKey("2026-12", b"n" * 32), *OLD_MASTERS))


def sealed_key_name(data: bytes) -> str:
    return sealed.key_name(io.BytesIO(data))


def test_the_bucket_holds_nothing_readable(s3: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    """What a leaked bucket shows: not a tar, not a gzip, no file name, no profile byte, no
    location beyond the object's key, no metadata."""
    location = "beauty-shop-4711"
    make_profile(tmp_path / "p", "customer-secret-tag")
    record = run(keyed(s3_store(s3), prefix, location).backup(tmp_path / "p", ORIGIN))
    (key,) = s3.keys(f"{prefix}/")
    assert key == f"{prefix}/{location}/sealed/{record.version}"
    data = s3.get(key)

    assert not data.startswith(b"\x1f\x8b")
    with pytest.raises(tarfile.TarError), tarfile.open(fileobj=io.BytesIO(data)):
        pass
    with pytest.raises(OSError):
        gzip.decompress(data)
    for plain in (location, "whatsapp", "Local Storage", "MANIFEST-000001", "customer-secret-tag"):
        assert plain.encode() not in data, plain
    assert s3.client().head_object(Bucket=s3.bucket, Key=key)["Metadata"] == {}
    assert sealed_key_name(data) == "test-1"  # the master key's name: all the header says


def test_an_archive_copied_from_another_location_or_version_is_refused(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    make_profile(tmp_path / "p13", "thirteen")
    make_profile(tmp_path / "p7", "seven")
    thirteen = keyed(s3_store(s3), prefix, "13")
    good = run(thirteen.backup(tmp_path / "p13", ORIGIN))
    other = run(keyed(s3_store(s3), prefix, "7").backup(tmp_path / "p7", ORIGIN))
    later = [new_version(datetime.now(UTC) + timedelta(seconds=s)) for s in (1, 2)]
    client = s3.client()
    copies = {
        later[0]: f"{prefix}/13/sealed/{good.version}",  # 13's own, under another version
        later[1]: f"{prefix}/7/sealed/{other.version}",  # location 7's, newest
    }
    for version, source in copies.items():
        client.put_object(
            Bucket=s3.bucket, Key=f"{prefix}/13/sealed/{version}", Body=s3.get(source)
        )

    result = run(thirteen.restore(tmp_path / "restored"))

    assert result is not None and result.restored and result.version == good.version
    assert [s.version for s in result.skipped] == [later[1], later[0]]
    assert all("failed authentication" in s.reason for s in result.skipped)
    assert login_files(tmp_path / "restored") == login_files(tmp_path / "p13")


def test_a_backup_restores_after_a_master_key_rotation(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    make_profile(tmp_path / "old", "before-rotation")
    make_profile(tmp_path / "new", "after-rotation")
    before = run(
        keyed(s3_store(s3), prefix, "13", masters=OLD_MASTERS).backup(tmp_path / "old", ORIGIN)
    )
    rotated = keyed(s3_store(s3), prefix, "13", masters=NEW_MASTERS)  # the new key beside the old

    restored = run(rotated.restore(tmp_path / "r1"))
    assert restored is not None and restored.version == before.version and not restored.skipped
    assert login_files(tmp_path / "r1") == login_files(tmp_path / "old")

    after = run(rotated.backup(tmp_path / "new", ORIGIN))
    names = {k: sealed_key_name(s3.get(k)) for k in s3.keys(f"{prefix}/13/")}
    assert sorted(names.values()) == ["2026-06", "2026-12"]
    new_only = KeyRing(NEW_MASTERS.keys[:1])
    refused = run(keyed(s3_store(s3), prefix, "13", masters=new_only).restore(tmp_path / "r2"))
    assert refused is not None and refused.version == after.version

    result = run(rotated.reencrypt(tmp_path / "work"))

    assert result.key == "2026-12"
    assert result.rewritten == [before.version] and result.current == [after.version]
    assert {sealed_key_name(s3.get(k)) for k in s3.keys(f"{prefix}/13/")} == {"2026-12"}
    s3.client().delete_object(Bucket=s3.bucket, Key=f"{prefix}/13/sealed/{after.version}")
    old_only_now = run(keyed(s3_store(s3), prefix, "13", masters=new_only).restore(tmp_path / "r3"))
    assert old_only_now is not None and old_only_now.version == before.version
    assert not old_only_now.skipped
    assert login_files(tmp_path / "r3") == login_files(tmp_path / "old")
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]


def test_a_key_the_pod_does_not_hold_is_a_fallback_that_names_it(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    make_profile(tmp_path / "p", "one")
    good = run(
        keyed(s3_store(s3), prefix, "13", masters=OLD_MASTERS).backup(tmp_path / "p", ORIGIN)
    )
    unknown = KeyRing((NamedKey("lost", b"l" * 32),))
    run(keyed(s3_store(s3), prefix, "13", masters=unknown).backup(tmp_path / "p", ORIGIN))

    result = run(keyed(s3_store(s3), prefix, "13", masters=OLD_MASTERS).restore(tmp_path / "r"))

    assert result is not None and result.version == good.version
    assert "'lost', not among this pod's keys ['2026-06']" in result.skipped[0].reason


def write_unencrypted_backup(s3: SeaweedS3, prefix: str, location: str, profile: Path) -> str:
    """A backup as this program wrote it before encryption: tar.gz, then its manifest."""
    created = datetime.now(UTC) - timedelta(days=1)
    version = new_version(created)
    copy = profile.parent / "legacy-copy"
    copy.mkdir()
    files = stable_copy(profile, ORIGIN, copy)
    archive = profile.parent / "legacy.tar.gz"
    write_tar_gz(copy, files, archive)
    manifest = Manifest(
        version=version,
        sha256=sha256_of(archive),
        size=archive.stat().st_size,
        created=created.isoformat(),
        program_version=__version__,
        location=location,
        origin=ORIGIN,
        files={path: size for path, (size, _mtime) in sorted(files.items())},
    )
    layout = Layout(prefix, location)
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key=layout.data_key(version), Body=archive.read_bytes())
    client.put_object(Bucket=s3.bucket, Key=layout.manifest_key(version), Body=manifest.to_json())
    return version


def test_an_unencrypted_backup_restores_and_is_then_re_encrypted(
    s3: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    make_profile(tmp_path / "p", "from-before")
    expected = login_files(tmp_path / "p")
    version = write_unencrypted_backup(s3, prefix, "13", tmp_path / "p")
    manager = keyed(s3_store(s3), prefix, "13")

    result = run(manager.restore(tmp_path / "r"))

    assert result is not None and result.restored and result.version == version
    assert login_files(tmp_path / "r") == expected
    newer = run(manager.backup(tmp_path / "r", ORIGIN))  # the next backup is sealed
    assert s3.keys(f"{prefix}/13/") == [
        f"{prefix}/13/manifests/{version}.json",
        f"{prefix}/13/sealed/{newer.version}",
        f"{prefix}/13/versions/{version}.tar.gz",
    ]

    reencrypted = run(manager.reencrypt(tmp_path / "work"))

    assert reencrypted.rewritten == [version] and reencrypted.current == [newer.version]
    keys = s3.keys(f"{prefix}/13/")
    assert keys == [f"{prefix}/13/sealed/{version}", f"{prefix}/13/sealed/{newer.version}"]
    s3.client().delete_object(Bucket=s3.bucket, Key=keys[1])
    again = run(manager.restore(tmp_path / "r2"))
    assert again is not None and again.version == version and not again.skipped
    assert login_files(tmp_path / "r2") == expected


@pytest.mark.parametrize("size", [0, 1, sealed.CHUNK - 5, sealed.CHUNK, 2 * sealed.CHUNK + 3])
def test_sealing_round_trips_at_every_chunk_boundary(tmp_path: Path, size: int) -> None:
    key = TEST_MASTERS.derive("backup", "13")
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(size))
    manifest = b'{"m": 1}'
    sealed.seal(plain, manifest, tmp_path / "sealed", key.current, "13", "v1")

    assert sealed.unseal(tmp_path / "sealed", tmp_path / "out", key, "13", "v1") == manifest
    assert (tmp_path / "out").read_bytes() == plain.read_bytes()
    with pytest.raises(sealed.SealError, match="failed authentication"):
        sealed.unseal(tmp_path / "sealed", tmp_path / "out", key, "13", "v2")


def test_chunks_cannot_be_reordered(tmp_path: Path) -> None:
    key = TEST_MASTERS.derive("backup", "13")
    (tmp_path / "plain").write_bytes(os.urandom(3 * sealed.CHUNK))
    sealed.seal(tmp_path / "plain", b"{}", tmp_path / "sealed", key.current, "13", "v1")
    data = (tmp_path / "sealed").read_bytes()
    header = len(sealed.MAGIC) + 1 + data[len(sealed.MAGIC)] + sealed.SALT_BYTES
    step = sealed.CHUNK + sealed.TAG_BYTES
    first, second = data[header : header + step], data[header + step : header + 2 * step]
    (tmp_path / "swapped").write_bytes(data[:header] + second + first + data[header + 2 * step :])

    with pytest.raises(sealed.SealError, match="chunk 0 failed authentication"):
        sealed.unseal(tmp_path / "swapped", tmp_path / "out", key, "13", "v1")


def test_the_reencrypt_command_seals_old_versions_with_the_current_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    make_profile(tmp_path / "p", "one")
    old = run(
        keyed(store, "whatsapp-sessions", "13", masters=OLD_MASTERS).backup(tmp_path / "p", ORIGIN)
    )
    env = {  # the pod's environment, as `kubectl exec` gives it
        **os.environ,
        **location_keys("13"),
        "LOCATION_ID": "13",
        "DATA_DIR": str(tmp_path / "data"),
        "LOCAL_BACKUP_DIR": str(tmp_path / "backups"),
        "BACKUP_KEYS": NEW_MASTERS.derive("backup", "13").to_text(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "session_pod.reencrypt"], env=env, capture_output=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["key"] == "2026-12" and result["rewritten"] == [old.version]
    (key,) = run(store.list("whatsapp-sessions/13/"))
    assert sealed_key_name((tmp_path / "backups" / key).read_bytes()) == "2026-12"
