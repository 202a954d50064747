"""The router's settings, read from the environment (documented in README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from whatsapp_common.bearer import MIN_TOKEN_CHARS, Token, TokenSet, tokens_from_env
from whatsapp_common.envvars import ConfigError, env_first, env_int, env_number
from whatsapp_common.pod_auth import MasterKeys, master_keys, ring_source

__all__ = ["ConfigError", "RouterSettings"]

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class RouterSettings:
    tokens: TokenSet = field(repr=False)
    # The pod-auth master keys: the router derives each location's pod token from them.
    pod_auth_masters: MasterKeys = field(repr=False)
    namespace: str
    # The link master keys (LINK_MASTER_KEYS): link pages are off without them.
    link_masters: MasterKeys | None = field(default=None, repr=False)
    public_url: str | None = None  # where link pages are reached; else the request's origin
    link_ttl: int = 900
    link_max_ttl: int = 7 * 24 * 3600
    host: str = "0.0.0.0"
    port: int = 8093
    upstream_timeout: float = 40.0
    connect_timeout: float = 2.0
    retry_after: int = 5
    # A request that wakes a hibernating location waits this long for it (0: answered at once).
    wake_hold: float = 20.0
    session_port: int = 8093
    log_level: str = "INFO"
    # The operator's shard count (its chart value operator.shards): above 1, the router
    # labels every WhatsAppSession with its shard (whatsapp_common.sharding).
    operator_shards: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RouterSettings:
        env = os.environ if env is None else env
        tokens = _tokens(env)
        namespace = env_first(env, "NAMESPACE") or _in_cluster_namespace()
        if namespace is None:
            raise ConfigError("NAMESPACE is required outside a cluster")
        return cls(
            tokens=tokens,
            pod_auth_masters=master_keys(env),
            namespace=namespace,
            link_masters=ring_source(env, "LINK_MASTER_KEYS"),
            public_url=_public_url(env),
            link_ttl=env_int(env, "LINK_TTL_SECONDS", cls.link_ttl, 60),
            link_max_ttl=env_int(env, "LINK_MAX_TTL_SECONDS", cls.link_max_ttl, 60),
            host=env_first(env, "HOST") or cls.host,
            port=env_int(env, "PORT", cls.port, 1),
            # Above the pod's CALL_TIMEOUT_SECONDS (30): the pod answers its own timeouts.
            upstream_timeout=env_number(env, "UPSTREAM_TIMEOUT_SECONDS", cls.upstream_timeout, 0.1),
            connect_timeout=env_number(
                env, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", cls.connect_timeout, 0.05
            ),
            retry_after=env_int(env, "RETRY_AFTER_SECONDS", cls.retry_after, 1),
            wake_hold=env_number(env, "WAKE_HOLD_SECONDS", cls.wake_hold, 0),
            session_port=env_int(env, "SESSION_PORT", cls.session_port, 1),
            log_level=(env_first(env, "LOG_LEVEL") or cls.log_level).upper(),
            operator_shards=env_int(env, "OPERATOR_SHARDS", cls.operator_shards, 1),
        )


def _tokens(env: Mapping[str, str]) -> TokenSet:
    """ROUTER_TOKEN (named `default`), ROUTER_TOKENS (name:token,...) and ROUTER_TOKENS_FILE
    (the same form, read again when it changes): at least one."""
    fixed: tuple[Token, ...] = ()
    if (token := env_first(env, "ROUTER_TOKEN")) is not None:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"ROUTER_TOKEN must have at least {MIN_TOKEN_CHARS} characters")
        fixed = (Token("default", token),)
    try:
        tokens = tokens_from_env(env, "ROUTER_TOKENS", fixed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if tokens is None:
        raise ConfigError(
            "ROUTER_TOKEN, ROUTER_TOKENS or ROUTER_TOKENS_FILE is required (tokens of at"
            f" least {MIN_TOKEN_CHARS} characters)"
        )
    return tokens


def _public_url(env: Mapping[str, str]) -> str | None:
    """ROUTER_PUBLIC_URL, `http(s)://host[:port][/prefix]`, without the trailing slash."""
    url = env_first(env, "ROUTER_PUBLIC_URL")
    if url is None:
        return None
    if not url.startswith(("http://", "https://")) or any(c in url for c in "?# "):
        raise ConfigError(f"ROUTER_PUBLIC_URL must be an http(s) URL without query, got {url!r}")
    return url.rstrip("/")


def _in_cluster_namespace() -> str | None:
    try:
        with open(IN_CLUSTER_NAMESPACE) as file:
            return file.read().strip() or None
    except OSError:
        return None
