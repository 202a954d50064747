"""Shared fixtures: one WhatsApp Web double for the whole run, session pods per test or module."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.node_images import project_images
from tests.support.node_leftovers import node_lock, stop_leftovers
from tests.support.node_network import GATEWAY, SERVICE_CIDR, NodeNetwork
from tests.support.processes import REPO
from tests.support.real_node import (
    EXTRA_CONTROLLERS,
    RealNode,
    missing_requirements,
    node_binaries,
)
from tests.support.s3 import SeaweedS3
from tests.support.session_pods import Double, SessionPod, new_phone, start_double
from tests.support.test_node import TestNode


@pytest.fixture(scope="session")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Double]:
    program, double = start_double(tmp_path_factory.mktemp("double") / "double.log")
    yield double
    program.stop()


@pytest.fixture
def start_pod(double: Double, tmp_path: Path) -> Iterator[Callable[..., SessionPod]]:
    """Starts session pods for one test; each is stopped (SIGTERM) afterwards."""
    pods: list[SessionPod] = []

    def start(location: str = "13", data_dir: Path | None = None, **env: str) -> SessionPod:
        pod = SessionPod(location, data_dir or tmp_path / f"pod-{location}", double, env)
        pods.append(pod)
        return pod

    yield start
    for pod in pods:
        pod.stop()


@pytest.fixture(scope="module")
def phone() -> str:
    """The business phone of the module's linked pod (the double is shared by every test)."""
    return new_phone()


@pytest.fixture(scope="module")
def link_pod(
    double: Double, phone: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SessionPod]]:
    """Starts a session pod for the whole module and links it (QR -> scan -> ready) with
    `phone`; stopped after the module's last test."""
    pods: list[SessionPod] = []

    def link(location: str, **env: str) -> SessionPod:
        pod = SessionPod(location, tmp_path_factory.mktemp("linked") / "pod", double, env)
        pods.append(pod)
        pod.link(double, phone)
        return pod

    yield link
    for pod in pods:
        pod.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 API (SeaweedFS `weed mini`) on 127.0.0.1, credentials enforced."""
    with SeaweedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 for the whole run."""
    if shutil.which("go") is None:
        pytest.skip(
            "Go is not installed: kube-apiserver cannot be built (scripts/control_plane.sh)"
        )
    bin_dir = control_plane_binaries()
    with ControlPlane(bin_dir, tmp_path_factory.mktemp("control-plane")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def test_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestNode]:
    """A node that schedules and runs every pod of the control plane as local processes.
    Per module: while it runs no pod stays Pending, which test_control_plane relies on."""
    with TestNode(control_plane, tmp_path_factory.mktemp("test-node"), REPO) as node:
        yield node


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test, deleted (without waiting) afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """Its own control plane (on the test bridge's gateway address) and a real node:
    containerd, kubelet, kube-scheduler, kube-proxy, kube-router, with the three images (built
    by scripts/images.sh when their inputs changed) copied into containerd. Started once;
    every change to the machine is undone at the end (tests/support/real_node.py)."""
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the node's binaries cannot be built")
    if missing := missing_requirements():
        pytest.skip(
            f"no real node on this machine: {', '.join(missing)} missing "
            "(scripts/install.sh installs them)"
        )
    bin_dir, node_bin = control_plane_binaries(), node_binaries()
    images = project_images()
    root = tmp_path_factory.mktemp("real-node")
    network = NodeNetwork()
    with node_lock():  # one node per machine; a killed run's leftovers go first
        stop_leftovers()
        yield from _real_node(bin_dir, node_bin, images, root, network)


def _real_node(
    bin_dir: Path, node_bin: Path, images: dict[str, str], root: Path, network: NodeNetwork
) -> Iterator[RealNode]:
    try:
        network.setup()
        with ControlPlane(
            bin_dir,
            root / "control-plane",
            address=GATEWAY,
            service_cidr=SERVICE_CIDR,
            extra_controllers=EXTRA_CONTROLLERS,
        ) as cluster:
            node = RealNode(cluster, node_bin, root / "node", network)
            node.images = images
            with node:
                node.import_images(*images.values())
                yield node
    finally:
        network.teardown()


@pytest.fixture(scope="session")
def node_double(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Double]:
    """The WhatsApp Web double on the test bridge's gateway, where the node's pods reach it."""
    program, double = start_double(tmp_path_factory.mktemp("node-double") / "double.log", GATEWAY)
    yield double
    program.stop()


@pytest.fixture(scope="session")
def node_s3(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """S3 (SeaweedFS) on the test bridge's gateway, for the node's pods."""
    with SeaweedS3(tmp_path_factory.mktemp("node-s3"), host=GATEWAY) as server:
        yield server
