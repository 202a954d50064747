"""The text form of a set of named secrets (key rings, router tokens): `name:value`
entries separated by commas or newlines, e.g. a Secret's value or a mounted file."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def named_entries(text: str, what: str, form: str) -> list[tuple[str, str]]:
    """(name, value) of each entry, in order; `form` names the entry's shape in errors
    (`name:token`). Raises ValueError naming an entry by its position or name, never by its
    value."""
    entries = [entry.strip() for entry in re.split(r"[,\n]", text) if entry.strip()]
    if not entries:
        raise ValueError(f"{what} is empty: expected {form}[,{form}...]")
    named = []
    for position, entry in enumerate(entries, 1):
        name, colon, value = entry.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise ValueError(
                f"{what}: entry {position} is not {form} (a name of letters, digits, '.', '_'"
                " or '-')"
            )
        named.append((name, value))
    return named
