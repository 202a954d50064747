"""The router's calls to session pods, against pods that misbehave on purpose.

A real pod cannot be made to drop a connection half-way through an answer, so these tests put
scripted HTTP servers on 127.0.0.1 sockets where a pod would be: `PodClient` alone first, then
the whole router app (middleware, auth, handlers) with its directory pointing at them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.mounted_secrets import replace_file
from tests.support.router import StaticBackend
from tests.support.session_pods import TEST_POD_AUTH_MASTERS
from whatsapp_common.bearer import Token, TokenSet
from whatsapp_common.serving import app_runner
from whatsapp_router.app import create_app
from whatsapp_router.config import RouterSettings
from whatsapp_router.pod_client import PodBrokeConnection, PodClient, PodUnreachable

TOKEN = "router-upstream-test-token"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class ScriptedPod:
    """A TCP server that reads each request and lets `script` decide what goes back. It counts
    connections and requests, the way a pod would have seen them."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.open_connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ScriptedPod:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port: int = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                await self._script(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()


async def answer_ok(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
    writer.write(OK)
    await writer.drain()


def run(coroutine: Awaitable[Any]) -> Any:
    async def with_timeout() -> Any:
        async with asyncio.timeout(20):
            return await coroutine

    return asyncio.run(with_timeout())


async def wait_for(check: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# --- PodClient alone -------------------------------------------------------------------------


def test_answers_come_back_whole_on_one_kept_alive_connection() -> None:
    async def scenario() -> None:
        async with ScriptedPod(answer_ok) as pod:
            client = PodClient(timeout=5, connect_timeout=1)
            headers = {"Content-Type": "application/json", "X-Request-ID": "r-1"}
            for _ in range(20):
                answer = await client.request(
                    "POST", ("127.0.0.1", pod.port), "/send_message?x=1", headers, b'{"a": 1}'
                )
                assert (answer.status, answer.body) == (200, b'{"ok": true}')
                assert answer.headers["content-type"] == "application/json"
            assert pod.connections == 1 and len(pod.requests) == 20
            first = pod.requests[0]
            assert first.startswith(b"POST /send_message?x=1 HTTP/1.1\r\n")
            assert b"X-Request-ID: r-1\r\n" in first and b"Content-Length: 8\r\n" in first
            assert first.endswith(b'\r\n\r\n{"a": 1}')
            client.close()

    run(scenario())


def test_a_chunked_answer_is_read_to_its_end() -> None:
    async def chunked(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"pod", b""):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        async with ScriptedPod(chunked) as pod:
            client = PodClient(timeout=5, connect_timeout=1)
            answer = await client.request("GET", ("127.0.0.1", pod.port), "/chats", {})
            assert (answer.status, answer.body) == (201, b"hello pod")
            client.close()

    run(scenario())


def test_nothing_back_is_unreachable_and_a_half_answer_is_broken() -> None:
    async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
        writer.close()

    async def half(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        client = PodClient(timeout=5, connect_timeout=1)
        async with ScriptedPod(close_at_once) as pod:
            with pytest.raises(PodUnreachable, match="closed"):
                await client.request("GET", ("127.0.0.1", pod.port), "/status", {})
        closed_port = pod.port  # the server is gone: nothing listens there now
        with pytest.raises(PodUnreachable, match="cannot connect"):
            await client.request("GET", ("127.0.0.1", closed_port), "/status", {})
        async with ScriptedPod(half) as pod:
            with pytest.raises(PodBrokeConnection, match="during the answer"):
                await client.request("GET", ("127.0.0.1", pod.port), "/status", {})
        async with ScriptedPod(garbage) as pod:
            with pytest.raises(PodBrokeConnection, match="not an HTTP answer"):
                await client.request("GET", ("127.0.0.1", pod.port), "/status", {})
        client.close()

    run(scenario())


def test_a_silent_pod_times_out_and_its_connection_is_not_reused() -> None:
    async def silent_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            await answer_ok(_, writer, n)

    async def scenario() -> None:
        async with ScriptedPod(silent_once) as pod:
            client = PodClient(timeout=0.3, connect_timeout=1)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.request("GET", ("127.0.0.1", pod.port), "/status", {})
            assert time.monotonic() - started < 1
            answer = await client.request("GET", ("127.0.0.1", pod.port), "/status", {})
            assert answer.status == 200 and pod.connections == 2  # a late answer never leaks
            client.close()

    run(scenario())


def test_closed_and_idle_connections_are_not_reused() -> None:
    async def close_after(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:  # says so and closes
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
        else:
            await answer_ok(_, writer, n)

    async def scenario() -> None:
        async with ScriptedPod(close_after) as pod:
            client = PodClient(timeout=5, connect_timeout=1, keepalive=0.2)
            address = ("127.0.0.1", pod.port)
            assert (await client.request("GET", address, "/status", {})).status == 200
            assert (await client.request("GET", address, "/status", {})).status == 200
            assert pod.connections == 2
            await wait_for(lambda: pod.open_connections == 0, 3)  # the idle one is swept
            assert (await client.request("GET", address, "/status", {})).status == 200
            assert pod.connections == 3
            client.close()

    run(scenario())


# --- the router app in front of scripted pods ------------------------------------------------


@asynccontextmanager
async def router_for(
    pod: ScriptedPod, upstream_timeout: float = 5, tokens: TokenSet | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    settings = RouterSettings(
        tokens=tokens or TokenSet((Token("default", TOKEN),)),
        pod_auth_masters=lambda: TEST_POD_AUTH_MASTERS,
        namespace="test",
        host="127.0.0.1",
        port=0,
        upstream_timeout=upstream_timeout,
    )
    runner = app_runner(create_app(settings, StaticBackend("7", ("127.0.0.1", pod.port))), 1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as caller:
        try:
            yield caller
        finally:
            await runner.cleanup()


def drop_first_connection() -> Script:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.transport.abort()  # a reset, like a pod killed under a kept-alive connection
        else:
            await answer_ok(_, writer, n)

    return script


async def metric(caller: aiohttp.ClientSession, line: str) -> float:
    text = await (await caller.get("/metrics")).text()
    return float(next(ln for ln in text.splitlines() if ln.startswith(line)).rsplit(" ", 1)[1])


def test_a_call_that_got_nothing_back_is_retried_once() -> None:
    async def scenario() -> None:
        async with ScriptedPod(drop_first_connection()) as pod, router_for(pod) as caller:
            answer = await caller.get("/chats", params={"location_identifier": "7"})
            assert answer.status == 200 and await answer.json() == {"ok": True}
            assert len(pod.requests) == 2 and pod.connections == 2
            assert await metric(caller, "wa_router_upstream_retries_total") == 1

    run(scenario())


def test_a_send_without_an_idempotency_key_is_never_sent_twice() -> None:
    send = {"location_identifier": "7", "receiver_phone": "5491155550001", "message": "Hola"}

    async def scenario() -> None:
        async with ScriptedPod(drop_first_connection()) as pod, router_for(pod) as caller:
            answer = await caller.post("/send_message", json=send)
            body = await answer.json()
            assert answer.status == 503 and answer.headers["Retry-After"] == "1"
            assert body["success"] is False and "not reachable" in body["message"]
            assert len(pod.requests) == 1  # the pod may have sent it: no second try
            keyed = await caller.post("/send_message", json={**send, "idempotency_key": "k-1"})
            assert keyed.status == 200  # the next connection works; the key made a retry safe

        async with ScriptedPod(drop_first_connection()) as pod, router_for(pod) as caller:
            keyed = await caller.post("/send_message", json={**send, "idempotency_key": "k-2"})
            assert keyed.status == 200 and len(pod.requests) == 2

    run(scenario())


def test_a_slow_or_broken_pod_gets_504_or_502_in_the_seed_shape() -> None:
    async def silent(_: asyncio.StreamReader, __: asyncio.StreamWriter, ___: int) -> None:
        await asyncio.sleep(30)

    async def half(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with ScriptedPod(silent) as pod, router_for(pod, upstream_timeout=0.5) as caller:
            started = time.monotonic()
            answer = await caller.get("/contacts", params={"location_identifier": "7"})
            assert time.monotonic() - started < 2
            body = await answer.json()
            assert answer.status == 504 and body["success"] is False
            assert "did not answer in time" in body["message"]
        async with ScriptedPod(half) as pod, router_for(pod) as caller:
            answer = await caller.get("/contacts", params={"location_identifier": "7"})
            body = await answer.json()
            assert answer.status == 502 and "broke the connection" in body["message"]
            assert len(pod.requests) == 1  # an answer had started: never retried

    run(scenario())


def test_head_is_forwarded_as_get_and_answered_without_a_body() -> None:
    async def scenario() -> None:
        async with ScriptedPod(answer_ok) as pod, router_for(pod) as caller:
            answer = await caller.head("/status", params={"location_identifier": "7"})
            assert answer.status == 200 and await answer.read() == b""
            assert pod.requests[0].startswith(b"GET /status?location_identifier=7 HTTP/1.1")

    run(scenario())


def test_a_router_token_rotation_fails_no_request(tmp_path: Path) -> None:
    """Old and new accepted, the caller moves to the new, the old removed: a caller sending
    all along gets no error, the old token is refused at the end, /metrics names tokens."""
    old, new = "old-token-0123456789abc", "new-token-0123456789abc"
    file = tmp_path / "tokens"
    file.write_text(f"2026-06:{old}")

    async def scenario() -> None:
        tokens = TokenSet((), file)
        async with ScriptedPod(answer_ok) as pod, router_for(pod, tokens=tokens) as caller:
            using, statuses, stop = [old], [], asyncio.Event()

            async def keep_calling() -> None:
                while not stop.is_set():
                    auth = {"Authorization": f"Bearer {using[0]}"}
                    answer = await caller.get(
                        "/chats", params={"location_identifier": "7"}, headers=auth
                    )
                    await answer.read()
                    statuses.append(answer.status)

            async def calls(count: int) -> None:
                target = len(statuses) + count
                while len(statuses) < target:  # noqa: ASYNC110 (the caller task appends)
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(keep_calling())
            await calls(20)
            replace_file(file, f"2026-12:{new}\n2026-06:{old}")  # the new beside the old
            await calls(20)
            using[0] = new  # the callers move
            await calls(20)
            replace_file(file, f"2026-12:{new}")  # the old removed
            await calls(20)
            stop.set()
            await task

            assert len(statuses) >= 80 and set(statuses) == {200}
            auth = {"Authorization": f"Bearer {old}"}
            refused = await caller.get("/chats", params={"location_identifier": "7"}, headers=auth)
            assert refused.status == 401
            assert (await refused.json())["message"] == "A valid bearer token is required"
            metrics = await caller.get("/metrics", headers={"Authorization": f"Bearer {new}"})
            text = await metrics.text()
            assert old not in text and new not in text
            counts = {
                ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                for ln in text.splitlines()
                if ln.startswith(("wa_router_authenticated_requests_total", "wa_router_auth_"))
            }
            by_token = 'wa_router_authenticated_requests_total{token="%s"}'
            assert counts[by_token % "2026-06"] >= 20 and counts[by_token % "2026-12"] >= 40
            assert counts['wa_router_auth_refused_total{reason="wrong"}'] == 1

    run(scenario())


def test_a_mounted_secret_updated_by_the_kubelet_is_read_again(tmp_path: Path) -> None:
    """The kubelet's layout: `tokens -> ..data/tokens`, `..data -> ..<timestamp>`, and an
    update is a new timestamped directory swapped in by renaming a new `..data` link."""

    def publish(version: str, text: str) -> None:
        (tmp_path / version).mkdir()
        (tmp_path / version / "tokens").write_text(text)
        (tmp_path / "..data.partial").symlink_to(version)
        os.replace(tmp_path / "..data.partial", tmp_path / "..data")

    publish("..2026_12_01", "a:token-a-0123456789abc")
    (tmp_path / "tokens").symlink_to("..data/tokens")
    tokens = TokenSet((), tmp_path / "tokens")
    assert [t.name for t in tokens.current()] == ["a"]
    publish("..2026_12_02", "b:token-b-0123456789abc,a:token-a-0123456789abc")
    assert [t.name for t in tokens.current()] == ["b", "a"]


def test_a_bad_tokens_file_keeps_the_previous_tokens(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("a:token-a-0123456789abc")
    tokens = TokenSet((), file)
    replace_file(file, "a:short")
    assert [t.name for t in tokens.current()] == ["a"]
    file.unlink()
    assert [t.name for t in tokens.current()] == ["a"]
    file.write_text("b:s3cr3t")
    with pytest.raises(ValueError, match="token 'b' is shorter than 16") as error:
        TokenSet((), file)
    assert "s3cr3t" not in str(error.value)
