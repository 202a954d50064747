"""Unit tests of the session pod's pure pieces: input validation, state derivation, events."""

from __future__ import annotations

import asyncio

import pytest

from session_pod.config import ConfigError, Settings
from session_pod.events import EventBus
from session_pod.session import derive_state, phone_of
from session_pod.state_machine import InvalidTransition, StateMachine
from tests.support.session_pods import location_keys
from whatsapp_common.answers import ApiError
from whatsapp_common.states import SessionState
from whatsapp_common.validation import int_param, location_identifier, receiver_chat_id


@pytest.mark.parametrize(
    ("raw", "chat_id"),
    [
        ("5491134525535", "5491134525535@c.us"),
        ("+54 9 11 3452-5535", "5491134525535@c.us"),
        ("(011) 4555.1234", "01145551234@c.us"),
        (5491134525535, "5491134525535@c.us"),
        ("5491134525535@c.us", "5491134525535@c.us"),
    ],
)
def test_receiver_phones_become_chat_ids(raw: object, chat_id: str) -> None:
    assert receiver_chat_id({"receiver_phone": raw}) == chat_id


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (None, "is required"),
        ("", "is required"),
        ("54911abc5535", "digits only"),
        ("٥٤٩١١٣٤٥٢٥٥٣٥", "digits only"),
        ("123", "7 to 15 digits"),
        ("1" * 16, "7 to 15 digits"),
        (True, "string of digits"),
        (["5491134525535"], "string of digits"),
    ],
)
def test_bad_receiver_phones_say_what_is_wrong(raw: object, says: str) -> None:
    with pytest.raises(ApiError) as error:
        receiver_chat_id({"receiver_phone": raw})
    assert error.value.status == 400
    assert error.value.body["success"] is False
    assert says in error.value.body["message"]


def test_location_identifier_must_be_this_pods() -> None:
    assert location_identifier({"location_identifier": 13}, "13") == "13"
    assert location_identifier({"location_identifier": " 13 "}, "13") == "13"
    for body, says in [
        ({}, "The location identifier is required"),
        ({"location_identifier": ""}, "The location identifier is required"),
        ({"location_identifier": 14}, "serves location 13, not 14"),
        ({"location_identifier": {"id": 13}}, "must be a string or an integer"),
    ]:
        with pytest.raises(ApiError, match=says):
            location_identifier(body, "13")


def test_integer_parameters_are_bounded() -> None:
    assert int_param({}, "chats_to_get", 10, 1, 100) == 10
    assert int_param({"chats_to_get": "5"}, "chats_to_get", 10, 1, 100) == 5
    with pytest.raises(ApiError, match="must be an integer"):
        int_param({"chats_to_get": "ten"}, "chats_to_get", 10, 1, 100)
    with pytest.raises(ApiError, match="between 1 and 100"):
        int_param({"chats_to_get": "0"}, "chats_to_get", 10, 1, 100)


@pytest.mark.parametrize(
    ("snapshot", "state"),
    [
        ({"mode": "MAIN", "authenticated": True}, SessionState.READY),
        ({"mode": "MAIN", "authenticated": False}, SessionState.QR_REQUIRED),
        ({"mode": "SYNCING", "authenticated": True}, SessionState.SYNCING),
        ({"mode": "SYNCING", "authenticated": False}, SessionState.AUTHENTICATING),
        ({"mode": "QR", "authenticated": False}, SessionState.QR_REQUIRED),
        ({"mode": "QR", "authenticated": True}, SessionState.AUTHENTICATING),
        ({"mode": "OFFLINE", "authenticated": True}, SessionState.DISCONNECTED),
        ({"mode": "CONFLICT", "authenticated": True}, SessionState.DISCONNECTED),
    ],
)
def test_state_follows_the_page(snapshot: dict[str, object], state: SessionState) -> None:
    assert derive_state(snapshot) == state


def test_phone_of_strips_device_and_server() -> None:
    assert phone_of("5491100000001:12@c.us") == "5491100000001"
    assert phone_of("5491100000001@c.us") == "5491100000001"


def test_state_machine_reports_real_transitions_once() -> None:
    seen: list[tuple[SessionState, SessionState, str]] = []
    machine = StateMachine(lambda old, new, why: seen.append((old, new, why)))
    assert machine.move(SessionState.QR_REQUIRED, "page shows a QR")
    assert not machine.move(SessionState.QR_REQUIRED, "again")
    machine.move(SessionState.LOGGED_OUT, "logout")
    with pytest.raises(InvalidTransition):
        machine.move(SessionState.READY)
    assert seen == [
        (SessionState.STARTING, SessionState.QR_REQUIRED, "page shows a QR"),
        (SessionState.QR_REQUIRED, SessionState.LOGGED_OUT, "logout"),
    ]


def test_event_bus_replays_history_and_ends_streams_on_close() -> None:
    async def scenario() -> list[str]:
        bus = EventBus()
        bus.publish("qr", {"qr": "2@secret"})
        bus.publish("authenticated")
        received: list[str] = []

        async def read() -> None:
            async for event in bus.subscribe(after_id=1):
                received.append(event.type)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        bus.publish("ready")
        await asyncio.sleep(0.01)
        bus.close()
        await asyncio.wait_for(reader, 1)
        return received

    assert asyncio.run(scenario()) == ["authenticated", "ready"]


def test_settings_require_a_location_and_sane_numbers() -> None:
    with pytest.raises(ConfigError, match="LOCATION_ID is required"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="CALL_TIMEOUT_SECONDS must be a number"):
        Settings.from_env({"LOCATION_ID": "13", "CALL_TIMEOUT_SECONDS": "soon"})
    with pytest.raises(ConfigError, match=r"BACKUP_KEYS_FILE \(or BACKUP_KEYS\) is required"):
        Settings.from_env({"LOCATION_ID": "13"})
    keys = location_keys("13")
    settings = Settings.from_env({"LOCATION_ID": "13", "ARCHIVE_AFTER_SEND": "false", **keys})
    assert settings.archive_after_send is False
    assert settings.port == 8093
