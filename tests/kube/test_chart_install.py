"""The Helm chart against a real API server: a real `helm install`/`upgrade`/`uninstall`,
and the real operator run under the token of the chart's ServiceAccount, to prove its
RBAC is enough (Jobs complete, CronJobs fire, TTL deletes, the worker Deployment is
scaled, nothing is forbidden) and no broader than needed (`kubectl auth can-i` as that
ServiceAccount). The tests share one release (`release`, module scope) and run in file
order: the last one upgrades and uninstalls it.

The chart installs cluster-scoped objects (CRDs, ClusterRoles), so this module runs its
own control plane (`plane`, conftest.py), apart from the session's: no other test sees
Helm-owned CRDs. The server-side dry-runs of the chart's renderings:
test_chart_dry_run.py; the helpers: chart_install_helpers.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_install_helpers import (
    CHART,
    RELEASE,
    RELEASE_NS,
    ROOT,
    Local,
    assert_nothing_forbidden,
    assert_webhook_answers,
    can_i,
    container_of,
    ensure_namespace,
    helm,
    job_condition,
    patch_pod_as,
    sa_kubeconfig,
    start_operator,
    start_worker,
    values_file,
    wait_for,
)

from podq.testing import ControlPlane, RedisServer


@pytest.fixture
def local_processes() -> Iterator[list[Local]]:
    started: list[Local] = []
    yield started
    for process in reversed(started):
        process.stop()
        print(f"--- {process.log.name} ---\n{process.text()[-6000:]}")


@pytest.fixture(scope="module")
def release(plane: ControlPlane, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`helm install` of the chart in cluster mode, Redis at the session's redis-server,
    the default worker pool scaled by the operator between 2 and 4 pods."""
    folder = tmp_path_factory.mktemp("release")
    ensure_namespace(plane, RELEASE_NS)
    # the default queue for every namespace: each test makes its own (random) ones
    values = {"redis": {"url": redis_server.url},
              "workers": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4},
                          "namespaces": ["*"]}}
    result = helm(plane, "install", RELEASE, str(CHART), "-n", RELEASE_NS,
                  "-f", values_file(folder, values))
    plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                  "crd/cronjobs.podq.dev", "--timeout=60s")
    return {"install_output": result.stdout, "values": values}


# ---------------------------------------------------------------- install


def test_helm_install_creates_everything_and_prints_next_steps(
    plane: ControlPlane, release: dict[str, Any]
) -> None:
    out = release["install_output"]
    assert "STATUS: deployed" in out
    assert "kubectl wait -n podq-system --for=condition=Complete job.podq.dev/hello" in out
    assert 'queue "default": deployment/podq-worker' in out

    status = json.loads(helm(plane, "status", RELEASE, "-n", RELEASE_NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"

    for crd in ("jobs.podq.dev", "cronjobs.podq.dev"):
        body = plane.kubectl_json("get", "crd", crd)
        assert body["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert body["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    worker = plane.kubectl_json("get", "deployment", "podq-worker", "-n", RELEASE_NS)
    assert worker["metadata"]["labels"]["podq.dev/queue"] == "default"
    operator = plane.kubectl_json("get", "deployment", "podq-operator", "-n", RELEASE_NS)
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"  # leader election
    # `kubectl get podq` lists both kinds (the category of the CRDs), once discovery has them
    wait_for("the podq category in discovery", lambda: plane.kubectl(
        "get", "podq", "-A", check=False).returncode == 0, 30)

    # the GitOps examples are valid resources for these CRDs
    ensure_namespace(plane, "podq-demo")
    for example in sorted((ROOT / "examples" / "gitops" / "jobs").glob("*.yaml")):
        plane.kubectl("apply", "--dry-run=server", "-f", str(example))


def test_operator_under_the_chart_service_account_runs_jobs_and_is_not_over_privileged(
    plane: ControlPlane, release: dict[str, Any], redis_url: str, tmp_path: Path,
    local_processes: list[Local],
) -> None:
    kubeconfig = sa_kubeconfig(plane, RELEASE_NS, "podq-operator", tmp_path)
    apps = f"apps-{uuid.uuid4().hex[:6]}"
    ensure_namespace(plane, apps)

    # -- no broader than needed -------------------------------------------------------
    def yes(*args: str) -> None:
        assert can_i(plane, kubeconfig, *args), f"the operator cannot {args}"

    def no(*args: str) -> None:
        assert not can_i(plane, kubeconfig, *args), f"the operator can {args}"

    yes("list", "jobs.podq.dev", "--all-namespaces")
    yes("patch", "jobs.podq.dev", "--subresource=status", "-n", apps)
    yes("create", "jobs.podq.dev", "-n", apps)
    yes("delete", "jobs.podq.dev", "-n", apps)
    # worker pools run in the release namespace only: scale and the pod-deletion-cost
    # annotation there (through pods/status, which cannot change a spec), nothing on
    # pods or scale anywhere else, and no way to change a pod's spec anywhere
    yes("patch", "deployments.apps", "--subresource=scale", "-n", RELEASE_NS)
    yes("list", "pods", "-n", RELEASE_NS)
    yes("patch", "pods", "--subresource=status", "-n", RELEASE_NS)
    no("patch", "deployments.apps", "--subresource=scale", "-n", apps)
    for where in (("-n", apps), ("-n", RELEASE_NS), ("-n", "kube-system"), ("--all-namespaces",)):
        no("patch", "pods", *where)
        no("update", "pods", *where)
        no("create", "pods/ephemeralcontainers", *where)
    no("patch", "pods", "--subresource=status", "-n", apps)
    no("list", "pods", "-n", apps)
    no("list", "pods", "--all-namespaces")
    yes("create", "events", "-n", apps)
    yes("watch", "customresourcedefinitions.apiextensions.k8s.io")
    yes("update", "leases.coordination.k8s.io/podq-operator", "-n", RELEASE_NS)
    no("update", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system")
    no("update", "leases.coordination.k8s.io/other", "-n", RELEASE_NS)
    no("get", "secrets", "-n", "kube-system")
    no("list", "secrets", "-n", RELEASE_NS)
    no("list", "secrets", "--all-namespaces")
    no("get", "configmaps", "-n", "kube-system")
    no("delete", "pods", "-n", apps)
    no("create", "pods", "-n", apps)
    no("create", "pods/exec", "-n", apps)
    no("patch", "deployments.apps", "-n", apps)
    no("delete", "deployments.apps", "-n", apps)
    no("update", "customresourcedefinitions.apiextensions.k8s.io")
    no("create", "horizontalpodautoscalers.autoscaling", "-n", apps)
    no("create", "clusterrolebindings.rbac.authorization.k8s.io")
    no("*", "*")

    # -- enough: the real operator and a real worker, with the installed args ----------
    worker_container = container_of(plane, RELEASE_NS, "podq-worker")
    assert [e["value"] for e in worker_container["env"] if e["name"] == "PODQ_REDIS_URL"] == [
        redis_url]
    start_worker(plane, RELEASE_NS, "podq-worker", tmp_path, local_processes)
    operator, _ = start_operator(plane, RELEASE_NS, "podq-operator", kubeconfig, tmp_path,
                                 local_processes)
    assert operator.webhook_port, "the chart serves no webhook"
    assert_webhook_answers(plane, operator.webhook_port)
    try:
        # a Job, as a user applies it; the operator enqueues it, mirrors it to Complete
        manifest = {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
                    "metadata": {"name": "hello", "namespace": apps},
                    "spec": {"function": "echo", "kwargs": {"message": "hi"}}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        plane.kubectl("wait", "--for=condition=Complete", "job.podq.dev/hello", "-n", apps,
                      "--timeout=90s", timeout=120)
        body = plane.kubectl_json("get", "job.podq.dev", "hello", "-n", apps)
        assert body["status"]["status"] == "complete"
        assert body["status"]["result"]["message"] == "hi"
        events = plane.kubectl_json("get", "events", "-n", apps,
                                    "--field-selector", "involvedObject.name=hello")
        assert events["items"], "the operator recorded no Event"

        # ttlSecondsAfterFinished: the operator deletes the finished resource
        ttl = {**manifest, "metadata": {"name": "short-lived", "namespace": apps},
               "spec": {"function": "echo", "ttlSecondsAfterFinished": 0}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(ttl))
        wait_for("the ttl deletion of short-lived", lambda: plane.kubectl(
            "get", "job.podq.dev", "short-lived", "-n", apps, check=False).returncode != 0,
            90, operator.text)

        # a CronJob fires: the operator creates a child Job, which completes
        cron = {"apiVersion": "podq.dev/v1alpha1", "kind": "CronJob",
                "metadata": {"name": "every-second", "namespace": apps},
                "spec": {"schedule": "* * * * * *", "concurrencyPolicy": "Forbid",
                         "successfulJobsHistoryLimit": 1,
                         "jobTemplate": {"spec": {"function": "echo"}}}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(cron))

        def completed_child() -> list[str]:
            listed = plane.kubectl_json("get", "job.podq.dev", "-n", apps, "-l",
                                        "podq.dev/cronjob=every-second")
            return [j["metadata"]["name"] for j in listed["items"]
                    if job_condition(plane, apps, j["metadata"]["name"], "Complete")]

        wait_for("a completed child Job of the CronJob", completed_child, 90, operator.text)
        plane.kubectl("patch", "cronjob.podq.dev", "every-second", "-n", apps, "--type=merge",
                      "-p", '{"spec": {"suspend": true}}')

        # the autoscaler scales the chart's worker Deployment to its minimum (2)
        wait_for("the worker Deployment scaled to 2", lambda: plane.kubectl_json(
            "get", "deployment", "podq-worker", "-n", RELEASE_NS)["spec"].get("replicas") == 2,
            60, operator.text)
        # ... and sets pod-deletion-cost on its (Pending: no kubelet) pods via pods/status
        selector = "app.kubernetes.io/instance=podq,app.kubernetes.io/component=worker"

        def annotated() -> list[str]:
            pods = plane.kubectl_json("get", "pods", "-n", RELEASE_NS, "-l", selector)["items"]
            return [p["metadata"]["name"] for p in pods if "controller.kubernetes.io/"
                    "pod-deletion-cost" in (p["metadata"].get("annotations") or {})]
        pod = wait_for("pod-deletion-cost on a worker pod", annotated, 60, operator.text)[0]
        # with the operator's token: a spec change through pods/status is dropped by the
        # API server, and patching the pod itself is forbidden
        image = plane.kubectl_json("get", "pod", pod, "-n", RELEASE_NS)["spec"]["containers"][0][
            "image"]
        evil = {"spec": {"containers": [{"name": "worker", "image": "evil:1"}]}}
        status, refused = asyncio.run(patch_pod_as(kubeconfig, RELEASE_NS, pod, evil))
        assert status is None, status
        after = plane.kubectl_json("get", "pod", pod, "-n", RELEASE_NS)
        assert after["spec"]["containers"][0]["image"] == image
        assert refused == 403
        # and the chart's ValidatingAdmissionPolicy keeps pods/status to that annotation:
        # no label (Service steering), no other annotation, no status field
        for change in ({"metadata": {"labels": {"app.kubernetes.io/component": "stolen"}}},
                       {"metadata": {"annotations": {"other": "x"}}},
                       {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}):
            denied, _ = asyncio.run(patch_pod_as(kubeconfig, RELEASE_NS, pod, change))
            assert denied == 422, (change, denied)
        after = plane.kubectl_json("get", "pod", pod, "-n", RELEASE_NS)
        assert after["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
        assert "other" not in after["metadata"]["annotations"]
        # the pool opts out of autoscaling: the operator takes the costs it wrote off its
        # pods, through pods/status under that policy (which lets the annotation go)
        queue = plane.kubectl_json("get", "deployment", "podq-worker", "-n", RELEASE_NS)[
            "metadata"]["labels"]["podq.dev/queue"]
        plane.kubectl("label", "deployment", "podq-worker", "-n", RELEASE_NS,
                      "podq.dev/queue-")

        def stopped() -> list[str]:  # posted once the costs are off
            return [e["message"].split("; ")[-1] for e in plane.kubectl_json(
                "get", "events", "-n", RELEASE_NS, "--field-selector",
                "involvedObject.name=podq-worker,reason=AutoscalingStopped")["items"]]
        assert wait_for("an AutoscalingStopped Event", stopped, 60, operator.text) == [
            "the controller.kubernetes.io/pod-deletion-cost podq wrote was removed from 2 of"
            " its pods"]
        assert annotated() == []
        plane.kubectl("label", "deployment", "podq-worker", "-n", RELEASE_NS,
                      f"podq.dev/queue={queue}")
        wait_for("pod-deletion-cost on the pool's pods again", annotated, 60, operator.text)
        assert_nothing_forbidden(operator)
    finally:
        plane.kubectl("delete", "cronjob.podq.dev", "every-second", "-n", apps,
                      "--wait=false", check=False)


def test_namespaced_mode_sees_only_its_namespaces(
    plane: ControlPlane, release: dict[str, Any], redis_url: str, tmp_path: Path,
    local_processes: list[Local],
) -> None:
    """operator.watchNamespaces: Roles in the listed namespaces only; the operator serves
    those and can read nothing elsewhere."""
    suffix = uuid.uuid4().hex[:6]
    ns_release, mine, other = f"podq-ns-{suffix}", f"team-a-{suffix}", f"team-b-{suffix}"
    for name in (ns_release, mine, other):
        ensure_namespace(plane, name)
    values = {"redis": {"url": redis_url}, "crds": {"install": False},
              "operator": {"watchNamespaces": [mine], "workerNamespaces": [mine]},
              "workers": {"queue": f"q-{suffix}", "autoscaling": {"minReplicas": 1},
                          "namespaces": [mine]}}
    helm(plane, "install", "podq-ns", str(CHART), "-n", ns_release,
         "-f", values_file(tmp_path, values))
    try:
        roles = plane.kubectl_json("get", "roles", "-A", "-l", "app.kubernetes.io/instance=podq-ns")
        # plus the leader-election Role for the Lease in the release namespace
        assert sorted((r["metadata"]["namespace"], r["metadata"]["name"])
                      for r in roles["items"]) == sorted(
            [(mine, "podq-ns-operator"), (ns_release, "podq-ns-operator-leader-election"),
             (mine, "podq-ns-operator-workers")])
        kubeconfig = sa_kubeconfig(plane, ns_release, "podq-ns-operator", tmp_path)
        assert can_i(plane, kubeconfig, "list", "jobs.podq.dev", "-n", mine)
        # scale and pod annotation only in the watched namespace declared to run worker
        # pools: not in the release namespace, whose pool this operator never sees
        assert can_i(plane, kubeconfig, "patch", "deployments.apps", "--subresource=scale",
                     "-n", mine)
        assert can_i(plane, kubeconfig, "list", "pods", "-n", mine)
        assert can_i(plane, kubeconfig, "patch", "pods", "--subresource=status", "-n", mine)
        for where in (mine, other, ns_release):
            assert not can_i(plane, kubeconfig, "patch", "pods", "-n", where)
            assert not can_i(plane, kubeconfig, "update", "pods", "-n", where)
        for where in (other, ns_release):
            assert not can_i(plane, kubeconfig, "patch", "deployments.apps",
                             "--subresource=scale", "-n", where)
            assert not can_i(plane, kubeconfig, "list", "pods", "-n", where)
            assert not can_i(plane, kubeconfig, "patch", "pods", "--subresource=status",
                             "-n", where)
        assert not can_i(plane, kubeconfig, "list", "jobs.podq.dev", "-n", other)
        assert not can_i(plane, kubeconfig, "list", "jobs.podq.dev", "--all-namespaces")
        assert not can_i(plane, kubeconfig, "list", "namespaces")
        assert not can_i(plane, kubeconfig, "list", "pods", "-n", other)
        assert not can_i(plane, kubeconfig, "get", "secrets", "-n", ns_release)
        assert can_i(plane, kubeconfig, "list", "customresourcedefinitions.apiextensions.k8s.io")

        start_worker(plane, ns_release, "podq-ns-worker", tmp_path, local_processes)
        operator, _ = start_operator(plane, ns_release, "podq-ns-operator", kubeconfig,
                                     tmp_path, local_processes)
        assert f"--namespace={mine}" in operator.proc.args
        job = {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
               "metadata": {"name": "scoped", "namespace": mine},
               "spec": {"function": "echo", "queue": f"q-{suffix}"}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(job))
        plane.kubectl("wait", "--for=condition=Complete", "job.podq.dev/scoped", "-n", mine,
                      "--timeout=120s", timeout=150)
        # a queue the chart did not grant to this namespace: refused, visibly
        stray = {**job, "metadata": {"name": "stray", "namespace": mine},
                 "spec": {"function": "echo", "queue": "default"}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(stray))
        plane.kubectl("wait", "--for=condition=Failed", "job.podq.dev/stray", "-n", mine,
                      "--timeout=60s", timeout=90)
        failed = [c for c in plane.kubectl_json("get", "job.podq.dev", "stray", "-n", mine)[
            "status"]["conditions"] if c["type"] == "Failed"]
        assert failed[0]["reason"] == "QueueNotAllowed", failed
        wait_for("a QueueNotAllowed Event", lambda: [
            e for e in plane.kubectl_json("get", "events", "-n", mine, "--field-selector",
                                          "involvedObject.name=stray")["items"]
            if e["reason"] == "QueueNotAllowed"], 30, operator.text)
        assert_nothing_forbidden(operator)
    finally:
        helm(plane, "uninstall", "podq-ns", "-n", ns_release, "--wait", "--timeout=60s")


def test_upgrade_then_uninstall_keeps_crds_and_jobs(plane: ControlPlane,
                                                    release: dict[str, Any],
                                                    tmp_path: Path) -> None:
    keeper_ns = f"keep-{uuid.uuid4().hex[:6]}"
    ensure_namespace(plane, keeper_ns)
    job = {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
           "metadata": {"name": "survivor", "namespace": keeper_ns},
           "spec": {"function": "echo"}}
    plane.kubectl("apply", "-f", "-", input=json.dumps(job))

    helm(plane, "upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--reuse-values",
         "--set", "workers.concurrency=25")
    worker = plane.kubectl_json("get", "deployment", "podq-worker", "-n", RELEASE_NS)
    assert worker["metadata"]["annotations"]["podq.dev/concurrency"] == "25"
    assert "--concurrency=25" in worker["spec"]["template"]["spec"]["containers"][0]["args"]
    crd = plane.kubectl_json("get", "crd", "jobs.podq.dev")
    assert crd["metadata"]["labels"]["helm.sh/chart"] == "podq-0.1.0"

    out = helm(plane, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout=60s")
    assert "kept due to the resource policy" in out.stdout + out.stderr
    plane.kubectl("get", "crd", "jobs.podq.dev", "cronjobs.podq.dev")
    assert plane.kubectl_json("get", "job.podq.dev", "survivor", "-n", keeper_ns)
    assert plane.kubectl("get", "deployment", "podq-operator", "-n", RELEASE_NS,
                         check=False).returncode != 0
    assert plane.kubectl("get", "clusterrole", "podq-operator-podq-system",
                         check=False).returncode != 0
    # the Job resource is held by the podq finalizer only while an operator runs: none
    # ran for this namespace since the uninstall, so remove the finalizer to clean up
    plane.kubectl("patch", "job.podq.dev", "survivor", "-n", keeper_ns, "--type=merge",
                  "-p", '{"metadata": {"finalizers": null}}', check=False)
