"""Every kind of bad input gets a 400 in the seed's error shape that says what is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.session_pods import Double, SessionPod

pytestmark = pytest.mark.slow
SEND = {"location_identifier": "13", "receiver_phone": "5491134525535", "message": "hola"}


@pytest.fixture(scope="module")
def pod(double: Double, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPod]:
    pod = SessionPod("13", tmp_path_factory.mktemp("bad-input") / "pod", double)
    yield pod
    pod.stop()


def post_raw(pod: SessionPod, path: str, data: bytes, content_type: str) -> requests.Response:
    return requests.post(
        f"{pod.url}{path}",
        data=data,
        headers={**pod.auth, "Content-Type": content_type},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/login", {}, "The location identifier is required"),
        ("/login", {"location_identifier": "  "}, "The location identifier is required"),
        ("/login", {"location_identifier": None}, "The location identifier is required"),
        ("/login", {"location_identifier": ["13"]}, "must be a string or an integer"),
        ("/login", {"location_identifier": True}, "must be a string or an integer"),
        ("/login", {"location_identifier": "14"}, "serves location 13, not 14"),
        ("/logout", {"user_id": 1}, "The location identifier is required"),
        ("/send_message", {**SEND, "message": ""}, "message must not be empty"),
        ("/send_message", {**SEND, "message": "   "}, "message must not be empty"),
        ("/send_message", {**SEND, "message": 42}, "message must be a string"),
        ("/send_message", {k: v for k, v in SEND.items() if k != "message"}, "message is required"),
        ("/send_message", {**SEND, "receiver_phone": ""}, "receiver_phone is required"),
        ("/send_message", {**SEND, "receiver_phone": "54911CALL-ME"}, "digits only"),
        ("/send_message", {**SEND, "receiver_phone": {"n": 1}}, "string of digits"),
        ("/send_message", {**SEND, "receiver_phone": "12"}, "7 to 15 digits"),
        ("/send_message", {**SEND, "message": "x" * 70_000}, "longer than 65536"),
        ("/send_message", {**SEND, "location_identifier": 99}, "serves location 13, not 99"),
    ],
)
def test_bad_json_fields(pod: SessionPod, path: str, body: dict[str, object], says: str) -> None:
    response = pod.post(path, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["success"] is False
    assert says in answer["message"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "must be a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"13"', "must be a JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
@pytest.mark.parametrize("path", ["/login", "/logout", "/send_message"])
def test_bodies_that_are_not_json_objects(pod: SessionPod, path: str, data: bytes, says: str):
    response = post_raw(pod, path, data, "application/json")
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": response.json()["message"]}
    assert says in response.json()["message"]


def test_a_ten_megabyte_body_is_refused(pod: SessionPod) -> None:
    response = post_raw(pod, "/send_message", b"{" + b" " * 10_000_000 + b"}", "application/json")
    assert response.status_code == 400
    assert "too large" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/chats", {"chats_to_get": "5"}, "The location identifier is required"),
        ("/chats", {"location_identifier": "13", "chats_to_get": "ten"}, "must be an integer"),
        ("/chats", {"location_identifier": "13", "chats_to_get": "-1"}, "between 1 and 100"),
        ("/chats", {"location_identifier": "13", "chats_to_get": "100000"}, "between 1 and 100"),
        ("/chats", {"location_identifier": "13", "messages_to_get": "x"}, "must be an integer"),
        ("/contacts", {}, "The location identifier is required"),
        ("/contacts", {"location_identifier": "7"}, "serves location 13, not 7"),
        ("/qr", {"format": "gif"}, "format must be one of json, png"),
        ("/events", {"after": "yesterday"}, "must be an integer"),
    ],
)
def test_bad_query_values(pod: SessionPod, path: str, params: dict[str, str], says: str) -> None:
    response = pod.get(path, **params)
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert says in response.json()["message"]


def test_unknown_paths_and_methods_keep_the_error_shape(pod: SessionPod) -> None:
    missing = pod.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"success": False, "message": "Not Found"}
    wrong_method = pod.get("/send_message")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"success": False, "message": "Method Not Allowed"}


def test_the_pod_survives_all_of_it(pod: SessionPod) -> None:
    assert pod.program.alive()
    assert pod.get("/healthz").status_code == 200
    assert "Traceback" not in pod.program.log_path.read_text()
