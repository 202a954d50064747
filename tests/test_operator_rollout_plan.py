"""Unit tests of the rollout's decisions (operator/whatsapp_operator/rollout_plan.py): which
locations go when, when one is back, when the rollout halts, what resume and abandon do,
which template each location is rendered with. The end-to-end behaviour on a control plane
with session pods is tests/test_operator_rollout.py."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from tests.support.session_pods import TEST_MASTERS
from whatsapp_operator.config import ConfigError, OperatorConfig
from whatsapp_operator.fleet import Fleet
from whatsapp_operator.rollout_plan import (
    ABANDON,
    ABANDONED,
    COMPLETE,
    HALT,
    HALTED,
    PROGRESSING,
    RESUME,
    Location,
    RolloutSettings,
    RolloutState,
    Share,
    Window,
    advance,
    next_due,
    outranked,
    retarget,
    retargets,
    revision_for,
)

OLD = Fleet.of(OperatorConfig(image="session:1", backup_masters=TEST_MASTERS))
NEW = dataclasses.replace(OLD, image="session:2")
SETTINGS = RolloutSettings(
    canary=Share(1), max_unavailable=Share(2), max_failures=Share(0), deadline_seconds=60
)
T0 = 1_800_000_000.0


def fleet(n: int, **overrides: object) -> dict[str, Location]:
    """`n` linked locations l0..l<n-1> on OLD, each with a running pod."""
    locations = {}
    for i in range(n):
        fields = dict(
            id=f"l{i}",
            revision=OLD.revision,
            settled=True,
            stopped=False,
            pinned=False,
            canary=False,
            phase="Ready",
            pod=f"pod-l{i}-a",
            reported=(f"pod-l{i}-a", "Ready"),
        )
        fields.update(overrides.get(f"l{i}", {}))  # type: ignore[call-overload]
        locations[f"l{i}"] = Location(**fields)  # type: ignore[arg-type]
    return locations


def rolling() -> RolloutState:
    """A rollout OLD -> NEW that has just started."""
    settled = RolloutState(COMPLETE, OLD.revision, OLD.revision, {OLD.revision: OLD})
    return retarget(settled, NEW, 0, T0)


def restarted(location: Location, phase: str = "Ready") -> Location:
    """The location after its pod came back on NEW and reported `phase`."""
    pod = location.pod.replace("-a", "-b")
    return dataclasses.replace(
        location, revision=NEW.revision, pod=pod, reported=(pod, phase), phase=phase
    )


def test_shares_and_windows_parse_and_refuse_with_the_variable_named() -> None:
    assert Share.parse({"X": "5%"}, "X", "1").of(1000) == 50
    assert Share.parse({}, "X", "3").of(1000) == 3
    assert Share.parse({"X": "10%"}, "X", "1").of(7) == 0  # rounded down (a slot is 1 at least)
    for bad in ("lots", "150%", "-1", "1.5"):
        with pytest.raises(ConfigError, match="X"):
            Share.parse({"X": bad}, "X", "1")
    night = Window.parse("22:00-04:00", "W")
    assert night.contains(T0 - T0 % 86400 + 23 * 3600)
    assert not night.contains(T0 - T0 % 86400 + 12 * 3600)
    assert night.opens_in(T0 - T0 % 86400 + 21 * 3600) == 3600
    for bad in ("22-04", "25:00-01:00", "10:00-10:00"):
        with pytest.raises(ConfigError, match="W"):
            Window.parse(bad, "W")
    settings = RolloutSettings.from_env(
        {"ROLLOUT_MAX_UNAVAILABLE": "5%", "ROLLOUT_WINDOW": "01:00-05:00", "CONFIG_GENERATION": "7"}
    )
    assert settings.max_unavailable == Share(5, percent=True) and settings.generation == 7
    assert settings.window == Window(60, 300)


def test_the_canary_goes_first_alone_then_waves_of_max_unavailable() -> None:
    locations = fleet(5)
    state, notes = advance(rolling(), SETTINGS, locations, T0)
    assert state.canaries == ["l0"] and list(state.in_flight) == ["l0"]
    assert [n.reason for n in notes] == ["CanaryStarted"]
    # Nothing else goes while the canary is out, whatever the slots.
    state, _ = advance(state, SETTINGS, locations, T0 + 5)
    assert list(state.in_flight) == ["l0"]
    # The canary's new pod reports Ready: the waves start, two at a time.
    locations["l0"] = restarted(locations["l0"])
    state, notes = advance(state, SETTINGS, locations, T0 + 10)
    assert "CanaryPassed" in [n.reason for n in notes]
    assert sorted(state.in_flight) == ["l1", "l2"]
    locations["l1"] = restarted(locations["l1"])
    state, _ = advance(state, SETTINGS, locations, T0 + 20)
    assert sorted(state.in_flight) == ["l2", "l3"]
    for name in ("l2", "l3", "l4"):
        locations[name] = restarted(locations[name])
        state, _ = advance(state, SETTINGS, locations, T0 + 30)
    state, notes = advance(state, SETTINGS, locations, T0 + 40)
    assert state.phase == COMPLETE and state.stable == NEW.revision
    assert state.counts == {
        "total": 5,
        "updated": 5,
        "pending": 0,
        "inFlight": 0,
        "failed": 0,
        "pinned": 0,
    }
    assert list(state.revisions) == [NEW.revision]  # OLD is used by no one any more


def test_labelled_canaries_go_first_and_a_share_counts_of_the_fleet() -> None:
    locations = fleet(10, l7={"canary": True}, l8={"canary": True})
    state, _ = advance(rolling(), SETTINGS, locations, T0)
    assert state.canaries == ["l7", "l8"]
    settings = dataclasses.replace(SETTINGS, canary=Share(30, percent=True))
    state, _ = advance(rolling(), settings, fleet(10), T0)
    assert state.canaries == ["l0", "l1", "l2"]


def test_a_location_is_back_only_on_its_new_pod_and_in_its_old_state() -> None:
    locations = fleet(2, l1={"phase": "QRRequired", "reported": ("pod-l1-a", "QRRequired")})
    state, _ = advance(rolling(), dataclasses.replace(SETTINGS, canary=Share(2)), locations, T0)
    assert sorted(state.in_flight) == ["l0", "l1"]
    # The StatefulSet has the new template but the status still speaks of the old pod.
    locations["l0"] = dataclasses.replace(locations["l0"], revision=NEW.revision)
    state, _ = advance(state, SETTINGS, locations, T0 + 1)
    assert "l0" in state.in_flight
    # The new pod runs but asks for a QR: a linked location is not back.
    locations["l0"] = restarted(locations["l0"], "QRRequired")
    state, _ = advance(state, SETTINGS, locations, T0 + 2)
    assert "l0" in state.in_flight
    # A location that showed a QR before is back when its new pod shows one again.
    locations["l1"] = restarted(locations["l1"], "QRRequired")
    # Not while the StatefulSet controller has not made its pod from the new template.
    locations["l1"] = dataclasses.replace(locations["l1"], settled=False)
    state, _ = advance(state, SETTINGS, locations, T0 + 3)
    assert "l1" in state.in_flight
    locations["l1"] = dataclasses.replace(locations["l1"], settled=True)
    state, _ = advance(state, SETTINGS, locations, T0 + 4)
    assert "l1" not in state.in_flight and "l0" in state.in_flight


def test_a_canary_not_back_in_time_halts_and_goes_back_while_the_rest_stay() -> None:
    locations = fleet(4)
    state, _ = advance(rolling(), SETTINGS, locations, T0)
    locations["l0"] = restarted(locations["l0"], "Starting")
    state, _ = advance(state, SETTINGS, locations, T0 + 30)
    assert state.phase == PROGRESSING
    assert next_due(state, SETTINGS, T0 + 30) == pytest.approx(31)  # the canary's deadline
    state, notes = advance(state, SETTINGS, locations, T0 + 61)
    assert state.phase == HALTED and state.failed.keys() == {"l0"}
    assert [n.reason for n in notes] == ["LocationFailed", "RolloutHalted"]
    assert notes[0].location == "l0" and "phase Starting" in notes[0].message
    assert state.in_flight == {} and state.counts["pending"] == 3
    # The failed canary goes back to the stable template; the others stay where they are;
    # a new or paused location gets the stable template too while halted.
    assert revision_for(state, SETTINGS, "l0", NEW.revision, False, False) == OLD.revision
    assert revision_for(state, SETTINGS, "l1", OLD.revision, False, False) == OLD.revision
    assert revision_for(state, SETTINGS, "new", None, False, False) == OLD.revision
    assert revision_for(state, SETTINGS, "l3", NEW.revision, True, False) == OLD.revision
    no_rollback = dataclasses.replace(SETTINGS, rollback_failed=False)
    assert revision_for(state, no_rollback, "l0", NEW.revision, False, False) == NEW.revision
    # Halted: nothing more is released, whatever happens.
    locations["l0"] = dataclasses.replace(locations["l0"], revision=OLD.revision)
    state, notes = advance(state, SETTINGS, locations, T0 + 100)
    assert state.phase == HALTED and state.in_flight == {} and notes == []


def test_resume_tries_the_failed_again_and_abandon_goes_back_to_stable() -> None:
    locations = fleet(3)
    state, _ = advance(rolling(), SETTINGS, locations, T0)
    state, _ = advance(state, SETTINGS, locations, T0 + 61)
    assert state.phase == HALTED
    resumed, notes = advance(state, SETTINGS, locations, T0 + 70, RESUME)
    assert resumed.phase == PROGRESSING and resumed.failures == 0
    assert list(resumed.in_flight) == ["l0"] and resumed.canaries == ["l0"]
    assert [n.reason for n in notes] == ["RolloutResumed", "CanaryStarted"]
    # Abandoned instead: the target is the stable revision again, for every location.
    locations["l1"] = restarted(locations["l1"])
    abandoned, notes = advance(state, SETTINGS, locations, T0 + 70, ABANDON)
    assert abandoned.phase == ABANDONED and abandoned.target == OLD.revision
    assert abandoned.abandoned == NEW.revision and notes[0].reason == "RolloutAbandoned"
    assert list(abandoned.in_flight) == ["l1"]  # going back, in waves too
    assert not retargets(abandoned, NEW, 0)  # the same settings do not start it again
    assert retargets(abandoned, dataclasses.replace(NEW, image="session:3"), 0)
    # Halted by hand: nothing more goes; resumed, the waves go on.
    by_hand, notes = advance(resumed, SETTINGS, locations, T0 + 75, HALT)
    assert by_hand.phase == HALTED and notes[0].reason == "RolloutHalted"
    assert list(by_hand.in_flight) == ["l0"]  # in flight already: it finishes
    # An abandoned rollout resumed: its target again, from the canary.
    again, notes = advance(abandoned, SETTINGS, locations, T0 + 72, RESUME)
    assert again.phase == PROGRESSING and again.target == NEW.revision and not again.abandoned
    assert again.canaries == ["l0"] and notes[0].reason == "RolloutResumed"
    # An action that means nothing now is said, not silently dropped.
    _, notes = advance(abandoned, SETTINGS, locations, T0 + 80, "rollback")
    assert notes[0].reason == "ActionIgnored" and "'rollback'" in notes[0].message


def test_failures_within_the_threshold_do_not_halt_but_leave_the_rollout_unfinished() -> None:
    settings = dataclasses.replace(SETTINGS, max_failures=Share(1))
    locations = fleet(3)
    state, _ = advance(rolling(), settings, locations, T0)
    state, _ = advance(state, settings, locations, T0 + 61)  # the canary failed
    assert state.phase == PROGRESSING and sorted(state.in_flight) == ["l1", "l2"]
    for name in ("l1", "l2"):
        locations[name] = restarted(locations[name])
    state, notes = advance(state, settings, locations, T0 + 70)
    assert [n.reason for n in notes] == ["RolloutHalted"]
    assert state.phase == HALTED and "1 locations failed" in state.message


def test_pinned_paused_and_unknown_locations() -> None:
    state = rolling()
    # Pinned: kept on its template, even its own spec changes render with it.
    assert revision_for(state, SETTINGS, "p", OLD.revision, False, True) == OLD.revision
    # Paused (no pod): the new template at once, it does not wait for a wave.
    assert revision_for(state, SETTINGS, "s", OLD.revision, True, False) == NEW.revision
    # A StatefulSet made before rollouts existed: left as it is until its wave.
    assert revision_for(state, SETTINGS, "u", "", False, False) is None
    locations = fleet(3, l1={"pinned": True}, l2={"stopped": True, "pod": "", "reported": None})
    state, _ = advance(state, SETTINGS, locations, T0)
    assert state.canaries == ["l0"] and state.counts["pinned"] == 1
    locations["l0"] = restarted(locations["l0"])
    locations["l2"] = dataclasses.replace(locations["l2"], revision=NEW.revision)
    state, _ = advance(state, SETTINGS, locations, T0 + 10)
    assert state.phase == COMPLETE and OLD.revision in state.revisions  # the pinned one's
    # Unpinned later: it is rolled then, with no new settings.
    locations["l1"] = dataclasses.replace(locations["l1"], pinned=False)
    state, _ = advance(state, SETTINGS, locations, T0 + 20)
    assert state.phase == PROGRESSING and list(state.in_flight) == ["l1"]


def test_outside_the_maintenance_window_nothing_is_released() -> None:
    day = T0 - T0 % 86400
    settings = dataclasses.replace(SETTINGS, window=Window(2 * 60, 4 * 60))
    state, _ = advance(rolling(), settings, fleet(3), day + 12 * 3600)
    assert state.in_flight == {} and "outside the maintenance window" in state.message
    assert next_due(state, settings, day + 12 * 3600) == 14 * 3600
    state, _ = advance(state, settings, fleet(3), day + 86400 + 2 * 3600)
    assert list(state.in_flight) == ["l0"]


def test_an_older_release_never_turns_the_fleet_back_and_the_record_round_trips() -> None:
    state = dataclasses.replace(rolling(), generation=5)
    assert not retargets(state, OLD, 4)  # a replica of release 4, still running
    assert retargets(state, dataclasses.replace(NEW, image="session:3"), 6)
    progressed, _ = advance(state, SETTINGS, fleet(3), T0)
    assert RolloutState.from_status(progressed.to_status()) == progressed


def test_a_replica_knows_when_a_live_peer_outranks_it() -> None:
    def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, object]:
        seen = datetime.datetime.fromtimestamp(T0 - seconds_ago, datetime.UTC)
        return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}

    assert outranked({"new-1": peer(1, 5), "old-0": peer(0, 2)}, 0, T0)
    assert not outranked({"new-1": peer(1, 5), "old-0": peer(0, 2)}, 1, T0)
    assert not outranked({"dead-1": peer(1, 90), "me": peer(0, 1)}, 0, T0)  # expired
    assert not outranked({"odd": {"priority": 5}}, 0, T0)  # no lastseen: not counted
