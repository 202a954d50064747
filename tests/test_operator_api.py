"""Every Kubernetes API call of the operator is bounded: an API server that accepts the
connection and never answers costs a call its timeout, not a thread for ever, and the
handler's error is kopf's TemporaryError (retried), never a hang."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
import yaml
from kubernetes.config import kube_config

from whatsapp_common.kube_clients import Kube
from whatsapp_operator.kube import Api, Unreachable, handler_error


@pytest.fixture
def silent_api_server() -> Iterator[str]:
    """Accepts every connection and never sends a byte (a hung API server, or a half-open
    connection after a network partition)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


def test_a_hung_api_server_costs_a_call_its_timeout_not_a_thread(
    silent_api_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "hung", "cluster": {"server": silent_api_server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "hung", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    # Read once at import from KUBECONFIG: the kubeconfig Kube() falls back to.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = Api(Kube("whatsapp-operator-test"), workers=1, timeout=0.5)

    async def calls() -> list[BaseException]:
        # Three calls on one thread: each must end by itself for the next to run at all.
        errors = []
        for _ in range(3):
            try:
                await api.call("list pods", api.kube.core.list_namespaced_pod, "shops")
            except Unreachable as exc:
                errors.append(exc)
        return errors

    try:
        errors = asyncio.run(asyncio.wait_for(calls(), 20))
    finally:
        api.close()
    assert len(errors) == 3 and all("list pods" in str(e) for e in errors)
    retried = handler_error(errors[0], "listing the pods")
    assert isinstance(retried, kopf.TemporaryError) and retried.delay == 5
