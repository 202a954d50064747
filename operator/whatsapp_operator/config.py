"""The operator's own settings (its environment), applied to every session pod it creates."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from whatsapp_common.bearer import parse_tokens
from whatsapp_common.envvars import ConfigError, env_int, env_number
from whatsapp_common.keys import KeyRing, parse_ring
from whatsapp_common.pod_auth import MasterKeys, master_keys, ring_source

SHARD_NAME = re.compile(r"shard-[0-9]+")


def _no_pod_auth() -> KeyRing:
    raise ValueError("the operator has no pod-auth master keys (POD_AUTH_MASTER_KEYS)")


@dataclass(frozen=True)
class OperatorConfig:
    image: str = "ghcr.io/whatsapp-sessions/session-pod:0.1.0"
    # A Secret whose keys become the session pods' environment (S3 credentials, bucket,
    # RAILS_APP_*, WEBHOOK_SECRET); optional, so a cluster without one still runs.
    secret_name: str = "whatsapp-sessions"
    # Extra plain environment for every session pod, e.g. {"S3_BUCKET": "...", "S3_PREFIX": "..."}.
    pod_env: dict[str, str] = field(default_factory=dict)
    # A partial WhatsAppSession spec (resources, storage, backup) under every resource's spec.
    session_defaults: dict[str, Any] = field(default_factory=dict)
    termination_grace_seconds: int = 90
    session_port: int = 8093
    # How long a dead replica's peering record counts; the standby takes over after it.
    peering_lifetime_seconds: int = 60
    # Every Kubernetes API call: at most this long, on at most this many threads at once.
    api_timeout_seconds: float = 10.0
    api_workers: int = 8
    # A pod's /events stream that sends nothing (not even its heartbeat) for this long is dead.
    events_read_timeout_seconds: float = 30.0
    # Kubernetes Events of phase changes per resource and minute; the rest are counted.
    events_per_minute: int = 6
    # Prometheus metrics on this port (0: none).
    metrics_port: int = 0
    # The master backup keys, newest first (BACKUP_MASTER_KEYS, from a Secret only the operator
    # reads): each session pod gets only its location's keys derived from them.
    backup_masters: KeyRing | None = field(default=None, repr=False)
    # The pod-auth master keys (POD_AUTH_MASTER_KEYS, shared with the router): each session pod
    # accepts only its location's tokens derived from them; the operator presents them too.
    pod_auth_masters: MasterKeys = field(default=_no_pod_auth, repr=False)
    # The scrape tokens (METRICS_TOKENS, `name:token,...`) that open every pod's /metrics.
    scrape_tokens: str | None = field(default=None, repr=False)
    # The link master keys (LINK_MASTER_KEYS, the router's): each session pod gets its
    # location's link key, to put a link page's URL in the `qr` webhook. None: no link.
    link_masters: MasterKeys | None = field(default=None, repr=False)
    # This operator's shard (SHARD, `shard-<n>`, whatsapp_common.sharding): it handles only
    # the locations labelled with it. None: not sharded, every location is this operator's.
    shard: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        pod_env = json_object(env, "SESSION_POD_ENV")
        if not all(isinstance(v, str) for v in pod_env.values()):
            raise ConfigError("SESSION_POD_ENV must be a JSON object of strings")
        masters = env.get("BACKUP_MASTER_KEYS", "").strip()
        if not masters:
            raise ConfigError(
                "BACKUP_MASTER_KEYS is required: name:base64secret[,...], newest first (README,"
                " Security)"
            )
        try:
            backup_masters = parse_ring(masters, "BACKUP_MASTER_KEYS")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        scrape_tokens = env.get("METRICS_TOKENS", "").strip() or None
        if scrape_tokens is not None:
            try:
                parse_tokens(scrape_tokens, "METRICS_TOKENS")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        shard = env.get("SHARD", "").strip() or None
        if shard is not None and not SHARD_NAME.fullmatch(shard):
            raise ConfigError(f"SHARD must look like shard-0, shard-1, ... (not {shard!r})")
        return cls(
            image=env.get("SESSION_IMAGE") or cls.image,
            secret_name=env.get("SESSION_SECRET") or cls.secret_name,
            pod_env=pod_env,
            session_defaults=json_object(env, "SESSION_DEFAULTS"),
            termination_grace_seconds=env_int(
                env, "SESSION_TERMINATION_GRACE_SECONDS", cls.termination_grace_seconds, 10
            ),
            peering_lifetime_seconds=env_int(
                env, "PEERING_LIFETIME_SECONDS", cls.peering_lifetime_seconds, 1
            ),
            api_timeout_seconds=env_number(
                env, "API_TIMEOUT_SECONDS", cls.api_timeout_seconds, 0.1
            ),
            api_workers=env_int(env, "API_WORKERS", cls.api_workers, 1),
            events_read_timeout_seconds=env_number(
                env, "EVENTS_READ_TIMEOUT_SECONDS", cls.events_read_timeout_seconds, 0.1
            ),
            events_per_minute=env_int(env, "EVENTS_PER_MINUTE", cls.events_per_minute, 1),
            metrics_port=env_int(env, "METRICS_PORT", cls.metrics_port, 0),
            backup_masters=backup_masters,
            pod_auth_masters=master_keys(env),
            scrape_tokens=scrape_tokens,
            link_masters=ring_source(env, "LINK_MASTER_KEYS"),
            shard=shard,
        )


def json_object(env: dict[str, str], name: str) -> dict[str, Any]:
    try:
        value: Any = json.loads(env.get(name) or "{}")
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object")
    return value


def with_defaults(defaults: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` over `defaults`, merged key by key in nested objects."""
    merged = dict(defaults)
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = with_defaults(merged[key], value)
        else:
            merged[key] = value
    return merged
