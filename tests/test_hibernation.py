"""Hibernation end to end (README, Hibernation): the operator, two routers (one holding a
waking request, one answering it at once) and session pods on the test node, S3, Rails.

A linked location with `spec.hibernation` goes idle, takes its final backup and is scaled to
zero (`kubectl get` shows Hibernating); a send without a key and a keyed send each wake it
and are delivered once (the double counts every delivery of a message); a message a customer
sends while it sleeps reaches Rails as a webhook after the scheduled wake, which no request
caused, even though the operator was killed while it slept and the wake fell due before
another started; and it goes back to sleep after each wake."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    get_session,
    operator_namespace,
    patch_spec,
    qr_of,
    session_manifest,
    start_operator,
    wait_phase,
)
from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.router import RouterProcess
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from tests.support.test_node import TestNode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME, LOCATION = "sleepy-shop", "301"
SECRET = "hibernation-webhook-secret"
CUSTOMER = "5491155553010"
WAKE_HOLD_SECONDS = 90  # a wake right after a sleep waits for the old pod to be gone


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "hib")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def rails() -> Iterator[RailsReceiver]:
    receiver = RailsReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    namespace: str,
    double: Double,
    s3_server: SeaweedS3,
    rails: RailsReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    session_env = {**double.session_env(), **rails.env(SECRET), "IDLE_CHECK_SECONDS": "0.5"}
    process = start_operator(
        control_plane,
        namespace,
        session_env,
        {**s3_server.env(), "S3_PREFIX": f"hib-{uuid.uuid4().hex[:6]}"},
        tmp_path_factory.mktemp("hib-operator") / "operator.log",
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def routers(
    control_plane: ControlPlane,
    namespace: str,
    test_node: TestNode,
    operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RouterProcess]]:
    """`hold`: a waking request waits for the session; `answer`: it gets the 400 at once."""
    logs = tmp_path_factory.mktemp("hib-routers")
    started = {
        "hold": RouterProcess(
            control_plane, namespace, logs / "hold.log", WAKE_HOLD_SECONDS=str(WAKE_HOLD_SECONDS)
        ),
        "answer": RouterProcess(
            control_plane, namespace, logs / "answer.log", WAKE_HOLD_SECONDS="0"
        ),
    }
    yield started
    for router in started.values():
        router.stop()


@pytest.fixture(scope="module")
def phone(
    control_plane: ControlPlane,
    namespace: str,
    test_node: TestNode,
    operator: OperatorProcess,
    double: Double,
) -> str:
    """The location linked, with hibernation on (idle after 3 s, a scheduled wake an hour
    after it fell asleep: the tests shorten it when they want one)."""
    hibernation = {"enabled": True, "idleSeconds": 3, "wakeIntervalSeconds": 3600}
    manifest = session_manifest(NAME, LOCATION, hibernation=hibernation)
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    wait_phase(control_plane, namespace, NAME, "QRRequired", timeout=90)
    linked = new_phone()
    double.scan(qr_of(test_node.pod_ip(namespace, f"wa-{LOCATION}-0"), LOCATION), linked)
    # Ready for at least the idle time (3 s), then asleep: its backup is taken on the way.
    wait_phase(control_plane, namespace, NAME, "Ready", timeout=60)
    double.register(CUSTOMER)
    return linked


def asleep(cluster: ControlPlane, namespace: str, after: str = "") -> dict[str, Any]:
    """Waits until the location hibernates (a sleep that began later than `after`, RFC 3339)
    and its pod is gone; returns the resource."""

    def check() -> dict[str, Any] | None:
        session = get_session(cluster, namespace, NAME)
        record = session.get("status", {}).get("hibernation") or {}
        if session["status"].get("phase") != "Hibernating" or record.get("since", "") <= after:
            return None
        pod = cluster.kubectl("get", "pod", f"wa-{LOCATION}-0", "-n", namespace, check=False)
        return session if pod.returncode != 0 else None

    return wait_until(check, 120, f"{NAME} hibernating after {after or 'its start'}", 0.3)


def sent(double: Double, phone: str, text: str) -> list[dict[str, Any]]:
    return [m for m in double.phone(phone)["messages"] if m["fromMe"] and m["body"] == text]


def send(router: RouterProcess, text: str, key: str | None = None) -> requests.Response:
    body = {"location_identifier": LOCATION, "receiver_phone": f"+{CUSTOMER}", "message": text}
    headers = {**router.auth, **({"Idempotency-Key": key} if key else {})}
    return requests.post(
        f"{router.url}/send_message", json=body, headers=headers, timeout=WAKE_HOLD_SECONDS + 30
    )


def test_an_idle_location_hibernates_and_kubectl_get_shows_it(
    control_plane: ControlPlane,
    namespace: str,
    routers: dict[str, RouterProcess],
    phone: str,
) -> None:
    session = asleep(control_plane, namespace)
    record = session["status"]["hibernation"]
    assert record["reason"] == "idle" and record["nextWake"] > record["since"]
    assert "idleSince" not in session["status"]
    table = control_plane.kubectl("get", "whatsappsessions", "-n", namespace, "-o", "wide").stdout
    row = next(line for line in table.splitlines() if line.startswith(NAME))
    assert "Hibernating" in row.split() and phone in row
    assert "NEXT-WAKE" in table.splitlines()[0]
    replicas = control_plane.kubectl(
        "get", "statefulset", f"wa-{LOCATION}", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "0"
    # /status and /qr answer from the resource and wake nothing.
    status = routers["hold"].get("/status", location_identifier=LOCATION)
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "hibernating" and status.json()["phone"] == phone
    assert routers["hold"].get("/qr", location_identifier=LOCATION).status_code == 404
    assert get_session(control_plane, namespace, NAME)["status"]["phase"] == "Hibernating"
    assert "wakeRequest" not in get_session(control_plane, namespace, NAME)["status"]


def test_a_send_without_a_key_wakes_it_and_is_sent_once(
    control_plane: ControlPlane,
    namespace: str,
    routers: dict[str, RouterProcess],
    double: Double,
    phone: str,
) -> None:
    before = asleep(control_plane, namespace)["status"]["hibernation"]["since"]
    text = f"Recordatorio sin clave {uuid.uuid4().hex[:6]}"
    answer = send(routers["hold"], text)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and answer.json()["message"] == text
    (message,) = sent(double, phone, text)
    assert message["deliveries"] == 1 and message["id"] == answer.json()["id"]
    woken = get_session(control_plane, namespace, NAME)["status"]
    assert woken["wakeRequest"] and woken["hibernation"]["answered"] == woken["wakeRequest"]
    # Idle again once the send is acked and its webhooks are out: asleep again, still once.
    asleep(control_plane, namespace, after=before)
    assert [m["deliveries"] for m in sent(double, phone, text)] == [1]


def test_a_keyed_send_wakes_it_and_is_sent_once_across_retries(
    control_plane: ControlPlane,
    namespace: str,
    routers: dict[str, RouterProcess],
    double: Double,
    phone: str,
) -> None:
    before = asleep(control_plane, namespace)["status"]["hibernation"]["since"]
    text = f"Recordatorio con clave {uuid.uuid4().hex[:6]}"
    key = f"hib-{uuid.uuid4().hex[:8]}"
    first = send(routers["answer"], text, key)
    # The seed's answer for a session that is starting: come back later.
    assert first.status_code == 400, first.text
    assert "is being initialized" in first.json()["message"]
    assert first.json()["state"] == "Hibernating" and int(first.headers["Retry-After"]) > 0

    def retried() -> requests.Response | None:  # Rails' job queue, retrying the same key
        answer = send(routers["answer"], text, key)
        return answer if answer.status_code == 200 else None

    answer = wait_until(retried, 180, "the keyed send to be answered 200", interval=1)
    assert answer.json()["success"] is True
    (message,) = sent(double, phone, text)
    assert message["deliveries"] == 1 and message["id"] == answer.json()["id"]
    # The key again, maybe after it fell asleep once more (idle after 3 s): the first answer.
    replay = send(routers["hold"], text, key)
    assert replay.headers.get("Idempotent-Replayed") == "true", replay.text
    assert replay.json()["id"] == answer.json()["id"]
    asleep(control_plane, namespace, after=before)
    assert [m["deliveries"] for m in sent(double, phone, text)] == [1]


def test_a_scheduled_wake_delivers_what_arrived_while_asleep_across_an_operator_crash(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    routers: dict[str, RouterProcess],
    double: Double,
    rails: RailsReceiver,
    phone: str,
    tmp_path: Path,
) -> None:
    slept = asleep(control_plane, namespace)["status"]
    text = f"Hola, quiero cambiar mi turno {uuid.uuid4().hex[:6]}"
    incoming = double.control(
        "POST", f"/phones/{phone}/incoming", {"from": CUSTOMER, "body": text, "pushname": "Ana"}
    )
    time.sleep(2)  # nothing runs to take it: WhatsApp keeps it for the device
    assert not [e for e in rails.events("message") if e["data"]["body"] == text]
    assert get_session(control_plane, namespace, NAME)["status"]["phase"] == "Hibernating"

    # The operator dies (-9, nothing saved), the schedule is shortened so that the wake falls
    # due while no operator runs: the next one wakes it from the record in the status alone,
    # with no request through any router.
    operator.program.kill()
    patch_spec(control_plane, namespace, NAME, {"hibernation": {"wakeIntervalSeconds": 15}})
    due = datetime.fromisoformat(slept["hibernation"]["since"]).timestamp() + 15
    time.sleep(max(0.0, due - time.time()) + 1)
    assert get_session(control_plane, namespace, NAME)["status"]["phase"] == "Hibernating"
    restarted = OperatorProcess(control_plane, namespace, *operator.args, tmp_path / "op.log")
    try:
        webhook = wait_until(
            lambda: next((e for e in rails.events("message") if e["data"]["body"] == text), None),
            180,
            "the message that arrived while asleep, as a webhook",
        )
        assert webhook["event_id"] == incoming["id"]
        assert webhook["data"]["from"].startswith(CUSTOMER)
        status = get_session(control_plane, namespace, NAME)["status"]
        assert status.get("wakeRequest") == slept.get("wakeRequest")  # no router asked
        again = asleep(control_plane, namespace, after=slept["hibernation"]["since"])
        assert again["status"]["hibernation"]["reason"] == "idle"
        assert len([e for e in rails.events("message") if e["data"]["body"] == text]) == 1
    finally:
        restarted.stop()
