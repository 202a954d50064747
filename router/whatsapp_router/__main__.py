"""`python -m whatsapp_router`: the router in a cluster."""

from __future__ import annotations

import asyncio
import sys

from whatsapp_common import logs
from whatsapp_common.kube_clients import Kube

from .app import serve
from .cluster import KubeBackend
from .config import ConfigError, RouterSettings


def main() -> None:
    try:
        settings = RouterSettings.from_env()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    logs.configure({"service": "whatsapp-router"}, settings.log_level)
    kube = Kube("whatsapp-router")  # in-cluster config, else KUBECONFIG
    asyncio.run(serve(settings, KubeBackend(kube, settings)))


if __name__ == "__main__":
    main()
