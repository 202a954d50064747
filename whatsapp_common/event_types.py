"""The events a session pod publishes: on its `/events` stream (which the operator follows)
and as webhooks to Rails (`RAILS_APP_URL ... /<event>`). README's webhook contract lists
each one's payload."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    # The seed's events.
    QR = "qr"
    AUTHENTICATED = "authenticated"
    AUTH_FAILURE = "auth_failure"
    READY = "ready"
    DISCONNECTED = "disconnected"
    MESSAGE = "message"
    MESSAGE_ACK = "message_ack"
    REMOTE_SESSION_SAVED = "remote_session_saved"
    # This project's.
    STATE = "state"
    MESSAGE_STUCK = "message_stuck"
    MESSAGE_FAILED = "message_failed"
    QR_IDLE = "qr_idle"
    PAIRING_CODE = "pairing_code"
    SESSION_RESTORED = "session_restored"
    BACKUP_FALLBACK = "backup_fallback"
    BACKUP_FAILED = "backup_failed"
    BACKUPS_DELETED = "backups_deleted"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    IDLE = "idle"
