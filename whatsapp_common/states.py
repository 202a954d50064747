"""A session's states (what a session pod reports on /status and in `state` events) and the
phases of a WhatsAppSession (what `kubectl get whatsappsessions` shows): each name is
defined here once, and the CRD's phase enum is tested against `ALL_PHASES`."""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    STARTING = "starting"
    QR_REQUIRED = "qr_required"
    AUTHENTICATING = "authenticating"
    SYNCING = "syncing"
    READY = "ready"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"
    FAILED = "failed"


class Phase(StrEnum):
    # The phase of a live session pod: its state's.
    STARTING = "Starting"
    QR_REQUIRED = "QRRequired"
    AUTHENTICATING = "Authenticating"
    SYNCING = "Syncing"
    READY = "Ready"
    DISCONNECTED = "Disconnected"
    LOGGED_OUT = "LoggedOut"
    FAILED = "Failed"
    # Set by the operator when no session pod speaks for the resource.
    PENDING = "Pending"  # no pod runs yet (or it is gone)
    PAUSED = "Paused"  # spec.paused: no pod on purpose
    HIBERNATING = "Hibernating"  # spec.hibernation: scaled to zero while idle, woken on demand
    CONFLICT = "Conflict"  # another resource owns the location


PHASE_OF_STATE: dict[SessionState, Phase] = {state: Phase[state.name] for state in SessionState}
# A session that has a linked phone (the seed's "authenticated").
AUTHENTICATED = frozenset({SessionState.AUTHENTICATING, SessionState.SYNCING, SessionState.READY})
ALL_PHASES = tuple(Phase)


def phase_of(state: str) -> Phase | None:
    """The phase for a state name a pod reported (None: not a state this contract knows)."""
    try:
        return PHASE_OF_STATE[SessionState(state)]
    except ValueError:
        return None


# The `state` the router answers for a location that has no WhatsAppSession.
NO_SESSION = "Unknown"
