"""The local control plane behaves like a real cluster (minus kubelets) for the operator."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from podq.testing import ControlPlane

pytestmark = pytest.mark.kube

GROUP = "test.podq.dev"
PLURAL = "widgets"

CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {PLURAL}.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: {PLURAL}, singular: widget, kind: Widget, shortNames: [wdg]}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {{}}
      additionalPrinterColumns:
        - {{name: Size, type: integer, jsonPath: .spec.size}}
        - {{name: Phase, type: string, jsonPath: .status.phase}}
        - {{name: Age, type: date, jsonPath: .metadata.creationTimestamp}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {{type: integer, minimum: 1}}
            status:
              type: object
              properties:
                phase: {{type: string}}
                observed: {{type: integer}}
"""


@pytest.fixture(scope="module")
def widget_crd(control_plane: ControlPlane) -> str:
    control_plane.kubectl("apply", "-f", "-", input=CRD)
    control_plane.kubectl(
        "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"
    )
    return f"{PLURAL}.{GROUP}"


def widget(name: str, size: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


async def test_readyz_and_version(control_plane: ControlPlane) -> None:
    version = control_plane.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"] == control_plane.state["version"]
    assert version["clientVersion"]["gitVersion"] == control_plane.state["version"]
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


async def test_crd_status_subresource_and_printer_columns(
    control_plane: ControlPlane, kube_api: client.ApiClient, widget_crd: str, namespace: str
) -> None:
    api = client.CustomObjectsApi(kube_api)
    created = await api.create_namespaced_custom_object(
        GROUP, "v1", namespace, PLURAL, widget("w1", 3)
    )
    assert created["spec"] == {"size": 3}

    # the schema is enforced
    with pytest.raises(ApiException) as invalid:
        await api.create_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, widget("w2", 0))
    assert invalid.value.status == 422

    # status goes through /status only: a merge patch there sets it, spec untouched
    patched = await api.patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, PLURAL, "w1",
        {"status": {"phase": "Running", "observed": 1}, "spec": {"size": 99}},
        _content_type="application/merge-patch+json",
    )
    assert patched["status"] == {"phase": "Running", "observed": 1}
    assert patched["spec"] == {"size": 3}
    assert patched["metadata"]["generation"] == 1

    # ...and a main-resource patch cannot change status, but bumps generation on spec change
    patched = await api.patch_namespaced_custom_object(
        GROUP, "v1", namespace, PLURAL, "w1",
        {"spec": {"size": 5}, "status": {"phase": "Hacked"}},
        _content_type="application/merge-patch+json",
    )
    assert patched["spec"] == {"size": 5}
    assert patched["status"]["phase"] == "Running"
    assert patched["metadata"]["generation"] == 2

    table = control_plane.kubectl("get", "wdg", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PHASE", "AGE"]
    assert table[1].split()[:3] == ["w1", "5", "Running"]


async def test_watch_sees_added_and_status_modified(
    kube_api: client.ApiClient, widget_crd: str, namespace: str
) -> None:
    api = client.CustomObjectsApi(kube_api)
    seen: list[tuple[str, str | None]] = []
    # watching from the list's resourceVersion: no change after it can be missed
    listed = await api.list_namespaced_custom_object(GROUP, "v1", namespace, PLURAL)
    since = listed["metadata"]["resourceVersion"]

    async def watch_widgets() -> None:
        w = watch.Watch()
        async with w.stream(api.list_namespaced_custom_object, GROUP, "v1", namespace, PLURAL,
                            resource_version=since, timeout_seconds=30) as stream:
            async for event in stream:
                obj = event["object"]
                seen.append((event["type"], obj.get("status", {}).get("phase")))
                if event["type"] == "MODIFIED" and obj.get("status", {}).get("phase") == "Done":
                    return

    watcher = asyncio.create_task(watch_widgets())
    await api.create_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, widget("w", 1))
    await api.patch_namespaced_custom_object_status(
        GROUP, "v1", namespace, PLURAL, "w", {"status": {"phase": "Done"}},
        _content_type="application/merge-patch+json",
    )
    await asyncio.wait_for(watcher, 30)
    assert seen[0] == ("ADDED", None)
    assert seen[-1] == ("MODIFIED", "Done")


async def test_watch_sees_a_kubernetes_event(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    reason = f"PodqTest{uuid.uuid4().hex[:6]}"
    since = (await core.list_namespaced_event(namespace)).metadata.resource_version

    async def first_event() -> client.CoreV1Event:
        w = watch.Watch()
        async with w.stream(core.list_namespaced_event, namespace, resource_version=since,
                            timeout_seconds=30) as stream:
            async for event in stream:
                if event["type"] == "ADDED" and event["object"].reason == reason:
                    return event["object"]
        raise AssertionError("the watch ended without our event")

    watcher = asyncio.create_task(first_event())
    await core.create_namespaced_event(namespace, client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="podq-"),
        involved_object=client.V1ObjectReference(kind="Widget", name="w", namespace=namespace),
        reason=reason, message="hello from the test", type="Normal",
    ))
    got = await asyncio.wait_for(watcher, 30)
    assert got.message == "hello from the test"


async def test_deployment_gets_replicaset_and_pending_pods(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "web"}
    await apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        ),
    ))

    async def eventually(what: str, check, deadline_s: float = 60):
        deadline = asyncio.get_running_loop().time() + deadline_s
        while True:
            value = await check()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.3)

    async def replicasets():
        return (await apps.list_namespaced_replica_set(namespace, label_selector="app=web")).items

    async def two_pods():
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
        return pods if len(pods) == 2 else None

    rs = (await eventually("a ReplicaSet", replicasets))[0]
    assert rs.metadata.owner_references[0].kind == "Deployment"
    pods = await eventually("2 Pods", two_pods)
    for pod in pods:
        assert pod.metadata.owner_references[0].name == rs.metadata.name
        assert pod.status.phase == "Pending"  # no kubelet: nothing ever runs
        assert pod.spec.service_account_name == "default"
    control_plane.wait_for_service_account(namespace)


async def test_unprivileged_identity_is_refused_then_allowed_by_rolebinding(
    control_plane: ControlPlane,
    kube_api: client.ApiClient,
    kube_api_unprivileged: client.ApiClient,
    namespace: str,
) -> None:
    user_api = kube_api_unprivileged
    user_core = client.CoreV1Api(user_api)

    review = await client.AuthenticationV1Api(user_api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status.user_info.username == control_plane.unprivileged_user
    assert "system:masters" not in (review.status.user_info.groups or [])

    with pytest.raises(ApiException) as refused:
        await user_core.list_namespaced_config_map(namespace)
    assert refused.value.status == 403
    assert control_plane.unprivileged_user in json.loads(refused.value.body)["message"]

    rbac = client.RbacAuthorizationV1Api(kube_api)
    await rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                   verbs=["get", "list", "watch"])],
    ))
    await rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="configmap-reader"),
        subjects=[client.RbacV1Subject(kind="User", name=control_plane.unprivileged_user,
                                       api_group="rbac.authorization.k8s.io")],
    ))

    # the RBAC authorizer learns of the binding through its informer: a moment later
    # (a deadline of 60 s, not 100 tries: each try is slower on a loaded machine)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            await user_core.list_namespaced_config_map(namespace)
            break
        except ApiException as err:
            assert err.status == 403
            assert asyncio.get_running_loop().time() < deadline, "the RoleBinding never took effect"
            await asyncio.sleep(0.1)

    # still only what the Role grants: reading, in this namespace
    with pytest.raises(ApiException) as write:
        await user_core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert write.value.status == 403
    with pytest.raises(ApiException) as other_ns:
        await user_core.list_namespaced_config_map("kube-system")
    assert other_ns.value.status == 403

    # the same identity through kubectl's context in the admin kubeconfig
    denied = control_plane.kubectl("--context", control_plane.unprivileged_context,
                                   "get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    assert control_plane.kubectl("--context", control_plane.unprivileged_context,
                                 "get", "configmaps", "-n", namespace).returncode == 0


def _whoami(server: str, token: str, ca_pem: str) -> dict:
    ctx = ssl.create_default_context(cadata=ca_pem)
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1",
                       "kind": "SelfSubjectReview"}).encode()
    req = urllib.request.Request(
        f"{server}/apis/authentication.k8s.io/v1/selfsubjectreviews", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read())["status"]["userInfo"]
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{err.code}: {err.read()[:500]!r}") from err


def test_default_service_account_tokens_work(control_plane: ControlPlane) -> None:
    """Bound tokens (TokenRequest) and the controller-filled legacy token Secret both log in."""
    ns = "default"
    control_plane.wait_for_service_account(ns)
    # the root CA publisher (--root-ca-file) puts the cluster CA into every namespace
    ca_map = control_plane.wait_for(
        "configmap kube-root-ca.crt",
        lambda: control_plane.kubectl("get", "configmap", "kube-root-ca.crt", "-n", ns,
                                      "-o", "json", check=False).stdout,
    )
    ca_pem = json.loads(ca_map)["data"]["ca.crt"]
    assert ca_pem == (control_plane.run_dir / "pki" / "ca.crt").read_text()

    token = control_plane.kubectl("create", "token", "default", "-n", ns).stdout.strip()
    user = _whoami(control_plane.server, token, ca_pem)
    assert user["username"] == "system:serviceaccount:default:default"

    name = f"default-token-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"kubernetes.io/service-account.name": "default"}},
    }))

    def filled() -> dict | None:
        data = control_plane.kubectl_json("get", "secret", name, "-n", ns).get("data") or {}
        return data if "token" in data else None

    data = control_plane.wait_for(f"the token controller to fill secret {name}", filled)
    assert base64.b64decode(data["ca.crt"]).decode() == ca_pem
    user = _whoami(control_plane.server, base64.b64decode(data["token"]).decode(), ca_pem)
    assert user["username"] == "system:serviceaccount:default:default"
    control_plane.kubectl("delete", "secret", name, "-n", ns)
