"""The fleet's part of every session pod's template: the operator's settings that reach it
(image, environment, the session Secret, spec defaults, grace period, port, the names of the
backup keys, whether pods get scrape tokens and link keys), as opposed to each resource's own
spec.

A change of any of them is a new fleet revision, which reaches the locations in waves
(rollout.py). Each revision's settings are kept in the rollout object, so any operator
replica can render a location's StatefulSet with the revision that location is on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import OperatorConfig


@dataclass(frozen=True)
class Fleet:
    image: str
    secret_name: str
    pod_env: dict[str, str] = field(hash=False)
    session_defaults: dict[str, Any] = field(hash=False)
    termination_grace_seconds: int
    session_port: int
    backup_key_names: tuple[str, ...]
    metrics_tokens: bool
    link_keys: bool = False  # pods get their link keys (LINK_MASTER_KEYS set: link pages)

    @classmethod
    def of(cls, config: OperatorConfig) -> Fleet:
        if config.backup_masters is None:
            raise ValueError("the operator has no backup master keys (BACKUP_MASTER_KEYS)")
        return cls(
            image=config.image,
            secret_name=config.secret_name,
            pod_env=dict(config.pod_env),
            session_defaults=dict(config.session_defaults),
            termination_grace_seconds=config.termination_grace_seconds,
            session_port=config.session_port,
            backup_key_names=tuple(config.backup_masters.names),
            metrics_tokens=config.scrape_tokens is not None,
            link_keys=config.link_masters is not None,
        )

    @property
    def revision(self) -> str:
        """A hash of the settings: equal settings, equal revision, in any process."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["backup_key_names"] = list(self.backup_key_names)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fleet:
        return cls(**{**data, "backup_key_names": tuple(data["backup_key_names"])})
