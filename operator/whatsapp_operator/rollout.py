"""The fleet rollout of a namespace, recorded in its WhatsAppSessionRollout `whatsapp-sessions`
(`kubectl get whatsappsessionrollouts`) and advanced by events only: a StatefulSet's or a
WhatsAppSession's watch event, a state a session pod reports, a change of the object itself
(a person's action), and a timer for the next deadline or the maintenance window.

Everything a restarted operator (or the other replica) needs lives in that object: the
target and stable revisions with their settings, the locations in flight and since when,
the failed ones. Every write carries the object's resourceVersion, so two writers never
both act on the same state; each step writes its decision first, then applies the
StatefulSets it decided on (a crash in between: the next operator applies them from the
record). A StatefulSet carries the fleet revision it was rendered with.

A person acts with one annotation, which the operator removes in the same write that
records the effect:
`kubectl annotate whatsappsessionrollout whatsapp-sessions whatsapp-sessions.io/action=resume`
(or `=abandon`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from whatsapp_common.backoff import backoff_delay
from whatsapp_common.crd import GROUP, ROLLOUT_KIND, ROLLOUT_PLURAL, VERSION, rollout_name
from whatsapp_common.logs import get_logger
from whatsapp_common.naming import session_name

from .cache import Cache
from .config import OperatorConfig
from .fleet import Fleet
from .followers import Followers
from .kube import Api, Unreachable
from .manifests import replicas
from .metrics import ROLLOUT_ERRORS, ROLLOUT_FAILURES, ROLLOUT_HALTED, ROLLOUT_LOCATIONS
from .notices import Notices
from .resource import Resource, Seen
from .rollout_plan import (
    CANARY_LABEL,
    HALTED,
    Location,
    RolloutSettings,
    RolloutState,
    advance,
    next_due,
    outranked,
    retarget,
    retargets,
    revision_for,
)

log = get_logger(__name__)
ACTION = f"{GROUP}/action"
COALESCE_SECONDS = 0.1  # events this close together are one step
RETRY_SECONDS = 5.0  # a location whose update failed is tried again after this
Apply = Callable[[Resource], Awaitable[None]]
MISSING_CRD = (
    f"the {ROLLOUT_KIND} CRD is not installed: kubectl apply -f "
    "charts/whatsapp-sessions/crds/ (helm upgrade does not install new CRDs)"
)


class Rollouts:
    """The rollout engine of each namespace the operator serves."""

    def __init__(
        self,
        api: Api,
        config: OperatorConfig,
        settings: RolloutSettings,
        cache: Cache,
        followers: Followers,
        notices: Notices,
        apply: Apply,
        peering: tuple[str, int] | None,
    ) -> None:
        """`peering`: the KopfPeering's name and this replica's priority (None: standalone)."""
        self._parts = (api, config, settings, cache, followers, notices, apply, peering)
        self._name = rollout_name(config.shard)  # each shard rolls its own locations
        self._engines: dict[str, Engine] = {}
        self._loaded: dict[str, asyncio.Task[None]] = {}

    async def ready(self, namespace: str) -> None:
        """Loads (or starts) the namespace's rollout once; concurrent callers share it."""
        task = self._loaded.get(namespace)
        if task is None or (task.done() and task.exception() is not None):
            engine = self._engines.get(namespace) or Engine(namespace, *self._parts)
            self._engines[namespace] = engine
            task = self._loaded[namespace] = asyncio.create_task(engine.start())
        await asyncio.shield(task)

    def fleet_for(self, resource: Resource, statefulset: Seen | None) -> Fleet | None:
        """The settings to render the resource's StatefulSet with (after ready()); None:
        leave its StatefulSet as it is."""
        return self._engines[resource.namespace].fleet_for(resource, statefulset)

    def wake(self, namespace: str) -> None:
        if (engine := self._engines.get(namespace)) is not None:
            engine.wake()

    def observe(self, type_: str | None, body: Any) -> None:
        """A watch event of a rollout object."""
        engine = self._engines.get(body["metadata"]["namespace"])
        if engine is not None and body["metadata"]["name"] == self._name:
            engine.observe(type_, body)

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()


class Engine:
    def __init__(
        self,
        namespace: str,
        api: Api,
        config: OperatorConfig,
        settings: RolloutSettings,
        cache: Cache,
        followers: Followers,
        notices: Notices,
        apply: Apply,
        peering: tuple[str, int] | None,
    ) -> None:
        self.namespace = namespace
        self.name = rollout_name(config.shard)  # the record
        self._peering = peering
        self._api, self._settings, self._cache = api, settings, cache
        self._followers, self._notices, self._apply = followers, notices, apply
        self._fleet = Fleet.of(config)
        self.body: dict[str, Any] | None = None
        self.state: RolloutState | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._applied: dict[str, str] = {}  # location -> revision last applied to it
        self._retry: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self._cache.ready(self.namespace)
        await self._establish()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"rollout {self.namespace}")
            self._task.add_done_callback(self._ended)
        self.wake()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def wake(self) -> None:
        self._wake.set()

    def observe(self, type_: str | None, body: Any) -> None:
        """A version of the record (a watch event, a read; `{}`: there is none)."""
        if type_ == "DELETED" or not (body.get("status") or {}).get("revisions"):
            log.warning("no rollout record: making a new one", namespace=self.namespace)
            self.body = None  # the next step makes it again
        elif self.body is None or _newer(body, self.body):
            self.body = dict(body)
            self.state = RolloutState.from_status(self.body["status"])
        self.wake()

    def fleet_for(self, resource: Resource, statefulset: Seen | None) -> Fleet | None:
        state = self.state
        assert state is not None, "ready() first"
        if statefulset is not None and statefulset.owner_uid != resource.uid:
            return state.revisions[state.target]  # not its own: only claimed, never written
        revision = revision_for(
            state,
            self._settings,
            resource.location,
            statefulset.revision if statefulset is not None else None,
            stopped=replicas(resource) == 0,
            pinned=resource.pinned,
        )
        return state.revisions.get(revision) if revision is not None else None

    async def _establish(self) -> None:
        """Reads the record (makes it the first time) and starts a new rollout when this
        operator's settings are a new fleet revision."""
        generation = self._settings.generation
        while True:
            body = await self._read()
            if body is None or not (body.get("status") or {}).get("revisions"):
                state = RolloutState.initial(self._fleet, generation, time.time())
                try:
                    body = await self._write(body, state, drop_action=False)
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise
            state = RolloutState.from_status(body["status"])
            if retargets(state, self._fleet, generation):
                state = retarget(state, self._fleet, generation, time.time())
                try:
                    body = await self._write(body, state, drop_action=False)
                except ApiException as exc:
                    if exc.status == 409:
                        continue
                    raise
                self._post(body, "Normal", "RolloutStarted", state.message)
                log.info("rollout started", namespace=self.namespace, message=state.message)
            self.body, self.state = body, state
            return

    async def _read(self) -> dict[str, Any] | None:
        try:
            return dict(
                await self._api.call(
                    "read WhatsAppSessionRollout",
                    self._api.kube.custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    ROLLOUT_PLURAL,
                    self.name,
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(
        self, body: dict[str, Any] | None, state: RolloutState, drop_action: bool
    ) -> dict[str, Any]:
        """Creates the record, or replaces it if it is still at `body`'s resourceVersion
        (409 otherwise)."""
        custom = self._api.kube.custom
        if body is None:
            new = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": ROLLOUT_KIND,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "status": state.to_status(),
            }
            try:
                created = await self._api.call(
                    "create WhatsAppSessionRollout",
                    custom.create_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    ROLLOUT_PLURAL,
                    new,
                )
            except ApiException as exc:
                if exc.status == 404:  # Helm installs CRDs, but never upgrades them
                    raise kopf.TemporaryError(MISSING_CRD, delay=30) from exc
                raise
            return dict(created)
        metadata = dict(body["metadata"])
        if drop_action:
            annotations = dict(metadata.get("annotations") or {})
            annotations.pop(ACTION, None)
            metadata["annotations"] = annotations
        new = {**body, "metadata": metadata, "status": state.to_status()}
        return dict(
            await self._api.call(
                "replace WhatsAppSessionRollout",
                custom.replace_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                ROLLOUT_PLURAL,
                self.name,
                new,
            )
        )

    async def _run(self) -> None:
        failures = 0
        while True:
            timeout = None
            if self.state is not None:
                timeout = next_due(self.state, self._settings, time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            try:
                await self._step()
                failures = 0
            except (ApiException, Unreachable, kopf.TemporaryError) as exc:
                failures += 1
                ROLLOUT_ERRORS.labels("step").inc()
                delay = backoff_delay(failures, 0.5, 10)
                log.warning(
                    "rollout step failed, retrying",
                    namespace=self.namespace,
                    error=str(exc),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                self.wake()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The loop only ends when closed; one that crashed is said and started again."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        ROLLOUT_ERRORS.labels("crash").inc()
        log.error(
            "rollout loop crashed, starting again", namespace=self.namespace, error=repr(error)
        )
        self._task = asyncio.create_task(self._run(), name=f"rollout {self.namespace}")
        self._task.add_done_callback(self._ended)
        self.wake()

    async def _step(self) -> None:
        if self.body is None or self.state is None:
            await self._establish()
        body, state = self.body, self.state
        assert body is not None and state is not None
        action = ((body["metadata"].get("annotations") or {}).get(ACTION) or "").strip().lower()
        resources = self._owners()
        locations = {loc.id: loc for loc in (self._location(r, s) for r, s in resources.values())}
        new, notes = advance(state, self._settings, locations, time.time(), action)
        if any(n.reason == "LocationFailed" for n in notes) and await self._outranked():
            log.info("paused by a higher-priority replica: no location counted failed")
            self._retry_soon()
            return
        if action or new != state:
            try:
                self.body = await self._write(body, new, drop_action=bool(action))
            except ApiException as exc:
                if exc.status != 409:
                    raise
                log.info("rollout record changed meanwhile: reading it again")
                self.observe(None, await self._read() or {})
                return
            self.state = new
            for note in notes:
                self._note(note, resources)
        self._measure(new)
        await self._converge(new, resources)

    def _owners(self) -> dict[str, tuple[Resource, Seen]]:
        """Each location whose StatefulSet its resource owns, by location id."""
        owners = {}
        for resource in self._cache.resources(self.namespace):
            seen = self._cache.seen("StatefulSet", session_name(resource.location))
            if not resource.deleting and seen is not None and seen.owner_uid == resource.uid:
                owners[resource.location] = (resource, seen)
        return owners

    def _location(self, resource: Resource, seen: Seen) -> Location:
        label = resource.label
        return Location(
            id=resource.location,
            revision=seen.revision,
            settled=seen.settled,
            stopped=replicas(resource) == 0,
            pinned=resource.pinned,
            canary=resource.labels.get(CANARY_LABEL) == "true",
            phase=str(resource.status.get("phase") or ""),
            pod=self._followers.running_pod(label),
            reported=self._followers.reported(label),
        )

    async def _converge(
        self, state: RolloutState, resources: dict[str, tuple[Resource, Seen]]
    ) -> None:
        """Applies every StatefulSet whose revision is not the one the record gives it."""
        due = []
        for location, (resource, seen) in resources.items():
            fleet = self.fleet_for(resource, seen)
            if fleet is None or fleet.revision == seen.revision:
                self._applied.pop(location, None)
            elif self._applied.get(location) != fleet.revision:
                self._applied[location] = fleet.revision
                due.append((resource, self._followers.running_pod(resource.label)))
        if due:
            await asyncio.gather(*(self._apply_one(resource, pod) for resource, pod in due))

    async def _apply_one(self, resource: Resource, pod: str) -> None:
        """Applies the location's StatefulSet, then deletes the pod that ran before (`pod`,
        its uid; "" none): the StatefulSet controller replaces a Ready pod itself, but waits
        forever for one that never became Ready (a failed location going back, one that
        was broken before), Kubernetes' "forced rollback"."""
        try:
            await self._apply(resource)
            if pod:
                await self._delete_pod(resource, pod)
        except Exception as exc:  # kopf's errors and the API's: said, counted, tried again
            self._applied.pop(resource.location, None)
            ROLLOUT_ERRORS.labels("apply").inc()
            log.warning(
                "applying the rollout to a location failed, retrying",
                location=resource.location,
                error=repr(exc),
            )
            self._retry_soon()

    def _retry_soon(self) -> None:
        """One step again in a while (for every location whose update failed)."""
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.wake()

    async def _outranked(self) -> bool:
        """Whether kopf's peering has paused this replica (read when it matters: before a
        location is counted failed on this replica's view, which is stale while paused)."""
        if self._peering is None:
            return False
        name, priority = self._peering
        try:
            peering = await self._api.call(
                "read KopfPeering",
                self._api.kube.custom.get_namespaced_custom_object,
                "kopf.dev",
                "v1",
                self.namespace,
                "kopfpeerings",
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return outranked(peering.get("status") or {}, priority, time.time())

    async def _delete_pod(self, resource: Resource, uid: str) -> None:
        """Deletes that pod (gracefully: the session pod saves its final backup) unless it
        is gone or replaced already."""
        try:
            await self._api.call(
                "delete Pod",
                self._api.kube.core.delete_namespaced_pod,
                f"{session_name(resource.location)}-0",
                resource.namespace,
                body={"preconditions": {"uid": uid}},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another pod by now
                raise

    def _note(self, note: Any, resources: dict[str, tuple[Resource, Seen]]) -> None:
        assert self.body is not None
        self._post(self.body, note.type, note.reason, note.message)
        logger = log.warning if note.type == "Warning" else log.info
        logger(note.message, namespace=self.namespace, reason=note.reason, location=note.location)
        if note.location:  # a location that failed
            ROLLOUT_FAILURES.inc()
            if (owner := resources.get(note.location)) is not None:
                self._notices.warn(owner[0], note.reason, note.message)

    def _post(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": ROLLOUT_KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        }
        kopf.event(ref, type=type_, reason=reason, message=message)

    def _measure(self, state: RolloutState) -> None:
        for key, value in state.counts.items():
            if key != "total":
                ROLLOUT_LOCATIONS.labels(key).set(value)
        ROLLOUT_HALTED.set(1 if state.phase == HALTED else 0)


def _newer(body: Any, than: dict[str, Any]) -> bool:
    """Whether `body` is a later version of the object than `than` (resourceVersions of one
    API server increase; a watch event may arrive after this operator's own newer write)."""
    try:
        return int(body["metadata"]["resourceVersion"]) > int(than["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True
