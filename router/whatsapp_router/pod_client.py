"""The router's HTTP/1.1 client for its one kind of call: a small request to a session pod and
the whole answer back.

Why not aiohttp's client: its general machinery (URL objects, cookie jar, tracing, per-call
timers) cost about 90 µs of CPU per call here, a third of the router's budget (README,
benchmarks). This client keeps a few kept-alive connections per pod address, sends one request
at a time on each, and lets httptools (llhttp, Node's parser) read the answer, chunked or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import httptools

Address = tuple[str, int]


class PodUnreachable(Exception):
    """Nothing came back: refused, reset, or closed before the first byte of an answer."""


class PodBrokeConnection(Exception):
    """An answer started and did not finish, or was not HTTP."""


@dataclass(slots=True)
class PodAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(slots=True)
class _Exchange:
    """The answer being read for the request in flight."""

    done: asyncio.Future[PodAnswer]
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    started: bool = False


class _Connection(asyncio.Protocol):
    """One kept-alive connection: httptools calls the `on_*` methods while it parses."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    async def send(self, request: bytes) -> PodAnswer:
        assert self._transport is not None and self._exchange is None, "one request at a time"
        self.reusable = False
        exchange = _Exchange(asyncio.get_running_loop().create_future())
        self._exchange = exchange
        self._transport.write(request)
        try:
            return await exchange.done
        finally:
            self._exchange = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._exchange is None:  # nothing was asked: a pod must not talk first
            self.close()
            return
        self._exchange.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(PodBrokeConnection(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._exchange is not None:
            if self._exchange.started:
                self._fail(PodBrokeConnection("the connection closed during the answer"))
            else:
                self._fail(PodUnreachable(f"the connection closed: {exc or 'end of stream'}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._exchange is not None
        self._exchange.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        assert self._exchange is not None
        self._exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        self.reusable = self._parser.should_keep_alive()
        answer = PodAnswer(
            self._parser.get_status_code(), exchange.headers, b"".join(exchange.chunks)
        )
        if not exchange.done.done():
            exchange.done.set_result(answer)

    def _fail(self, error: Exception) -> None:
        self.close()
        if self._exchange is not None and not self._exchange.done.done():
            self._exchange.done.set_exception(error)


class PodClient:
    """Kept-alive connections by pod address. `timeout` bounds a whole call, connecting
    included; a connection idle for `keepalive` seconds is closed."""

    def __init__(self, timeout: float, connect_timeout: float, keepalive: float = 30.0) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._idle: dict[Address, list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(
        self,
        method: str,
        address: Address,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> PodAnswer:
        """Raises PodUnreachable, PodBrokeConnection, or TimeoutError."""
        head = [f"{method} {target} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        async with asyncio.timeout(self._timeout):
            connection = self._take_idle(address) or await self._connect(address)
            try:
                answer = await connection.send(message + body if body else message)
            except BaseException:  # a timeout or a cancel leaves the answer half read
                connection.close()
                raise
        if connection.reusable and not connection.closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(address, []).append(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take_idle(self, address: Address) -> _Connection | None:
        connections = self._idle.get(address)
        while connections:
            connection = connections.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, address: Address) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, *address)
        except OSError as exc:  # refused, no route, or no answer in time (TimeoutError)
            where = f"{address[0]}:{address[1]}"
            raise PodUnreachable(f"cannot connect to {where}: {type(exc).__name__} {exc}") from exc
        return connection

    def _sweep(self) -> None:
        """Close idle connections past their time, drop closed ones and empty addresses."""
        now = asyncio.get_running_loop().time()
        for address, connections in list(self._idle.items()):
            for connection in connections:
                if now - connection.idle_since > self._keepalive:
                    connection.close()
            kept = [c for c in connections if not c.closed]
            if kept:
                self._idle[address] = kept
            else:
                del self._idle[address]
        self._sweeper = asyncio.get_running_loop().call_later(self._keepalive / 2, self._sweep)
