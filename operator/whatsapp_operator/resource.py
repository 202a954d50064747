"""One WhatsAppSession as the operator's handlers pass it around (from kopf's body or from
the index of sessions), and the parts of a Kubernetes object that say who owns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from whatsapp_common.crd import GROUP, KIND, VERSION
from whatsapp_common.naming import location_label


@dataclass(frozen=True)
class Resource:
    namespace: str
    name: str
    uid: str
    spec: dict[str, Any]
    generation: int = 0
    created: str = ""
    deleting: bool = False
    status: dict[str, Any] = field(default_factory=dict, compare=False)
    labels: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, body: Any) -> Resource:
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            spec=dict(body.get("spec") or {}),
            generation=meta.get("generation", 0),
            created=meta.get("creationTimestamp") or "",
            deleting=meta.get("deletionTimestamp") is not None,
            status=dict(body.get("status") or {}),
            labels=dict(meta.get("labels") or {}),
        )

    @property
    def location(self) -> str:
        return str(self.spec["locationId"])

    @property
    def label(self) -> str:
        return location_label(self.location)

    @property
    def paused(self) -> bool:
        return bool(self.spec.get("paused"))

    @property
    def pinned(self) -> bool:
        """Fleet rollouts pass this location by (its own spec changes still apply)."""
        return bool(self.spec.get("pinned"))

    def body(self) -> dict[str, Any]:
        """Enough of the object for an owner reference and for Events about it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


@dataclass(frozen=True)
class Seen:
    """An existing StatefulSet or Service, as far as ownership and drift go."""

    kind: str
    name: str
    uid: str
    owner_uid: str | None  # the controller's, if any
    owner: str | None  # "WhatsAppSession shop", "Deployment x"
    digest: str
    version: str  # metadata.generation when it has one, else resourceVersion
    revision: str = ""  # a StatefulSet's fleet revision (FLEET_REVISION), "" if none
    # A StatefulSet whose controller has seen its spec and made its pods from its template.
    settled: bool = False

    @classmethod
    def of(cls, obj: Any) -> Seen:
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        status = obj.get("status") or {}
        ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        return cls(
            kind=obj.get("kind") or "",
            name=meta["name"],
            uid=meta["uid"],
            owner_uid=ref["uid"] if ref else None,
            owner=f"{ref['kind']} {ref['name']}" if ref else None,
            digest=annotations.get(DIGEST, ""),
            version=str(meta.get("generation") or meta.get("resourceVersion") or ""),
            revision=annotations.get(FLEET_REVISION, ""),
            settled=(
                status.get("observedGeneration", 0) >= meta.get("generation", 0)
                and status.get("updatedReplicas", 0) >= (obj.get("spec") or {}).get("replicas", 1)
            ),
        )


DIGEST = f"{GROUP}/applied"  # the annotation: a hash of what the operator last applied
FLEET_REVISION = f"{GROUP}/fleet-revision"  # on a StatefulSet: its template's fleet revision
