"""The Kubernetes API clients of the programs that run in a cluster (the operator, the
router): in-cluster configuration, else the kubeconfig. Local mode never imports this."""

from __future__ import annotations

from kubernetes import client, config


class Kube:
    def __init__(self, user_agent: str) -> None:
        """`user_agent` names the program in the API server's audit log (the operator: with
        its shard, so that who wrote what can be told apart)."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.ApiClient()
        api.user_agent = user_agent
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
