"""The real router (`python -m whatsapp_router`) as a process, authenticated as its own
ServiceAccount with the chart's Role, and a small HTTP client for it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import requests

from whatsapp_common.keys import KeyRing, NamedKey
from whatsapp_router.directory import Directory, PodRecord, SessionRecord, label_of
from whatsapp_router.metrics import RouterMetrics

from .control_plane import ControlPlane
from .operator import RELEASE, chart_rbac
from .processes import Program, free_port, wait_until
from .session_pods import TEST_POD_AUTH_MASTERS

ROUTER_ACCOUNT = f"{RELEASE}-router"
TEST_LINK_MASTERS = KeyRing((NamedKey("test-link-1", b"k" * 32),))


class RouterClient:
    """The router's API as Rails calls it: the bearer token on every request."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        return requests.get(
            f"{self.url}{path}", params=params, headers={**self.auth, **(headers or {})}, timeout=30
        )

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return requests.post(
            f"{self.url}{path}", json=body, headers={**self.auth, **(headers or {})}, timeout=30
        )

    def wait_state(self, location: str, state: str, timeout: float = 60) -> dict[str, Any]:
        """The location's session state, as /status through the router reports it."""

        def check() -> Any:
            response = self.get("/status", location_identifier=location)
            return response.ok and response.json()["state"] == state and response.json()

        return wait_until(check, timeout, f"location {location} {state} through the router")


class RouterProcess(RouterClient):
    def __init__(
        self,
        cluster: ControlPlane,
        namespace: str,
        log_path: Path,
        chart_values: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        """`chart_values`: the `--set` flags its RBAC is rendered with."""
        rbac = chart_rbac(cluster, namespace, "router", *chart_values)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=rbac)
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", secrets.token_urlsafe(24))
        kubeconfig = cluster.kubeconfig_for_service_account(namespace, ROUTER_ACCOUNT)
        self.program = Program(
            "whatsapp_router",
            [],
            {
                "KUBECONFIG": str(kubeconfig),
                "NAMESPACE": namespace,
                "ROUTER_TOKEN": self.token,
                "POD_AUTH_MASTER_KEYS": TEST_POD_AUTH_MASTERS.to_text(),
                "LINK_MASTER_KEYS": TEST_LINK_MASTERS.to_text(),
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "UPSTREAM_TIMEOUT_SECONDS": "15",
                **env,
            },
            log_path,
        )
        wait_until(self._ready, 30, f"the router to be ready\n{self.program.log_tail()}")

    def _ready(self) -> bool:
        if not self.program.alive():
            raise AssertionError(f"the router exited:\n{self.program.log_tail()}")
        return requests.get(f"{self.url}/readyz", timeout=2).ok

    def stop(self) -> None:
        self.program.stop()


class StaticBackend:
    """One location whose ready pod is at `address`: what the watch would have reported."""

    def __init__(self, location: str, address: tuple[str, int]) -> None:
        self.location, self.address = location, address

    async def start(self, directory: Directory, metrics: RouterMetrics) -> None:
        session = SessionRecord("wa-" + self.location, self.location, False, "Ready", "")
        label = label_of(self.location)
        ip, port = self.address
        directory.replace("sessions", [session])
        directory.replace("pods", [PodRecord("wa-pod-0", label, ip, port, True, False, False)])

    async def stop(self) -> None:
        return None

    async def create_session(self, location: str) -> None:
        raise AssertionError(f"no session is created in these tests ({location})")

    async def wake_session(self, session: SessionRecord) -> None:
        raise AssertionError(f"no session hibernates in these tests ({session.name})")
