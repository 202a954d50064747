"""Router overhead: the same request (GET /status of one location) sent to the session pod
directly, through nginx as a plain reverse proxy, through a minimal aiohttp forwarder
(benchmarks/minimal_forwarder.py) and through the router, with 10 and then 1,000 sessions
known to the router. wrk at concurrency 1 (and 8), loopback. For the two Python proxies it also
prints their CPU time per request (user + system, over the wrk run): at concurrency 1 the
rate is about 1 / (pod time + proxy time), so that is the number that decides it.

The 1,000 sessions are WhatsAppSession objects plus Pod objects (status: Running, Ready, an
address) created in a real API server without running them: only the cache sees them. One of
them points at a real session pod process. Run from the repository root:
    python -m benchmarks.router_bench [--seconds 8]
Needs Debian's wrk and nginx (apt-get install -y wrk nginx).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil
import requests

from tests.support.control_plane import ControlPlane, control_plane_binaries
from tests.support.operator import CRD
from tests.support.processes import Program, free_port, wait_until
from tests.support.router import RouterProcess
from tests.support.session_pods import SessionPod, start_double
from whatsapp_common.crd import GROUP, PLURAL, VERSION
from whatsapp_common.naming import session_name
from whatsapp_operator.manifests import labels

LOCATION = "bench-0"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class Api:
    """Bulk object creation as the admin, straight to the API server."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.http = requests.Session()
        pki = cluster.ca.directory
        self.http.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
        self.http.verify = str(cluster.ca.cert_file)
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
        self.server, self.namespace = cluster.server, namespace

    def post(self, path: str, body: dict) -> None:
        self.http.post(self.server + path, json=body, timeout=10).raise_for_status()

    def add_sessions(self, start: int, stop: int, pod_port: int) -> None:
        ns = self.namespace
        for i in range(start, stop):
            location = f"bench-{i}"
            name = session_name(location)
            self.post(
                f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "WhatsAppSession",
                    "metadata": {"name": name},
                    "spec": {"locationId": location},
                },
            )
            pod = f"{name}-0"
            self.post(
                f"/api/v1/namespaces/{ns}/pods",
                {
                    "metadata": {"name": pod, "labels": labels(location)},
                    "spec": {
                        "containers": [
                            {
                                "name": "session",
                                "image": "none",
                                "ports": [{"name": "http", "containerPort": pod_port}],
                            }
                        ]
                    },
                },
            )
            status = {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            }
            self.http.patch(
                f"{self.server}/api/v1/namespaces/{ns}/pods/{pod}/status",
                json=status,
                headers={"Content-Type": "application/merge-patch+json"},
                timeout=10,
            ).raise_for_status()


def wrk(
    url: str, seconds: int, connections: int, token: str | None = None, pid: int | None = None
) -> dict[str, float]:
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    process = psutil.Process(pid) if pid else None
    cpu_before = sum(process.cpu_times()[:2]) if process else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers from {url}:\n{out}")
    latency = {
        q: float(v) * _UNITS[u] for q, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result = {"p50": latency["50"], "p99": latency["99"], "rps": rps}
    if process:
        result["cpu_us"] = (sum(process.cpu_times()[:2]) - cpu_before) / count * 1e6
    return result


def nginx(work: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    prefix = work / "nginx"
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  upstream pod {{ server 127.0.0.1:{upstream_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://pod;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    )
    process = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    )
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok, 10, "nginx")
    return process, port


def report(rows: list[tuple[str, dict[str, float]]], direct: dict[str, float]) -> None:
    columns = ("p50 ms", "p99 ms", "req/s", "+p50 ms")
    print(f"{'target':<34}" + "".join(f" {c:>8}" for c in columns) + " CPU µs/req")
    for name, r in rows:
        added = r["p50"] - direct["p50"]
        print(
            f"{name:<34} {r['p50']:>8.3f} {r['p99']:>8.3f} {r['rps']:>8.0f} {added:>8.3f}"
            + (f" {r['cpu_us']:>10.0f}" if "cpu_us" in r else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("nginx")):
        raise SystemExit("needs wrk and nginx: apt-get install -y wrk nginx")
    work = Path(tempfile.mkdtemp(prefix="router-bench-"))
    double_program, double = start_double(work / "double.log")
    pod = SessionPod(LOCATION, work / "pod", double)
    # The pod's own token: the router adds it, the other ways in are given it by wrk.
    pod_token = pod.auth["Authorization"].removeprefix("Bearer ")
    query = f"/status?location_identifier={LOCATION}"
    proxy, proxy_port = nginx(work, pod.port)
    minimal_port = free_port()
    minimal = Program(
        "benchmarks.minimal_forwarder",
        [str(minimal_port), pod.url],
        {},
        work / "minimal.log",
    )
    minimal_url = f"http://127.0.0.1:{minimal_port}{query}"
    wait_until(
        lambda: requests.get(minimal_url, headers=pod.auth, timeout=2).ok,
        20,
        "the minimal forwarder",
    )
    try:
        with ControlPlane(control_plane_binaries(), work / "cluster") as cluster:
            cluster.install_crds(CRD)
            cluster.kubectl("create", "namespace", "bench")
            wait_until(
                lambda: (
                    cluster.kubectl(
                        "get", "serviceaccount", "default", "-n", "bench", check=False
                    ).returncode
                    == 0
                ),
                30,
                "the default ServiceAccount",
            )
            api = Api(cluster, "bench")
            router = RouterProcess(cluster, "bench", work / "router.log", LOG_LEVEL="INFO")
            known = 0
            for count in (10, 1000):
                api.add_sessions(known, count, pod.port)
                known = count
                wait_until(
                    lambda n=count: len(router.get("/sessions").json()["body"]) == n,
                    60,
                    f"{count} sessions in the router's cache",
                )
                for connections in (1, 8):
                    wrk(pod.url + query, 1, connections, pod_token)  # warm up
                    direct = wrk(pod.url + query, args.seconds, connections, pod_token)
                    via_nginx = wrk(
                        f"http://127.0.0.1:{proxy_port}{query}",
                        args.seconds,
                        connections,
                        pod_token,
                    )
                    wrk(minimal_url, 1, connections, pod_token)
                    via_minimal = wrk(
                        minimal_url, args.seconds, connections, pod_token, pid=minimal.pid
                    )
                    wrk(router.url + query, 1, connections, router.token)
                    via_router = wrk(
                        router.url + query,
                        args.seconds,
                        connections,
                        router.token,
                        pid=router.program.pid,
                    )
                    print(f"\n{count} sessions known to the router, wrk concurrency {connections}")
                    report(
                        [
                            ("session pod directly", direct),
                            ("nginx reverse proxy", via_nginx),
                            ("minimal aiohttp forwarder", via_minimal),
                            ("router (auth, routing, metrics)", via_router),
                        ],
                        direct,
                    )
            router.stop()
    finally:
        proxy.terminate()
        proxy.wait(10)
        minimal.stop()
        pod.stop()
        double_program.stop()


if __name__ == "__main__":
    main()
