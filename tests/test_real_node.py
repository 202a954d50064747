"""The real test node itself: it listens only on loopback and the test bridge, runs
containerd, and advertises the API server where pods reach it (test_journey.py uses it in
full)."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.support.real_node import RealNode

# The first test to use the real node also waits for it to start and for the images to be
# copied into containerd (about 2 minutes on a fresh machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_every_daemon_listens_on_loopback_or_the_test_bridge_only(real_node: RealNode) -> None:
    daemons = [*real_node._daemons, *real_node.cluster._processes]
    pids = {d.process.pid for d in daemons}
    names = {d.process.pid: d.name for d in daemons}
    allowed = {"127.0.0.1", real_node.network.gateway}
    listening = [
        (names[c.pid], c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.pid in pids and c.status == psutil.CONN_LISTEN
    ]
    assert {name for name, _, _ in listening} >= {"kube-apiserver", "kubelet", "etcd"}, listening
    outside = [entry for entry in listening if entry[1] not in allowed]
    assert not outside, f"listening beyond loopback and {real_node.network.bridge}: {outside}"


def test_the_node_runs_containerd_and_pods_reach_the_api_server_on_the_bridge(
    real_node: RealNode,
) -> None:
    node = json.loads(real_node.cluster.kubectl("get", "node", real_node.name, "-o", "json").stdout)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.5"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == real_node.network.gateway
    endpoints = real_node.cluster.kubectl(
        "get", "endpointslices", "-n", "default", "-o", "jsonpath={..addresses[*]}"
    ).stdout.split()
    # The API server is advertised on the bridge: pods reach it through the kubernetes Service.
    assert endpoints == [real_node.network.gateway]
