"""Bearer-token authentication of every endpoint but the health probes.

The router accepts a set of named tokens, so a token is rotated with no failed request: add
the new one beside the old, move the callers, remove the old. With ROUTER_TOKENS_FILE (a
mounted Secret) the set is read again when the file changes, without a restart. Metrics and
logs name a token, never show it.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import Counter

from whatsapp_common.answers import ApiError
from whatsapp_common.logs import get_logger
from whatsapp_common.middleware import Handler, Middleware
from whatsapp_common.named_entries import named_entries

log = get_logger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Token:
    name: str
    value: str = field(repr=False)


def parse_tokens(text: str, what: str = "ROUTER_TOKENS") -> tuple[Token, ...]:
    """`name:token` entries separated by commas or newlines. Raises ValueError (which names
    an entry by position or name, never by its token)."""
    tokens = []
    for name, value in named_entries(text, what, "name:token"):
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(f"{what}: token {name!r} is shorter than {MIN_TOKEN_CHARS}")
        tokens.append(Token(name, value))
    if len({t.name for t in tokens}) != len(tokens):
        raise ValueError(f"{what}: token names must be unique")
    return tuple(tokens)


class TokenSet:
    """The tokens accepted now: fixed ones, plus a file's, read again when it changes."""

    def __init__(self, fixed: tuple[Token, ...], file: Path | None = None) -> None:
        self._fixed = fixed
        self._file = file
        self._stamp: tuple[int, int, int] | None = None
        self._from_file: tuple[Token, ...] = ()
        if file is not None:  # at start a bad file is an error, later it keeps what was read
            try:
                st = os.stat(file)
                self._from_file = parse_tokens(file.read_text(), f"ROUTER_TOKENS_FILE {file}")
            except OSError as exc:
                raise ValueError(f"ROUTER_TOKENS_FILE {file}: {exc.strerror}") from None
            self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if not self.current():
            raise ValueError("no router token is configured")

    def current(self) -> tuple[Token, ...]:
        if self._file is not None:
            self._reload(self._file)
        return self._fixed + self._from_file

    def _reload(self, path: Path) -> None:
        """A file that cannot be read or parsed keeps the previous set (logged once per
        change), so a bad edit of the Secret locks nobody out."""
        try:
            st = os.stat(path)
        except OSError as exc:
            stamp = (-1, -1, exc.errno or 0)
            if stamp != self._stamp:
                self._stamp = stamp
                log.error(
                    "router tokens file unreadable; keeping the previous tokens",
                    path=str(path),
                    error=exc.strerror,
                )
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._from_file = parse_tokens(path.read_text(), f"ROUTER_TOKENS_FILE {path}")
        except (OSError, ValueError) as exc:
            log.error("router tokens file rejected; keeping the previous tokens", error=str(exc))
            return
        log.info("router tokens loaded", path=str(path), names=[t.name for t in self._from_file])


def bearer_auth(tokens: TokenSet, by_token: Counter, refused: Counter) -> Middleware:
    """`by_token{token}` counts authenticated requests per token name, `refused{reason}` the
    401s (`missing`, `wrong`)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            matched = None
            # compare_digest against every token: the time taken does not tell which matched
            # or how much of one did.
            for token in tokens.current():
                if hmac.compare_digest(given, f"Bearer {token.value}".encode()):
                    matched = token
            if matched is None:
                refused.labels("missing" if not given else "wrong").inc()
                error = ApiError(401, "A valid bearer token is required")
                error.headers["WWW-Authenticate"] = 'Bearer realm="whatsapp-router"'
                raise error
            by_token.labels(matched.name).inc()
        return await handler(request)

    return check
