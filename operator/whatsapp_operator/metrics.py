"""The operator's Prometheus metrics: every failure it recovers from is counted here (and
logged where it happens), so none is silent."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

REGISTRY = CollectorRegistry()
API_CALLS = Counter(
    "wa_operator_api_calls_total", "Kubernetes API calls", ["call", "outcome"], registry=REGISTRY
)
STREAM_ERRORS = Counter(
    "wa_operator_event_stream_errors_total",
    "A session pod's /events stream failed (refused, cut, silent past the read timeout)",
    ["kind"],
    registry=REGISTRY,
)
STATUS_PATCHES = Counter(
    "wa_operator_status_patches_total", "status patches sent by the followers", registry=REGISTRY
)
STATUS_WRITER_CRASHES = Counter(
    "wa_operator_status_writer_crashes_total",
    "a status writer ended on an unexpected error (and was started again)",
    registry=REGISTRY,
)
EVENTS_SUPPRESSED = Counter(
    "wa_operator_events_suppressed_total",
    "phase-change Events not posted (over the per-resource rate)",
    registry=REGISTRY,
)
FOLLOWERS = Gauge(
    "wa_operator_followers", "session pods whose /events are being followed", registry=REGISTRY
)
CONFLICTS = Counter(
    "wa_operator_conflicts_total",
    "reconciles that found the location owned by another resource (or by nobody)",
    registry=REGISTRY,
)
HIBERNATION_STEPS = Counter(
    "wa_operator_hibernation_steps_total",
    "hibernation steps (hibernate, wake (request|schedule|...)) by outcome: done, failed, crashed",
    ["step", "outcome"],
    registry=REGISTRY,
)

ROLLOUT_LOCATIONS = Gauge(
    "wa_operator_rollout_locations",
    "locations of the fleet rollout by state (updated, pending, inFlight, failed, pinned)",
    ["state"],
    registry=REGISTRY,
)
ROLLOUT_HALTED = Gauge(
    "wa_operator_rollout_halted", "1 while the fleet rollout is halted", registry=REGISTRY
)
ROLLOUT_FAILURES = Counter(
    "wa_operator_rollout_failed_locations_total",
    "locations not back within the rollout deadline",
    registry=REGISTRY,
)
ROLLOUT_ERRORS = Counter(
    "wa_operator_rollout_errors_total",
    "rollout steps or location updates that failed (retried), by kind",
    ["kind"],
    registry=REGISTRY,
)


def serve(port: int) -> None:
    """/metrics on `port` (all addresses), from a thread of prometheus_client's."""
    start_http_server(port, registry=REGISTRY)
