"""The session's explicit state machine.

starting -> qr_required -(QR scanned, or pairing code typed in)-> authenticating -> syncing -> ready
(a pending pairing code keeps qr_required: `Session.pairing`, /status `pairing_code_pending`)
ready -(socket lost, page crash)-> disconnected -> starting/syncing -> ready
ready -(remote logout)-> qr_required
any -(/logout)-> logged_out -(/login)-> starting
any -(relaunch attempts exhausted)-> failed -(/login)-> starting
"""

from __future__ import annotations

import time
from collections.abc import Callable

from whatsapp_common.logs import get_logger
from whatsapp_common.states import SessionState

log = get_logger(__name__)


S = SessionState
_LIVE = {S.STARTING, S.QR_REQUIRED, S.AUTHENTICATING, S.SYNCING, S.READY, S.DISCONNECTED}

ALLOWED: dict[SessionState, set[SessionState]] = {
    S.STARTING: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.QR_REQUIRED: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.AUTHENTICATING: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.SYNCING: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.READY: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.DISCONNECTED: _LIVE | {S.FAILED, S.LOGGED_OUT},
    S.LOGGED_OUT: {S.STARTING},
    S.FAILED: {S.STARTING, S.LOGGED_OUT},
}


class InvalidTransition(RuntimeError):
    pass


class StateMachine:
    """Holds the current state; each real transition is logged once and reported to `on_change`."""

    def __init__(self, on_change: Callable[[SessionState, SessionState, str], None]) -> None:
        self.state = SessionState.STARTING
        self.since = time.time()
        self.reason = ""
        self._on_change = on_change

    def move(self, new: SessionState, reason: str = "") -> bool:
        """Go to `new`; returns False when already there (nothing is logged or emitted)."""
        old = self.state
        if new == old:
            return False
        if new not in ALLOWED[old]:
            raise InvalidTransition(f"{old} -> {new}")
        self.state, self.since, self.reason = new, time.time(), reason
        log.info("session state changed", old=str(old), new=str(new), reason=reason)
        self._on_change(old, new, reason)
        return True
