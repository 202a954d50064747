"""Nobody but the router and the operator can drive a session pod: a real pod (real Chromium,
linked on the double) asked by every kind of stranger, its scrape credential, and a rotation
of the pod-auth master keys under a steady caller through a real router."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import requests
from aiohttp import web

from session_pod.api import add_routes
from tests.support.mounted_secrets import replace_file
from tests.support.router import StaticBackend
from tests.support.session_pods import (
    TEST_POD_AUTH_MASTERS,
    Double,
    SessionPod,
    authorization,
    new_phone,
)
from whatsapp_common.bearer import Token, TokenSet
from whatsapp_common.keys import KeyRing, NamedKey
from whatsapp_common.pod_auth import PURPOSE, master_keys, pod_tokens
from whatsapp_common.serving import app_runner
from whatsapp_router.app import create_app
from whatsapp_router.config import RouterSettings

pytestmark = pytest.mark.slow

LOCATION = "41"
SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
ROUTER_TOKEN = "rails-facing-router-token-0123"
# Every endpoint but the probes, with a body that would change something if let in.
GUARDED = [
    ("POST", "/login", {"location_identifier": LOCATION}),
    ("POST", "/logout", {"location_identifier": LOCATION}),
    ("POST", "/send_message", None),  # the body is made per test: it names the receiver
    ("POST", "/pairing_code", {"location_identifier": LOCATION, "phone_number": "5491100000000"}),
    ("GET", "/chats", None),
    ("GET", "/contacts", None),
    ("GET", "/status", None),
    ("GET", "/qr", None),
    ("GET", "/events", None),
    ("GET", "/messages", None),
    ("GET", "/messages/some-id", None),
    ("GET", "/webhooks/failed", None),
    ("POST", "/webhooks/replay", {}),
    ("GET", "/metrics", None),
]
PROBES = ["/healthz", "/readyz"]


def strangers() -> dict[str, dict[str, str]]:
    other_location = authorization("42")
    return {
        "none": {},
        "wrong": {"Authorization": "Bearer not-the-token-0123456789abcdef"},
        "another location's token": other_location,
        "the router's Rails token": {"Authorization": f"Bearer {ROUTER_TOKEN}"},
        "the token without Bearer": {
            "Authorization": authorization(LOCATION)["Authorization"].removeprefix("Bearer ")
        },
        "basic": {"Authorization": "Basic " + base64.b64encode(b"router:x").decode()},
    }


@pytest.fixture(scope="module")
def pod(link_pod: Callable[..., SessionPod]) -> SessionPod:
    return link_pod(LOCATION, METRICS_TOKENS=f"prometheus:{SCRAPE_TOKEN}")


def test_the_list_of_guarded_endpoints_is_every_route_but_the_probes() -> None:
    app = web.Application()
    add_routes(app)
    routes = {
        (route.method, re.sub(r"\{[^}]+\}", "some-id", route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routes == {(m, p) for m, p, _ in GUARDED} | {("GET", p) for p in PROBES}


def test_a_stranger_gets_401_everywhere_and_changes_nothing(
    pod: SessionPod, double: Double, phone: str
) -> None:
    receiver = new_phone()
    double.register(receiver)
    send = {"location_identifier": LOCATION, "receiver_phone": receiver, "message": "Hola"}
    refused = 0
    for who, headers in strangers().items():
        for method, path, body in GUARDED:
            answer = requests.request(
                method,
                f"{pod.url}{path}",
                json=send if path == "/send_message" else body,
                params={"location_identifier": LOCATION} if method == "GET" else None,
                headers={**headers, "Idempotency-Key": f"stranger-{who}"},
                timeout=10,
            )
            assert answer.status_code == 401, (who, method, path, answer.text)
            assert answer.json() == {
                "success": False,
                "message": "A valid bearer token is required",
            }
            assert answer.headers["WWW-Authenticate"] == 'Bearer realm="whatsapp-session"'
            refused += 1
    for path in PROBES:
        assert requests.get(f"{pod.url}{path}", timeout=10).status_code == 200

    # Nothing was sent, the phone is still linked, the session still ready.
    business = double.phone(phone)
    assert business["linked"] is True
    assert [m for m in business["messages"] if m["to"] == f"{receiver}@c.us"] == []
    assert pod.status()["state"] == "ready"
    assert pod.get("/messages").json()["messages"] == []

    # The scrape token reads /metrics, which counts every refusal by reason.
    scrape = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    metrics = requests.get(f"{pod.url}/metrics", headers=scrape, timeout=10)
    assert metrics.status_code == 200
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith("wa_auth_refused_total")
    }
    missing = len(GUARDED)
    assert counts == {
        'wa_auth_refused_total{reason="missing"}': missing,
        'wa_auth_refused_total{reason="wrong"}': refused - missing,
    }
    assert 'wa_authenticated_requests_total{token="prometheus"} 1.0' in metrics.text

    # No credential appears in the pod's log or its metrics.
    secrets = [SCRAPE_TOKEN, authorization(LOCATION)["Authorization"].split()[1]]
    log = pod.program.log_path.read_text()
    assert not [s for s in secrets if s in log or s in metrics.text]


def test_the_scrape_token_opens_metrics_and_nothing_else(pod: SessionPod) -> None:
    scrape = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    for method, path, body in GUARDED:
        answer = requests.request(method, f"{pod.url}{path}", json=body, headers=scrape, timeout=10)
        expected = 200 if path == "/metrics" else 401
        assert answer.status_code == expected, (method, path, answer.text)


# --- rotation ----------------------------------------------------------------------------


def ring(*names: str) -> KeyRing:
    return KeyRing(tuple(NamedKey(name, name.encode().ljust(32, b"-")) for name in names))


@asynccontextmanager
async def router_to(pod: SessionPod, masters_file: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """The real router app in this process, the pod-auth masters read from `masters_file` (as
    the chart mounts them), routing `pod.location` to the pod."""
    settings = RouterSettings(
        tokens=TokenSet((Token("rails", ROUTER_TOKEN),)),
        pod_auth_masters=master_keys({"POD_AUTH_MASTER_KEYS_FILE": str(masters_file)}),
        namespace="test",
        host="127.0.0.1",
        port=0,
    )
    backend = StaticBackend(pod.location, ("127.0.0.1", pod.port))
    runner = app_runner(create_app(settings, backend), 1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    headers = {"Authorization": f"Bearer {ROUTER_TOKEN}"}
    async with aiohttp.ClientSession(url, headers=headers) as caller:
        try:
            yield caller
        finally:
            await runner.cleanup()


def test_a_master_rotation_fails_no_request(double: Double, tmp_path: Path) -> None:
    """The new master beside the old at the router first (the pod does not know it yet: the
    router falls back to the old token), then in the pod's Secret, then the old removed from
    the router, then from the pod: a caller asking all along gets no error."""
    old, new = TEST_POD_AUTH_MASTERS, ring("2026-12")
    both = KeyRing(new.keys + old.keys)
    pod_file, router_file = tmp_path / "POD_TOKENS", tmp_path / "POD_AUTH_MASTER_KEYS"
    pod_file.write_text(old.derive(PURPOSE, LOCATION).to_text())
    router_file.write_text(old.to_text())
    # The tokens from the file only, as in a cluster (a blank variable counts as unset).
    pod = SessionPod(
        LOCATION, tmp_path / "pod", double, {"POD_TOKENS": "", "POD_TOKENS_FILE": str(pod_file)}
    )
    steps = [
        (router_file, both),
        (pod_file, both.derive(PURPOSE, LOCATION)),
        (router_file, new),
        (pod_file, new.derive(PURPOSE, LOCATION)),
    ]

    async def scenario() -> None:
        async with router_to(pod, router_file) as caller:
            statuses: list[int] = []

            async def calls(count: int) -> None:
                for _ in range(count):
                    answer = await caller.get("/status", params={"location_identifier": LOCATION})
                    await answer.read()
                    statuses.append(answer.status)

            await calls(20)
            for file, keys in steps:
                replace_file(file, keys.to_text())
                await calls(20)
            assert statuses == [200] * 100
            metrics = await (await caller.get("/metrics")).text()
            fallbacks = re.search(r"^wa_router_pod_token_fallbacks_total (\S+)$", metrics, re.M)
            assert fallbacks is not None and float(fallbacks.group(1)) >= 20, metrics

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
        old_token, new_token = (
            pod_tokens(keys.derive(PURPOSE, LOCATION))[0].value for keys in (old, new)
        )
        for token, expected in ((old_token, 401), (new_token, 200)):
            headers = {"Authorization": f"Bearer {token}"}
            answer = requests.get(f"{pod.url}/status", headers=headers, timeout=10)
            assert answer.status_code == expected
    finally:
        pod.stop()
