"""Lease-based leader election (coordination.k8s.io/v1): of the operator's replicas only
the holder of one Lease acts; the others wait and take over when it stops renewing.

Expiry is judged as client-go does, on the candidate's own monotonic clock: a lease
expires `leaseDurationSeconds` after the candidate last saw it change, so clock skew
between replicas does not matter. The leader gives up after failing to renew for
`renew_deadline_s` (< the lease duration), before any standby can take over.

kubernetes_asyncio ships a helper (kubernetes_asyncio.leaderelection); it is not used:
it writes local time labelled as UTC, a connection error (the API server restarting)
escapes its renew loop without cancelling the leader's work, it never releases the
lease on shutdown (a rolling update waits a whole lease duration), and it logs a
traceback for every lost race.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

log = logging.getLogger("podq.operator.leader")

# Failures worth retrying: the API server away or slow, a lost race (409).
TRANSIENT = (ApiException, aiohttp.ClientError, OSError, TimeoutError)


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime's wire form (always six fraction digits, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease, who we are, and the timing. The defaults let a standby take over
    within about 10 s of the leader's death (lease duration + two retry periods)."""

    name: str
    namespace: str
    identity: str
    lease_duration_s: float = 8.0
    renew_deadline_s: float = 6.0
    retry_period_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("leader election needs retry period < renew deadline"
                             " < lease duration")


class LeaderElector:
    """One candidate. `acquire()` waits until it leads; `hold()` renews and returns when
    leadership is lost; `release()` hands the lease over at shutdown."""

    def __init__(self, coordination: client.CoordinationV1Api, settings: LeaseSettings) -> None:
        self.api = coordination
        self.settings = settings
        self.holder: str | None = None  # as last read
        self._seen_version: str | None = None  # resourceVersion last read or written
        self._seen_at = 0.0  # monotonic time at which it changed
        self._renewed_at: float | None = None  # monotonic time of our last successful write

    @property
    def leading(self) -> bool:
        return self.holder == self.settings.identity

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards."""
        s = self.settings
        now = datetime.now(UTC)
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return await self._write(None, now, acquired=now, transitions=0)
        meta, spec = lease.metadata, lease.spec or client.V1LeaseSpec()
        monotonic = time.monotonic()
        if meta.resource_version != self._seen_version:
            self._seen_version, self._seen_at = meta.resource_version, monotonic
        self.holder = spec.holder_identity or None
        mine = self.holder == s.identity
        duration = spec.lease_duration_seconds or s.lease_duration_s
        if self.holder and not mine and monotonic < self._seen_at + duration:
            return False  # held by another, and alive as far as we can tell
        acquired = spec.acquire_time if mine and spec.acquire_time else now
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        return await self._write(meta.resource_version, now, acquired=acquired,
                                 transitions=transitions)

    async def _write(self, resource_version: str | None, now: datetime, *,
                     acquired: datetime, transitions: int) -> bool:
        s = self.settings
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": {"holderIdentity": s.identity,
                     "leaseDurationSeconds": math.ceil(s.lease_duration_s),
                     "acquireTime": micro_time(acquired), "renewTime": micro_time(now),
                     "leaseTransitions": transitions},
        }
        try:
            if resource_version is None:
                written = await self.api.create_namespaced_lease(s.namespace, body)
            else:  # the resourceVersion makes this a compare-and-swap
                body["metadata"]["resourceVersion"] = resource_version
                written = await self.api.replace_namespaced_lease(s.name, s.namespace, body)
        except ApiException as error:
            if error.status == 409:  # another candidate wrote first
                return False
            raise
        if self.holder != s.identity:
            log.info("%s now leads (lease %s/%s)", s.identity, s.namespace, s.name)
        self.holder = s.identity
        self._seen_version, self._seen_at = written.metadata.resource_version, time.monotonic()
        self._renewed_at = self._seen_at
        return True

    async def acquire(self) -> None:
        """Wait, as a standby, until this candidate holds the lease."""
        s = self.settings
        log.info("%s waits for the lease %s/%s", s.identity, s.namespace, s.name)
        while True:
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), s.renew_deadline_s):
                    return
            except TRANSIENT as error:
                log.debug("lease not acquired: %s", error)
            await asyncio.sleep(s.retry_period_s * random.uniform(1.0, 1.2))

    async def hold(self) -> None:
        """Renew every retry period; return once leadership is lost: another holder, or
        no successful renewal for renew_deadline_s. The caller must stop acting then."""
        s = self.settings
        assert self._renewed_at is not None, "acquire() first"
        while True:
            await asyncio.sleep(s.retry_period_s)
            left = self._renewed_at + s.renew_deadline_s - time.monotonic()
            try:
                await asyncio.wait_for(self.try_acquire_or_renew(), max(left, 0.05))
            except TRANSIENT as error:
                log.warning("lease renewal failed: %s", error)
            if self.holder not in (None, s.identity):
                log.error("%s lost the lease to %s", s.identity, self.holder)
                return
            if time.monotonic() - self._renewed_at >= s.renew_deadline_s:
                log.error("%s could not renew the lease for %.0f s", s.identity,
                          s.renew_deadline_s)
                return

    async def release(self) -> None:
        """Give the lease up (at shutdown) so that a standby takes over at once."""
        s = self.settings
        if self._renewed_at is None or time.monotonic() - self._renewed_at >= s.renew_deadline_s:
            return
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace)
            if (lease.spec and lease.spec.holder_identity) != s.identity:
                return
            now = micro_time(datetime.now(UTC))
            await self.api.replace_namespaced_lease(s.name, s.namespace, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace,
                             "resourceVersion": lease.metadata.resource_version},
                "spec": {"leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                         "leaseTransitions": lease.spec.lease_transitions or 0},
            })
            self.holder = None
            log.info("%s released the lease", s.identity)
        except TRANSIENT as error:
            log.warning("could not release the lease: %s", error)
