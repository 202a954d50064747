"""Rails' side of a chaos run: clients that send with idempotency keys and retry each key
until its answer is a 200, as a job queue does."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

# send(client, key, text): one /send_message; raises requests.RequestException for no answer.
Send = Callable[[str, str, str], requests.Response]


@dataclass
class JobQueue:
    send: Send
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (client, text)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # key -> its last answer that was no 200
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, name: str) -> None:
        """New keys one after the other, each answered before the next, until `stop`."""
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"{name}-{n}"
            with self.lock:
                self.keys[key] = (name, f"{name} mensaje {n} {uuid.uuid4().hex[:6]}")
            self.answer(key, until=self.stop)

    def answer(self, key: str, until: threading.Event) -> None:
        client, text = self.keys[key]
        while not until.is_set():
            try:
                response: requests.Response | None = self.send(client, key, text)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 200:
                with self.lock:
                    self.answers[key] = response.json()
                return
            self.last[key] = "no answer" if response is None else response.text
            time.sleep(0.3)

    def finish(self, seconds: float) -> None:
        """Every key not answered yet is retried, for at most `seconds` in all."""
        deadline = threading.Event()
        timer = threading.Timer(seconds, deadline.set)
        timer.start()
        for key in list(self.keys):
            if key not in self.answers:
                self.answer(key, until=deadline)
        timer.cancel()

    def text(self, key: str) -> str:
        return self.keys[key][1]
