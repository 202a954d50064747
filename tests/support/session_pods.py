"""Session pod processes and the WhatsApp Web double, as the tests drive them over HTTP."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from whatsapp_common.keys import KeyRing, NamedKey
from whatsapp_common.pod_auth import PURPOSE, PodCredentials

from .processes import Program, free_port, wait_until

_phones = itertools.count(1)
# The tests' master keys; each pod gets only its location's keys, as from the operator.
TEST_MASTERS = KeyRing((NamedKey("test-1", b"m" * 32),))
TEST_POD_AUTH_MASTERS = KeyRing((NamedKey("test-auth-1", b"p" * 32),))
_credentials = PodCredentials(lambda: TEST_POD_AUTH_MASTERS)


def location_keys(location: str, masters: KeyRing = TEST_MASTERS) -> dict[str, str]:
    """The environment that hands a session pod its location's backup keys and pod tokens."""
    return {
        "BACKUP_KEYS": masters.derive("backup", location).to_text(),
        "POD_TOKENS": TEST_POD_AUTH_MASTERS.derive(PURPOSE, location).to_text(),
    }


def authorization(location: str) -> dict[str, str]:
    """The header the router or the operator presents to `location`'s pod."""
    return {"Authorization": _credentials.for_location(location)[0]}


def new_phone() -> str:
    """A fresh, valid phone number for one test (the double is shared across tests)."""
    return f"54911{int(time.time()) % 100000:05d}{next(_phones):03d}"


class Double:
    """Client of the WhatsApp Web double's control API (tests/wa_double)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def session_env(self) -> dict[str, str]:
        """What a session pod needs to open this double instead of WhatsApp Web (the double's
        page defines the WPP subset itself: no wa-js bundle is injected)."""
        return {"WHATSAPP_WEB_URL": self.url + "/", "WAJS_INJECT": "false"}

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{self.url}/control{path}", json=body, timeout=10)
        assert response.ok, f"double {method} {path}: {response.status_code} {response.text}"
        return response.json()

    def register(self, *numbers: str) -> None:
        self.control("POST", "/numbers", {"numbers": [{"number": n} for n in numbers]})

    def scan(self, code: str, phone: str, pushname: str = "Beauty Shop") -> Any:
        return self.control("POST", "/scan", {"code": code, "phone": phone, "pushname": pushname})

    def phone(self, phone: str) -> Any:
        return self.control("GET", f"/phones/{phone}")


def start_double(log_path: Path, host: str = "127.0.0.1") -> tuple[Program, Double]:
    """The double as its own process on `host` (127.0.0.1, or the test bridge's gateway for
    a real node's pods), serving once this returns."""
    port = free_port(host)
    args = ["--host", host, "--port", str(port)]
    program = Program("tests.wa_double", args, {}, log_path)
    double = Double(f"http://{host}:{port}")
    wait_until(lambda: requests.get(double.url, timeout=2).ok, 20, "the WhatsApp Web double")
    return program, double


class EventLog:
    """Follows a pod's /events stream in a thread and keeps every event it saw."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._response = requests.get(
            f"{url}/events", headers=headers, stream=True, timeout=(5, None)
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    with self._changed:
                        self.events.append(json.loads(line[6:]))
                        self._changed.notify_all()
        except (requests.RequestException, OSError, AttributeError):
            return

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e["type"] == type_]

    def wait_for(
        self,
        type_: str,
        where: Callable[[dict[str, Any]], bool] = lambda data: True,
        timeout: float = 20,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event["type"] == type_ and where(event["data"]):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e["type"], e["data"]) for e in self.events][-15:]
                    raise AssertionError(f"no {type_} event in {timeout}s; last events: {seen}")
                self._changed.wait(remaining)

    def close(self) -> None:
        """Call once the pod has stopped: its end of the stream is closed, the reader ends.

        (Closing a streaming response while another thread reads it deadlocks.)
        """
        self._thread.join(10)
        if not self._thread.is_alive():
            self._response.close()


class SessionPod:
    """One real session pod process (python -m session_pod) pointed at the double."""

    def __init__(
        self,
        location: str,
        data_dir: Path,
        double: Double,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.location = location
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.program = Program(
            "session_pod",
            [],
            {
                "LOCATION_ID": location,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DATA_DIR": str(data_dir),
                **double.session_env(),
                "HEALTH_CHECK_INTERVAL_SECONDS": "1",
                "HEALTH_TIMEOUT_SECONDS": "2",
                "RELAUNCH_BACKOFF_MAX_SECONDS": "2",
                "CALL_TIMEOUT_SECONDS": "10",
                "SEND_WAIT_SECONDS": "5",
                **location_keys(location),
                **(env or {}),
            },
            data_dir / "pod.log",
            preexec,
        )
        self.auth = authorization(location)
        wait_until(self._serving, 20, f"pod {location} to serve HTTP\n{self.program.log_tail()}")
        self.events = EventLog(self.url, self.auth)

    def _serving(self) -> bool:
        if not self.program.alive():
            raise AssertionError(f"pod exited:\n{self.program.log_tail()}")
        return requests.get(f"{self.url}/status", headers=self.auth, timeout=2).ok

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", params=params, headers=self.auth, timeout=30)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {**self.auth, **(headers or {})}
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=30, **kwargs)

    def status(self) -> dict[str, Any]:
        return self.get("/status").json()

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.status())["state"] == state and s,
            timeout,
            f"state {state} of pod {self.location}\n{self.program.log_tail()}",
        )

    def link(self, double: Double, phone: str) -> None:
        """QR -> scan on the double -> ready, as a user with the phone would do it."""
        self.wait_state("qr_required")
        code = wait_until(lambda: self.get("/qr").json().get("qr"), 10, "a QR code")
        double.scan(code, phone)
        self.wait_state("ready")

    def stop(self) -> int:
        code = self.program.stop()
        self.events.close()
        return code

    def kill(self) -> None:
        self.program.kill()
        self.events.close()
