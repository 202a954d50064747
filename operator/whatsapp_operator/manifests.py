"""The Kubernetes objects of one location, built from its WhatsAppSession spec."""

from __future__ import annotations

import base64
from typing import Any

from whatsapp_common.crd import APP, APP_LABEL, LOCATION_LABEL
from whatsapp_common.keys import KeyRing
from whatsapp_common.link_tokens import PURPOSE as LINK_TOKEN
from whatsapp_common.naming import location_label, session_name
from whatsapp_common.pod_auth import PURPOSE as POD_TOKEN

from .config import OperatorConfig
from .fleet import Fleet
from .hibernation import HibernationSpec, asleep
from .resource import FLEET_REVISION, Resource
from .scope import shard_labels

DATA_MOUNT = "/data"
KEYS_MOUNT = "/etc/whatsapp-session/keys"  # the location's Secret, updated in place by the kubelet
TMP_MOUNT = "/tmp"  # HOME of the session pod image: Chromium's and Playwright's scratch space
BACKUP_KEY_NAMES = "whatsapp-sessions.io/backup-keys"  # names only: a rotation rolls the pod


def keys_secret_name(location_id: str) -> str:
    return f"{session_name(location_id)}-keys"


def labels(location_id: str) -> dict[str, str]:
    """What selects the location's pod (the StatefulSet's selector, immutable)."""
    return {APP_LABEL: APP, LOCATION_LABEL: location_label(location_id)}


def object_labels(location_id: str, shard: str | None) -> dict[str, str]:
    """The labels of every object of the location: its selector's, and this operator's shard
    (so that the shard's own watches see them)."""
    return {**labels(location_id), **shard_labels(shard)}


def replicas(resource: Resource) -> int:
    """1, or 0 when no session pod is to run: paused, or hibernating (the operator's recorded
    decision, hibernation.py)."""
    return 0 if resource.paused or asleep(resource) else 1


def session_env(spec: dict[str, Any], fleet: Fleet) -> list[dict[str, Any]]:
    backup = spec.get("backup", {})
    plain = {
        **fleet.pod_env,
        "LOCATION_ID": spec["locationId"],
        "PORT": str(fleet.session_port),
        "DATA_DIR": DATA_MOUNT,
        "BACKUP_INTERVAL_SECONDS": str(backup.get("intervalSeconds", 900)),
        "BACKUP_KEEP": str(backup.get("keep", 5)),
        # Files of the location's Secret (keys_secret), read again when the kubelet updates
        # them: a rotation reaches the pod without a restart.
        "BACKUP_KEYS_FILE": f"{KEYS_MOUNT}/BACKUP_KEYS",
        "POD_TOKENS_FILE": f"{KEYS_MOUNT}/POD_TOKENS",
    }
    if fleet.metrics_tokens:
        plain["METRICS_TOKENS_FILE"] = f"{KEYS_MOUNT}/METRICS_TOKENS"
    if fleet.link_keys:
        plain["LINK_KEYS_FILE"] = f"{KEYS_MOUNT}/LINK_KEYS"
    hibernation = HibernationSpec.of({}, spec)
    if hibernation.enabled:  # the pod says when it is idle (session_pod/idleness.py)
        plain["IDLE_AFTER_SECONDS"] = str(hibernation.idle_seconds)
    if events := spec.get("webhook", {}).get("events"):
        plain["WEBHOOK_EVENTS"] = ",".join(events)
    return [
        # The pod's own address: the probes and the router reach it there.
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        *({"name": key, "value": value} for key, value in sorted(plain.items())),
    ]


def statefulset(
    spec: dict[str, Any], namespace: str, fleet: Fleet, shard: str | None, replicas: int
) -> dict[str, Any]:
    """`replicas`: 1, or 0 (paused, hibernating); the volume holds the profile and the
    delivery database and is deleted with the StatefulSet, kept when scaled to zero.
    `fleet`: the operator's settings of the fleet revision this location is on; `shard`:
    this operator's."""
    location = spec["locationId"]
    name = session_name(location)
    probe = {"httpGet": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
    storage = spec.get("storage", {})
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.get("size", "1Gi")}},
    }
    if storage.get("storageClassName"):
        claim_spec["storageClassName"] = storage["storageClassName"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": object_labels(location, shard),
            "annotations": {FLEET_REVISION: fleet.revision},
        },
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": labels(location)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": object_labels(location, shard),
                    "annotations": {BACKUP_KEY_NAMES: ",".join(fleet.backup_key_names)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    # The pause container becomes PID 1 and reaps Chromium's orphans.
                    "shareProcessNamespace": True,
                    # Long enough to close the browser and upload the final backup.
                    "terminationGracePeriodSeconds": fleet.termination_grace_seconds,
                    # Pod Security "restricted": admitted where the namespace enforces it.
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "session",
                            "image": fleet.image,
                            "command": ["python3", "-m", "session_pod"],
                            "ports": [{"name": "http", "containerPort": fleet.session_port}],
                            "env": session_env(spec, fleet),
                            "envFrom": [
                                {"secretRef": {"name": fleet.secret_name, "optional": True}}
                            ],
                            "resources": spec.get("resources", {}),
                            "readinessProbe": {
                                **probe,
                                "httpGet": {"path": "/readyz", "port": "http"},
                            },
                            "livenessProbe": {
                                **probe,
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                # Chromium and Playwright write only to /data and /tmp (HOME).
                                "readOnlyRootFilesystem": True,
                            },
                            "volumeMounts": [
                                {"name": "data", "mountPath": DATA_MOUNT},
                                {"name": "tmp", "mountPath": TMP_MOUNT},
                                {"name": "keys", "mountPath": KEYS_MOUNT, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        # This location's keys and tokens, never a master key.
                        {
                            "name": "keys",
                            "secret": {
                                "secretName": keys_secret_name(location),
                                "defaultMode": 0o440,
                            },
                        },
                    ],
                },
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim_spec}],
        },
    }


def _masters(config: OperatorConfig) -> KeyRing:
    if config.backup_masters is None:
        raise ValueError("the operator has no backup master keys (BACKUP_MASTER_KEYS)")
    return config.backup_masters


def keys_secret(spec: dict[str, Any], namespace: str, config: OperatorConfig) -> dict[str, Any]:
    """The location's own Secret: its backup keys, pod tokens and link keys, derived from
    each master key, and the scrape tokens that open its /metrics."""
    location = spec["locationId"]
    data = {
        "BACKUP_KEYS": _masters(config).derive("backup", location).to_text(),
        "POD_TOKENS": config.pod_auth_masters().derive(POD_TOKEN, location).to_text(),
    }
    if config.scrape_tokens is not None:
        data["METRICS_TOKENS"] = config.scrape_tokens
    if config.link_masters is not None:
        data["LINK_KEYS"] = config.link_masters().derive(LINK_TOKEN, location).to_text()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": keys_secret_name(location),
            "namespace": namespace,
            "labels": object_labels(location, config.shard),
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def service(spec: dict[str, Any], namespace: str, config: OperatorConfig) -> dict[str, Any]:
    """Headless: a stable DNS name for the one pod."""
    location = spec["locationId"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": session_name(location),
            "namespace": namespace,
            "labels": object_labels(location, config.shard),
        },
        "spec": {
            "clusterIP": "None",
            "selector": labels(location),
            "ports": [{"name": "http", "port": config.session_port, "targetPort": "http"}],
        },
    }
