"""What a failed end-to-end test on a cluster leaves behind, in its assertion message: the
resources' status, the pods, the latest Events and the tail of each component's log. CI
shows only the failure's message, so the evidence has to be in it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.control_plane import ControlPlane

COMPONENTS = ("operator", "router")


def cluster_story(cluster: ControlPlane, namespace: str, log_lines: int = 25) -> str:
    def run(*args: str) -> str:
        result = cluster.kubectl(*args, "-n", namespace, check=False, timeout=30)
        return (result.stdout + result.stderr).strip()

    parts = [
        ("whatsappsessions", run("get", "whatsappsessions", "-o", "wide")),
        ("status", run("get", "whatsappsessions", "-o", "jsonpath={.items[*].status}")),
        ("pods", run("get", "pods", "-o", "wide")),
        ("events", "\n".join(run("get", "events", "--sort-by=.lastTimestamp").splitlines()[-15:])),
    ]
    for component in COMPONENTS:
        selector = f"app.kubernetes.io/component={component}"
        pods = run("get", "pods", "-l", selector, "-o", "name").split()
        for pod in pods:
            parts.append((f"{pod} log", run("logs", pod, f"--tail={log_lines}")))
    return "\n".join(f"--- {title}\n{text}" for title, text in parts)


@contextmanager
def explained_failures(cluster: ControlPlane, namespace: str) -> Iterator[None]:
    """An AssertionError inside carries the cluster's story in its message."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster_story(cluster, namespace)}") from error
