"""What a fleet rollout does next, as pure functions of its recorded state and of what the
watches say of each location (rollout.py does the reading, writing and applying).

A rollout moves every location's StatefulSet from the revision it is on to the target
fleet revision (fleet.py): first the canaries, all at once; once they are all back, the
others, at most `maxUnavailable` in flight at a time. A location in flight is back when
its StatefulSet has made its pod from the target template and the new pod says it is in
the state the old one was in (a linked one Ready, i.e. restored without a QR); one that is
not back within the deadline has failed (and goes back to the stable revision). More
failures than the threshold halt the rollout: nothing more is released until a person
resumes (the failed are tried again) or abandons it (every location goes back to stable);
a person may also halt it.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whatsapp_common.envvars import ConfigError, env_bool, env_int, env_number
from whatsapp_common.states import Phase

from .fleet import Fleet
from .status import timestamp

PROGRESSING, HALTED, COMPLETE, ABANDONED = "Progressing", "Halted", "Complete", "Abandoned"
MOVING = (PROGRESSING, ABANDONED)  # the phases that release locations
HALT, RESUME, ABANDON = "halt", "resume", "abandon"  # a person's actions
CANARY_LABEL = "whatsapp-sessions.io/canary"  # "true" on a WhatsAppSession: a canary
LINKED = frozenset({Phase.READY, Phase.SYNCING, Phase.AUTHENTICATING})
_SHARE = re.compile(r"^(\d+)(%?)$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Share:
    """A number of locations, or a percentage of the fleet (rounded down)."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, env: Mapping[str, str], name: str, default: str) -> Share:
        raw = (env.get(name) or default).strip()
        match = _SHARE.match(raw)
        if match is None or (match.group(2) and int(match.group(1)) > 100):
            raise ConfigError(f"{name} must be a number or a percentage (0-100%), got {raw!r}")
        return cls(int(match.group(1)), bool(match.group(2)))

    def of(self, total: int) -> int:
        return total * self.value // 100 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class Window:
    """A daily time window, UTC, in minutes since midnight; it may wrap past midnight."""

    start: int
    end: int

    @classmethod
    def parse(cls, raw: str, name: str) -> Window:
        match = _WINDOW.match(raw.strip())
        if match is None:
            raise ConfigError(f"{name} must be HH:MM-HH:MM (UTC), got {raw!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if (h1, m1) == (h2, m2):
            raise ConfigError(f"{name} is empty: {raw!r}")
        return cls(h1 * 60 + m1, h2 * 60 + m2)

    def contains(self, now: float) -> bool:
        minute = int(now // 60) % 1440
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def opens_in(self, now: float) -> float:
        """Seconds until the window next opens (0 when it is open)."""
        if self.contains(now):
            return 0.0
        return ((self.start * 60 - now) % 86400) or 86400.0


@dataclass(frozen=True)
class RolloutSettings:
    canary: Share = Share(1)
    max_unavailable: Share = Share(10, percent=True)
    max_failures: Share = Share(0)
    deadline_seconds: float = 600.0
    rollback_failed: bool = True
    window: Window | None = None
    # The Helm release revision of this operator's settings: a replica of an older release
    # (one still running during `helm upgrade`) never turns the fleet back to its settings.
    generation: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RolloutSettings:
        window = (env.get("ROLLOUT_WINDOW") or "").strip()
        return cls(
            canary=Share.parse(env, "ROLLOUT_CANARY", "1"),
            max_unavailable=Share.parse(env, "ROLLOUT_MAX_UNAVAILABLE", "10%"),
            max_failures=Share.parse(env, "ROLLOUT_MAX_FAILURES", "0"),
            deadline_seconds=env_number(env, "ROLLOUT_DEADLINE_SECONDS", 600.0, 1),
            rollback_failed=env_bool(env, "ROLLOUT_ROLLBACK_FAILED", True),
            window=Window.parse(window, "ROLLOUT_WINDOW") if window else None,
            generation=env_int(env, "CONFIG_GENERATION", 0, 0),
        )


@dataclass(frozen=True)
class Location:
    """One location whose StatefulSet is owned by its resource, as the watches see it."""

    id: str
    revision: str  # its StatefulSet's fleet revision ("" unknown)
    settled: bool  # its StatefulSet's pod is made from its current template
    stopped: bool  # no pod runs on purpose (paused, hibernating)
    pinned: bool
    canary: bool
    phase: str  # status.phase
    pod: str  # uid of its running pod ("" none)
    reported: tuple[str, str] | None = None  # (pod uid, phase) its follower last read


@dataclass(frozen=True)
class InFlight:
    since: float
    before: str  # the phase when it was released
    pod: str  # the pod that ran then ("" none)


@dataclass(frozen=True)
class Note:
    """A Kubernetes Event to post once the state that caused it is written."""

    type: str  # Normal, Warning
    reason: str
    message: str
    location: str = ""  # also posted on this location's resource


@dataclass
class RolloutState:
    phase: str
    stable: str
    target: str
    revisions: dict[str, Fleet]
    generation: int = 0
    started: float = 0.0
    abandoned: str = ""  # a target given up: not taken again from the same settings
    canaries: list[str] = field(default_factory=list)
    canary_passed: bool = False
    failures: int = 0  # counted against the threshold since the start or the last resume
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # location -> why
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def initial(cls, fleet: Fleet, generation: int, now: float) -> RolloutState:
        """The first state of a namespace: its StatefulSets of unknown revision (made before
        rollouts existed) are rolled to `fleet` like any other change."""
        rev = fleet.revision
        return cls(PROGRESSING, rev, rev, {rev: fleet}, generation, now)

    def copy(self) -> RolloutState:
        return dataclasses.replace(
            self,
            revisions=dict(self.revisions),
            canaries=list(self.canaries),
            in_flight=dict(self.in_flight),
            failed=dict(self.failed),
            counts=dict(self.counts),
        )

    def to_status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "message": self.message,
            "stable": self.stable,
            "target": self.target,
            "abandoned": self.abandoned,
            "generation": self.generation,
            "startedAt": timestamp(self.started),
            "canaries": self.canaries,
            "canaryPassed": self.canary_passed,
            "failures": self.failures,
            "inFlight": [
                {
                    "location": location,
                    "since": timestamp(flight.since),
                    "before": flight.before,
                    "pod": flight.pod,
                }
                for location, flight in sorted(self.in_flight.items())
            ],
            "failed": [
                {"location": location, "reason": reason}
                for location, reason in sorted(self.failed.items())
            ],
            "counts": self.counts,
            "revisions": {rev: fleet.to_json() for rev, fleet in self.revisions.items()},
        }

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> RolloutState:
        return cls(
            phase=status["phase"],
            stable=status["stable"],
            target=status["target"],
            revisions={r: Fleet.from_json(f) for r, f in status["revisions"].items()},
            generation=status.get("generation", 0),
            started=parse_time(status.get("startedAt")),
            abandoned=status.get("abandoned", ""),
            canaries=list(status.get("canaries") or []),
            canary_passed=status.get("canaryPassed", False),
            failures=status.get("failures", 0),
            in_flight={
                f["location"]: InFlight(parse_time(f["since"]), f["before"], f["pod"])
                for f in status.get("inFlight") or []
            },
            failed={f["location"]: f["reason"] for f in status.get("failed") or []},
            message=status.get("message", ""),
            counts=dict(status.get("counts") or {}),
        )


def parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def retargets(state: RolloutState, fleet: Fleet, generation: int) -> bool:
    """Whether this operator's settings start a new rollout: they differ from the target
    (and from an abandoned one), and come from a release at least as new."""
    rev = fleet.revision
    return rev not in (state.target, state.abandoned) and generation >= state.generation


def retarget(state: RolloutState, fleet: Fleet, generation: int, now: float) -> RolloutState:
    """A new rollout to `fleet`, from the stable revision. Locations in flight to the
    previous target stay where they got to and are rolled again like the rest."""
    rev = fleet.revision
    return dataclasses.replace(
        state.copy(),
        phase=PROGRESSING,
        target=rev,
        revisions={**state.revisions, rev: fleet},
        generation=generation,
        started=now,
        abandoned="",
        canaries=[],
        canary_passed=False,
        failures=0,
        in_flight={},
        failed={},
        message=f"rolling {state.stable} -> {rev}",
    )


def revision_for(
    state: RolloutState,
    settings: RolloutSettings,
    location: str,
    current: str | None,
    stopped: bool,
    pinned: bool,
) -> str | None:
    """The fleet revision to render the location's StatefulSet with; None: leave it as it
    is (a revision whose settings are not known). `current`: its StatefulSet's revision
    (None: it has none yet)."""
    safe = state.stable if state.phase == HALTED else state.target
    if current is None:
        return safe
    if location in state.in_flight:
        return state.target
    known = current if current in state.revisions else None
    if pinned:
        return known
    if location in state.failed and settings.rollback_failed:
        return state.stable
    if stopped:
        return safe
    return known


def is_back(flight: InFlight, location: Location, target: str) -> bool:
    """The location's pod runs the target template and says what the old one said: a
    linked session Ready (restored, no QR), one that showed a QR at least that again. What
    its pod reported must be in its status already: what the rollout saw, anyone sees."""
    if location.revision != target or not location.settled or location.reported is None:
        return False
    pod, phase = location.reported
    if pod == flight.pod or location.phase != phase:
        return False
    if flight.before in LINKED:
        return phase == Phase.READY
    if flight.before == Phase.QR_REQUIRED:
        return phase == Phase.QR_REQUIRED or phase in LINKED
    return True


def expected(before: str) -> str:
    if before in LINKED:
        return "Ready"
    return "QRRequired or linked" if before == Phase.QR_REQUIRED else "running"


def is_pending(state: RolloutState, location: Location) -> bool:
    return (
        not location.stopped
        and not location.pinned
        and location.revision != state.target
        and location.id not in state.in_flight
        and location.id not in state.failed
    )


def advance(
    state: RolloutState,
    settings: RolloutSettings,
    locations: Mapping[str, Location],
    now: float,
    action: str = "",
) -> tuple[RolloutState, list[Note]]:
    """The next state: the action (resume, abandon) applied, the locations in flight that
    are back or failed, the halt, the next locations released."""
    s, notes = state.copy(), []
    if action:
        notes.append(_act(s, action))
    if s.phase == COMPLETE and any(is_pending(s, seen) for seen in locations.values()):
        s.phase = PROGRESSING  # e.g. a location unpinned after its rollout
    for location, flight in list(s.in_flight.items()):
        seen = locations.get(location)
        # Gone, stopped (it takes the template when it starts), or back.
        if seen is None or seen.stopped or is_back(flight, seen, s.target):
            del s.in_flight[location]
        elif now - flight.since > settings.deadline_seconds:
            del s.in_flight[location]
            reason = (
                f"not back ({expected(flight.before)}) within {settings.deadline_seconds:g} s:"
                f" phase {seen.phase or 'unknown'}"
            )
            s.failed[location], s.failures = reason, s.failures + 1
            notes.append(Note("Warning", "LocationFailed", f"{location}: {reason}", location))
    total = len(locations)
    allowed = settings.max_failures.of(total)
    if s.phase in MOVING and s.failures > allowed:
        s.phase = HALTED
        s.message = (
            f"halted: {s.failures} failed (at most {settings.max_failures} allowed); "
            f"resume tries them again, abandon rolls back to {s.stable}"
        )
        notes.append(Note("Warning", "RolloutHalted", s.message))
    pending = sorted(i for i, seen in locations.items() if is_pending(s, seen))
    open_ = settings.window is None or settings.window.contains(now)
    if s.phase in MOVING and open_:
        released = _release(s, settings, locations, pending, total, now, notes)
        pending = [i for i in pending if i not in released]
    if s.phase in MOVING and not s.in_flight and not pending:
        _finish(s, notes)
    elif s.phase in MOVING:
        stage = "canary" if not s.canary_passed else "waves"
        window = "" if open_ else " (outside the maintenance window)"
        s.message = f"{s.stable} -> {s.target}: {stage}, {len(s.in_flight)} in flight{window}"
    s.counts = _counts(s, locations, pending)
    used = {s.stable, s.target, s.abandoned, *(seen.revision for seen in locations.values())}
    s.revisions = {rev: fleet for rev, fleet in s.revisions.items() if rev in used}
    return s, notes


def _act(s: RolloutState, action: str) -> Note:
    if action == HALT and s.phase in MOVING:
        s.phase = HALTED
        s.message = f"halted by hand: resume goes on, abandon rolls back to {s.stable}"
        return Note("Warning", "RolloutHalted", s.message)
    if action == RESUME and s.phase == HALTED:
        s.phase = ABANDONED if s.abandoned else PROGRESSING
        s.failures, s.failed = 0, {}
        if not s.canary_passed:
            s.canaries = []  # chosen again: a failed canary is tried again first
        return Note("Normal", "RolloutResumed", f"resumed: {s.stable} -> {s.target}")
    if action == RESUME and s.phase == ABANDONED and s.abandoned in s.revisions:
        s.target, s.abandoned = s.abandoned, ""  # tried again, from its canary
        s.phase, s.canary_passed, s.canaries = PROGRESSING, False, []
        s.failures, s.failed, s.in_flight = 0, {}, {}
        return Note("Normal", "RolloutResumed", f"resumed: {s.stable} -> {s.target} again")
    if action == ABANDON and s.target != s.stable:
        s.abandoned, s.target = s.target, s.stable
        s.phase, s.canary_passed = ABANDONED, True
        s.failures, s.failed, s.in_flight = 0, {}, {}
        return Note("Warning", "RolloutAbandoned", f"abandoned {s.abandoned}: back to {s.stable}")
    return Note("Warning", "ActionIgnored", f"{action!r} does nothing in phase {s.phase}")


def _release(
    s: RolloutState,
    settings: RolloutSettings,
    locations: Mapping[str, Location],
    pending: list[str],
    total: int,
    now: float,
    notes: list[Note],
) -> list[str]:
    """The canaries, all at once; once every canary is back, the others up to
    `maxUnavailable` in flight."""
    if not s.canary_passed and not s.canaries:
        labelled = [i for i in pending if locations[i].canary]
        s.canaries = labelled or pending[: max(1, settings.canary.of(total))]
        if not s.canaries:
            s.canary_passed = True
        else:
            notes.append(Note("Normal", "CanaryStarted", f"canary: {', '.join(s.canaries)}"))
            for location in s.canaries:
                _fly(s, locations[location], now)
            return list(s.canaries)
    if not s.canary_passed:
        if any(c in s.in_flight for c in s.canaries):
            return []
        s.canary_passed = True
        notes.append(Note("Normal", "CanaryPassed", f"canary back: {', '.join(s.canaries)}"))
    slots = max(1, settings.max_unavailable.of(total)) - len(s.in_flight)
    released = pending[: max(0, slots)]
    for location in released:
        _fly(s, locations[location], now)
    return released


def _fly(s: RolloutState, location: Location, now: float) -> None:
    s.in_flight[location.id] = InFlight(now, location.phase, location.pod)


def _finish(s: RolloutState, notes: list[Note]) -> None:
    if s.phase == ABANDONED:
        s.message = f"abandoned {s.abandoned}: the fleet is back on {s.stable}"
        return
    if s.failed:
        s.phase = HALTED
        s.message = (
            f"{len(s.failed)} locations failed and are not on {s.target}: resume tries them "
            f"again, abandon rolls back to {s.stable}"
        )
        notes.append(Note("Warning", "RolloutHalted", s.message))
        return
    s.phase, s.stable = COMPLETE, s.target
    s.message = f"every location on {s.target}"
    notes.append(Note("Normal", "RolloutComplete", s.message))


def _counts(
    s: RolloutState, locations: Mapping[str, Location], pending: list[str]
) -> dict[str, int]:
    return {
        "total": len(locations),
        "updated": sum(
            1 for i, seen in locations.items() if seen.revision == s.target and i not in s.in_flight
        ),
        "pending": len(pending),
        "inFlight": len(s.in_flight),
        "failed": len(s.failed),
        "pinned": sum(1 for loc in locations.values() if loc.pinned and loc.revision != s.target),
    }


def next_due(state: RolloutState, settings: RolloutSettings, now: float) -> float | None:
    """Seconds until something happens with no event: a deadline passes, the window opens."""
    deadline = settings.deadline_seconds + 1
    dues = [flight.since + deadline - now for flight in state.in_flight.values()]
    window = settings.window
    if window is not None and not window.contains(now) and state.phase in MOVING:
        dues.append(window.opens_in(now))
    return max(0.0, min(dues)) if dues else None


def outranked(peers: Mapping[str, Any], priority: int, now: float) -> bool:
    """Whether a live peer in a KopfPeering's status (identity -> priority, lastseen,
    lifetime) has a higher priority than `priority`: kopf has then paused this replica, and
    its watches with it, so what it sees of the locations is stale."""
    for peer in peers.values():
        try:
            seen = datetime.datetime.fromisoformat(peer["lastseen"]).timestamp()
            alive = seen + float(peer.get("lifetime", 60)) > now
        except (KeyError, TypeError, ValueError):
            continue
        if alive and int(peer.get("priority", 0)) > priority:
            return True
    return False
