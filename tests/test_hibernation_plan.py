"""The operator's hibernation decisions as a pure function of the resource and the time
(operator/whatsapp_operator/hibernation.py): what a restarted operator would decide from the
same resource, it decides."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.session_pods import TEST_MASTERS, TEST_POD_AUTH_MASTERS
from whatsapp_operator.config import OperatorConfig
from whatsapp_operator.fleet import Fleet
from whatsapp_operator.hibernation import (
    ASLEEP,
    AWAKE,
    Hibernation,
    HibernationSpec,
    Step,
    asleep,
    instant,
    plan,
)
from whatsapp_operator.manifests import replicas, session_env
from whatsapp_operator.notices import Notices
from whatsapp_operator.resource import Resource
from whatsapp_operator.status import timestamp

NOW = 1_800_000_000.0
ON = HibernationSpec(enabled=True, idle_seconds=60, wake_interval_seconds=3600)


def resource(status: dict[str, Any], **spec: Any) -> Resource:
    return Resource(
        namespace="shops",
        name="wa-13",
        uid="u-13",
        spec={"locationId": "13", **spec},
        status=status,
    )


def look(resource: Resource, spec: HibernationSpec, now: float) -> Step:
    """`plan` with the pod's live stream saying what the status says."""
    return plan(resource, spec, now, resource.status.get("idleSince"))


def idle_ready(**extra: Any) -> dict[str, Any]:
    return {"phase": "Ready", "idleSince": timestamp(NOW - 5), **extra}


def sleeping(since: float, **record: Any) -> dict[str, Any]:
    hibernation = {
        "state": ASLEEP,
        "since": timestamp(since),
        "nextWake": timestamp(since + 3600),
        **record,
    }
    return {"phase": "Hibernating", "hibernation": hibernation}


def test_an_idle_ready_session_hibernates_with_its_next_wake_recorded() -> None:
    step = look(resource(idle_ready()), ON, NOW)
    assert step.rescale and step.status is not None
    record = step.status["hibernation"]
    assert record["state"] == ASLEEP and record["reason"] == "idle"
    assert record["since"] == instant(NOW) and record["nextWake"] == timestamp(NOW + 3600)
    assert step.status["phase"] == "Hibernating" and step.status["idleSince"] is None
    ready = next(c for c in step.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Hibernating"


def test_nothing_happens_while_busy_not_ready_off_paused_or_in_conflict() -> None:
    assert look(resource({"phase": "Ready"}), ON, NOW).status is None  # no idle fact
    assert look(resource(idle_ready(phase="Syncing")), ON, NOW).status is None
    assert look(resource(idle_ready()), HibernationSpec(), NOW).status is None
    assert look(resource(idle_ready(), paused=True), ON, NOW).status is None
    assert look(resource(idle_ready(phase="Conflict")), ON, NOW).status is None


def test_an_idle_fact_the_live_stream_does_not_confirm_waits() -> None:
    """After an operator restart the status may say idle while the pod, busy again, has not
    been heard yet: nothing until its stream says the same."""
    assert plan(resource(idle_ready()), ON, NOW, None).status is None
    assert plan(resource(idle_ready()), ON, NOW, timestamp(NOW - 500)).status is None
    assert plan(resource(idle_ready()), ON, NOW, timestamp(NOW - 5)).rescale


def test_a_request_wake_keeps_it_up_for_the_idle_time_even_if_idle_at_once() -> None:
    woken = look(resource({**sleeping(NOW - 100), "wakeRequest": "r1"}), ON, NOW)
    assert woken.rescale and woken.status is not None
    record = woken.status["hibernation"]
    assert record["state"] == AWAKE and record["reason"] == "request"
    assert record["answered"] == "r1" and record["awakeUntil"] == timestamp(NOW + 60)
    assert record["nextWake"] is None and woken.status["phase"] == "Pending"
    # The pod is idle before the request it was woken for has arrived: not yet.
    awake = {**idle_ready(), "wakeRequest": "r1", "hibernation": record}
    wait = look(resource(awake), ON, NOW + 10)
    assert wait.status is None and wait.at == NOW + 60
    assert look(resource(awake), ON, NOW + 61).rescale
    # Ready only 50 s after the wake (a slow start): the idle time counts from then.
    became_ready = {"type": "Ready", "status": "True", "lastTransitionTime": timestamp(NOW + 50)}
    slow = {**awake, "conditions": [became_ready]}
    assert look(resource(slow), ON, NOW + 61).at == NOW + 110
    assert look(resource(slow), ON, NOW + 111).rescale


def test_a_request_already_answered_wakes_nothing_again() -> None:
    answered = {**sleeping(NOW - 100, answered="r1"), "wakeRequest": "r1"}
    step = look(resource(answered), ON, NOW)
    assert step.status is None and step.at == NOW - 100 + 3600


def test_the_schedule_wakes_it_when_due_and_follows_a_changed_interval() -> None:
    due = look(resource(sleeping(NOW - 3600)), ON, NOW)
    assert due.rescale and due.status is not None
    assert due.status["hibernation"]["reason"] == "schedule"
    assert due.status["hibernation"]["awakeUntil"] is None  # idle again as soon as caught up
    shorter = HibernationSpec(enabled=True, idle_seconds=60, wake_interval_seconds=600)
    moved = look(resource(sleeping(NOW - 100)), shorter, NOW)
    assert moved.status == {
        "hibernation": {**sleeping(NOW - 100)["hibernation"], "nextWake": timestamp(NOW + 500)}
    }
    assert not moved.rescale and moved.at == NOW + 500


def test_turning_hibernation_off_wakes_a_sleeping_session() -> None:
    step = look(resource(sleeping(NOW - 10)), HibernationSpec(), NOW)
    assert step.rescale and step.status is not None
    assert step.status["hibernation"]["reason"] == "disabled"


def test_a_request_while_awake_extends_the_awake_time_without_a_rescale() -> None:
    record = {"state": AWAKE, "since": timestamp(NOW - 5), "reason": "schedule"}
    step = look(resource({**idle_ready(), "hibernation": record, "wakeRequest": "r2"}), ON, NOW)
    assert not step.rescale and step.status is not None
    assert step.status["hibernation"]["awakeUntil"] == timestamp(NOW + 60)


def test_asleep_means_zero_replicas_and_the_pod_learns_its_idle_time() -> None:
    config = OperatorConfig(
        backup_masters=TEST_MASTERS, pod_auth_masters=lambda: TEST_POD_AUTH_MASTERS
    )
    spec = {"locationId": "13", "hibernation": {"enabled": True, "idleSeconds": 42}}
    assert replicas(resource(sleeping(NOW))) == 0
    assert replicas(resource(idle_ready())) == 1
    fleet = Fleet.of(config)
    env = {e["name"]: e.get("value") for e in session_env(spec, fleet)}
    assert env["IDLE_AFTER_SECONDS"] == "42"
    off = {e["name"] for e in session_env({"locationId": "13"}, fleet)}
    assert "IDLE_AFTER_SECONDS" not in off
    assert asleep(resource(sleeping(NOW))) and not asleep(resource(idle_ready()))


def test_the_operators_defaults_fill_what_the_spec_leaves_out() -> None:
    defaults = {"hibernation": {"enabled": True, "wakeIntervalSeconds": 7200}}
    merged = HibernationSpec.of(defaults, {"hibernation": {"idleSeconds": 30}})
    assert merged == HibernationSpec(enabled=True, idle_seconds=30, wake_interval_seconds=7200)
    assert HibernationSpec.of({}, {}) == HibernationSpec(False, 900, 86400)


def test_a_watch_event_older_than_the_last_step_never_undoes_it() -> None:
    """The reconcile takes the replicas from `freshest`: an event from before the operator's
    own write (the cache may hold it a moment longer) does not bring the old state back."""

    async def written(r: Resource, fields: dict[str, Any]) -> Resource:
        return Resource(r.namespace, r.name, r.uid, r.spec, status={**r.status, **fields})

    async def applied(r: Resource) -> None:
        applies.append(r)

    applies: list[Resource] = []
    defaults = {"hibernation": {"enabled": True, "idleSeconds": 60}}
    live = {"u-13": idle_ready()["idleSince"]}
    hibernation = Hibernation(defaults, written, applied, Notices(per_minute=0), live.get)
    before = resource(idle_ready())

    async def scenario() -> None:
        await hibernation.seen(before)  # idle: it goes to sleep
        await hibernation.seen(before)  # the same (stale) event again: nothing more

    asyncio.run(scenario())
    assert len(applies) == 1 and asleep(applies[0])
    assert asleep(hibernation.freshest(before))
    woken = resource(sleeping(NOW + 10**6, state=AWAKE))
    assert hibernation.freshest(woken) is woken  # a later step, seen by the watch, wins
