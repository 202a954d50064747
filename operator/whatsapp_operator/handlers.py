"""kopf handlers of the WhatsAppSession resource: `kopf run -m whatsapp_operator.handlers`."""

from __future__ import annotations

from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION
from .config import OperatorConfig
from .kube import Kube
from .naming import session_name
from .reconcile import reconcile
from .removal import apply_deletion_policy
from .status import follow

CONFIG = OperatorConfig.from_env()
KUBE = Kube()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """The project's own annotation prefix and finalizer; short watch timeouts."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.scanning.disabled = True  # no cluster-wide CRD watch: namespaced permissions only
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.posting.level = 20  # INFO: an Event for every transition
    settings.peering.lifetime = CONFIG.peering_lifetime_seconds


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_spec(
    spec: kopf.Spec,
    namespace: str,
    body: kopf.Body,
    meta: kopf.Meta,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    patch.status.update(
        await reconcile(KUBE, CONFIG, dict(spec), namespace, body, meta["generation"])
    )


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5)
async def mirror_status(
    stopped: kopf.DaemonStopped,
    spec: kopf.Spec,
    name: str,
    namespace: str,
    body: kopf.Body,
    **_: Any,
) -> None:
    pod = f"{session_name(spec['locationId'])}-0"
    await follow(KUBE, body, namespace, name, pod, CONFIG.session_port, stopped)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(spec: kopf.Spec, namespace: str, logger: kopf.Logger, **_: Any) -> None:
    pod = f"{session_name(spec['locationId'])}-0"
    await apply_deletion_policy(KUBE, dict(spec), namespace, pod, CONFIG.session_port, logger)
