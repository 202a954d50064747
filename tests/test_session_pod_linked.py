"""A real session pod process and real Chromium against the WhatsApp Web double: one linked
session, shared by the tests of this module (QR -> scan -> ready happens once)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.support.processes import wait_until
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pod(link_pod: Callable[..., SessionPod]) -> SessionPod:
    return link_pod("13")


def test_qr_scan_ready_emits_the_seed_events(pod: SessionPod, phone: str) -> None:
    status = pod.status()
    assert status["state"] == "ready"
    assert status["phone"] == phone
    assert status["qr_pending"] is False
    types = [e["type"] for e in pod.events.events]
    assert types.index("qr") < types.index("authenticated") < types.index("ready")
    assert pod.events.wait_for("ready")["data"] == {"phone": phone}
    assert pod.get("/qr").status_code == 404


def test_send_message_answers_id_and_ack_and_archives_the_chat(
    pod: SessionPod, double: Double
) -> None:
    receiver = new_phone()
    double.register(receiver)
    response = pod.post(
        "/send_message",
        {"location_identifier": "13", "receiver_phone": f"+{receiver}", "message": "Turno: 10hs"},
    )
    assert response.status_code == 200, response.text
    sent = response.json()
    assert sent["success"] is True
    assert sent["message"] == "Turno: 10hs"
    assert sent["id"].startswith(f"true_{receiver}@c.us_")
    assert sent["ack"] == 1
    assert sent["chat_id"] == f"{receiver}@c.us"
    on_phone = double.phone(pod.status()["phone"])
    assert {"id": sent["id"], "body": "Turno: 10hs"}.items() <= next(
        m for m in on_phone["messages"] if m["id"] == sent["id"]
    ).items()
    chat = next(c for c in on_phone["chats"] if c["id"] == f"{receiver}@c.us")
    assert chat["archived"] is True


def test_acks_advance_and_are_emitted(pod: SessionPod, double: Double) -> None:
    receiver = new_phone()
    double.register(receiver)
    sent = pod.post(
        "/send_message",
        {"location_identifier": 13, "receiver_phone": receiver, "message": "Recordatorio"},
    ).json()
    pod.events.wait_for("message_ack", lambda d: d["id"] == sent["id"] and d["ack"] == 2)
    double.control("POST", f"/messages/{sent['id']}/ack", {"ack": 3})
    read = pod.events.wait_for("message_ack", lambda d: d["id"] == sent["id"] and d["ack"] == 3)
    assert read["data"]["chat"] == f"{receiver}@c.us"


def test_an_incoming_message_is_emitted(pod: SessionPod, double: Double, phone: str) -> None:
    sender = new_phone()
    double.register(sender)
    double.control("POST", f"/phones/{phone}/incoming", {"from": sender, "body": "Hola, turno?"})
    event = pod.events.wait_for("message", lambda d: d["body"] == "Hola, turno?")
    assert event["data"]["fromMe"] is False
    assert event["data"]["from"] == f"{sender}@c.us"


def test_chats_have_the_seed_shape(pod: SessionPod, double: Double, phone: str) -> None:
    customer = new_phone()
    double.register(customer)
    double.control(
        "POST",
        f"/phones/{phone}/contacts",
        {"contacts": [{"number": customer, "name": "Miguel Tuc"}]},
    )
    double.control("POST", f"/phones/{phone}/incoming", {"from": customer, "body": "uno"})
    pod.events.wait_for("message", lambda d: d["body"] == "uno")
    pod.post(
        "/send_message", {"location_identifier": "13", "receiver_phone": customer, "message": "dos"}
    )
    response = pod.get("/chats", location_identifier="13", chats_to_get=50)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["code"] == 200 and answer["status"] == "success"
    chat = next(v for k, v in answer["body"].items() if k == "Miguel Tuc")
    assert chat["groupChat"] is False
    assert chat["messages"][-2:] == [
        {"from": customer, "fromMe": False, "body": "uno"},
        {"from": phone, "fromMe": True, "body": "dos"},
    ]
    limited = pod.get("/chats", location_identifier="13", chats_to_get=1).json()["body"]
    assert len(limited) == 1


def test_contacts_have_the_seed_shape(pod: SessionPod, double: Double, phone: str) -> None:
    friend = new_phone()
    double.register(friend)
    double.control(
        "POST", f"/phones/{phone}/contacts", {"contacts": [{"number": friend, "name": "Ana"}]}
    )
    response = pod.get("/contacts", location_identifier="13")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["code"] == 200 and answer["status"] == "success"
    ana = next(c for c in answer["body"] if c["number"] == friend)
    assert ana == {
        "id": {"server": "c.us", "user": friend, "_serialized": f"{friend}@c.us"},
        "isMe": False,
        "name": "Ana",
        "pushname": ana["pushname"],
        "shortName": ana["shortName"],
        "number": friend,
        "isGroup": False,
        "isMyContact": True,
        "isWAContact": True,
    }


def test_an_unknown_number_is_a_clear_400(pod: SessionPod) -> None:
    response = pod.post(
        "/send_message",
        {"location_identifier": "13", "receiver_phone": "5490000000000", "message": "hola"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "message": "The number 5490000000000 is not registered on WhatsApp",
    }


def test_metrics_and_health(pod: SessionPod) -> None:
    assert pod.get("/healthz").json() == {"ok": True, "detail": "ready"}
    assert pod.get("/readyz").status_code == 200
    text = pod.get("/metrics").text
    assert 'wa_session_state{location="13",state="ready"} 1.0' in text
    assert "wa_messages_sent_total" in text


def test_every_request_gets_a_request_id(pod: SessionPod) -> None:
    response = requests.get(
        f"{pod.url}/status", headers={**pod.auth, "X-Request-ID": "abc-123"}, timeout=5
    )
    assert response.headers["X-Request-ID"] == "abc-123"
    assert wait_until(lambda: "abc-123" in pod.program.log_path.read_text(), 5, "a log line")
