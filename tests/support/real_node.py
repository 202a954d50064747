"""A real Kubernetes node for the tests: containerd (Debian's), kubelet, kube-scheduler and
kube-proxy (built from tools/k8s by scripts/node_binaries.sh), and kube-router's firewall
enforcing NetworkPolicy, joined to a ControlPlane that
listens on the test bridge's gateway address, with Debian's CNI plugins giving each pod an
address on that bridge (tests/support/node_network.py). Pods run as real containers of the
images that podman built, copied into containerd. A volume provisioner thread gives each
pending PersistentVolumeClaim a hostPath PersistentVolume under the node's directory (there
is no storage driver), and deletes the volumes their claims released.

Everything listens on 127.0.0.1 or the bridge address. `stop` deletes every pod and waits
for its sandbox to be torn down (CNI DEL), stops each daemon by its own PID, removes
kube-proxy's and kube-router's rules (`--cleanup`), the cgroups and /var/log/containers links the
kubelet made, then undoes the network (bridge, route, nftables table, sysctls)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.control_plane import ControlPlane, _Process
from tests.support.node_images import Containerd, pause_image
from tests.support.node_leftovers import (
    forget_run,
    record_process,
    record_run,
    remove_kubelet_traces,
)
from tests.support.node_network import NodeNetwork
from tests.support.processes import REPO, free_port

NODE_BINARIES_SCRIPT = REPO / "scripts" / "node_binaries.sh"
CACHE = Path(os.environ.get("WA_TOOLS_CACHE", Path.home() / ".cache/whatsapp-sessions"))
# containerd's content store outlives a run so that imported images stay imported.
CONTAINERD_ROOT = CACHE / "containerd"
VOLUME_OWNER = 10001  # the uid and gid the images run as
EXTRA_CONTROLLERS = (
    "node-lifecycle-controller",  # lifts the not-ready taint once the kubelet is Ready
    "persistentvolume-binder-controller",
    "ttl-after-finished-controller",
)


def node_binaries() -> Path:
    """kubelet, kube-scheduler, kube-proxy, pause (scripts/node_binaries.sh, cached)."""
    result = subprocess.run(
        [str(NODE_BINARIES_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True
    )
    return Path(result.stdout.strip().splitlines()[-1])


def node_name() -> str:
    """The machine's hostname when it resolves to 127.0.0.1 (kubectl logs reach the kubelet
    through it), else localhost."""
    name = socket.gethostname()
    try:
        return name if socket.gethostbyname(name) == "127.0.0.1" else "localhost"
    except OSError:
        return "localhost"


def missing_requirements() -> list[str]:
    """What this machine lacks to run the node (empty when it can)."""
    missing = [
        tool
        for tool in (
            "containerd",
            "containerd-shim-runc-v2",
            "runc",
            "ctr",
            "podman",
            "nft",
            "iptables",
            "ipset",
            "ip",
        )
        if shutil.which(tool) is None
    ]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


class RealNode:
    def __init__(
        self, control_plane: ControlPlane, bin_dir: Path, root: Path, network: NodeNetwork
    ) -> None:
        self.cluster = control_plane
        self.bin_dir = bin_dir
        self.root = root
        self.network = network
        self.name = node_name()
        self.run_dir = root / "run"
        self.containerd_socket = self.run_dir / "containerd.sock"
        self.containerd = Containerd(shutil.which("ctr") or "ctr", self.containerd_socket)
        self.kubelet_root = root / "kubelet"
        self.volumes = root / "volumes"
        self.kubelet_port = free_port()
        self._daemons: list[_Process] = []
        self._stop_provisioner = threading.Event()
        self._provisioner: threading.Thread | None = None
        self.import_seconds: dict[str, float] = {}
        self.images: dict[str, str] = {}  # name -> reference, set by whoever imported them

    def __enter__(self) -> RealNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- start

    def start(self) -> None:
        """The node, with the pause image; `import_images` adds the project's."""
        for directory in (self.run_dir, self.kubelet_root, self.volumes, CONTAINERD_ROOT):
            directory.mkdir(parents=True, exist_ok=True)
        # A run killed from here on is cleaned up by the next (node_leftovers.stop_leftovers).
        record_run(self.root, self.containerd_socket)
        for process in self.cluster._processes:
            record_process(process.process.pid, process.process.args[0])
        self._start_containerd()
        self.import_images(pause_image(self.bin_dir / "pause"))
        self._start_kubelet()
        self._wait(90, "the node to be Ready and untainted", self._node_ready)
        self._start_daemon(
            "kube-scheduler",
            f"--kubeconfig={self.cluster.admin_kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
        )
        self._start_kube_proxy()
        self._wait(60, "kube-proxy to program the kubernetes Service", self._proxy_ready)
        # NetworkPolicy: kube-router's firewall only (no routing, no service proxy, no port).
        self._start_daemon(
            "kube-router",
            f"--kubeconfig={self.cluster.admin_kubeconfig}",
            f"--hostname-override={self.name}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--health-port=0",
            "--metrics-port=0",
            "--iptables-sync-period=5s",
        )
        self._provisioner = threading.Thread(target=self._provision_loop, daemon=True)
        self._provisioner.start()

    def import_images(self, *references: str) -> None:
        for reference in references:
            self.import_seconds[reference] = self.containerd.import_from_podman(reference)

    def _start_containerd(self) -> None:
        cni_dir = self.root / "cni"
        cni_dir.mkdir(exist_ok=True)
        (cni_dir / "10-wa-test.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        config = self.root / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{self.run_dir / "containerd-state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.run_dir / "containerd-ttrpc.sock"}"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Without it every sandbox fails here: a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
"""
        )
        self._start_process(["containerd", "--config", str(config)], "containerd")
        self._wait(
            30, "containerd", lambda: self.containerd.run("version", check=False).returncode == 0
        )

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "wa-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    "isGateway": True,
                    "ipMasq": False,  # no way out of the machine
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [
                            [{"subnet": self.network.pod_cidr, "gateway": self.network.gateway}]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.run_dir / "cni-ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }

    def _start_kubelet(self) -> None:
        pki = self.cluster.ca
        cert, key = pki.issue(
            "kubelet", self.name, server_names=(self.name, "127.0.0.1", self.network.gateway)
        )
        resolv = self.root / "resolv.conf"
        # No cluster DNS: a pod's lookups go to its own loopback and fail at once.
        resolv.write_text("nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The API server reaches the kubelet by the node's name, which is 127.0.0.1.
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki.cert_file)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.root / "pod-logs"),
            "resolvConf": str(resolv),
            "clusterDomain": "cluster.local",
            "evictionHard": {"memory.available": "100Mi"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 50,
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
        }
        config_file = self.root / "kubelet.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        self._start_daemon(
            "kubelet",
            f"--config={config_file}",
            f"--kubeconfig={self.cluster.admin_kubeconfig}",
            f"--root-dir={self.kubelet_root}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.gateway}",
        )

    def _start_kube_proxy(self) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cluster.admin_kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": self.network.pod_cidr,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{self.network.gateway}/32"],
            # Pod -> ClusterIP -> pod on one bridge without br_netfilter: the answer must come
            # back through the host, so service traffic is masqueraded to the bridge address.
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # Zero: leave the machine's conntrack settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        config_file = self.root / "kube-proxy.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        self._start_daemon("kube-proxy", f"--config={config_file}")

    def _start_daemon(self, binary: str, *args: str) -> None:
        self._start_process([str(self.bin_dir / binary), *args], binary)

    def _start_process(self, args: list[str], name: str) -> None:
        daemon = _Process(args, self.root / f"{name}.log")
        self._daemons.append(daemon)
        record_process(daemon.process.pid, args[0])

    def _node_ready(self) -> bool:
        result = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node["status"].get("conditions", [])
        )
        return ready and not node["spec"].get("taints")

    def _proxy_ready(self) -> bool:
        rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
        return "default/kubernetes:https" in rules.stdout

    def _wait(self, timeout: float, what: str, check: Any) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for daemon in self._daemons:
                daemon.check_alive()
            try:
                if check():
                    return
            except (requests.RequestException, OSError, ValueError):
                pass
            time.sleep(0.5)
        logs = "\n".join(f"--- {d.name}:\n{d.log_tail()}" for d in self._daemons)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    # ---- volumes

    def _provision_loop(self) -> None:
        while not self._stop_provisioner.wait(1):
            try:
                self.provision_once()
            except (AssertionError, subprocess.SubprocessError, ValueError, OSError):
                continue  # the API server may be busy; the next round retries

    def provision_once(self) -> None:
        """A hostPath PersistentVolume for each unbound claim; Released volumes deleted."""
        claims = json.loads(self.cluster.kubectl("get", "pvc", "-A", "-o", "json").stdout)
        for claim in claims["items"]:
            if claim["spec"].get("volumeName") or claim["metadata"].get("deletionTimestamp"):
                continue
            self._create_volume(claim)
        volumes = json.loads(self.cluster.kubectl("get", "pv", "-o", "json").stdout)
        for volume in volumes["items"]:
            if volume["status"].get("phase") == "Released":
                name = volume["metadata"]["name"]
                self.cluster.kubectl("delete", "pv", name, "--wait=false", check=False)
                shutil.rmtree(self.volumes / name, ignore_errors=True)

    def _create_volume(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        name = f"pv-{meta['uid'][:18]}"
        path = self.volumes / name
        path.mkdir(mode=0o770, exist_ok=True)
        os.chown(path, VOLUME_OWNER, VOLUME_OWNER)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"wa-test-node/provisioned": "true"}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": claim["spec"].get("storageClassName") or "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        self.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(volume), check=False)

    # ---- stop

    def stop(self) -> None:
        self._stop_provisioner.set()
        if self._provisioner is not None:
            self._provisioner.join(10)
        kubelet_running = any(
            d.name == "kubelet" and d.process.poll() is None for d in self._daemons
        )
        if kubelet_running:
            self._delete_all_pods()
        while self._daemons:
            self._daemons.pop().stop()
        self._remove_leftover_containers()
        if (self.bin_dir / "kube-router").exists():
            subprocess.run(
                [str(self.bin_dir / "kube-router"), "--cleanup-config"],
                capture_output=True,
                check=False,
            )
        if (self.bin_dir / "kube-proxy").exists():
            subprocess.run(
                [str(self.bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, check=False
            )
        remove_kubelet_traces(self.root)
        self.network.teardown()
        forget_run()

    def _delete_all_pods(self, timeout: float = 90) -> None:
        """Every pod deleted through the API, so the kubelet stops each sandbox (CNI DEL); their
        controllers first, or they would make new ones."""
        for what in ("statefulsets,deployments,replicasets,daemonsets,jobs", "pods"):
            self.cluster.kubectl(
                "delete",
                what,
                "-A",
                "--all",
                "--grace-period=5",
                "--wait=false",
                check=False,
                timeout=60,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = self.cluster.kubectl("get", "pods", "-A", "-o", "name", check=False).stdout
            if not pods.strip() and not self._running_tasks():
                return
            time.sleep(1)

    def _running_tasks(self) -> list[str]:
        out = self.containerd.run("tasks", "ls", check=False).stdout.splitlines()[1:]
        return [line.split()[0] for line in out if "RUNNING" in line]

    def _remove_leftover_containers(self) -> None:
        """Containers the kubelet did not get to remove: killed, then deleted (containerd has
        to run for that, so it is started again for this alone)."""
        if not self.containerd_socket.parent.exists():
            return
        config = self.root / "containerd.toml"
        if not config.exists():
            return
        restarted = _Process(
            ["containerd", "--config", str(config)], self.root / "containerd-cleanup.log"
        )
        try:
            deadline = time.monotonic() + 20
            while self.containerd.run("version", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)
            for task in self._running_tasks():
                self.containerd.run("tasks", "kill", "-s", "SIGKILL", task, check=False)
            time.sleep(1)
            for container in self.containerd.run("containers", "ls", "-q").stdout.split():
                self.containerd.run("tasks", "delete", "-f", container, check=False)
                self.containerd.run("containers", "delete", container, check=False)
        finally:
            restarted.stop()
        for netns in Path("/var/run/netns").glob("cni-*"):
            # A sandbox removed without CNI DEL: its namespace mount is ours to drop.
            subprocess.run(["umount", str(netns)], capture_output=True, check=False)
            netns.unlink(missing_ok=True)
