"""Backup versions, their manifests and where both live in the store."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from whatsapp_common.objectstore import location_root

FORMAT = 1
_VERSION = re.compile(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}")


def new_version(now: datetime) -> str:
    """A version name that sorts by time: `20261125T221500.123Z-3f9a0c`."""
    now = now.astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def is_version(text: object) -> bool:
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


@dataclass(frozen=True)
class Manifest:
    """Written after the data object: a backup exists only once its manifest does."""

    version: str
    sha256: str
    size: int
    created: str  # ISO 8601, UTC
    program_version: str
    location: str
    origin: str
    files: dict[str, int]  # path in the archive -> size
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Raises ValueError when the manifest is not one this program can read."""
        try:
            raw = json.loads(data)
            manifest = cls(**raw)
        except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed manifest: {exc}") from exc
        if manifest.format != FORMAT:
            raise ValueError(f"unknown manifest format {manifest.format!r}")
        if not is_version(manifest.version):
            raise ValueError(f"bad version in manifest: {manifest.version!r}")
        return manifest


@dataclass(frozen=True)
class Listing:
    """The backups one listing of a location holds: sealed ones, and ones written before
    encryption (legacy)."""

    sealed: frozenset[str]
    legacy: frozenset[str]

    @property
    def versions(self) -> list[str]:
        """Every backup's version, oldest first."""
        return sorted(self.sealed | self.legacy)


class Layout:
    """Keys of one location: everything lives under `<prefix>/<location>/`.

    `sealed/<version>` is a backup (manifest and archive, encrypted: see sealed.py).
    `versions/<version>.tar.gz` + `manifests/<version>.json` is one written before encryption,
    still restored (migration) until it is re-encrypted or pruned."""

    def __init__(self, prefix: str, location: str) -> None:
        self.root = location_root(prefix, location)

    def sealed_key(self, version: str) -> str:
        return f"{self.root}sealed/{version}"

    def sealed_versions(self, keys: list[str]) -> list[str]:
        return _versions(keys, f"{self.root}sealed/", "")

    def data_key(self, version: str) -> str:
        return f"{self.root}versions/{version}.tar.gz"

    def manifest_key(self, version: str) -> str:
        return f"{self.root}manifests/{version}.json"

    def manifest_versions(self, keys: list[str]) -> list[str]:
        return _versions(keys, f"{self.root}manifests/", ".json")

    def data_versions(self, keys: list[str]) -> list[str]:
        return _versions(keys, f"{self.root}versions/", ".tar.gz")

    def listing(self, keys: list[str]) -> Listing:
        return Listing(
            frozenset(self.sealed_versions(keys)), frozenset(self.manifest_versions(keys))
        )


def _versions(keys: list[str], head: str, tail: str) -> list[str]:
    """Versions named by `keys` of the form head + version + tail, oldest first."""
    found = (
        key[len(head) : len(key) - len(tail)]
        for key in keys
        if key.startswith(head) and key.endswith(tail)
    )
    return sorted(version for version in found if is_version(version))
