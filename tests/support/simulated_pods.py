"""Session pods without browsers: Pod objects made Running with loopback IPs, and one
aiohttp server (in a thread) speaking the session pod's /events protocol on each IP, so
the operator can be watched at any number of locations. Each pod asks for its location's
pod token, as a real one does.

The server keeps each address's event history and resumes from Last-Event-ID, sends
`: heartbeat` comments at the asked period, and can go silent (a half-open connection: no
bytes, no FIN) or refuse new streams, for fault injection. Every connection is recorded
(time, Last-Event-ID) so tests see when a follower started."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes import client, config, watch
from urllib3.exceptions import ProtocolError

from .session_pods import authorization

SESSION_PORT = 8093  # the operator's default, the pods' containerPort "http"


def address(index: int, block: int = 77) -> str:
    """A loopback IP per simulated pod, far from the test node's 127.0.0.x (the tests use
    another `block` than the benchmark, so both can run at once)."""
    return f"127.{block}.{index // 250}.{index % 250 + 1}"


@dataclass
class SimulatedPod:
    location: str
    events: list[dict[str, Any]] = field(default_factory=list)
    streams: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    connects: list[tuple[float, int]] = field(default_factory=list)  # (time, Last-Event-ID)
    silent: bool = False
    refusing: bool = False
    unauthorized: int = 0  # requests without this location's token


class SimulatedPods:
    def __init__(self, locations: dict[str, str], port: int = SESSION_PORT) -> None:
        """`locations`: the location of the pod at each IP."""
        self.pods = {ip: SimulatedPod(location) for ip, location in locations.items()}
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-pods", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the simulated pods' server did not start")

    def emit(self, ip: str, type_: str, data: dict[str, Any]) -> float:
        """Appends an event to the pod's history and sends it to its streams; returns its
        time (epoch seconds, as the event's `at`)."""
        at = time.time()
        self._loop.call_soon_threadsafe(self._emit, ip, type_, data, at)
        return at

    def state(self, ip: str, state: str, **data: Any) -> float:
        return self.emit(ip, "state", {"state": state, **data})

    def open_streams(self, ip: str) -> int:
        return len(self.pods[ip].streams)

    def set_silent(self, ip: str, silent: bool) -> None:
        self.pods[ip].silent = silent

    def set_refusing(self, ip: str, refusing: bool) -> None:
        self.pods[ip].refusing = refusing

    def cut(self, ip: str) -> None:
        """Ends the pod's open streams (as a pod process that exits)."""
        self._loop.call_soon_threadsafe(self._cut, ip)

    def stop(self) -> None:
        """Ends every stream, closes the listeners and the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _emit(self, ip: str, type_: str, data: dict[str, Any], at: float) -> None:
        pod = self.pods[ip]
        event = {"id": len(pod.events) + 1, "type": type_, "at": at, "data": data}
        pod.events.append(event)
        for queue in pod.streams:
            queue.put_nowait(event)

    def _cut(self, ip: str) -> None:
        for queue in self.pods[ip].streams:
            queue.put_nowait(None)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._web = web.Server(self._events)
        hosts = list(self.pods)
        self._server = await self._loop.create_server(self._web, hosts, self._port, backlog=4096)

    async def _shutdown(self) -> None:
        self._server.close()
        for ip in self.pods:
            self._cut(ip)
        await self._web.shutdown(5)

    async def _events(self, request: web.BaseRequest) -> web.StreamResponse:
        ip = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        pod = self.pods[ip]
        if request.headers.get("Authorization") != authorization(pod.location)["Authorization"]:
            pod.unauthorized += 1
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if request.path != "/events":
            return web.Response(status=404)
        after = int(request.headers.get("Last-Event-ID") or 0)
        pod.connects.append((time.time(), after))
        if pod.refusing:
            return web.Response(status=503)
        heartbeat = float(request.query.get("heartbeat", "15"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        for event in pod.events[after:]:
            queue.put_nowait(event)
        pod.streams.add(queue)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    if not pod.silent:
                        await response.write(b": heartbeat\n\n")
                    continue
                if event is None:
                    break
                if pod.silent:
                    continue  # a half-open connection: nothing arrives
                body = json.dumps(event)
                await response.write(
                    f"id: {event['id']}\nevent: {event['type']}\ndata: {body}\n\n".encode()
                )
        except ConnectionResetError:
            pass
        finally:
            pod.streams.discard(queue)
        return response


class PodStatus:
    """Sets Pod status as the kubelet would (Running with an IP, or not), as the admin."""

    def __init__(self, kubeconfig: str, namespace: str, workers: int = 8) -> None:
        api = config.new_client_from_config(kubeconfig)
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._pool = ThreadPoolExecutor(workers)

    def running(self, pod: str, ip: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": now}
        status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [ready]}
        self._core.patch_namespaced_pod_status(pod, self._namespace, {"status": status})

    def pending(self, pod: str) -> None:
        status = {"phase": "Pending", "podIP": None, "podIPs": None, "conditions": None}
        self._core.patch_namespaced_pod_status(pod, self._namespace, {"status": status})

    def all_running(self, pods: dict[str, str]) -> None:
        """pod name -> IP, concurrently."""
        list(self._pool.map(lambda item: self.running(*item), pods.items()))

    def exists(self, pod: str) -> bool:
        return any(
            p.metadata.name == pod
            for p in self._core.list_namespaced_pod(
                self._namespace, field_selector=f"metadata.name={pod}"
            ).items
        )


class SimulatedKubelet:
    """Makes each new pod of `addresses` (pod name -> IP) Running with its address, `delay`
    seconds after it appears (a pod that restores and starts in that long): the pods a
    StatefulSet makes again when its template changes or its pod is deleted."""

    def __init__(
        self, kubeconfig: str, namespace: str, addresses: dict[str, str], delay: float
    ) -> None:
        self._namespace, self._addresses, self._delay = namespace, addresses, delay
        self._status = PodStatus(kubeconfig, namespace, workers=16)
        self._core = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._version = self._core.list_namespaced_pod(namespace, limit=1).metadata
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        events = watch.Watch().stream(
            self._core.list_namespaced_pod,
            self._namespace,
            resource_version=self._version.resource_version,
            timeout_seconds=3600,
        )
        try:
            for event in events:
                if self._stop.is_set():
                    return
                self._added(event["type"], event["object"])
        except (ProtocolError, client.ApiException):
            if not self._stop.is_set():  # the cluster going away once stopped is no error
                raise

    def _added(self, type_: str, pod: Any) -> None:
        name = pod.metadata.name
        if type_ != "ADDED" or pod.metadata.uid in self._seen or name not in self._addresses:
            return
        self._seen.add(pod.metadata.uid)
        timer = threading.Timer(self._delay, self._status.running, (name, self._addresses[name]))
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        self._stop.set()
