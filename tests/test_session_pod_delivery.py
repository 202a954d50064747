"""Reliable delivery through a real session pod: durable signed webhooks to a real HTTP
receiver standing in for Rails, the message ledger, ack watchdog resends, idempotent sends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from session_pod.delivery import verify
from tests.support.processes import Program, free_port, wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, location_keys, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]
SECRET = "rails-shared-secret"


@pytest.fixture
def rails() -> Iterator[RailsReceiver]:
    receiver = RailsReceiver()
    yield receiver
    receiver.stop()


def send(pod: SessionPod, receiver: str, text: str, **extra: object) -> dict[str, object]:
    response = pod.post(
        "/send_message",
        {"location_identifier": pod.location, "receiver_phone": receiver, "message": text, **extra},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_webhooks_wait_for_rails_and_arrive_in_order_signed(
    start_pod: StartPod, double: Double, rails: RailsReceiver, tmp_path: Path
) -> None:
    pod = start_pod("91", tmp_path / "pod", **rails.env(SECRET))  # Rails is down
    pod.link(double, new_phone())
    receiver = new_phone()
    double.register(receiver)
    sent = send(pod, receiver, "turno confirmado")
    pod.events.wait_for("message_ack", lambda d: d["ack"] == 2 and d["id"] == sent["id"])
    rails.start()
    wait_until(lambda: rails.events("message_ack"), 30, "the ack webhook")

    published = [e["type"] for e in pod.events.events]
    wait_until(lambda: len(rails.events()) >= len(published), 30, "every event")
    delivered = rails.events()
    assert [e["event"] for e in delivered][: len(published)] == published
    assert len({e["event_id"] for e in delivered}) == len(delivered), "no duplicates"
    assert all(e["location_identifier"] == "91" for e in delivered)
    ack = next(e for e in delivered if e["event"] == "message_ack" and e["data"]["ack"] == 2)
    assert ack["data"]["id"] == sent["id"]
    for request in rails.received:
        assert request.path == f"/whatsapp_js/{request.json['event']}"
        assert verify(
            SECRET,
            request.headers["X-Webhook-Timestamp"],
            request.body,
            request.headers["X-Webhook-Signature"],
        )
        assert not verify(
            "wrong-secret",
            request.headers["X-Webhook-Timestamp"],
            request.body,
            request.headers["X-Webhook-Signature"],
        )
    assert rails.events("qr")[0]["data"]["qr"].startswith("2@")


def test_undelivered_webhooks_survive_kill_9(
    start_pod: StartPod, double: Double, rails: RailsReceiver, tmp_path: Path
) -> None:
    pod = start_pod("92", tmp_path / "pod", **rails.env(SECRET))
    pod.link(double, new_phone())
    pod.events.wait_for("remote_session_saved")
    before_kill = [e["type"] for e in pod.events.events]
    pod.kill()
    rails.start()
    restarted = start_pod("92", tmp_path / "pod", **rails.env(SECRET))
    restarted.wait_state("ready")
    wait_until(lambda: len(rails.events()) >= len(before_kill), 30, "the events of the killed pod")
    assert [e["event"] for e in rails.events()][: len(before_kill)] == before_kill


def test_a_stalled_ack_is_resent_and_reported(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    phone, receiver = new_phone(), new_phone()
    pod = start_pod(
        "93",
        tmp_path / "pod",
        ACK_DEADLINE_SECONDS="1",
        ACK_CHECK_INTERVAL_SECONDS="0.3",
        ACK_MAX_ATTEMPTS="2",
    )
    pod.link(double, phone)
    double.register(receiver)
    double.control("POST", f"/phones/{phone}/acks", {"auto": False})
    sent = send(pod, receiver, "¿Confirmás el turno?")
    stuck = pod.events.wait_for("message_stuck", lambda d: d["action"] == "resent")["data"]
    assert stuck["message_id"] == sent["id"] and stuck["attempts"] == 2
    resent_id = stuck["current_id"]
    assert resent_id != sent["id"]
    to_receiver = [m for m in double.phone(phone)["messages"] if m["to"] == f"{receiver}@c.us"]
    assert [m["id"] for m in to_receiver] == [sent["id"], resent_id]

    double.control("POST", f"/messages/{resent_id}/ack", {"ack": 2})
    record = wait_until(
        lambda: (r := pod.get(f"/messages/{sent['id']}").json())["status"] == "received" and r,
        10,
        "the resent message to be received",
    )
    assert record["message_ids"] == [sent["id"], resent_id]
    assert [m["id"] for m in pod.get("/messages", status="received").json()["messages"]] == [
        sent["id"]
    ]


def test_a_failed_ack_is_reported(start_pod: StartPod, double: Double, tmp_path: Path) -> None:
    phone, receiver = new_phone(), new_phone()
    pod = start_pod("94", tmp_path / "pod")
    pod.link(double, phone)
    double.register(receiver)
    double.control("POST", f"/phones/{phone}/acks", {"auto": False})
    sent = send(pod, receiver, "hola")
    double.control("POST", f"/messages/{sent['id']}/ack", {"ack": -1})
    failed = pod.events.wait_for("message_failed")["data"]
    assert failed["message_id"] == sent["id"] and failed["status"] == "failed"


def test_the_same_idempotency_key_sends_once_also_across_a_restart(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    phone, receiver = new_phone(), new_phone()
    pod = start_pod("95", tmp_path / "pod")
    pod.link(double, phone)
    double.register(receiver)
    first = send(pod, receiver, "Recordatorio", idempotency_key="booking-7-reminder")
    again = pod.post(
        "/send_message",
        {"location_identifier": "95", "receiver_phone": receiver, "message": "Recordatorio"},
        headers={"Idempotency-Key": "booking-7-reminder"},
    )
    assert again.json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert pod.stop() == 0

    restarted = start_pod("95", tmp_path / "pod")
    restarted.wait_state("ready")
    after_restart = send(restarted, receiver, "Recordatorio", idempotency_key="booking-7-reminder")
    assert after_restart == first
    to_receiver = [m for m in double.phone(phone)["messages"] if m["to"] == f"{receiver}@c.us"]
    assert len(to_receiver) == 1
    other = restarted.post(
        "/send_message",
        {
            "location_identifier": "95",
            "receiver_phone": receiver,
            "message": "Otro texto",
            "idempotency_key": "booking-7-reminder",
        },
    )
    assert other.status_code == 422
    assert other.json()["success"] is False


@pytest.mark.parametrize(
    ("prepare", "says"),
    [
        (lambda data: (data / "delivery.db").write_bytes(b"not a database" * 100), "delivery"),
        (lambda data: (data / "delivery.db").mkdir(), "delivery"),
    ],
    ids=["corrupt", "unwritable"],
)
def test_an_unusable_delivery_database_is_a_clear_failure(
    double: Double, tmp_path: Path, prepare: Callable[[Path], object], says: str
) -> None:
    data = tmp_path / "pod"
    data.mkdir()
    prepare(data)
    program = Program(
        "session_pod",
        [],
        {
            "LOCATION_ID": "96",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "DATA_DIR": str(data),
            **double.session_env(),
            **location_keys("96"),
        },
        tmp_path / "pod.log",
    )
    assert program.process.wait(30) != 0
    log = program.log_path.read_text()
    assert "the delivery database cannot be used" in log
    assert says in log
