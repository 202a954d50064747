"""Fleet rollouts (issue 22) on the real control plane, with real session pods run by the test
node (Chromium against the WhatsApp double, S3 in SeaweedFS): six linked locations, the
operator restarted with a new session image as `helm upgrade` does.

The test node runs a pod's `command` whatever its image, so an image is modelled by what
the operator's settings put in the template: the image name (which makes the new template)
and, for a broken image, a Chromium that does not start (`CHROMIUM_PATH` in the session
pods' environment: "a new Chromium that breaks"). The fixed build is pushed under the same
tag later, as a person would before resuming."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.support.control_plane import ControlPlane
from tests.support.operator import (
    OperatorProcess,
    get_session,
    operator_namespace,
    pod_uid,
    qr_of,
    session_manifest,
    start_operator,
    wait_backup,
    wait_phase,
)
from tests.support.processes import free_port, wait_until
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, new_phone
from tests.support.test_node import TestNode
from whatsapp_common.crd import GROUP, PLURAL, ROLLOUT_NAME, ROLLOUT_PLURAL, VERSION

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LOCATIONS = [f"r{i}" for i in range(1, 7)]  # r1 is the canary: the first by id
IMAGE = "ghcr.io/whatsapp-sessions/session-pod:{}"
ROLLOUT_ENV = {
    "ROLLOUT_CANARY": "1",
    "ROLLOUT_MAX_UNAVAILABLE": "1",
    "ROLLOUT_MAX_FAILURES": "0",
}


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = operator_namespace(control_plane, "roll")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout")


@pytest.fixture(scope="module")
def image_files() -> Iterator[Path]:
    """Where an image's files live: not under /tmp, which the test node maps to each pod's
    own `/tmp` volume (as it is a mountPath of the session pod)."""
    directory = Path(tempfile.mkdtemp(prefix="rollout-images-", dir="/var/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Operator:
    """The namespace's operator, restarted with other settings as `helm upgrade` does."""

    def __init__(self, cluster: ControlPlane, namespace: str, work: Path) -> None:
        self.cluster, self.namespace, self.work = cluster, namespace, work
        self.process: OperatorProcess | None = None
        self.pod_env: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.restarts = 0

    def start(self, process: OperatorProcess) -> None:
        self.process = process
        self.pod_env, self.env = process.args

    def upgrade(self, image: str, deadline: float, **pod_env: str) -> None:
        assert self.process is not None
        self.process.stop()
        self.restarts += 1
        self.env = {
            **self.env,
            **ROLLOUT_ENV,
            "SESSION_IMAGE": image,
            "ROLLOUT_DEADLINE_SECONDS": str(deadline),
        }
        self.pod_env = {**self.pod_env, **pod_env}
        log = self.work / f"operator-{self.restarts}.log"
        self.process = OperatorProcess(self.cluster, self.namespace, self.pod_env, self.env, log)

    def crash(self) -> None:
        """kill -9, then another replica (a lower priority) takes over."""
        assert self.process is not None
        self.process.program.kill()
        self.restarts += 1
        log = self.work / f"operator-{self.restarts}.log"
        self.process = OperatorProcess(
            self.cluster, self.namespace, self.pod_env, self.env, log, priority=50
        )

    def metric(self, line_start: str) -> float:
        """The value of the operator's metric whose line starts with `line_start`."""
        text = requests.get(f"http://127.0.0.1:{self.env['METRICS_PORT']}/metrics", timeout=5).text
        (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(line_start)]
        return float(value)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    namespace: str,
    double: Double,
    s3_server: SeaweedS3,
    work: Path,
) -> Iterator[Operator]:
    running = Operator(control_plane, namespace, work)
    running.start(
        start_operator(
            control_plane,
            namespace,
            double.session_env(),
            {**s3_server.env(), "S3_PREFIX": f"roll-{uuid.uuid4().hex[:6]}"},
            work / "operator-0.log",
            SESSION_IMAGE=IMAGE.format("0.1.0"),
            METRICS_PORT=str(free_port()),
            **ROLLOUT_ENV,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def linked(
    control_plane: ControlPlane,
    test_node: TestNode,
    namespace: str,
    operator: Operator,
    double: Double,
) -> dict[str, str]:
    """The six locations, each linked (Ready) and backed up: location -> phone."""
    for location in LOCATIONS:
        manifest = session_manifest(f"shop-{location}", location)
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    phones = {}
    for location in LOCATIONS:
        wait_phase(control_plane, namespace, f"shop-{location}", "QRRequired", timeout=180)
        phones[location] = new_phone()
        double.scan(
            qr_of(test_node.pod_ip(namespace, f"wa-{location}-0"), location), phones[location]
        )
    for location in LOCATIONS:
        wait_phase(control_plane, namespace, f"shop-{location}", "Ready", timeout=120)
        wait_backup(control_plane, namespace, f"shop-{location}", timeout=120)
    return phones


class Recorder:
    """Every phase change of the namespace's WhatsAppSessions, in the API server's order
    (one watch of the collection), and the rollout record's versions."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        api = config.new_client_from_config(str(cluster.admin_kubeconfig))
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        self.phases: list[tuple[str, str]] = []  # (location, phase)
        self.in_flight: list[list[str]] = []  # the rollout's locations in flight, per version
        self._last: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(PLURAL, self._session), daemon=True),
            threading.Thread(target=self._watch, args=(ROLLOUT_PLURAL, self._rollout), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        time.sleep(1)  # both watches established

    def _watch(self, plural: str, record: Any) -> None:
        """Watches again from the last version seen when the stream ends or fails (a loaded
        API server answers 504 "Too large resource version" while its cache catches up)."""
        version = None
        while not self._stop.is_set():
            since = {"resource_version": version} if version else {}
            try:
                for event in watch.Watch().stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    plural,
                    timeout_seconds=300,
                    **since,
                ):
                    if self._stop.is_set():
                        return
                    version = event["object"]["metadata"]["resourceVersion"]
                    record(event["object"])
            except ApiException as exc:
                if exc.status == 410:  # too old: the history is gone, nothing to resume
                    raise
                time.sleep(0.5)

    def _session(self, obj: dict[str, Any]) -> None:
        location = obj["spec"]["locationId"]
        phase = (obj.get("status") or {}).get("phase", "")
        if self._last.get(location) != phase:
            self._last[location] = phase
            self.phases.append((location, phase))

    def _rollout(self, obj: dict[str, Any]) -> None:
        flights = (obj.get("status") or {}).get("inFlight") or []
        self.in_flight.append([f["location"] for f in flights])

    def outages(self) -> list[tuple[str, int, int]]:
        """(location, index of its first phase that is not Ready, index of Ready again)."""
        found, down = [], {}
        for index, (location, phase) in enumerate(self.phases):
            if phase != "Ready" and location not in down:
                down[location] = index
            elif phase == "Ready" and location in down:
                found.append((location, down.pop(location), index))
        assert not down, f"never Ready again: {down}"
        return found

    def stop(self) -> None:
        self._stop.set()


def rollout(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", ROLLOUT_PLURAL, ROLLOUT_NAME, "-n", namespace, "-o", "json")
    return json.loads(out.stdout)


def wait_rollout(
    cluster: ControlPlane, namespace: str, phase: str, target: str, timeout: float
) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (r := rollout(cluster, namespace))["status"]["phase"] == phase
            and r["status"]["target"] == target
            and r
        ),
        timeout,
        f"the rollout to be {phase}",
        interval=1,
    )


def images(cluster: ControlPlane, namespace: str) -> dict[str, str]:
    out = cluster.kubectl(
        "get",
        "statefulsets",
        "-n",
        namespace,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.template.spec.containers[0].image}"
        "{'\\n'}{end}",
    ).stdout
    return dict(line.split("=", 1) for line in out.split())


def pods(cluster: ControlPlane, namespace: str) -> dict[str, str]:
    return {location: pod_uid(cluster, namespace, f"wa-{location}-0") for location in LOCATIONS}


def new_target(cluster: ControlPlane, namespace: str, old: str) -> str:
    """The rollout's target once the restarted operator has set it (not `old`)."""
    return wait_until(
        lambda: (target := rollout(cluster, namespace)["status"]["target"]) != old and target,
        60,
        "a new rollout",
        interval=0.5,
    )


def test_a_new_image_reaches_the_fleet_one_location_at_a_time(
    control_plane: ControlPlane,
    namespace: str,
    operator: Operator,
    linked: dict[str, str],
) -> None:
    before = rollout(control_plane, namespace)["status"]
    assert before["phase"] == "Complete" and before["counts"]["updated"] == len(LOCATIONS)
    recorder = Recorder(control_plane, namespace)
    try:
        operator.upgrade(IMAGE.format("0.2.0"), deadline=240)
        target = new_target(control_plane, namespace, before["target"])
        # Killed in the middle of a wave, the operator's successor carries on from the record.
        wait_until(
            lambda: (
                (r := rollout(control_plane, namespace)["status"])["canaryPassed"] and r["inFlight"]
            ),
            300,
            "a wave after the canary",
            interval=0.5,
        )
        operator.crash()
        done = wait_rollout(control_plane, namespace, "Complete", target, timeout=900)
    finally:
        recorder.stop()
    assert done["status"]["counts"]["updated"] == len(LOCATIONS)
    assert done["status"]["stable"] == target
    assert set(images(control_plane, namespace).values()) == {IMAGE.format("0.2.0")}
    # Each location went down once and was Ready again before the next one went down.
    outages = recorder.outages()
    assert sorted(location for location, _, _ in outages) == LOCATIONS
    assert outages[0][0] == "r1"  # the canary
    for (_, _, back), (_, down, _) in itertools.pairwise(outages):
        assert back < down, recorder.phases
    # Restored from the volume or S3, never by a new QR scan; the rollout never had two out.
    assert "QRRequired" not in [phase for _, phase in recorder.phases], recorder.phases
    assert max(len(flights) for flights in recorder.in_flight) == 1
    for location, phone in linked.items():
        assert get_session(control_plane, namespace, f"shop-{location}")["status"]["phone"] == phone
    table = control_plane.kubectl("get", ROLLOUT_PLURAL, "-n", namespace).stdout
    assert "Complete" in table and "UPDATED" in table
    assert operator.metric('wa_operator_rollout_locations{state="updated"}') == len(LOCATIONS)
    assert operator.metric('wa_operator_rollout_locations{state="pending"}') == 0


def test_an_image_that_never_gets_ready_halts_after_the_canary_and_resume_finishes(
    control_plane: ControlPlane,
    namespace: str,
    operator: Operator,
    linked: dict[str, str],
    image_files: Path,
) -> None:
    stable = rollout(control_plane, namespace)["status"]
    assert stable["phase"] == "Complete", "runs after the first rollout"
    before = pods(control_plane, namespace)
    # The new image's Chromium does not start.
    chromium = image_files / "chromium-0.3.0"
    chromium.write_text("#!/bin/sh\necho 'chromium: cannot start' >&2\nexit 1\n")
    chromium.chmod(0o755)
    operator.upgrade(IMAGE.format("0.3.0"), deadline=60, CHROMIUM_PATH=str(chromium))
    target = new_target(control_plane, namespace, stable["target"])
    halted = wait_rollout(control_plane, namespace, "Halted", target, timeout=300)
    status = halted["status"]
    assert status["canaries"] == ["r1"] and [f["location"] for f in status["failed"]] == ["r1"]
    assert status["counts"]["pending"] == len(LOCATIONS) - 1
    table = control_plane.kubectl("get", ROLLOUT_PLURAL, "-n", namespace).stdout
    assert "Halted" in table
    events = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={ROLLOUT_NAME}"
    ).stdout
    assert "RolloutHalted" in events and "LocationFailed" in events
    assert operator.metric("wa_operator_rollout_halted ") == 1
    assert operator.metric('wa_operator_rollout_locations{state="failed"}') == 1
    assert operator.metric("wa_operator_rollout_failed_locations_total ") == 1
    # The canary is back on the old image, linked again; no other location was touched.
    wait_until(
        lambda: images(control_plane, namespace)["wa-r1"] == IMAGE.format("0.2.0"),
        60,
        "the canary's StatefulSet back on the old image",
    )
    wait_phase(control_plane, namespace, "shop-r1", "Ready", timeout=240)
    assert set(images(control_plane, namespace).values()) == {IMAGE.format("0.2.0")}
    now = pods(control_plane, namespace)
    assert {k: v for k, v in now.items() if k != "r1"} == {
        k: v for k, v in before.items() if k != "r1"
    }
    # Halted means halted: nothing moves while it waits for a person.
    time.sleep(5)
    assert rollout(control_plane, namespace)["status"]["phase"] == "Halted"
    assert pods(control_plane, namespace) == now

    # The fixed build is pushed under the same tag; a person resumes with one command.
    fixed = chromium.with_suffix(".new")
    fixed.write_text('#!/bin/sh\nexec /usr/bin/chromium "$@"\n')
    fixed.chmod(0o755)
    os.replace(fixed, chromium)
    control_plane.kubectl(
        "annotate",
        ROLLOUT_PLURAL,
        ROLLOUT_NAME,
        "-n",
        namespace,
        "whatsapp-sessions.io/action=resume",
    )
    done = wait_rollout(control_plane, namespace, "Complete", target, timeout=900)
    assert done["status"]["counts"]["updated"] == len(LOCATIONS)
    assert "whatsapp-sessions.io/action" not in (done["metadata"].get("annotations") or {})
    assert set(images(control_plane, namespace).values()) == {IMAGE.format("0.3.0")}
    for location, phone in linked.items():
        session = wait_phase(control_plane, namespace, f"shop-{location}", "Ready", timeout=60)
        assert session["status"]["phone"] == phone
