"""Kubernetes API access: clients, status patches, Events (with rate limits)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from podq.operator.coalesce import TokenBucket
from podq.operator.names import CRONJOBS, GROUP, JOBS, VERSION
from podq.redact import redact

log = logging.getLogger("podq.operator")

MERGE_PATCH = "application/merge-patch+json"


@dataclass
class KubeClients:
    api: client.ApiClient
    custom: client.CustomObjectsApi
    core: client.CoreV1Api
    apps: client.AppsV1Api
    autoscaling: client.AutoscalingV2Api

    async def close(self) -> None:
        await self.api.close()


def _require_kubeconfig() -> None:
    """Say plainly that there is no kubeconfig: the client would log "Config not found"
    and then complain of an "Invalid kube-config file" that does not exist."""
    paths = [os.path.expanduser(path) for path in (
        os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep) if path]
    if not any(os.path.isfile(path) for path in paths):
        raise config.ConfigException(
            f"no kubeconfig: {', '.join(paths)} not found (set KUBECONFIG)")


async def connect(pool_size: int = 32) -> KubeClients:
    """Clients for the cluster we run in, else for $KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        _require_kubeconfig()
        await config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    api = client.ApiClient(configuration)
    return KubeClients(
        api=api,
        custom=client.CustomObjectsApi(api),
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        autoscaling=client.AutoscalingV2Api(api),
    )


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, ApiException) and error.status in codes


MAX_REFUSAL_TEXT = 512  # of the API server's message in an Event


def refusal_text(error: ApiException, limit: int = MAX_REFUSAL_TEXT) -> str:
    """Why the API server refused a request, in one line: its reason and the message of
    the Status it returned (a quota's "exceeded quota: ...", an admission webhook's
    verdict), secrets masked, at most `limit` characters."""
    body: Any = error.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    message = ""
    if body:
        try:
            status = json.loads(body)
        except ValueError:  # not a Status: a proxy's page, say
            status = None
        message = str(status.get("message") or "") if isinstance(status, dict) else str(body)
    reason = str(error.reason or error.status)
    message = " ".join(message.split())  # one line
    text = redact(f"{reason}: {message}" if message else reason)
    return text if len(text) <= limit else text[:limit - 3] + "..."


async def patch_job_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, status: Mapping[str, Any]
) -> str | None:
    """Merge-patch a Job resource's status; returns the patched object's
    resourceVersion ("" if the response lacks one), None when the resource is gone."""
    try:
        patched = await custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, JOBS, name, {"status": dict(status)},
            _content_type=MERGE_PATCH,
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    meta = patched.get("metadata") if isinstance(patched, dict) else None
    return str((meta or {}).get("resourceVersion") or "")


async def read_job_spec(
    custom: client.CustomObjectsApi, namespace: str, name: str, uid: str
) -> dict[str, Any] | None:
    """The spec of the Job resource of that uid, None when it is gone (or the name now
    belongs to another resource)."""
    try:
        body = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, JOBS, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    if (body.get("metadata") or {}).get("uid") != uid:
        return None
    return dict(body.get("spec") or {})


JSON_PATCH = "application/json-patch+json"


async def add_job_finalizer(
    custom: client.CustomObjectsApi, namespace: str, name: str, current: list[str], finalizer: str
) -> bool:
    """Add our finalizer with a JSON patch that keeps other controllers' entries; False
    when the resource is gone or its list changed meanwhile (the next pass retries).

    The `test` op makes the patch fail (422) if the list is not what we last saw: with a
    list present, so that two operators cannot append two copies; without one (`null`
    matches an absent field), so that setting the one-entry list can never replace an
    entry another controller added meanwhile."""
    if current:
        ops = [{"op": "test", "path": "/metadata/finalizers", "value": list(current)},
               {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}]
    else:
        ops = [{"op": "test", "path": "/metadata/finalizers", "value": None},
               {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}]
    try:
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, JOBS, name, ops,
                                                    _content_type=JSON_PATCH)
    except ApiException as error:
        if error.status in (404, 422):  # gone, or the list changed under us: next pass
            return False
        raise
    return True


async def remove_job_finalizer(
    custom: client.CustomObjectsApi, namespace: str, name: str, current: list[str], finalizer: str
) -> bool:
    """Remove our finalizer; the `test` op makes a concurrent change of the list fail
    (422) instead of removing someone else's entry. False when not done."""
    if finalizer not in current:
        return True
    index = current.index(finalizer)
    ops = [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
           {"op": "remove", "path": f"/metadata/finalizers/{index}"}]
    try:
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, JOBS, name, ops,
                                                    _content_type=JSON_PATCH)
    except ApiException as error:
        if error.status == 404:
            return True
        if error.status == 422:
            return False
        raise
    return True


async def patch_cronjob_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, CRONJOBS, name, {"status": dict(status)},
        _content_type=MERGE_PATCH,
    )


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to attach an Event to it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class EventRecorder:
    """Posts Events, rate-limited, and at most one Warning per object and reason.

    kopf does not aggregate events; a failing job that retries must not flood the
    namespace, and a burst of thousands of completions must not double the API load.
    Events beyond the rate wait in a backlog, in order, and go out as the rate allows
    (each keeps the time of its transition): every transition gets its Event, later
    under a burst. Warnings have their own, larger budget and backlog, so routine Normal
    events never delay them. The backlog is kept per namespace and drained round-robin:
    a namespace posting thousands of Events (a flood of refused Jobs, CronJobs firing
    every second) delays its own, not another namespace's; only a namespace's backlog
    past BACKLOG_LIMIT drops its own oldest (logged).
    """

    BACKLOG_LIMIT = 20_000

    def __init__(self, core: client.CoreV1Api, normal_rate: float = 5, warning_rate: float = 10,
                 component: str = "podq-operator") -> None:
        self.core = core
        self.buckets = {"Normal": TokenBucket(normal_rate, normal_rate * 4),
                        "Warning": TokenBucket(warning_rate, warning_rate * 5)}
        self.component = component
        self._warned: dict[tuple[str, str], float] = {}
        # type -> namespace -> Events waiting; dict order is the round-robin order
        self._backlogs: dict[str, dict[str, deque[dict[str, Any]]]] = {
            type_: {} for type_ in self.buckets}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self.dropped = 0

    async def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> bool:
        """Post one Event now, or queue it behind the rate limit; returns False only for
        a Warning already posted for this object and reason."""
        if type_ == "Warning":
            mark = (ref.uid, reason)
            if mark in self._warned:
                return False
            self._warned[mark] = time.monotonic()
            if len(self._warned) > 50_000:  # forget the oldest half, bounded memory
                for key in sorted(self._warned, key=self._warned.__getitem__)[:25_000]:
                    del self._warned[key]
        body = self._event(ref, type_, reason, message)
        backlogs = self._backlogs[type_]
        if not backlogs and self.buckets[type_].take(1):
            await self._send(ref.namespace, body)
            return True
        backlog = backlogs.setdefault(ref.namespace, deque())
        if len(backlog) >= self.BACKLOG_LIMIT:
            backlog.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("event backlog of namespace %s full: %d events dropped so far",
                            ref.namespace, self.dropped)
        backlog.append(body)
        drainer = self._drainers.get(type_)
        if drainer is None or drainer.done():
            self._drainers[type_] = asyncio.get_running_loop().create_task(self._drain(type_))
        return True

    def rearm(self, uid: str, reason: str) -> None:
        """What a Warning of this reason on this object said no longer holds: the next
        one is news again, and is posted."""
        self._warned.pop((uid, reason), None)

    async def _drain(self, type_: str) -> None:
        backlogs = self._backlogs[type_]
        while backlogs:
            await self.buckets[type_].acquire()
            if not backlogs:
                break
            namespace = next(iter(backlogs))  # the one whose turn it is
            backlog = backlogs.pop(namespace)
            body = backlog.popleft()
            if backlog:
                backlogs[namespace] = backlog  # to the back of the round
            await self._send(namespace, body)

    async def close(self) -> None:
        """Stop posting what is still in the backlogs (the operator is stopping)."""
        for task in self._drainers.values():
            task.cancel()
        for task in self._drainers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version, "kind": ref.kind, "namespace": ref.namespace,
                "name": ref.name, "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": redact(message)[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    async def _send(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await self.core.create_namespaced_event(namespace, body)
        except ApiException as error:  # an Event is never worth failing a reconcile for
            log.warning("could not post event %s on %s: %s", body["reason"],
                        body["involvedObject"]["name"], error.reason)
