"""Chaos across the whole system: three locations linked through the operator on the test
node, Rails sending with idempotency keys through two router replicas, while, at random for a
bounded time, session pods are killed (-9, restarted in place) or deleted (the StatefulSet
makes a new one), the operator's active replica is killed (the standby takes over), a router
replica is killed, and S3 stops for a while. Then every key is retried until answered, as
Rails' job queue would, and: every key was sent at most once, every answered send is in its
pod's ledger, every ack the ledger holds reached Rails as a webhook, no webhook is a dead
letter, and every session is Ready again."""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.control_plane import ControlPlane
from tests.support.job_queue import JobQueue
from tests.support.operator import (
    OperatorProcess,
    operator_namespace,
    qr_of,
    session_manifest,
    start_operator,
    wait_backup,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.router import RouterProcess
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, authorization, new_phone
from tests.support.test_node import TestNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LOCATIONS = ("c1", "c2", "c3")
CHAOS_SECONDS = 60
SECRET = "chaos-webhook-secret"
RAILS_TOKEN = "chaos-rails-token-0123456789"
# The faults and their times follow from the seed: CHAOS_SEED=N replays another run.
SEED = int(os.environ.get("CHAOS_SEED", "29"))
STATUS = {"received": 2, "read": 3, "played": 4}  # ledger status -> the ack it proves


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "chaos")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@dataclass
class Fleet:
    """What runs, as the chaos left it: replaced processes are swapped in place."""

    cluster: ControlPlane
    namespace: str
    node: TestNode
    s3: SeaweedS3
    logs: Path
    operators: list[OperatorProcess] = field(default_factory=list)  # [active, standby]
    routers: list[RouterProcess] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def router(self, n: int) -> RouterProcess:
        with self.lock:
            return self.routers[n % len(self.routers)]

    def pod_url(self, location: str) -> str:
        ip = wait_until(lambda: self.node.pod_ip(self.namespace, f"wa-{location}-0"), 60, "a pod")
        return f"http://{ip}:8093"

    def restart_operator(self, index: int) -> None:
        priority = 100 if index == 0 else 50
        log = self.logs / f"operator-{index}-{time.monotonic_ns()}.log"
        self.operators[index] = OperatorProcess(
            self.cluster, self.namespace, *self.operators[0].args, log, priority=priority
        )

    def start_router(self, index: int) -> None:
        log = self.logs / f"router-{index}-{time.monotonic_ns()}.log"
        router = RouterProcess(self.cluster, self.namespace, log, ROUTER_TOKEN=RAILS_TOKEN)
        with self.lock:
            if index < len(self.routers):
                self.routers[index] = router
            else:
                self.routers.append(router)


def rails_sending_through(fleet: Fleet, customers: dict[str, str]) -> JobQueue:
    """Rails: one client per location, each try of a key on the next router replica."""
    tries = itertools.count()

    def send(location: str, key: str, text: str) -> requests.Response:
        body = {"location_identifier": location, "receiver_phone": customers[location]}
        return requests.post(
            f"{fleet.router(next(tries)).url}/send_message",
            json={**body, "message": text},
            headers={"Authorization": f"Bearer {RAILS_TOKEN}", "Idempotency-Key": key},
            timeout=30,
        )

    return JobQueue(send)


def chaos(fleet: Fleet, seconds: float, rng: random.Random) -> None:
    """One fault every 3 to 6 s; what was killed is started again before the next."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(3, 6))
        fault = rng.choice(["kill pod", "delete pod", "kill operator", "kill router", "stop s3"])
        fleet.kills[fault] += 1
        location = rng.choice(LOCATIONS)
        if fault == "kill pod":
            pid = fleet.node.pid(fleet.namespace, f"wa-{location}-0")
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)  # the pod, its driver and its browser
        elif fault == "delete pod":
            fleet.cluster.kubectl(
                "delete", "pod", f"wa-{location}-0", "-n", fleet.namespace, "--wait=false"
            )
        elif fault == "kill operator":
            fleet.operators[0].program.kill()
            time.sleep(rng.uniform(1, 8))  # the standby takes over after the peering lifetime
            fleet.restart_operator(0)
        elif fault == "kill router":
            index = rng.randrange(2)
            fleet.routers[index].program.kill()
            time.sleep(rng.uniform(0.5, 3))
            fleet.start_router(index)
        else:
            fleet.s3.stop()
            time.sleep(rng.uniform(3, 10))
            fleet.s3.start()


def test_sends_survive_chaos_across_operator_router_pods_and_s3(
    control_plane: ControlPlane,
    test_node: TestNode,
    namespace: str,
    double: Double,
    tmp_path: Path,
) -> None:
    rails_receiver = RailsReceiver()
    rails_receiver.start()
    with SeaweedS3(tmp_path / "s3") as s3:
        fleet = Fleet(control_plane, namespace, test_node, s3, tmp_path)
        session_env = {
            **double.session_env(),
            **rails_receiver.env(SECRET),
            "SEND_RATE_PER_MINUTE": "0",
            "LOAD_TIMEOUT_SECONDS": "15",
        }
        s3_env = {**s3.env(), "S3_PREFIX": "chaos"}
        fleet.operators = [
            start_operator(control_plane, namespace, session_env, s3_env, tmp_path / "op-0.log")
        ]
        fleet.operators.append(
            OperatorProcess(
                control_plane,
                namespace,
                *fleet.operators[0].args,
                tmp_path / "op-1.log",
                priority=50,
            )
        )
        fleet.start_router(0)
        fleet.start_router(1)
        try:
            phones, customers = link_all(fleet, double)
            rails = rails_sending_through(fleet, customers)
            started = time.monotonic()
            clients = [threading.Thread(target=rails.client, args=(loc,)) for loc in LOCATIONS]
            for client in clients:
                client.start()
            chaos(fleet, CHAOS_SECONDS, random.Random(SEED))
            rails.stop.set()
            for client in clients:
                client.join(60)
            rails.finish(180)
            figures = check(fleet, rails, double, phones, rails_receiver)
            figures["seconds"] = round(time.monotonic() - started)
            print(f"chaos (seed {SEED}): {figures}, faults {dict(fleet.kills)}")
        finally:
            for process in (*fleet.operators, *fleet.routers):
                process.program.stop()
            rails_receiver.stop()


def link_all(fleet: Fleet, double: Double) -> tuple[dict[str, str], dict[str, str]]:
    """Each location applied, scanned, Ready and backed up; a customer per location."""
    cluster, namespace = fleet.cluster, fleet.namespace
    phones, customers = {}, {}
    for location in LOCATIONS:
        manifest = session_manifest(f"shop-{location}", location)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    for location in LOCATIONS:
        wait_phase(cluster, namespace, f"shop-{location}", "QRRequired", timeout=120)
        ip = fleet.pod_url(location).removeprefix("http://").removesuffix(":8093")
        phones[location], customers[location] = new_phone(), new_phone()
        double.scan(qr_of(ip, location), phones[location])
        double.register(customers[location])
    for location in LOCATIONS:
        wait_phase(cluster, namespace, f"shop-{location}", "Ready", timeout=120)
        wait_backup(cluster, namespace, f"shop-{location}")
    return phones, customers


def check(
    fleet: Fleet,
    rails: JobQueue,
    double: Double,
    phones: dict[str, str],
    receiver: RailsReceiver,
) -> dict[str, int]:
    cluster, namespace = fleet.cluster, fleet.namespace
    # Every status converges: Ready with its phone, and routable.
    for location in LOCATIONS:
        ready = wait_phase(cluster, namespace, f"shop-{location}", "Ready", timeout=180)
        assert ready["status"]["phone"] == phones[location]

    # At most once per key, and every answered key sent.
    deliveries: Counter[str] = Counter()
    for location in LOCATIONS:
        for message in double.phone(phones[location])["messages"]:
            if message["fromMe"]:
                deliveries[message["body"]] += message["deliveries"]
    unanswered = [key for key in rails.keys if key not in rails.answers]
    duplicates = [key for key in rails.keys if deliveries[rails.text(key)] > 1]
    lost = [key for key in rails.answers if deliveries[rails.text(key)] == 0]
    assert (unanswered, duplicates, lost) == ([], [], []), (unanswered, duplicates, lost)

    # Every answered send is in its pod's ledger; every ack it holds reached Rails.
    def acks_at_rails() -> dict[str, int]:
        seen: dict[str, int] = {}
        for event in receiver.events("message_ack"):
            seen[event["data"]["id"]] = max(seen.get(event["data"]["id"], 0), event["data"]["ack"])
        return seen

    records = {}
    for key, answer in rails.answers.items():
        location = rails.keys[key][0]
        url = f"{fleet.pod_url(location)}/messages/{answer['id']}"
        found = requests.get(url, headers=authorization(location), timeout=10)
        assert found.status_code == 200, (key, found.text)
        records[answer["id"]] = found.json()
    proven = {i: STATUS[r["status"]] for i, r in records.items() if r["status"] in STATUS}

    def missing() -> dict[str, Any]:
        at_rails = acks_at_rails()
        return {i: records[i] for i, ack in proven.items() if at_rails.get(i, 0) < ack}

    deadline = time.monotonic() + 60
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert missing() == {}, f"acks in the ledgers that Rails never got: {missing()}"
    for location in LOCATIONS:
        failed = requests.get(
            f"{fleet.pod_url(location)}/webhooks/failed",
            headers=authorization(location),
            timeout=10,
        )
        assert failed.json()["failed"] == [], failed.text
    return {
        "sends": len(rails.keys),
        "acks proven": len(proven),
        "duplicates": len(duplicates),
        "lost": len(lost),
        "faults": sum(fleet.kills.values()),
    }
