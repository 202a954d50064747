"""`python -m whatsapp_router.local` (`wa-local`): the router without Kubernetes.

The same app, with a backend that runs one session pod process per location on 127.0.0.1
(each with its own DATA_DIR under LOCAL_DATA_DIR, local-directory backups unless S3 is
configured), restarts a process that dies, starts the known locations again on the next
start, stops them all on SIGTERM/SIGINT, and prints a pending QR code in the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import segno

from whatsapp_common import logs
from whatsapp_common.answers import ApiError
from whatsapp_common.backoff import backoff_delay
from whatsapp_common.files import atomic_write
from whatsapp_common.keys import KeyRing, new_secret, parse_ring
from whatsapp_common.link_tokens import PURPOSE as LINK_TOKEN
from whatsapp_common.naming import session_name, valid_location_id
from whatsapp_common.pod_auth import PURPOSE as POD_TOKEN
from whatsapp_common.pod_auth import MasterKeys, PodCredentials, first_accepted
from whatsapp_common.states import Phase, SessionState, phase_of
from whatsapp_common.tasks import cancel_and_wait

from .app import serve
from .config import ConfigError, RouterSettings
from .directory import Directory, PodRecord, SessionRecord, label_of
from .metrics import RouterMetrics

log = logs.get_logger("whatsapp_router.local")

POLL_SECONDS = 1.0  # how often each pod's /status is read (readiness, phase, QR)
STOP_GRACE_SECONDS = 30.0  # the pod's final backup runs on SIGTERM
STABLE_SECONDS = 60.0  # a pod that ran this long restarts without backoff
ROUTER_ONLY_ENV = (
    "ROUTER_TOKEN",
    "LOCAL_DATA_DIR",
    "BACKUP_MASTER_KEYS",
    "POD_AUTH_MASTER_KEYS",
    "POD_AUTH_MASTER_KEYS_FILE",
    "LINK_MASTER_KEYS",
    "LINK_MASTER_KEYS_FILE",
)


@dataclass
class LocalPod:
    """One location's session pod process, as the supervisor last saw it."""

    location: str
    name: str
    data_dir: Path
    port: int = 0
    shown_qr: str | None = None


class LocalBackend:
    """Session pods as child processes, each in its own process group (a Ctrl-C in the
    terminal reaches local mode only, which then stops them in order)."""

    def __init__(
        self,
        data_root: Path,
        backup_masters: KeyRing,
        pod_auth: MasterKeys,
        link_masters: KeyRing,
        link_base_url: str,
    ) -> None:
        """`backup_masters`, `pod_auth`, `link_masters`: each pod gets only its location's
        keys and tokens derived from them; `link_base_url` starts its `qr` webhook's link."""
        self._root = data_root
        self._masters = backup_masters
        self._pod_auth = pod_auth
        self._link_masters = link_masters
        self._link_base_url = link_base_url
        self._credentials = PodCredentials(pod_auth)
        self._pods: dict[str, LocalPod] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._directory = Directory()
        self._http: aiohttp.ClientSession | None = None

    @property
    def _locations_file(self) -> Path:
        return self._root / "locations.json"

    async def start(self, directory: Directory, metrics: RouterMetrics) -> None:
        self._directory = directory
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        known = (
            json.loads(self._locations_file.read_text()) if self._locations_file.exists() else []
        )
        directory.replace("sessions", [])
        directory.replace("pods", [])
        for location in known:
            self._launch(location)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks.values())
        if self._http is not None:
            await self._http.close()

    async def create_session(self, location: str) -> None:
        if not valid_location_id(location):
            raise ApiError(
                400,
                f"The location identifier {location!r} is not valid: up to 63 letters, digits,"
                " '.', '_' or '-', starting with a letter or digit",
            )
        if location in self._pods:
            return
        self._launch(location)
        self._save_locations()

    async def wake_session(self, session: SessionRecord) -> None:
        """Local mode does not hibernate (README, Hibernation): no session here is ever
        asleep, so nothing asks this."""
        raise ApiError(503, f"Local mode does not hibernate sessions ({session.name})")

    def _launch(self, location: str) -> None:
        name = session_name(location)
        pod = LocalPod(location, name, self._root / "sessions" / name)
        self._pods[location] = pod
        self._set_session(pod, Phase.STARTING, "")
        self._tasks[location] = asyncio.create_task(self._supervise(pod), name=name)

    def _save_locations(self) -> None:
        atomic_write(self._locations_file, json.dumps(sorted(self._pods)).encode())

    async def _supervise(self, pod: LocalPod) -> None:
        """Runs the pod's process until cancelled, restarting it (with backoff) when it exits."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            process = await self._spawn(pod)
            try:
                code = await self._watch(pod, process)
            except asyncio.CancelledError:
                await _terminate(process)
                raise
            _kill_group(process)
            self._directory.apply("pods", "DELETED", self._pod_record(pod, ready=False))
            self._set_session(pod, Phase.STARTING, "")
            failures = 0 if loop.time() - started >= STABLE_SECONDS else failures + 1
            delay = backoff_delay(failures + 1, 1.0, 30.0)
            log.warning(
                "session pod exited, restarting", location=pod.location, code=code, delay=delay
            )
            await asyncio.sleep(delay)

    async def _spawn(self, pod: LocalPod) -> asyncio.subprocess.Process:
        pod.data_dir.mkdir(parents=True, exist_ok=True)
        pod.port, pod.shown_qr = _free_port(), None
        env = {k: v for k, v in os.environ.items() if k not in ROUTER_ONLY_ENV}
        env |= {
            "LOCATION_ID": pod.location,
            "HOST": "127.0.0.1",
            "PORT": str(pod.port),
            "DATA_DIR": str(pod.data_dir),
            "BACKUP_KEYS": self._masters.derive("backup", pod.location).to_text(),
            "POD_TOKENS": self._pod_auth().derive(POD_TOKEN, pod.location).to_text(),
            "LINK_KEYS": self._link_masters.derive(LINK_TOKEN, pod.location).to_text(),
            "LINK_BASE_URL": self._link_base_url,
        }
        # Its own log file: in the terminal, its lines would tear the QR code apart.
        output = pod.data_dir / "pod.log"
        with output.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "session_pod",
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        log.info(
            "session pod started",
            location=pod.location,
            pid=process.pid,
            port=pod.port,
            log=str(output),
        )
        return process

    async def _watch(self, pod: LocalPod, process: asyncio.subprocess.Process) -> int:
        """Follows the pod's /status until the process exits; returns its exit code."""
        while True:
            try:
                return await asyncio.wait_for(process.wait(), POLL_SECONDS)
            except TimeoutError:
                await self._observe(pod)

    async def _observe(self, pod: LocalPod) -> None:
        status = await self._get_json(pod, "/status")
        if status is None:
            return  # not serving yet
        state = status["state"]
        # As the pod's readiness probe: /readyz is 503 only when the session failed.
        self._directory.apply(
            "pods", "MODIFIED", self._pod_record(pod, state != SessionState.FAILED)
        )
        self._set_session(pod, phase_of(state) or Phase.STARTING, status.get("phone") or "")
        if status.get("qr_pending"):
            await self._show_qr(pod)

    async def _show_qr(self, pod: LocalPod) -> None:
        qr = await self._get_json(pod, "/qr")
        code = qr.get("qr") if qr else None
        if not code or code == pod.shown_qr:
            return
        pod.shown_qr = code
        # Only the rendered code reaches the terminal: the string itself is never printed.
        rendered = io.StringIO()
        segno.make(code, error="l", micro=False).terminal(out=rendered, compact=True)
        banner = f"Scan this QR code with WhatsApp (Linked devices) for location {pod.location}:"
        sys.stdout.write(f"\n{banner}\n{rendered.getvalue()}")
        sys.stdout.flush()

    async def _get_json(self, pod: LocalPod, path: str) -> dict[str, Any] | None:
        assert self._http is not None, "LocalBackend.start() was not awaited"
        url = f"http://127.0.0.1:{pod.port}{path}"
        http = self._http

        async def get(authorization: str) -> dict[str, Any] | int:
            async with http.get(url, headers={"Authorization": authorization}) as response:
                return await response.json() if response.status == 200 else response.status

        try:
            answer = await first_accepted(
                self._credentials.for_location(pod.location), get, _status
            )
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    def _pod_record(self, pod: LocalPod, ready: bool) -> PodRecord:
        return PodRecord(
            name=pod.name,
            label=label_of(pod.location),
            ip="127.0.0.1",
            port=pod.port,
            ready=ready,
            terminating=False,
            failed=False,
        )

    def _set_session(self, pod: LocalPod, phase: str, phone: str) -> None:
        record = SessionRecord(pod.name, pod.location, False, phase, phone)
        self._directory.apply("sessions", "MODIFIED", record)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the pod backs up and closes its browser), SIGKILL of its group if it hangs."""
    if process.returncode is None:
        process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
    _kill_group(process)
    await process.wait()


def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Whatever the pod left behind in its process group (its browser, after a kill -9)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _status(answer: dict[str, Any] | int) -> int:
    return answer if isinstance(answer, int) else 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, made once (mode 0600) and kept across restarts."""
    if not path.exists():
        atomic_write(path, make().encode(), mode=0o600)
    return path.read_text().strip()


def _token(data_root: Path) -> str:
    """ROUTER_TOKEN, else a random token kept in the data root (0600) across restarts."""
    return os.environ.get("ROUTER_TOKEN") or _kept_secret(
        data_root / "token", lambda: secrets.token_urlsafe(24)
    )


def master_ring(data_root: Path, variable: str, file_name: str) -> KeyRing:
    """The ring in `variable`, else one master key kept beside the token (`file_name`, 0600).
    Raises ConfigError."""
    text = os.environ.get(variable) or _kept_secret(
        data_root / file_name, lambda: f"local:{new_secret()}"
    )
    try:
        return parse_ring(text, variable)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def main() -> None:
    data_root = Path(os.environ.get("LOCAL_DATA_DIR", "local-data")).resolve()
    env = {"HOST": "127.0.0.1", **os.environ, "NAMESPACE": "local"}
    try:
        masters = master_ring(data_root, "BACKUP_MASTER_KEYS", "backup-keys")
        pod_auth = master_ring(data_root, "POD_AUTH_MASTER_KEYS", "pod-auth-keys")
        link = master_ring(data_root, "LINK_MASTER_KEYS", "link-keys")
        settings = RouterSettings.from_env(
            {
                **env,
                "ROUTER_TOKEN": _token(data_root),
                "POD_AUTH_MASTER_KEYS": pod_auth.to_text(),
                "LINK_MASTER_KEYS": link.to_text(),
            }
        )
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    logs.configure({"service": "whatsapp-router-local"}, settings.log_level)
    print(f"whatsapp-sessions local mode on http://{settings.host}:{settings.port}")
    print(f"data: {data_root}")
    if not os.environ.get("ROUTER_TOKEN"):
        print(f"token: {_token(data_root)}  (set ROUTER_TOKEN to choose it)")
    sys.stdout.flush()
    links = settings.public_url or f"http://{settings.host}:{settings.port}"
    backend = LocalBackend(data_root, masters, settings.pod_auth_masters, link, links)
    asyncio.run(serve(settings, backend))


if __name__ == "__main__":
    main()
