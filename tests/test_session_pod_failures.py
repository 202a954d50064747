"""No failure is silent in the session pod: what its tasks did not expect becomes a state, a
metric and a log line, and liveness says so."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from session_pod.api import OUTBOX
from session_pod.app import create_app
from session_pod.backup_schedule import BackupSchedule
from session_pod.config import Settings
from session_pod.delivery.store import Database
from session_pod.events import EventBus
from session_pod.session import Session
from session_pod.storage import BackupManager
from tests.support.database_faults import REFUSE_INSERTS
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import TEST_MASTERS, Double, SessionPod, location_keys
from whatsapp_common.objectstore import LocalStore

StartPod = Callable[..., SessionPod]


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs as the pod's volume (unmounted afterwards)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume)], check=True)
    yield volume
    subprocess.run(["umount", "-l", str(volume)], check=False)


@pytest.mark.slow
def test_a_restore_failing_unexpectedly_fails_the_session_and_liveness(
    start_pod: StartPod, small_volume: Path, tmp_path: Path, double: Double
) -> None:
    """A backup whose login unpacks to more than the volume holds (the archive itself is
    small): unpacking runs out of space, an error the restore does not expect. The session is
    `failed` with the reason, /healthz 503, counted."""
    backups, profile = tmp_path / "backups", tmp_path / "profile"
    origin = double.url + "/"
    leveldb = profile / "Default/Local Storage/leveldb"
    leveldb.mkdir(parents=True)
    (leveldb / "000003.log").write_bytes(bytes(4 * 2**20))
    keys = TEST_MASTERS.derive("backup", "51")
    manager = BackupManager(LocalStore(backups), "whatsapp-sessions", "51", keys=lambda: keys)
    asyncio.run(manager.backup(profile, origin))

    pod = start_pod("51", small_volume / "pod", LOCAL_BACKUP_DIR=str(backups))
    status = pod.wait_state("failed", timeout=30)
    assert "No space left on device" in status["last_error"], status
    health = pod.get("/healthz")
    assert health.status_code == 503 and "No space left" in health.json()["detail"]
    assert (
        'wa_background_task_failures_total{task="browser-supervisor"} 1.0'
        in pod.get("/metrics").text
    )
    assert wait_until(lambda: "session supervisor failed" in pod.program.log_tail(80), 5, "log")


def test_one_failing_listener_does_not_keep_an_event_from_the_others() -> None:
    async def scenario() -> list[str]:
        bus = EventBus()
        seen: list[str] = []

        def broken(event: object) -> None:
            raise RuntimeError("listener bug")

        bus.add_listener(broken)
        bus.add_listener(lambda event: seen.append(event.type))  # type: ignore[attr-defined]
        stream = bus.subscribe()
        bus.publish("ready", {"phone": "1"})
        first = await anext(stream)
        seen.append(f"stream:{first.type}")
        await stream.aclose()
        return seen

    assert asyncio.run(scenario()) == ["ready", "stream:ready"]


@pytest.mark.slow
def test_a_webhook_the_database_refuses_fails_the_session_and_liveness(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    """The event loop hands each webhook to the database's writer thread: when SQLite refuses
    the write (as a full disk would), the session turns `failed` with the reason."""
    data = tmp_path / "pod-52"
    pod = start_pod("52", data, RAILS_APP_URL="http://127.0.0.1", RAILS_APP_PORT="9")
    pod.wait_state("qr_required")
    Database.of(data / "delivery.db", REFUSE_INSERTS).close()
    double.control("POST", "/qr/rotate")  # a new QR code: a `qr` webhook to queue
    status = pod.wait_state("failed", timeout=20)
    assert "webhook outbox unusable" in status["last_error"], status
    assert "disk full" in status["last_error"]
    health = pod.get("/healthz")
    assert health.status_code == 503 and "webhook outbox unusable" in health.json()["detail"]


def test_a_backup_schedule_broken_by_an_unforeseen_error_is_said_and_started_again(
    tmp_path: Path,
) -> None:
    """Not a store or snapshot error (those are reported by the backup itself): a bug. The
    periodic backups must not stop without a word while the session stays ready."""
    env = {
        **location_keys("53"),
        "LOCATION_ID": "53",
        "DATA_DIR": str(tmp_path / "data"),
        "BACKUP_INTERVAL_SECONDS": "1",
    }
    seen: list[dict[str, object]] = []

    async def scenario() -> int:
        bus = EventBus()
        bus.add_listener(
            lambda event: seen.append(event.data) if event.type == "backup_failed" else None
        )
        schedule = BackupSchedule(Settings.from_env(env), bus)
        calls = 0

        async def broken_backup(*_: object) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("a bug in the backup")

        schedule._manager.backup = broken_backup  # type: ignore[method-assign]

        async def finished() -> bool:
            return True

        schedule.session_ready(finished)
        await asyncio.sleep(1.6)  # the first run breaks at once, the second after 1 s
        schedule.session_not_ready()
        return calls

    assert asyncio.run(scenario()) == 2
    assert [e["trigger"] for e in seen] == ["schedule", "schedule"]
    assert all("a bug in the backup" in str(e["error"]) for e in seen)


def test_a_shutdown_whose_final_backup_breaks_still_drains_the_outbox_and_closes_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM's cleanup with a bug in closing the session (the final backup, say): the
    webhook queued last still reaches Rails and the database is closed (its WAL checkpointed
    away), and the error is not swallowed."""
    rails = RailsReceiver()
    rails.start()
    data = tmp_path / "data"
    env = {**location_keys("55"), **rails.env("secret"), "LOCATION_ID": "55", "DATA_DIR": str(data)}

    async def no_browser(self: Session) -> None:
        return None

    async def broken_close(self: Session) -> None:
        raise RuntimeError("a bug in the final backup")

    monkeypatch.setattr(Session, "start", no_browser)
    monkeypatch.setattr(Session, "close", broken_close)

    async def scenario() -> None:
        app = create_app(Settings.from_env(env))
        runner = web.AppRunner(app)
        await runner.setup()
        assert (data / "delivery.db-wal").exists()
        rails.stop()  # Rails away: the webhook waits in the outbox
        app[OUTBOX].enqueue_soon("state", {"state": "ready"}, lambda exc: None)
        await asyncio.sleep(0.3)
        rails.start()
        with pytest.raises(RuntimeError, match="a bug in the final backup"):
            await runner.cleanup()

    try:
        asyncio.run(scenario())
        assert [e["event"] for e in rails.events()] == ["state"]
        assert not (data / "delivery.db-wal").exists()
    finally:
        rails.stop()
