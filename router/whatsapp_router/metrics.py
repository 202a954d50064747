"""Prometheus metrics of the router (served at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .directory import Directory


class RouterMetrics:
    def __init__(self, directory: Directory) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wa_router_http_requests",
            "HTTP requests served",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "wa_router_http_request_seconds",
            "HTTP request duration, forwarding included",
            ["route"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "wa_router_upstream_errors",
            "Calls to session pods that failed (unreachable, timeout, broken)",
            ["kind"],
            registry=self.registry,
        )
        self.requests_by_token = Counter(
            "wa_router_authenticated_requests",
            "Requests accepted, by the name of the token they carried",
            ["token"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "wa_router_auth_refused",
            "Requests refused with 401, by reason (missing, wrong)",
            ["reason"],
            registry=self.registry,
        )
        self.pod_token_fallbacks = Counter(
            "wa_router_pod_token_fallbacks",
            "Calls a session pod refused with the newest pod token and took an older one: a"
            " master key rotation the pod's Secret has not caught up with yet",
            registry=self.registry,
        )
        self.link_urls = Counter(
            "wa_router_link_urls",
            "Link page URLs given out (POST /link_url)",
            registry=self.registry,
        )
        self.link_refusals = Counter(
            "wa_router_link_refusals",
            "Link page requests refused, by reason (expired, forged, malformed, linked)",
            ["reason"],
            registry=self.registry,
        )
        self.link_stream_errors = Counter(
            "wa_router_link_stream_errors",
            "Link pages' follows of a pod's /events that broke (asked again a second later)",
            registry=self.registry,
        )
        self.retries = Counter(
            "wa_router_upstream_retries", "Calls retried once", registry=self.registry
        )
        self.shard_labels = Counter(
            "wa_router_shard_labels",
            "Shard labels written on WhatsAppSessions (operator shards), by outcome: labelled,"
            " gone (deleted or replaced first), failed (after retries)",
            ["outcome"],
            registry=self.registry,
        )
        self.sessions_created = Counter(
            "wa_router_sessions_created",
            "WhatsAppSessions created by POST /login",
            registry=self.registry,
        )
        self.wakes_requested = Counter(
            "wa_router_wakes_requested",
            "Hibernating locations this router asked the operator to wake",
            registry=self.registry,
        )
        self.wake_holds = Counter(
            "wa_router_wake_holds",
            "Requests that found their location hibernating or waking, by how they ended:"
            " forwarded once it was ready, or answered 400 being initialized (past the hold)",
            ["outcome"],
            registry=self.registry,
        )
        Gauge(
            "wa_router_known_sessions", "WhatsAppSessions in the cache", registry=self.registry
        ).set_function(lambda: len(directory.sessions))
        Gauge(
            "wa_router_cache_synced",
            "1 once pods and WhatsAppSessions were listed",
            registry=self.registry,
        ).set_function(lambda: float(len(directory.synced) == 2))
        self.registry.register(_WatchBreakdowns(directory))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WatchBreakdowns(Collector):
    """`wa_router_watch_breakdowns_total{kind}`, counted by the directory itself."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "wa_router_watch_breakdowns",
            "Unexpected failures of a watch (each made the router unready until relisted)",
            labels=["kind"],
        )
        for kind, count in sorted(self._directory.watch_breakdowns.items()):
            family.add_metric([kind], count)
        yield family
