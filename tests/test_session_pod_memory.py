"""The pod's memory: Chromium's flags, the browser's process tree as /proc shows it, and the
planned relaunch of a browser past BROWSER_MEMORY_LIMIT_MB, which must cost no message, no
duplicate and no QR (a real pod, real Chromium, the double, a real receiver for Rails)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from session_pod.browser_memory import browser_tree_bytes, descendants
from session_pod.config import ConfigError, Settings
from session_pod.driver import PLAYWRIGHT_FEATURE_SWITCHES, chromium_args
from session_pod.gate import OperationGate
from tests.support.job_queue import JobQueue
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, location_keys, new_phone

StartPod = Callable[..., SessionPod]


def test_feature_lists_are_merged_playwrights_the_pods_and_the_extra_ones() -> None:
    """Chromium honours only the last --disable-features: neither CHROMIUM_EXTRA_ARGS' list
    nor the pod's may switch Playwright's or the pod's back on."""
    args = chromium_args(
        ["--disable-features=Translate,SpareRendererForSitePerProcess", "--no-zygote"]
    )
    disabled = [a.split("=", 1)[1].split(",") for a in args if a.startswith("--disable-features")]
    assert len(disabled) == 1
    playwrights = PLAYWRIGHT_FEATURE_SWITCHES[0].split("=", 1)[1].split(",")
    assert disabled[0] == [*playwrights, "SpareRendererForSitePerProcess", "Translate"]
    assert "--no-zygote" in args and "--no-sandbox" in args
    enabled = chromium_args(["--enable-features=A", "--enable-features=B,A"])
    assert [a for a in enabled if a.startswith("--enable-features=")] == [
        PLAYWRIGHT_FEATURE_SWITCHES[1] + ",A,B"
    ]


def test_the_memory_limit_is_configured_in_megabytes() -> None:
    env = {"LOCATION_ID": "13", **location_keys("13")}
    assert Settings.from_env(env).browser_memory_limit_mb == 0  # off
    limited = Settings.from_env(
        {**env, "BROWSER_MEMORY_LIMIT_MB": "350", "BROWSER_MEMORY_CHECK_INTERVAL_SECONDS": "30"}
    )
    assert limited.browser_memory_limit_mb == 350
    assert limited.browser_memory_check_interval == 30
    with pytest.raises(ConfigError, match="BROWSER_MEMORY_LIMIT_MB must be a number"):
        Settings.from_env({**env, "BROWSER_MEMORY_LIMIT_MB": "lots"})
    with pytest.raises(ConfigError, match="at least 0"):
        Settings.from_env({**env, "BROWSER_MEMORY_LIMIT_MB": "-1"})


def test_the_memory_levers_can_be_turned_off() -> None:
    env = {"LOCATION_ID": "13", **location_keys("13")}
    defaults = Settings.from_env(env)
    assert defaults.chromium_path == "/usr/lib/chromium/chromium-headless-shell"
    assert {"--in-process-gpu", "--no-zygote"} <= set(defaults.chromium_memory_args)
    assert defaults.driver_node_options == "--max-semi-space-size=1"
    off = Settings.from_env({**env, "CHROMIUM_MEMORY_ARGS": "", "DRIVER_NODE_OPTIONS": ""})
    assert off.chromium_memory_args == () and off.driver_node_options == ""


def test_the_browser_tree_is_every_process_below_the_pod_with_its_pss() -> None:
    """A child holding 64 MB of its own, and its child: both counted, nothing else."""
    hold = "b = bytearray(64 * 2**20); import time; time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.Popen(['sleep', '60']); {hold}"]
    )
    try:
        expected = {child.pid}
        wait_until(
            lambda: (
                len(psutil.Process(child.pid).children()) == 1
                and psutil.Process(child.pid).memory_full_info().uss > 64 * 2**20
            ),
            10,
            "the child's memory and grandchild",
        )
        expected |= {p.pid for p in psutil.Process(child.pid).children()}
        assert set(descendants(os.getpid())) >= expected
        assert set(descendants(child.pid)) == expected - {child.pid}
        pss = sum(psutil.Process(pid).memory_full_info().pss for pid in expected)
        measured = browser_tree_bytes(child.pid) + psutil.Process(child.pid).memory_full_info().pss
        assert measured >= 64 * 2**20
        assert abs(measured - pss) < 2 * 2**20  # the same figure psutil reads
    finally:
        for process in psutil.Process(child.pid).children():
            process.kill()
        child.kill()
        child.wait()


def test_a_closed_gate_lets_running_operations_finish_and_holds_new_ones() -> None:
    async def scenario() -> list[str]:
        gate, order = OperationGate(), []

        async def operation(name: str, seconds: float) -> None:
            async with gate.operation(wait=5):
                order.append(f"{name} runs")
                await asyncio.sleep(seconds)
            order.append(f"{name} done")

        running = asyncio.create_task(operation("send", 0.2))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(gate.close(drain_seconds=5))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(operation("next send", 0))
        assert await closing == 0
        order.append("relaunch")
        await asyncio.sleep(0.1)
        gate.open()
        await asyncio.gather(running, waiting)
        # A gate that stays closed delays an operation by its wait, no more.
        await gate.close(drain_seconds=1)
        started = time.monotonic()
        async with gate.operation(wait=0.2):
            assert 0.15 < time.monotonic() - started < 2
        return order

    assert asyncio.run(scenario()) == [
        "send runs",
        "send done",
        "relaunch",
        "next send runs",
        "next send done",
    ]


# --- recycling under traffic ----------------------------------------------------------------


@pytest.fixture
def rails() -> Iterator[RailsReceiver]:
    receiver = RailsReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def metric(pod: SessionPod, name: str) -> float:
    """A counter or gauge of the pod's /metrics (summed over its labels)."""
    text = pod.get("/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.slow
def test_a_browser_past_its_memory_limit_is_recycled_without_losing_or_doubling_a_message(
    start_pod: StartPod, double: Double, rails: RailsReceiver, tmp_path: Path
) -> None:
    """A limit below any browser's size: recycled every couple of seconds while four clients
    send with keys (each key again until a 200, as Rails' job queue) and a customer writes.
    Every key reaches WhatsApp once, no send is cut (no unknown outcome: the recycle waited
    for it), every customer message reaches Rails once, and no QR is ever asked for."""
    phone, customer = new_phone(), new_phone()
    pod = start_pod(
        "61",
        tmp_path / "pod",
        SEND_RATE_PER_MINUTE="0",
        BROWSER_MEMORY_LIMIT_MB="1",
        BROWSER_MEMORY_CHECK_INTERVAL_SECONDS="2",
        **rails.env("s"),
    )
    pod.link(double, phone)
    double.register(customer)
    linked = pod.events.wait_for("ready")["id"]

    def send(_: str, key: str, text: str) -> requests.Response:
        body = {"location_identifier": pod.location, "receiver_phone": customer, "message": text}
        headers = {**pod.auth, "Idempotency-Key": key}
        return requests.post(f"{pod.url}/send_message", json=body, headers=headers, timeout=30)

    written: list[str] = []
    queue = JobQueue(send)
    clients = [threading.Thread(target=queue.client, args=(f"c{i}",)) for i in range(4)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        sent = double.control("POST", f"/phones/{phone}/incoming", {"from": customer, "body": "?"})
        written.append(sent["id"])
        time.sleep(0.2)
    queue.stop.set()
    for client in clients:
        client.join(60)
    queue.finish(60)

    recycles = metric(pod, "wa_browser_recycles_total")
    assert recycles >= 3, pod.program.log_tail(40)
    assert metric(pod, "wa_browser_memory_bytes") > 1 * 2**20
    assert metric(pod, "wa_browser_relaunches_total") == 0  # none was a crash
    assert metric(pod, 'wa_send_outcomes_total{outcome="unknown"}') == 0
    assert metric(pod, "wa_background_task_failures_total") == 0  # no catch-up cut short
    recycling = [
        e
        for e in pod.events.of_type("state")
        if e["data"]["reason"].startswith("recycling the browser: browser memory")
    ]
    assert len(recycling) == recycles
    assert recycling[0]["data"]["previous"] == "ready"
    later = [e for e in pod.events.events if e["id"] > linked]
    assert not [e for e in later if e["type"] in ("qr", "disconnected", "auth_failure")]
    assert "qr_required" not in {e["data"].get("state") for e in later if e["type"] == "state"}

    bodies: dict[str, int] = {}
    for message in double.phone(phone)["messages"]:
        if message["fromMe"]:
            bodies[message["body"]] = bodies.get(message["body"], 0) + message["deliveries"]
    assert len(queue.keys) >= 20
    assert [k for k in queue.keys if k not in queue.answers] == []
    assert {k: n for k in queue.keys if (n := bodies.get(queue.text(k), 0)) != 1} == {}

    def delivered() -> list[str]:
        return [e["event_id"] for e in rails.events("message")]

    wait_until(lambda: set(delivered()) >= set(written), 60, "every customer message at Rails")
    assert sorted(delivered()) == sorted(written)  # each once
    print(
        f"recycling: {recycles:.0f} recycles in 25 s, {len(queue.keys)} keys sent once,"
        f" {len(written)} customer messages delivered once"
    )
