"""Prometheus metrics of one session pod (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from whatsapp_common.states import SessionState


class Metrics:
    def __init__(self, location: str) -> None:
        self.registry = CollectorRegistry()
        self._location = location
        self.state = Gauge(
            "wa_session_state",
            "1 for the session's current state, 0 for the others",
            ["location", "state"],
            registry=self.registry,
        )
        self.messages_sent = Counter(
            "wa_messages_sent", "Messages handed to WhatsApp", registry=self.registry
        )
        self.send_seconds = Histogram(
            "wa_send_seconds", "Time WhatsApp Web took to accept a message", registry=self.registry
        )
        self.browser_restarts = Counter(
            "wa_browser_relaunches",
            "Browser relaunches after a run ended (crash, hang, failed launch)",
            registry=self.registry,
        )
        self.browser_recycles = Counter(
            "wa_browser_recycles",
            "Planned browser relaunches: its process tree grew past BROWSER_MEMORY_LIMIT_MB",
            registry=self.registry,
        )
        self.browser_memory = Gauge(
            "wa_browser_memory_bytes",
            "PSS of the browser's process tree (Playwright's driver and every Chromium"
            " process) at the last check",
            registry=self.registry,
        )
        self.events = Counter(
            "wa_session_events", "Session events published", ["event"], registry=self.registry
        )
        self.task_failures = Counter(
            "wa_background_task_failures",
            "Background tasks (ack recording, resolving sends, catch-up) that raised",
            ["task"],
            registry=self.registry,
        )
        self.send_outcomes = Counter(
            "wa_send_outcomes",
            "Send attempts by outcome: sent, failed (refused by WhatsApp), queued, unknown",
            ["outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "wa_http_requests", "HTTP requests served", ["route", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "wa_http_request_seconds", "HTTP request duration", ["route"], registry=self.registry
        )

        self.authenticated = Counter(
            "wa_authenticated_requests",
            "Requests accepted, by the name of the token they carried (a pod token is named"
            " as its master key, a scrape token as listed)",
            ["token"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "wa_auth_refused",
            "Requests refused with 401, by reason: missing or wrong credential",
            ["reason"],
            registry=self.registry,
        )

    def set_state(self, current: SessionState) -> None:
        for state in SessionState:
            self.state.labels(self._location, str(state)).set(1 if state == current else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
