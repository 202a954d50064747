"""The session pod against what wa-js 4.6.0 really does, through a real pod and Chromium.

Each behaviour of the double these tests lean on cites its wa-js source in
tests/wa_double/static/wpp.js: refused sends resolve with a send result, sends wait on the
server, contacts carry patched isGroup getters, users live under LIDs, queryWidExists answers
null on errors, new_message carries notifications, statuses and ciphertext placeholders,
conn.authenticated comes at main_loaded, refreshQR is gone, sync progress may stay null.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.processes import wait_until
from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]
SECRET = "rails-shared-secret"


@pytest.fixture(scope="module")
def rails() -> Iterator[RailsReceiver]:
    receiver = RailsReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def pod(link_pod: Callable[..., SessionPod], rails: RailsReceiver) -> SessionPod:
    return link_pod("13", **rails.env(SECRET))


def send(pod: SessionPod, receiver: str, text: str, **headers: str) -> requests.Response:
    return pod.post(
        "/send_message",
        {"location_identifier": pod.location, "receiver_phone": receiver, "message": text},
        headers=headers,
    )


def test_a_refused_send_is_an_error_and_a_retry_with_its_key_sends_nothing(
    pod: SessionPod, double: Double, phone: str
) -> None:
    receiver = new_phone()
    double.register(receiver)
    double.control("POST", f"/phones/{phone}/fail_sends", {"count": 1})
    first = send(pod, receiver, "turno", **{"Idempotency-Key": "refused-1"})
    assert first.status_code == 500, first.text
    body = first.json()
    assert (body["success"], body["message"], body["error"]) == (
        False,
        "Error sending message",
        "ERROR_NETWORK",
    )
    record = pod.get(f"/messages/{body['id']}").json()
    assert record["status"] == "failed" and record["ack"] == -1
    again = send(pod, receiver, "turno", **{"Idempotency-Key": "refused-1"})
    assert again.status_code == 500 and again.json() == body
    assert again.headers["Idempotent-Replayed"] == "true"
    taken = [m for m in double.phone(phone)["messages"] if receiver in m["chat"]]
    assert taken == [], "WhatsApp never took the message, and the retry did not send it"
    assert pod.status()["state"] == "ready"


def test_a_send_waiting_on_whatsapp_answers_within_the_bound(
    pod: SessionPod, double: Double, phone: str
) -> None:
    receiver = new_phone()
    double.register(receiver)
    double.control("POST", f"/phones/{phone}/hold_sends", {"hold": True})
    try:
        started = time.monotonic()
        answer = send(pod, receiver, "recordatorio", **{"Idempotency-Key": "held-1"})
        waited = time.monotonic() - started
    finally:
        double.control("POST", f"/phones/{phone}/hold_sends", {"hold": False})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["queued"] is True and body["ack"] == 0
    assert waited < 5 + 3, f"SEND_WAIT_SECONDS is 5 in these tests; the answer took {waited:.1f}s"
    record = wait_until(
        lambda: (r := pod.get(f"/messages/{body['id']}").json())["status"] == "received" and r,
        20,
        "the queued message's acks",
    )
    assert record["attempts"] == 1
    taken = [m for m in double.phone(phone)["messages"] if m["id"] == body["id"]]
    assert len(taken) == 1 and taken[0]["deliveries"] == 1


def test_contacts_are_not_groups_and_lid_contacts_are_left_out(
    pod: SessionPod, double: Double, phone: str
) -> None:
    friend, lid_user = new_phone(), new_phone()
    double.control("POST", "/numbers", {"numbers": [{"number": lid_user, "lid": True}]})
    double.control(
        "POST", f"/phones/{phone}/contacts", {"contacts": [{"number": friend, "name": "Ana"}]}
    )
    assert send(pod, lid_user, "hola").status_code == 200  # a chat with a LID user
    body = pod.get("/contacts", location_identifier="13").json()["body"]
    assert body, "contacts"
    assert [c for c in body if c["isGroup"]] == []
    assert all(c["id"]["server"] == "c.us" for c in body)
    assert any(c["number"] == friend and c["name"] == "Ana" for c in body)
    assert all(c["number"].isdigit() and c["id"]["user"] == c["number"] for c in body)


@pytest.mark.parametrize("pn_chat", [False, True], ids=["lid-chat", "phone-chat-lid-receipts"])
def test_a_lid_user_gets_the_message_archived_and_acked_under_its_id(
    pod: SessionPod, double: Double, phone: str, rails: RailsReceiver, pn_chat: bool
) -> None:
    receiver = new_phone()
    double.control(
        "POST", "/numbers", {"numbers": [{"number": receiver, "lid": True, "pn_chat": pn_chat}]}
    )
    answer = send(pod, receiver, "su turno es mañana")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["archived"] is True
    assert body["chat_id"] == f"{receiver}@c.us"
    assert ("@lid_" in body["id"]) is not pn_chat
    record = wait_until(
        lambda: (r := pod.get(f"/messages/{body['id']}").json())["status"] == "received" and r,
        10,
        "the receipt of a LID user",
    )
    assert record["id"] == body["id"]
    chat_id = body["id"].split("_")[1]
    assert chat_id.endswith("@c.us" if pn_chat else "@lid")
    [chat] = [c for c in double.phone(phone)["chats"] if c["id"] == chat_id]
    assert chat["archived"] is True
    acks = wait_until(
        lambda: [
            e
            for e in rails.events("message_ack")
            if e["data"]["id"] == body["id"] and e["data"]["ack"] == 2
        ],
        20,
        "the message_ack webhook under the id /send_message answered",
    )
    if pn_chat:
        assert acks[0]["data"]["whatsapp_id"].split("_")[1].endswith("@lid")


def test_a_failed_number_check_is_a_503_not_unregistered(
    pod: SessionPod, double: Double, phone: str
) -> None:
    receiver = new_phone()
    double.register(receiver)
    double.control("POST", f"/phones/{phone}/fail_queries", {"count": 2})
    answer = send(pod, receiver, "hola")
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"]
    assert answer.json()["message"] == (
        f"Could not check whether the number {receiver} is on WhatsApp, try again later"
    )
    assert send(pod, receiver, "hola").status_code == 200
    unknown = send(pod, "5490000000001", "hola")
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "The number 5490000000001 is not registered on WhatsApp"


def test_only_customer_messages_become_message_webhooks(
    pod: SessionPod, double: Double, phone: str, rails: RailsReceiver
) -> None:
    customer = new_phone()
    double.register(customer)
    before = {e["event_id"] for e in rails.events("message")}
    for kind in ("notification", "status"):
        double.control(
            "POST", f"/phones/{phone}/incoming", {"from": customer, "body": kind, "kind": kind}
        )
    secret = double.control(
        "POST",
        f"/phones/{phone}/incoming",
        {"from": customer, "body": "cifrado", "kind": "ciphertext"},
    )
    plain = double.control("POST", f"/phones/{phone}/incoming", {"from": customer, "body": "hola"})
    assert send(pod, customer, "respuesta").status_code == 200
    wait_until(
        lambda: {plain["id"], secret["id"]} <= {e["event_id"] for e in rails.events("message")},
        20,
        "the customer's two messages",
    )
    time.sleep(1)  # anything else would have come with them
    new = [e for e in rails.events("message") if e["event_id"] not in before]
    assert sorted(e["data"]["body"] for e in new) == ["cifrado", "hola"]
    assert all(e["data"]["id"] == e["event_id"] and not e["data"]["fromMe"] for e in new)


def test_a_late_authenticated_causes_no_flap_and_one_backup(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    """wa-js fires conn.authenticated at main_loaded, here 50 ms after MAIN."""
    pod = start_pod("21", tmp_path / "pod")
    pod.link(double, new_phone())
    pod.events.wait_for("remote_session_saved")
    time.sleep(2)
    states = [e["data"]["state"] for e in pod.events.of_type("state")]
    assert states[-1] == "ready" and states.count("ready") == 1, states
    assert len(pod.events.of_type("ready")) == 1
    assert len(pod.events.of_type("authenticated")) == 1
    assert len(pod.events.of_type("remote_session_saved")) == 1


def test_an_idle_qr_is_replaced_not_republished(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    pod = start_pod("22", tmp_path / "pod")
    pod.wait_state("qr_required")
    first = wait_until(lambda: pod.get("/qr").json().get("qr"), 10, "a QR code")
    double.control("POST", "/qr/expire")
    pod.events.wait_for("qr_idle")
    assert pod.get("/qr").status_code == 404
    assert pod.post("/login", {"location_identifier": "22", "user_id": 1}).status_code == 200
    second = wait_until(
        lambda: (code := pod.get("/qr").json().get("qr")) and code != first and code,
        10,
        "a new QR after the reload button",
    )
    pod.events.wait_for("qr", lambda d: d["qr"] == second)  # the stream may lag /qr
    codes = [e["data"]["qr"] for e in pod.events.of_type("qr")]
    assert codes == [first, second], "the idle code is never published again"
    double.scan(second, new_phone())
    pod.wait_state("ready")


def test_a_sync_that_never_ends_still_gets_ready_and_backs_up(
    start_pod: StartPod, double: Double, tmp_path: Path
) -> None:
    phone = new_phone()
    double.control("POST", f"/phones/{phone}/sync", {"progress": None})
    pod = start_pod("23", tmp_path / "pod", SYNC_MAX_WAIT_SECONDS="2")
    pod.link(double, phone)
    saved = pod.events.wait_for("remote_session_saved", timeout=30)
    assert saved["data"]["trigger"] == "initial sync did not report its end"
    assert pod.status()["state"] == "ready"


def test_the_connection_is_kept_alive(pod: SessionPod, double: Double, phone: str) -> None:
    assert double.phone(phone)["keep_alive"] is True
