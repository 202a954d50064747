"""The operator's calls to the Kubernetes API (synchronous client: call them in a thread)."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import GROUP, PLURAL, VERSION

FIELD_MANAGER = "whatsapp-operator"


class Kube:
    def __init__(self) -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.ApiClient()
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply: creates the object or makes it match, owning its fields."""
        meta = manifest["metadata"]
        patch = {
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
            "Service": self.core.patch_namespaced_service,
        }[manifest["kind"]]
        patch(
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def pod_address(self, namespace: str, name: str) -> str | None:
        """The IP of a running pod that is not terminating, else None."""
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
            return None
        return pod.status.pod_ip

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
