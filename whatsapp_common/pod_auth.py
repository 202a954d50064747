"""Who may call a session pod: whoever holds the pod-auth master keys (the router, the
operator, local mode). Each location's pod accepts only its own tokens, derived from each
master with the location (`keys.derive(master, "pod-token", location)`), so a pod's token
opens no other pod and tells nothing about the master.

During a rotation a caller holds two masters and a pod may not have the new token yet (the
kubelet publishes a Secret's update within about a minute): the caller presents the newest
token first and, after a 401, the next one (`first_accepted`).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from .bearer import ReloadedFile, Token
from .envvars import ConfigError, env_first
from .keys import KeyRing, parse_ring

PURPOSE = "pod-token"
A = TypeVar("A")
MasterKeys = Callable[[], KeyRing]


def pod_tokens(keys: KeyRing) -> tuple[Token, ...]:
    """The bearer tokens of a location's pod-token keys, named as their masters."""
    return tuple(
        Token(key.name, base64.urlsafe_b64encode(key.secret).rstrip(b"=").decode()) for key in keys
    )


def ring_source(env: Mapping[str, str], name: str) -> Callable[[], KeyRing] | None:
    """The ring in `name` (text form), or in the file `<name>_FILE` (read again when it
    changes); None when neither is set. Raises ConfigError."""
    try:
        if text := env_first(env, name):
            ring = parse_ring(text, name)
            return lambda: ring
        if path := env_first(env, f"{name}_FILE"):
            return ReloadedFile(Path(path), parse_ring, f"{name}_FILE").current
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return None


def master_keys(env: Mapping[str, str]) -> MasterKeys:
    """POD_AUTH_MASTER_KEYS or POD_AUTH_MASTER_KEYS_FILE, required. Raises ConfigError."""
    source = ring_source(env, "POD_AUTH_MASTER_KEYS")
    if source is None:
        raise ConfigError(
            "POD_AUTH_MASTER_KEYS (or POD_AUTH_MASTER_KEYS_FILE) is required: name:base64secret"
            "[,...], newest first; session pods accept only tokens derived from it (README,"
            " Security)"
        )
    return source


class PodCredentials:
    """The Authorization headers a caller presents to a location's pod, newest first."""

    def __init__(self, masters: MasterKeys) -> None:
        self._masters = masters
        self._ring: KeyRing | None = None
        self._by_location: dict[str, tuple[str, ...]] = {}

    def for_location(self, location: str) -> tuple[str, ...]:
        ring = self._masters()
        if ring is not self._ring:  # a rotation: derive again
            self._ring, self._by_location = ring, {}
        headers = self._by_location.get(location)
        if headers is None:
            tokens = pod_tokens(ring.derive(PURPOSE, location))
            headers = self._by_location[location] = tuple(f"Bearer {t.value}" for t in tokens)
        return headers


async def first_accepted(
    authorizations: Sequence[str],
    call: Callable[[str], Awaitable[A]],
    status: Callable[[A], int],
    on_fallback: Callable[[], None] = lambda: None,
) -> A:
    """`call(authorization)` with each header in turn until the pod does not answer 401; the
    last answer otherwise. A 401 comes before the pod does anything, so calling again with the
    next token is safe for any request."""
    for authorization in authorizations[:-1]:
        answer = await call(authorization)
        if status(answer) != 401:
            return answer
        on_fallback()
    return await call(authorizations[-1])
