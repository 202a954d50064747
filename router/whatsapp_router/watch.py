"""List + watch of the session pods and WhatsAppSessions, each in its own thread (the
`kubernetes` client is synchronous), handing every change to the event loop.

A watch that ends is resumed from its last resourceVersion; one that fails (410 Gone, a
network error) lists again, so the cache converges to the API's state. Any other error
(a bug) does the same, and the router is not ready until that listing arrives."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.crd import APP, GROUP, PLURAL, VERSION
from whatsapp_common.kube_clients import Kube
from whatsapp_common.logs import get_logger

from .directory import Directory, PodRecord, SessionRecord

log = get_logger(__name__)
POD_SELECTOR = f"app.kubernetes.io/name={APP}"
WATCH_SECONDS = 30  # the server ends each watch after this: the thread checks `stop` then
READ_TIMEOUT = WATCH_SECONDS + 15


class Source:
    """One kind of object: how to list/watch it and turn each into a record; `observe` sees
    each object listed or changed (on the watch thread)."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        convert: Callable[[Any], Any],
        observe: Callable[[Any], None] = lambda _: None,
    ) -> None:
        self.kind, self.list_fn, self.convert, self.observe = kind, list_fn, convert, observe


def sources(
    kube: Kube, namespace: str, session_port: int, observe_session: Callable[[Any], None]
) -> list[Source]:
    def list_pods(**kwargs: Any) -> Any:
        return kube.core.list_namespaced_pod(namespace, label_selector=POD_SELECTOR, **kwargs)

    def list_sessions(**kwargs: Any) -> Any:
        return kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, **kwargs
        )

    return [
        Source("pods", list_pods, lambda obj: PodRecord.from_object(obj, session_port)),
        Source("sessions", list_sessions, SessionRecord.from_object, observe_session),
    ]


class Watcher:
    """The watch threads; `stop()` lets them end at their next event or watch timeout."""

    def __init__(self, directory: Directory, sources: list[Source]) -> None:
        self._directory = directory
        self._sources = sources
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for source in self._sources:
            thread = threading.Thread(
                target=self._run, args=(source, loop), name=f"watch-{source.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _run(self, source: Source, loop: asyncio.AbstractEventLoop) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._list_and_watch(source, loop)
                failures = 0
            # KeyError: the client's handling of an ERROR event (410 Gone) without deserialize.
            except (ApiException, HTTPError, OSError, ValueError, KeyError) as exc:
                failures += 1
                delay = backoff_delay(failures, 0.2, 5.0)
                log.warning("watch failed, listing again", kind=source.kind, error=str(exc))
                self._stop.wait(delay)
            except Exception as exc:  # a bug, or a client error nobody foresaw: never fatal
                failures += 1
                delay = backoff_delay(failures, 0.2, 5.0)
                loop.call_soon_threadsafe(self._directory.lost, source.kind)
                log.exception(
                    "watch broke down; not ready until listed again",
                    kind=source.kind,
                    error=repr(exc),
                )
                self._stop.wait(delay)

    def _list_and_watch(self, source: Source, loop: asyncio.AbstractEventLoop) -> None:
        response = source.list_fn(_preload_content=False, _request_timeout=(5, READ_TIMEOUT))
        listing = json.loads(response.data)
        records = [source.convert(item) for item in listing["items"]]
        for item in listing["items"]:
            source.observe(item)
        loop.call_soon_threadsafe(self._directory.replace, source.kind, records)
        version = listing["metadata"]["resourceVersion"]
        log.info("listed", kind=source.kind, count=len(records))
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                source.list_fn,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                allow_watch_bookmarks=True,
                deserialize=False,
                _request_timeout=(5, READ_TIMEOUT),
            ):
                if self._stop.is_set():
                    stream.stop()
                    return
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    if event["type"] != "DELETED":
                        source.observe(obj)
                    record = source.convert(obj)
                    loop.call_soon_threadsafe(
                        self._directory.apply, source.kind, event["type"], record
                    )
