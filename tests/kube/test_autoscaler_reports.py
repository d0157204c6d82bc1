"""What the autoscaler reports once (a Warning Event) on the real control plane: said
again when the refusal ended and came back, and forgotten with the Deployment, so that
an operator that runs for months while Deployments come and go keeps no trace of them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client
from operator_harness import Harness, eventually
from test_operator_autoscale import deployment, replicas

from podq.operator.autoscaler import NOT_PERMITTED, Autoscaler
from podq.operator.kube import EventRecorder, KubeClients
from podq.operator.queues import QueuePool

# what the chart's Role grants the operator where worker pools run (_rbac.tpl)
AUTOSCALING_RULES = [
    client.V1PolicyRule(api_groups=["apps"], resources=["deployments/scale"], verbs=["patch"]),
    client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"]),
    client.V1PolicyRule(api_groups=[""], resources=["pods/status"], verbs=["patch"]),
    client.V1PolicyRule(api_groups=["autoscaling"], resources=["horizontalpodautoscalers"],
                        verbs=["list"]),
    client.V1PolicyRule(api_groups=["keda.sh"], resources=["scaledobjects"], verbs=["list"]),
]


async def warnings(harness: Harness, name: str, reason: str) -> int:
    return sum(1 for e in await harness.events(name) if e.reason == reason)


async def test_a_refusal_that_ended_is_reported_again(harness: Harness) -> None:
    """A Deployment on a queue granted to none is warned about once; relabelled to a
    granted queue it is autoscaled; relabelled back, it is warned about again."""
    harness.start_operator("--allow-queue", f"granted={harness.namespace}")
    await harness.apps.create_namespaced_deployment(harness.namespace, deployment(
        "relabelled", "made-up-queue", **{"podq.dev/min-replicas": "1"}))

    async def warned(times: int) -> bool:
        return await warnings(harness, "relabelled", "QueueNotAllowed") == times
    await eventually(lambda: warned(1), within=30, what="the first QueueNotAllowed Event")

    async def relabel(queue: str) -> None:
        await harness.apps.patch_namespaced_deployment(
            "relabelled", harness.namespace,
            {"metadata": {"labels": {"podq.dev/queue": queue}}})
    await relabel("granted")

    async def scaled() -> bool:
        return await replicas(harness, "relabelled") == 1
    await eventually(scaled, within=60, what="the relabelled Deployment autoscaled")
    await relabel("made-up-queue")
    await eventually(lambda: warned(2), within=30, what="QueueNotAllowed said again")


@pytest.fixture
async def unprivileged_autoscaler(harness: Harness, kube_api: client.ApiClient,
                                  kube_api_unprivileged: client.ApiClient
                                  ) -> AsyncIterator[Autoscaler]:
    """An Autoscaler acting as the control plane's unprivileged user (who has no rights
    until the test grants some), posting its Events as the admin."""
    api = kube_api_unprivileged
    kube = KubeClients(api=api, custom=client.CustomObjectsApi(api), core=client.CoreV1Api(api),
                       apps=client.AppsV1Api(api), autoscaling=client.AutoscalingV2Api(api))
    pool = QueuePool(harness.redis_url)
    autoscaler = Autoscaler(kube, pool, EventRecorder(client.CoreV1Api(kube_api)),
                            stabilisation_s=0, owner_check_s=0)
    try:
        yield autoscaler
    finally:
        await pool.close()


async def test_rights_lost_again_are_reported_again_and_gone_deployments_forgotten(
        harness: Harness, kube_api: client.ApiClient,
        unprivileged_autoscaler: Autoscaler) -> None:
    autoscaler, namespace = unprivileged_autoscaler, harness.namespace
    rbac = client.RbacAuthorizationV1Api(kube_api)
    created = await harness.apps.create_namespaced_deployment(namespace, deployment(
        "unpermitted", "unpermitted", **{"podq.dev/min-replicas": "1"}))
    autoscaler.observe(kube_api.sanitize_for_serialization(created))
    for _ in range(2):  # said once, not every pass
        await autoscaler.autoscale_pass()
    await eventually(lambda: warnings(harness, "unpermitted", NOT_PERMITTED), within=30,
                     what="a NotPermitted Event")
    assert autoscaler.forbidden == {created.metadata.uid}

    # granted: it is autoscaled (once the API server's authorizer sees the binding)
    await rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="autoscaling"), rules=AUTOSCALING_RULES))
    binding = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="autoscaling"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="autoscaling"),
        subjects=[client.RbacV1Subject(kind="User", name=harness.plane.unprivileged_user,
                                       api_group="rbac.authorization.k8s.io")])
    await rbac.create_namespaced_role_binding(namespace, binding)

    async def scaled() -> bool:
        await autoscaler.autoscale_pass()
        return await replicas(harness, "unpermitted") == 1
    await eventually(scaled, within=60, what="autoscaled once granted", interval=0.3)
    assert autoscaler.forbidden == set()
    assert await warnings(harness, "unpermitted", NOT_PERMITTED) == 1

    # the grant is taken away: said again
    await rbac.delete_namespaced_role_binding("autoscaling", namespace)

    async def warned_again() -> bool:
        await autoscaler.autoscale_pass()
        return await warnings(harness, "unpermitted", NOT_PERMITTED) == 2
    await eventually(warned_again, within=60, what="NotPermitted said again", interval=0.3)

    # a refused Deployment too; both deleted (the handler's forget on DELETED), the next
    # pass keeps nothing of either
    refused = await harness.apps.create_namespaced_deployment(namespace, deployment(
        "refused", "refused"))
    await autoscaler.refuse(kube_api.sanitize_for_serialization(refused))
    assert autoscaler.refused == {(namespace, "refused"): refused.metadata.uid}
    assert autoscaler.forbidden == {created.metadata.uid}
    for name in ("unpermitted", "refused"):
        await harness.apps.delete_namespaced_deployment(name, namespace)
        autoscaler.forget(namespace, name)
    await autoscaler.autoscale_pass()
    assert (autoscaler.forbidden, autoscaler.refused, autoscaler.left_alone) == (set(), {}, set())
    assert autoscaler.deployments == {}
