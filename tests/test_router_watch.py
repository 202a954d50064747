"""A router watch that breaks down in a way nobody foresaw (a bug, an unknown client error)
makes the router unready, is said in a log line and a metric, and recovers by listing again.

The fault is planted in the watch's own list call (the one place it can be, from outside the
client); the watches themselves run against the real API server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes.config import kube_config

from tests.support.control_plane import ControlPlane
from tests.support.operator import CRD
from tests.support.session_pods import TEST_POD_AUTH_MASTERS
from whatsapp_common.bearer import Token, TokenSet
from whatsapp_common.kube_clients import Kube
from whatsapp_common.serving import app_runner
from whatsapp_router import watch
from whatsapp_router.app import create_app
from whatsapp_router.cluster import KubeBackend
from whatsapp_router.config import RouterSettings

TOKEN = "t" * 24


class PlantedFault(Exception):
    """Not one of the errors the watch expects (API, network, decoding)."""


async def readyz(caller: aiohttp.ClientSession) -> tuple[int, Any]:
    async with caller.get("/readyz") as response:
        return response.status, await response.json()


async def wait_ready(caller: aiohttp.ClientSession, want: int, within: float) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status, body = await readyz(caller)
        if status == want:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/readyz stayed {status} {body}, wanted {want}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
def test_a_watch_that_breaks_down_makes_the_router_unready_until_listed_again(
    control_plane: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    control_plane.install_crds(CRD)
    # The client read KUBECONFIG when it was imported: point its default there instead.
    monkeypatch.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(control_plane.admin_kubeconfig)
    )
    monkeypatch.setattr(watch, "WATCH_SECONDS", 1)  # each watch ends (and lists again) quickly
    broken = threading.Event()
    real_sources = watch.sources

    def planted_sources(
        kube: Kube, ns: str, port: int, observe: Callable[[Any], None]
    ) -> list[watch.Source]:
        found = real_sources(kube, ns, port, observe)
        pods = next(s for s in found if s.kind == "pods")
        real_list = pods.list_fn

        def list_pods(**kwargs: Any) -> Any:
            if broken.is_set():
                raise PlantedFault("planted")
            return real_list(**kwargs)

        pods.list_fn = list_pods
        return found

    monkeypatch.setattr("whatsapp_router.cluster.sources", planted_sources)
    tokens = TokenSet((Token("default", TOKEN),))
    settings = RouterSettings(
        tokens=tokens,
        pod_auth_masters=lambda: TEST_POD_AUTH_MASTERS,
        namespace=namespace,
        host="127.0.0.1",
        port=0,
    )

    async def scenario() -> None:
        runner = app_runner(create_app(settings, KubeBackend(Kube("whatsapp-router"), settings)), 1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession(url) as caller:
                assert (await wait_ready(caller, 200, 30))["synced"] == ["pods", "sessions"]
                broken.set()
                assert (await wait_ready(caller, 503, 30))["synced"] == ["sessions"]
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with caller.get("/metrics", headers=auth) as response:
                    text = await response.text()
                assert 'wa_router_watch_breakdowns_total{kind="pods"}' in text
                broken.clear()
                assert (await wait_ready(caller, 200, 30))["synced"] == ["pods", "sessions"]
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    breakdowns = [r for r in caplog.records if r.getMessage().startswith("watch broke down")]
    assert breakdowns and "PlantedFault" in str(breakdowns[0].__dict__.get("fields"))
