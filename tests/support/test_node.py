"""A test node: plays scheduler and kubelet for the test control plane, without containers.

`TestNode` registers a Ready Node, binds every unscheduled pod to it and runs each bound pod's
containers as local processes (own process group, cwd = the repository, stdout+stderr in
`log_path(namespace, pod, container)`):

- `command[0]` `python`/`python3` becomes this interpreter; `command` + `args` with `$(VAR)`
  references expanded from the container's env as Kubernetes does. Image entrypoints are
  unknown, so a container needs a `command`. Init containers are not run.
- Environment: os.environ overridden by `envFrom` and `env` (plain values, `fieldRef`
  including `metadata.labels['...']`/`metadata.annotations['...']`, `secretKeyRef`,
  `configMapKeyRef`, read through the API; optional refs honoured).
- API access, as kubelet mounts the ServiceAccount token: unless the pod (or its
  ServiceAccount) sets `automountServiceAccountToken: false`, its containers get `KUBECONFIG`
  = a kubeconfig whose client certificate authenticates as the pod's ServiceAccount.
- Each pod gets its own loopback address as `status.podIP` (127.B.0.2, .3, ..., never reused
  while the node runs; B is drawn at random per node, and an address where something already
  listens on a port the pod declares is skipped, so the nodes of two test runs at once, or
  the lingering pod of an earlier module's node, never share an address); `hostIP` is
  127.0.0.1.
- Volumes are local directories: a `persistentVolumeClaim` is `work_dir/pvc/<namespace>/
  <claimName>` (it outlives the pod, as a StatefulSet's volume does; the claim is marked
  Bound), `secret`/`configMap` volumes are files in a per-pod directory, `emptyDir` and every
  other type (e.g. the projected service-account token) an empty per-pod directory.
  The process cannot see a `mountPath` such as /data, so an env value or argument equal to or
  under a container's `mountPath` is rewritten to the volume's local directory
  (`/data/profile` -> `work_dir/pvc/ns/data-web-0/profile`; `subPath` honoured).
- Probes (`httpGet`, `tcpSocket`) run against the pod IP with min(periodSeconds, 1) as period
  and the spec's timeout, thresholds and initial delay: readiness makes the container Ready,
  a failed liveness or startup probe restarts it. A liveness or startup probe's failure
  threshold is scaled by the shortened period, so a container gets as long as kubelet would
  give it before a restart (on a loaded machine, a Python program may need more than 3 s to
  start listening). A container that exits is restarted after
  a short backoff (restartPolicy Always); `restartCount` counts both.
- A pod with a deletionTimestamp gets SIGTERM (its main process, like a container's PID 1),
  then SIGKILL of the whole process group after its grace period, and its object is deleted
  with gracePeriodSeconds=0, as kubelet does. A pod that vanishes from the API is killed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import itertools
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.control_plane import ControlPlane

log = logging.getLogger(__name__)

Json = dict[str, Any]
POLL_INTERVAL = 0.2
HEARTBEAT_INTERVAL = 10.0
HOST_IP = "127.0.0.1"
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


class ConfigError(Exception):
    """A container cannot be started yet (missing Secret key, unsupported field, ...)."""


class _Api:
    """Minimal JSON client of the API server."""

    def __init__(self, server: str, cert: tuple[Path, Path], ca_file: Path) -> None:
        self.server = server
        self._session = requests.Session()
        self._session.cert = (str(cert[0]), str(cert[1]))
        self._session.verify = str(ca_file)
        self._session.trust_env = False  # no proxies for 127.0.0.1

    def call(
        self, method: str, path: str, body: Json | None = None, tolerate: tuple[int, ...] = ()
    ) -> Json | None:
        """The response's JSON; None when its status is one of `tolerate` (e.g. 404)."""
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        response = self._session.request(
            method, self.server + path, json=body, headers=headers, timeout=10
        )
        if response.status_code in tolerate:
            return None
        if not response.ok:
            raise requests.HTTPError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def get(self, path: str) -> Json | None:
        return self.call("GET", path, tolerate=(404,))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined references replaced, `$$` escapes `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


class _Probe:
    """One probe's schedule and consecutive results."""

    def __init__(self, spec: Json, ports: dict[str, int], restarts: bool = False) -> None:
        """`restarts`: a liveness or startup probe, whose failures restart the container."""
        if not {"httpGet", "tcpSocket"} & spec.keys():
            raise ConfigError(f"the test node runs httpGet and tcpSocket probes only: {spec}")
        self.spec = spec
        self.ports = ports
        self.period = min(spec.get("periodSeconds", 10), 1)
        self.timeout = spec.get("timeoutSeconds", 1)
        self.failure_threshold = spec.get("failureThreshold", 3)
        if restarts:  # kubelet's time budget before a restart, at the shorter period
            scale = spec.get("periodSeconds", 10) / self.period
            self.failure_threshold = math.ceil(self.failure_threshold * scale)
        self.success_threshold = spec.get("successThreshold", 1)
        self.due = time.monotonic() + spec.get("initialDelaySeconds", 0)
        self.passing = False
        self.successes = 0
        self.failures = 0

    @property
    def failed(self) -> bool:
        return self.failures >= self.failure_threshold

    def run_if_due(self, ip: str) -> None:
        if time.monotonic() < self.due:
            return
        if self._check(ip):
            self.successes, self.failures = self.successes + 1, 0
            self.passing = self.passing or self.successes >= self.success_threshold
        else:
            self.successes, self.failures = 0, self.failures + 1
            self.passing = self.passing and not self.failed
        self.due = time.monotonic() + self.period

    def _check(self, ip: str) -> bool:
        action = self.spec.get("httpGet") or self.spec["tcpSocket"]
        host = action.get("host") or ip
        port = action["port"]
        port = self.ports[port] if isinstance(port, str) else port
        try:
            if "tcpSocket" in self.spec:
                socket.create_connection((host, port), self.timeout).close()
                return True
            scheme = action.get("scheme", "HTTP").lower()
            response = requests.get(
                f"{scheme}://{host}:{port}{action.get('path', '/')}",
                headers={h["name"]: h["value"] for h in action.get("httpHeaders", [])},
                timeout=self.timeout,
                allow_redirects=False,
                verify=False,
                proxies={"http": "", "https": ""},  # never through $HTTP_PROXY
            )
            return 200 <= response.status_code < 400
        except (requests.RequestException, OSError):
            return False


class _Container:
    """One container of a pod: its process, restarts and probes."""

    def __init__(self, spec: Json) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.process: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.start_attempts = 0
        self.restart_at = 0.0
        self.state: Json = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Json = {}
        self.probes: dict[str, _Probe] = {}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def started(self) -> bool:
        startup = self.probes.get("startupProbe")
        return self.running and (startup is None or startup.passing)

    @property
    def ready(self) -> bool:
        readiness = self.probes.get("readinessProbe")
        return self.started and (readiness is None or readiness.passing)

    def status(self) -> Json:
        status = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None:
            status["containerID"] = f"process://{self.process.pid}"
        return status


class _Pod:
    """A bound pod whose containers run as local processes, driven by its own thread."""

    def __init__(self, node: TestNode, pod: Json, ip: str) -> None:
        self.node = node
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.labels: dict[str, str] = pod["metadata"].get("labels") or {}
        self.annotations: dict[str, str] = pod["metadata"].get("annotations") or {}
        self.spec: Json = pod["spec"]
        self.ip = ip
        self.dir = node.work_dir / "pods" / self.uid
        self.containers = [_Container(c) for c in self.spec["containers"]]
        self.volumes: dict[str, Path] | None = None
        self.start_time = _now()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.reported: Json = {}
        self.grace: float | None = None  # set when the pod is to be terminated
        self.delete_object = False
        self.kill_now = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def delete(self, grace: float) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after `grace` seconds, then the API object."""
        self.grace = grace if self.grace is None else min(grace, self.grace)
        self.delete_object = True
        self.stopping.set()

    def kill(self) -> None:
        """SIGKILL now, the API object left alone."""
        self.grace = 0
        self.kill_now.set()
        self.stopping.set()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._sync()
                self.stopping.wait(0.1)
        except Exception:
            log.exception("pod %s/%s failed", self.namespace, self.name)
        finally:
            self._terminate(self.containers, self.grace or 0)
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.delete_object:
            try:
                self.node.api.call(
                    "DELETE",
                    self.path,
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                    tolerate=(404, 409),
                )
            except requests.RequestException:
                log.exception("pod %s/%s: deletion failed", self.namespace, self.name)

    def _sync(self) -> None:
        for container in self.containers:
            if container.process is None:
                if time.monotonic() >= container.restart_at:
                    self._start(container)
            elif container.process.poll() is not None:
                self._exited(container)
            else:
                self._probe(container)
        self._report()

    def _probe(self, container: _Container) -> None:
        """Runs the probes that are due (only the startup probe until it passes); restarts
        the container when its startup or liveness probe failed."""
        for kind, probe in container.probes.items():
            if kind == "startupProbe" or container.started:
                probe.run_if_due(self.ip)
        for kind in ("startupProbe", "livenessProbe"):
            if kind in container.probes and container.probes[kind].failed:
                log.info("%s/%s: %s failed, restarting", self.name, container.name, kind)
                grace = container.spec[kind].get("terminationGracePeriodSeconds")
                self._terminate([container], self.grace_period if grace is None else grace)
                self._exited(container)
                return

    @property
    def grace_period(self) -> float:
        return self.spec.get("terminationGracePeriodSeconds", 30)

    def _start(self, container: _Container) -> None:
        try:
            if self.volumes is None:
                self.volumes = self._mount_volumes()
            argv, env = self._process_config(container.spec)
            probes = {
                kind: _Probe(
                    container.spec[kind], self._ports(container.spec), kind != "readinessProbe"
                )
                for kind in ("startupProbe", "livenessProbe", "readinessProbe")
                if kind in container.spec
            }
            log_file = self.node.log_path(self.namespace, self.name, container.name)
            with log_file.open("ab") as output:
                process = subprocess.Popen(
                    argv,
                    cwd=self.node.repo,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (ConfigError, OSError, requests.RequestException) as exc:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            container.restart_at = time.monotonic() + 1
            return
        if container.start_attempts:
            container.restart_count += 1
            container.last_state = container.state
        container.start_attempts += 1
        container.process = process
        container.probes = probes
        container.state = {"running": {"startedAt": _now()}}

    def _exited(self, container: _Container) -> None:
        assert container.process is not None
        with contextlib.suppress(ProcessLookupError):  # what it left behind (e.g. Chromium)
            os.killpg(container.process.pid, signal.SIGKILL)
        code = container.process.wait()
        container.state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": container.state.get("running", {}).get("startedAt"),
                "finishedAt": _now(),
            }
        }
        container.process = None
        container.probes = {}
        container.restart_at = time.monotonic() + min(0.25 * 2**container.restart_count, 5)

    def _terminate(self, containers: list[_Container], grace: float) -> None:
        """SIGTERM to each main process, SIGKILL of the process groups after `grace`."""
        running = [c.process for c in containers if c.process and c.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (
            any(p.poll() is None for p in running)
            and time.monotonic() < deadline
            and not self.kill_now.wait(0.05)
        ):
            pass
        for container in containers:
            if container.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()

    def _ports(self, container: Json) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}

    def _process_config(self, container: Json) -> tuple[list[str], dict[str, str]]:
        """argv and environment of the container's process."""
        if not container.get("command"):
            raise ConfigError(f"container {container['name']} has no command (images not run)")
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(
                {source.get("prefix", "") + k: v for k, v in self._env_source(source).items()}
            )
        for variable in container.get("env", []):
            value = self._env_value(variable, env)
            if value is not None:
                env[variable["name"]] = value
        command = [_expand(word, env) for word in container["command"] + container.get("args", [])]
        if command[0] in ("python", "python3"):
            command[0] = sys.executable
        mounts = self._mounts(container)
        env = {name: _local_path(value, mounts) for name, value in env.items()}
        return [_local_path(word, mounts) for word in command], {
            **os.environ,
            **self._service_account_env(),
            **env,
        }

    def _service_account_env(self) -> dict[str, str]:
        """KUBECONFIG for the pod's ServiceAccount, where kubelet would mount its token."""
        account = self.spec.get("serviceAccountName") or "default"
        automount = self.spec.get("automountServiceAccountToken")
        if automount is None:
            found = self.node.api.get(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}"
            )
            if found is None:
                raise ConfigError(f"serviceaccount {account} not found")
            automount = found.get("automountServiceAccountToken", True)
        if not automount:
            return {}
        return {"KUBECONFIG": str(self.node.service_account_kubeconfig(self.namespace, account))}

    def _env_source(self, source: Json) -> dict[str, str]:
        if "secretRef" in source:
            ref, kind = source["secretRef"], "secrets"
        else:
            ref, kind = source["configMapRef"], "configmaps"
        data = self._object_data(kind, ref["name"], ref.get("optional", False))
        return data or {}

    def _env_value(self, variable: Json, env: dict[str, str]) -> str | None:
        if "valueFrom" not in variable:
            return _expand(variable.get("value", ""), env)
        source = variable["valueFrom"]
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        if "secretKeyRef" in source:
            ref, kind = source["secretKeyRef"], "secrets"
        elif "configMapKeyRef" in source:
            ref, kind = source["configMapKeyRef"], "configmaps"
        else:
            raise ConfigError(f"unsupported env source: {variable}")
        optional = ref.get("optional", False)
        data = self._object_data(kind, ref["name"], optional)
        if data is not None and ref["key"] in data:
            return data[ref["key"]]
        if optional:
            return None
        raise ConfigError(f"key {ref['key']} not found in {kind} {ref['name']}")

    def _field(self, path: str) -> str:
        keyed = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if keyed:
            source = self.labels if keyed.group(1) == "labels" else self.annotations
            return source.get(keyed.group(2), "")
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", ""),
            "status.podIP": self.ip,
            "status.hostIP": HOST_IP,
        }
        if path not in fields:
            raise ConfigError(f"unsupported fieldRef {path}")
        return fields[path]

    def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """A Secret's (decoded) or ConfigMap's data; None if it is missing and optional."""
        found = self.node.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        if found is None:
            if optional:
                return None
            raise ConfigError(f"{kind} {name} not found")
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in found.get("data", {}).items()}
        binary = {k: base64.b64decode(v).decode() for k, v in found.get("binaryData", {}).items()}
        return {**found.get("data", {}), **binary}

    def _mount_volumes(self) -> dict[str, Path]:
        """The local directory of each of the pod's volumes."""
        volumes = {}
        for volume in self.spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                directory = self.node.pvc_path(self.namespace, claim)
                self._bind_claim(claim)
            else:
                directory = self.dir / "volumes" / volume["name"]
            directory.mkdir(parents=True, exist_ok=True)
            for kind, name_field in (("secret", "secretName"), ("configMap", "name")):
                if kind in volume:
                    source = volume[kind]
                    self._write_files(
                        directory,
                        "secrets" if kind == "secret" else "configmaps",
                        source,
                        source[name_field],
                    )
            volumes[volume["name"]] = directory
        return volumes

    def _write_files(self, directory: Path, kind: str, source: Json, name: str) -> None:
        data = self._object_data(kind, name, source.get("optional", False)) or {}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise ConfigError(f"key {item['key']} not found in {kind} {name}")
            path = directory / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            path.chmod(item.get("mode", source.get("defaultMode", 0o644)))

    def _bind_claim(self, claim: str) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
        found = self.node.api.get(path)
        if found is not None and found.get("status", {}).get("phase") != "Bound":
            status = {
                "phase": "Bound",
                "accessModes": found["spec"].get("accessModes", []),
                "capacity": found["spec"].get("resources", {}).get("requests", {}),
            }
            self.node.api.call("PATCH", f"{path}/status", {"status": status}, tolerate=(404,))

    def _mounts(self, container: Json) -> list[tuple[str, Path]]:
        """(mountPath, local directory) of the container's mounts, longest path first."""
        assert self.volumes is not None
        mounts = [
            (m["mountPath"].rstrip("/") or "/", self.volumes[m["name"]] / m.get("subPath", ""))
            for m in container.get("volumeMounts", [])
        ]
        return sorted(mounts, key=lambda mount: len(mount[0]), reverse=True)

    def _report(self) -> None:
        """Patches the pod's status when it changed."""
        ready = all(c.ready for c in self.containers)
        conditions = [
            self._condition("PodScheduled", True),
            self._condition("Initialized", True),
            self._condition("ContainersReady", ready),
            self._condition("Ready", ready),
        ]
        started = any(c.start_attempts for c in self.containers)
        status = {
            "phase": "Running" if started else "Pending",
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if status != self.reported:
            body = {"metadata": {"uid": self.uid}, "status": status}  # uid: a precondition
            self.node.api.call("PATCH", f"{self.path}/status", body, tolerate=(404, 409))
            self.reported = status

    def _condition(self, kind: str, true: bool) -> Json:
        status = "True" if true else "False"
        if self.transitions.get(kind, ("", ""))[0] != status:
            self.transitions[kind] = (status, _now())
        return {"type": kind, "status": status, "lastTransitionTime": self.transitions[kind][1]}


def _local_path(value: str, mounts: list[tuple[str, Path]]) -> str:
    """`value` with a leading mountPath replaced by the volume's local directory."""
    for mount_path, directory in mounts:
        if value == mount_path:
            return str(directory)
        if value.startswith(mount_path.rstrip("/") + "/"):
            return str(directory / value[len(mount_path) :].lstrip("/"))
    return value


class TestNode:
    """A Node of the control plane `api` whose pods are local processes (see module doc)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, api: ControlPlane, work_dir: Path, repo: Path, name: str = "test-node"
    ) -> None:
        self.name = name
        self.cluster = api
        self.work_dir = work_dir
        self.repo = repo
        cert = api.ca.issue(f"node-{name}", f"test-node:{name}", ("system:masters",))
        self.api = _Api(api.server, cert, api.ca.cert_file)
        block = random.randrange(100, 250)  # far from the simulated pods' 127.77-79
        self._ips = (f"127.{block}.{n // 256}.{n % 256}" for n in itertools.count(2))
        self._pods: dict[str, _Pod] = {}  # by uid
        self._done: set[str] = set()  # uids of pods terminated here: never run again
        self._kubeconfigs: dict[tuple[str, str], Path] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"node {name}", daemon=True)

    def __enter__(self) -> TestNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._register()
        self._thread.start()

    def stop(self) -> None:
        """Kills every pod's processes and removes the Node (pod objects stay)."""
        self._stopping.set()
        self._thread.join()
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            pod.kill()
        for pod in pods:
            pod.thread.join()
        with contextlib.suppress(requests.RequestException):
            self.api.call("DELETE", f"/api/v1/nodes/{self.name}", tolerate=(404,))

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Stdout and stderr of that container, all its restarts and incarnations appended."""
        return self.work_dir / "logs" / f"{namespace}_{pod}_{container}.log"

    def pvc_path(self, namespace: str, claim: str) -> Path:
        """The local directory behind a PersistentVolumeClaim."""
        return self.work_dir / "pvc" / namespace / claim

    def service_account_kubeconfig(self, namespace: str, account: str) -> Path:
        """A kubeconfig authenticating as that ServiceAccount (issued once per account)."""
        with self._lock:
            if (namespace, account) not in self._kubeconfigs:
                self._kubeconfigs[namespace, account] = self.cluster.kubeconfig_for_service_account(
                    namespace, account
                )
            return self._kubeconfigs[namespace, account]

    def _free_ip(self, pod: dict[str, Any]) -> str:
        """The next address on which no port the pod declares is taken."""
        ports = [
            p["containerPort"]
            for c in pod["spec"].get("containers", [])
            for p in c.get("ports") or []
            if p.get("containerPort")
        ]
        while True:
            ip = next(self._ips)
            if all(_bindable(ip, port) for port in ports):
                return ip

    def pod_ip(self, namespace: str, name: str) -> str | None:
        pod = self._find(namespace, name)
        return pod.ip if pod else None

    def pid(self, namespace: str, name: str, container: str | None = None) -> int | None:
        """The process id of that container (the first one by default), None if not running."""
        pod = self._find(namespace, name)
        if pod is None:
            return None
        found = next(c for c in pod.containers if container in (None, c.name))
        process = found.process
        return process.pid if process and process.poll() is None else None

    def wait_ready(self, namespace: str, name: str, timeout: float = 30) -> Json:
        """The pod's object once the API says it is Ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            conditions = (pod or {}).get("status", {}).get("conditions", [])
            if pod and _first(conditions, "Ready").get("status") == "True":
                return pod
            time.sleep(0.1)
        raise AssertionError(f"pod {namespace}/{name} not Ready after {timeout}s")

    def _find(self, namespace: str, name: str) -> _Pod | None:
        """The newest pod of that name run here."""
        with self._lock:
            pods = [p for p in self._pods.values() if (p.namespace, p.name) == (namespace, name)]
        return pods[-1] if pods else None

    def _run(self) -> None:
        next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
        while not self._stopping.wait(POLL_INTERVAL):
            try:
                if time.monotonic() >= next_heartbeat:
                    self._register()
                    next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
                self._sync()
            except requests.RequestException:
                log.exception("test node %s: sync failed", self.name)

    def _register(self) -> None:
        """Creates the Node, or marks it Ready again."""
        now = _now()
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "test node: pods run as local processes",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.name},
            ],
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "1000"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "1000"},
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}},
            "status": status,
        }
        if self.api.call("POST", "/api/v1/nodes", node, tolerate=(409,)) is None:
            self.api.call("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": status})

    def _sync(self) -> None:
        listed = self.api.call("GET", "/api/v1/pods")
        assert listed is not None
        present = set()
        for pod in listed["items"]:
            node = pod["spec"].get("nodeName")
            if node == self.name:
                present.add(pod["metadata"]["uid"])
                self._sync_pod(pod)
            elif node is None and pod["status"].get("phase") == "Pending":
                self._bind(pod)
        with self._lock:
            for uid, running in list(self._pods.items()):
                if uid not in present:
                    running.kill()
                if not running.thread.is_alive():
                    del self._pods[uid]
                    self._done.add(uid)

    def _bind(self, pod: Json) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding"
        self.api.call("POST", path, binding, tolerate=(404, 409))

    def _sync_pod(self, pod: Json) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            running = self._pods.get(uid)
            if running is None and uid not in self._done:
                if "deletionTimestamp" in meta:  # deleted before it ever ran
                    self._done.add(uid)
                    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                    body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
                    self.api.call("DELETE", path, body, tolerate=(404, 409))
                elif pod["status"].get("phase") not in ("Succeeded", "Failed"):
                    running = self._pods[uid] = _Pod(self, pod, self._free_ip(pod))
                    running.thread.start()
                    return
        if running is not None and "deletionTimestamp" in meta:
            running.delete(meta.get("deletionGracePeriodSeconds", running.grace_period))


def _first(conditions: list[Json], kind: str) -> Json:
    return next((c for c in conditions if c.get("type") == kind), {})


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True
