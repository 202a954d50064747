"""Which credentials open this pod: its location's pod tokens (held by the router and the
operator, see whatsapp_common.pod_auth) open every endpoint; a scrape token opens /metrics
only; the probes need none. Both come from files of the location's Secret in a cluster, read
again when the kubelet updates them, so a rotation needs no restart."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from whatsapp_common.bearer import Token, TokenSet, tokens_from_env
from whatsapp_common.envvars import ConfigError
from whatsapp_common.keys import KeyRing
from whatsapp_common.pod_auth import pod_tokens, ring_source

SCRAPE_PATH = "/metrics"


class PodAuth:
    def __init__(self, pod_keys: Callable[[], KeyRing], scrape: TokenSet | None = None) -> None:
        self._pod_keys = pod_keys
        self._scrape = scrape
        self._ring: KeyRing | None = None
        self._tokens: tuple[Token, ...] = ()

    def accepted(self, path: str) -> tuple[Token, ...]:
        """The tokens that open `path`."""
        tokens = self._pod_tokens()
        if path == SCRAPE_PATH and self._scrape is not None:
            tokens += self._scrape.current()
        return tokens

    def _pod_tokens(self) -> tuple[Token, ...]:
        ring = self._pod_keys()
        if ring is not self._ring:  # read again after a rotation
            self._ring, self._tokens = ring, pod_tokens(ring)
        return self._tokens

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PodAuth:
        """POD_TOKENS or POD_TOKENS_FILE (the location's pod-token keys, required), and
        METRICS_TOKENS or METRICS_TOKENS_FILE (`name:token,...`, optional). Raises ConfigError."""
        pod_keys = ring_source(env, "POD_TOKENS")
        if pod_keys is None:
            raise ConfigError(
                "POD_TOKENS_FILE (or POD_TOKENS) is required: the location's pod tokens, which"
                " the operator or local mode derives (see README, Security)"
            )
        return cls(pod_keys, _scrape_tokens(env))


def _scrape_tokens(env: Mapping[str, str]) -> TokenSet | None:
    try:
        return tokens_from_env(env, "METRICS_TOKENS")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
