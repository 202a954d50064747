"""Reading typed settings from environment variables, with errors that name the variable."""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(ValueError):
    """An environment variable is missing or malformed."""


def env_first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` that is set and not blank (new names listed before the seed's)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_first(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env_first(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    value = env_number(env, name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value:g}")
    return int(value)
