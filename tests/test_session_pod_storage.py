"""The WhatsApp login survives pod crashes and lost volumes through S3 backups
(a real SeaweedFS with credentials enforced, real pods, real Chromium, the double)."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import wait_until
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]


@pytest.fixture
def s3_env(s3_server: SeaweedS3) -> dict[str, str]:
    """The shared S3 server, under a prefix of this test's own."""
    return {**s3_server.env(), "S3_PREFIX": f"t-{uuid.uuid4().hex[:8]}"}


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """An S3 server this test may stop and start."""
    with SeaweedS3(tmp_path / "own-s3") as server:
        yield server


def linked_and_backed_up(pod: SessionPod, double: Double, phone: str) -> dict[str, object]:
    pod.link(double, phone)
    return pod.events.wait_for("remote_session_saved", timeout=30)["data"]


def assert_restored(pod: SessionPod, phone: str, timeout: float = 30) -> None:
    """Ready as the same phone without ever showing a QR: the login came back from storage."""
    pod.wait_state("ready", timeout=timeout)
    assert pod.status()["phone"] == phone
    assert pod.events.of_type("qr") == []


def version_of(key: str) -> str:
    return Path(key).name


def backup_keys(s3: SeaweedS3, env: dict[str, str], location: str) -> list[str]:
    return s3.keys(f"{env['S3_PREFIX']}/{location}/")


def test_two_locations_come_back_after_kill_9_on_empty_volumes(
    start_pod: StartPod,
    double: Double,
    s3_server: SeaweedS3,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    phones = {"21": new_phone(), "22": new_phone()}
    first = {loc: start_pod(loc, tmp_path / f"first-{loc}", **s3_env) for loc in phones}
    for location, pod in first.items():
        saved = linked_and_backed_up(pod, double, phones[location])
        assert saved["trigger"] == "initial sync finished"
        assert saved["size"] > 0 and saved["version"]
    for pod in first.values():
        pod.kill()

    second = {loc: start_pod(loc, tmp_path / f"second-{loc}", **s3_env) for loc in phones}
    for location, pod in second.items():
        assert_restored(pod, phones[location])
        assert pod.events.wait_for("session_restored")["data"]["version"]
    locations = {key.split("/")[1] for key in s3_server.keys(s3_env["S3_PREFIX"] + "/")}
    assert locations == {"21", "22"}


def test_a_corrupt_newest_backup_falls_back_to_the_previous_one(
    start_pod: StartPod,
    double: Double,
    s3_server: SeaweedS3,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    pod = start_pod("31", tmp_path / "first", **s3_env)
    linked_and_backed_up(pod, double, new_phone())
    assert pod.stop() == 0  # SIGTERM: a second backup, of the closed profile
    versions = [k for k in backup_keys(s3_server, s3_env, "31") if "/sealed/" in k]
    assert len(versions) == 2
    newest = versions[-1]
    sealed = bytearray(s3_server.get(newest))
    sealed[len(sealed) // 2] ^= 0x01  # one bit, inside an encrypted chunk
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=newest, Body=bytes(sealed))

    restored = start_pod("31", tmp_path / "second", **s3_env)
    restored.wait_state("ready")
    fallback = restored.events.wait_for("backup_fallback")["data"]
    assert [s["version"] for s in fallback["skipped"]] == [version_of(newest)]
    assert "failed authentication" in fallback["skipped"][0]["reason"]
    assert fallback["version"] == version_of(versions[0])
    assert restored.events.of_type("qr") == []


def test_s3_down_at_start_is_retried_without_a_qr_until_it_is_back(
    start_pod: StartPod, double: Double, own_s3: SeaweedS3, tmp_path: Path
) -> None:
    env = {**own_s3.env(), "S3_PREFIX": "down"}
    phone = new_phone()
    pod = start_pod("41", tmp_path / "first", **env)
    linked_and_backed_up(pod, double, phone)
    pod.kill()
    own_s3.stop()

    waiting = start_pod("41", tmp_path / "second", **env)
    wait_until(lambda: len(waiting.events.of_type("storage_unavailable")) >= 2, 30, "retries")
    status = waiting.status()
    assert status["state"] == "starting"
    assert status["storage_error"]
    own_s3.start()
    assert_restored(waiting, phone, timeout=60)


def test_kill_9_during_an_upload_leaves_the_previous_backup_restorable(
    start_pod: StartPod,
    double: Double,
    s3_server: SeaweedS3,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    phone = new_phone()
    pod = start_pod("51", tmp_path / "first", BACKUP_INTERVAL_SECONDS="1", **s3_env)
    linked_and_backed_up(pod, double, phone)
    # Incompressible bulk in the login data makes each backup take about a second.
    (database,) = (pod.data_dir / "profile/Default/IndexedDB").glob("*.indexeddb.leveldb")
    (database / "bulk.bin").write_bytes(os.urandom(40 * 2**20))
    pod.events.wait_for("remote_session_saved", lambda d: d["size"] > 30 * 2**20, timeout=60)

    def uploading() -> bool:
        lines = pod.program.log_path.read_text().splitlines()
        started = max(i for i, line in enumerate(lines) if '"backup started"' in line)
        return not any('"remote_session_saved"' in line for line in lines[started:])

    wait_until(uploading, 20, "a backup in progress", interval=0.02)
    pod.kill()

    restored = start_pod("51", tmp_path / "second", **s3_env)
    assert_restored(restored, phone)


def test_wrong_credentials_are_a_clear_failure_and_delete_nothing(
    start_pod: StartPod,
    double: Double,
    s3_server: SeaweedS3,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    pod = start_pod("61", tmp_path / "first", **s3_env)
    linked_and_backed_up(pod, double, new_phone())
    pod.kill()
    before = backup_keys(s3_server, s3_env, "61")

    wrong = start_pod(
        "61", tmp_path / "second", **{**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    )
    status = wrong.wait_state("failed")
    assert re.search(
        r"backup storage error: .*(denied|Signature|credentials)", status["last_error"], re.I
    ), status["last_error"]
    assert wrong.get("/healthz").status_code == 503
    assert wrong.events.of_type("qr") == []
    assert backup_keys(s3_server, s3_env, "61") == before


def test_logout_removes_the_locations_backups_only(
    start_pod: StartPod,
    double: Double,
    s3_server: SeaweedS3,
    s3_env: dict[str, str],
    tmp_path: Path,
) -> None:
    keeper = start_pod("71", tmp_path / "keeper", **s3_env)
    leaver = start_pod("72", tmp_path / "leaver", **s3_env)
    linked_and_backed_up(keeper, double, new_phone())
    linked_and_backed_up(leaver, double, new_phone())
    assert leaver.post("/logout", {"location_identifier": "72"}).status_code == 200
    assert backup_keys(s3_server, s3_env, "72") == []
    assert backup_keys(s3_server, s3_env, "71") != []
    assert leaver.status()["last_backup"] is None


def test_remote_logout_keeps_the_backups(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    phone = new_phone()
    pod = start_pod("81", tmp_path / "pod")  # no bucket: the local backup directory
    linked_and_backed_up(pod, double, phone)
    manifests = sorted((pod.data_dir / "backups").rglob("sealed/*"))
    assert manifests
    double.control("POST", f"/phones/{phone}/logout")
    pod.wait_state("qr_required")
    assert sorted((pod.data_dir / "backups").rglob("sealed/*")) == manifests
    shutil.rmtree(pod.data_dir / "profile", ignore_errors=True)
