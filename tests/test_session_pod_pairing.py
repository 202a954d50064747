"""Linking by phone number instead of the QR: `POST /pairing_code` on a session pod against
the double, which implements wa-js 4.6.0's genLinkDeviceCodeForPhoneNumber and its managed
flow (src/conn/functions/linkDeviceCodeLifecycle.ts), and whose phone "types the code in"."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.rails import RailsReceiver
from tests.support.session_pods import Double, SessionPod, new_phone

pytestmark = pytest.mark.slow
StartPod = Callable[..., SessionPod]


def ask(pod: SessionPod, phone: object) -> requests.Response:
    return pod.post("/pairing_code", {"location_identifier": pod.location, "phone_number": phone})


@pytest.fixture
def rails() -> Iterator[RailsReceiver]:
    rails = RailsReceiver()
    rails.start()
    yield rails
    rails.stop()


def test_a_pairing_code_links_the_phone_that_types_it_in(
    start_pod: StartPod, double: Double, rails: RailsReceiver
) -> None:
    pod, phone = start_pod("41", **rails.env("pairing-secret")), new_phone()
    pod.wait_state("qr_required")
    answer = ask(pod, f"+{phone[:2]} {phone[2:5]} {phone[5:]}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == 200 and body["status"] == "success"
    code, expires_at = body["body"]["pairing_code"], body["body"]["expires_at"]
    assert re.fullmatch(r"[1-9A-Z]{4}-[1-9A-Z]{4}", code), code

    # The page waits for that code, asked for that number.
    assert {"code": code.replace("-", ""), "phone": phone} in double.control("GET", "/link_codes")[
        "codes"
    ]
    event = pod.events.wait_for("pairing_code")
    assert event["data"] == {"pairing_code": code, "phone": phone, "expires_at": expires_at}
    webhook = rails.wait_for("pairing_code")  # Rails can show or send the code too
    assert webhook["location_identifier"] == "41" and webhook["data"] == event["data"]
    status = pod.status()
    assert status["state"] == "qr_required"  # the state holds while a code is pending
    assert status["pairing_code_pending"] is True
    assert status["pairing_code_expires_at"] == expires_at

    # The same number again gets the code it has (wa-js reuses the active one): no new event.
    again = ask(pod, phone).json()["body"]
    assert again["pairing_code"] == code
    assert len(pod.events.of_type("pairing_code")) == 1

    # Only the phone whose number the code was asked for can use it.
    other = requests.post(
        f"{double.url}/control/pair", json={"code": code, "phone": new_phone()}, timeout=10
    )
    assert other.status_code == 409 and "another phone number" in other.json()["error"]
    double.control("POST", "/pair", {"code": code, "phone": phone, "pushname": "Beauty Shop"})
    ready = pod.wait_state("ready")
    assert ready["phone"] == phone
    assert ready["pairing_code_pending"] is False
    assert pod.events.wait_for("authenticated")["data"] == {"phone": phone}
    assert double.phone(phone)["linked"] is True

    # Linked: WhatsApp gives no code any more (cannot_get_code_for_already_authenticated).
    linked = ask(pod, phone)
    assert linked.status_code == 409, linked.text
    assert linked.json()["success"] is False and "already linked" in linked.json()["message"]

    log = pod.program.log_path.read_text()
    assert code not in log and code.replace("-", "") not in log, "a pairing code was logged"
    assert '"pairing_code": "<redacted>"' in log


BAD_NUMBERS = [
    (None, "The field phone_number is required"),
    ("", "The field phone_number is required"),
    ("abc", "must be a phone number (digits only)"),
    ("+54 11", "must have 7 to 15 digits"),
    (True, "must be a string of digits"),
]


def test_bad_numbers_get_the_seeds_400(start_pod: StartPod) -> None:
    pod = start_pod("42")
    for phone, message in BAD_NUMBERS:
        answer = ask(pod, phone)
        assert answer.status_code == 400, (phone, answer.text)
        assert answer.json()["success"] is False and message in answer.json()["message"]
