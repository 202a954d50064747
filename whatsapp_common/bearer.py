"""Bearer-token authentication of every endpoint but the health probes (router and session pod).

A service accepts a set of named tokens, so a token is rotated with no failed request: add
the new one beside the old, move the callers, remove the old. Tokens may come from a file (a
mounted Secret), read again when it changes, without a restart. Metrics and logs name a
token, never show it.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client import Counter

from .answers import ApiError
from .envvars import env_first
from .logs import get_logger
from .middleware import Handler, Middleware
from .named_entries import named_entries

log = get_logger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MIN_TOKEN_CHARS = 16
T = TypeVar("T")


@dataclass(frozen=True)
class Token:
    name: str
    value: str = field(repr=False)


def parse_tokens(text: str, what: str) -> tuple[Token, ...]:
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


class ReloadedFile(Generic[T]):
    """What `parse` makes of a file, read again when the file changes (the kubelet swaps a
    mounted Secret's files in place). At start a bad file is a ValueError; later, a file that
    cannot be read or parsed keeps the previous value (logged once per change), so a bad
    edit of the Secret locks nobody out."""

    def __init__(self, path: Path, parse: Callable[[str, str], T], what: str) -> None:
        self._path = path
        self._parse = parse
        self._what = f"{what} {path}"
        try:
            st = os.stat(path)
            self._value = parse(path.read_text(), self._what)
        except OSError as exc:
            raise ValueError(f"{self._what}: {exc.strerror}") from None
        self._stamp: tuple[int, int, int] = (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> T:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            stamp = (-1, -1, exc.errno or 0)
            if stamp != self._stamp:
                self._stamp = stamp
                log.error(f"{self._what} unreadable; keeping what was read", error=exc.strerror)
            return self._value
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._value = self._parse(self._path.read_text(), self._what)
                log.info(f"{self._what} read again")
            except (OSError, ValueError) as exc:
                log.error(f"{self._what} rejected; keeping what was read", error=str(exc))
        return self._value


class TokenSet:
    """The tokens accepted now: fixed ones, plus a file's, read again when it changes.
    Raises ValueError when the file cannot be read or parsed, or no token is given."""

    def __init__(
        self, fixed: tuple[Token, ...], file: Path | None = None, what: str = "tokens file"
    ) -> None:
        self._fixed = fixed
        self._file = ReloadedFile(file, parse_tokens, what) if file is not None else None
        if not self.current():
            raise ValueError(f"no token is configured ({what})")

    def current(self) -> tuple[Token, ...]:
        return self._fixed + (self._file.current() if self._file is not None else ())


def tokens_from_env(
    env: Mapping[str, str], name: str, fixed: tuple[Token, ...] = ()
) -> TokenSet | None:
    """`fixed`, the tokens listed in `name` (`name:token,...`) and those of the file
    `<name>_FILE` (read again when it changes); None when there are none. Raises ValueError."""
    listed, file = env_first(env, name), env_first(env, f"{name}_FILE")
    tokens = fixed + (parse_tokens(listed, name) if listed else ())
    if not tokens and file is None:
        return None
    return TokenSet(tokens, Path(file) if file else None, f"{name}_FILE")


def matching(given: str, tokens: Iterable[Token]) -> Token | None:
    """The token `given` (an Authorization header) carries, compared with every token in
    constant time: the time taken does not tell which matched or how much of one did."""
    presented = given.encode()
    matched = None
    for token in tokens:
        if hmac.compare_digest(presented, f"Bearer {token.value}".encode()):
            matched = token
    return matched


def bearer_auth(
    accepted: Callable[[str], Iterable[Token]],
    realm: str,
    by_token: Counter,
    refused: Counter,
    open_prefixes: tuple[str, ...] = (),
) -> Middleware:
    """`accepted(path)`: the tokens that open `path`. `by_token{token}` counts authenticated
    requests per token name, `refused{reason}` the 401s (`missing`, `wrong`). Paths under
    `open_prefixes` carry their own credential (the router's link pages: a signed token)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path not in OPEN_PATHS and not path.startswith(open_prefixes):
            given = request.headers.get("Authorization", "")
            token = matching(given, accepted(request.path))
            if token is None:
                refused.labels("missing" if not given else "wrong").inc()
                error = ApiError(401, "A valid bearer token is required")
                error.headers["WWW-Authenticate"] = f'Bearer realm="{realm}"'
                raise error
            by_token.labels(token.name).inc()
        return await handler(request)

    return check
