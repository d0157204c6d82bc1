"""podq as its users run it: chart-installed operator and workers as pods on a real node.

Each test leaves the worker Deployment scaled back to zero and deletes its Job resources,
so the next one starts from the same place (one node and one install serve them all).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import threading
import time
import uuid

import pytest
from chart_release import NAMESPACE, RELEASE, ROOT, Release
from test_image_routes import assert_restricted


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def rel(release: Release) -> Release:
    release.wait_scaled_to_zero()
    yield release
    release.delete_jobs()


def pod_of(worker_id: str) -> str:
    return worker_id.split(":", 1)[0]  # "<hostname>:<pid>:<nonce>"; hostname = pod name


def operator_pods(rel: Release) -> list[dict]:
    return rel.get("pods", "-l", "app.kubernetes.io/component=operator")["items"]


def lease_holder(rel: Release) -> str | None:
    """The pod holding the operator's Lease (its identity is `<pod name>-<nonce>`)."""
    found = rel.kubectl("get", "lease", "podq-operator", "-o", "json", check=False)
    if found.returncode != 0:
        return None
    holder = json.loads(found.stdout)["spec"].get("holderIdentity") or ""
    return holder.rsplit("-", 1)[0] or None


def test_operator_runs_in_a_pod_under_its_service_account(
    rel: Release, images: dict[str, dict]
) -> None:
    # the chart's two replicas, exactly one acting: the holder of the Lease
    pods = operator_pods(rel)
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    names = {p["metadata"]["name"] for p in pods}
    holder = rel.wait_for("an operator pod holding the Lease", lambda: lease_holder(rel))
    assert holder in names, (holder, names)
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["serviceAccountName"].endswith("operator")
        assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"
        # the image scripts/images built from this checkout (tagged by its inputs)
        assert pod["spec"]["containers"][0]["image"] == images["operator"]["ref"]
        # in-cluster config: the token of its ServiceAccount, mounted by the kubelet
        mounts = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
        logs = rel.kubectl("logs", pod["metadata"]["name"]).stdout
        # both use the API server with that token (the standby reads the Lease)
        # a refusal says Forbidden (kubernetes_asyncio: "(403) Reason: Forbidden"); a
        # bare 403 is no sign, a log line's milliseconds (",403]") can hold it
        refused = re.search(r"Forbidden|\(403\)", logs)
        assert refused is None, logs[-3000:]
        assert "waits for the lease" in logs, logs[-3000:]
        if pod["metadata"]["name"] == holder:
            assert "now leads" in logs, logs[-3000:]
        assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"

    def all_ready() -> bool:  # the standby too: readiness is not leadership
        return all({c["type"]: c["status"] for c in p["status"].get("conditions", [])}
                   .get("Ready") == "True" for p in operator_pods(rel))
    rel.wait_for("both operator pods Ready", all_ready)
    # a slow start is waited for (startupProbe), not restarted by the liveness probe
    for pod in operator_pods(rel):
        (container,) = pod["spec"]["containers"]
        assert container["startupProbe"]["httpGet"] == container["livenessProbe"]["httpGet"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["restartCount"] == 0, status
        started = status["state"]["running"]["startedAt"]
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        print(f"{pod['metadata']['name']}: started {started}, Ready"
              f" {ready['lastTransitionTime']}")


def test_job_scales_from_zero_runs_in_a_worker_pod_and_back_to_zero(
    rel: Release, images: dict[str, dict]
) -> None:
    name = unique("hello")
    started = time.monotonic()
    rel.apply(rel.job(name, "echo", kwargs={"message": "from a pod"}))
    status = rel.wait_complete(name)[name]
    elapsed = time.monotonic() - started
    assert status["result"]["message"] == "from a pod"
    pod = status["result"]["worker"]
    # the worker's hostname: the name of a pod of the chart's worker Deployment
    assert pod.startswith(f"{rel.worker_deployment}-"), pod
    assert pod_of(status["worker"]) == pod
    # its image: the one built here from worker_image/ (the pod may be gone already)
    (container,) = rel.get("deployment", rel.worker_deployment)["spec"]["template"]["spec"][
        "containers"]
    assert container["image"] == images["worker"]["ref"]
    assert container["imagePullPolicy"] == "Never"
    print(f"scale from zero: apply -> Complete in {elapsed:.2f}s")
    # the job's own log line, through the API server and the kubelet
    logs = rel.kubectl("logs", pod).stdout
    assert f"echo 'from a pod' (job {status['jobKey']})" in logs, logs
    rel.wait_scaled_to_zero()


def test_restricted_pod_security_is_enforced(rel: Release) -> None:
    labels = rel.plane.kubectl_json("get", "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # the chart's pods run there (the operator now, a worker in the other tests) ...
    assert rel.get("pods", "-l", "app.kubernetes.io/component=operator")["items"]
    # ... and a pod that is not restricted is refused at admission
    root_pod = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": unique("root"), "namespace": NAMESPACE},
                "spec": {"containers": [{"name": "c", "image": "podq.local/pause:1",
                                         "securityContext": {"runAsUser": 0}}]}}
    refused = rel.kubectl("apply", "-f", "-", input=json.dumps(root_pod), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity \"restricted:latest\"" in refused.stderr, refused.stderr


def test_the_webhook_pod_refuses_a_bad_schedule_at_apply(rel: Release) -> None:
    """The API server reaches the chart's webhook Service (no kube-proxy on this node:
    scripts/control-plane routes Service calls to a pod's address)."""
    bad = {"apiVersion": "podq.dev/v1alpha1", "kind": "CronJob",
           "metadata": {"name": unique("bad"), "namespace": NAMESPACE},
           "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"function": "echo"}}}}

    def refusal() -> str | None:  # failurePolicy Ignore: an unreachable webhook accepts
        result = rel.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        if result.returncode == 0:
            rel.kubectl("delete", "pqcron", bad["metadata"]["name"], "--wait=false")
            return None
        return result.stderr
    stderr = rel.wait_for("kubectl apply refused by the webhook", refusal, timeout=60)
    assert 'admission webhook "validate.podq.dev" denied the request' in stderr, stderr
    assert "spec.schedule" in stderr and "61" in stderr, stderr


def demo_metrics_commands() -> tuple[str, str]:
    """The commands ./scripts/demo prints in node mode to read the operator's metrics and
    a worker's (for release podq)."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert RELEASE == "podq"  # the demo's release name, in its commands
    operator, worker = (line.split("   #")[0]
                        for line in demo.node_metrics_commands(NAMESPACE))
    return operator, worker


def shell(rel: Release, command: str) -> str:
    """command run as a user would: a shell after `scripts/control-plane env`."""
    result = subprocess.run(["bash", "-c", command], env=rel.plane.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}:\n{result.stderr}"
    return result.stdout


def test_operator_metrics_as_the_demo_prints_how_to_read_them(rel: Release) -> None:
    """The demo's command for the operator's metrics, and the metrics Service (what a
    ServiceMonitor scrapes); a worker's: test_busy_worker_pod_deleted_drains_its_job."""
    operator, _ = demo_metrics_commands()
    assert "podq_operator_job_resources_by_status" in shell(rel, operator)
    # the Service reaches a replica that answers, the standby too: 8 scrapes, spread
    # over both pods, none refused
    service = (f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-operator-metrics:metrics"
               "/proxy/metrics")
    for _ in range(8):
        assert "podq_operator_leader " in rel.plane.kubectl("get", "--raw", service).stdout


def test_busy_worker_pod_deleted_drains_its_job(rel: Release) -> None:
    """While it runs a job, the worker pod serves its metrics (the demo's command for
    them); deleted, it finishes that job within its grace period, not retried."""
    name = unique("drain")
    rel.apply(rel.job(name, "sleep", kwargs={"seconds": 7}, timeout=15))
    status = rel.wait_for("the job running in a pod",
                          lambda: (s := rel.job_status(name)).get("status") == "active" and s)
    pod = pod_of(status["worker"])
    _, worker_metrics = demo_metrics_commands()
    assert "podq_worker_info{" in shell(rel, worker_metrics)
    deleted_at = time.monotonic()
    rel.kubectl("delete", "pod", pod, "--wait=false")
    final = rel.wait_complete(name, timeout=60)[name]
    assert final["attempts"] == 1, final  # drained, not killed and retried
    assert pod_of(final["worker"]) == pod
    rel.wait_for(f"pod {pod} gone", lambda: rel.kubectl(
        "get", "pod", pod, check=False).returncode != 0, timeout=60)
    # within the grace period (longestJobTimeoutSeconds 20 + 30), not cut at its end
    assert time.monotonic() - deleted_at < 50


def evict(rel: Release, pod: str) -> subprocess.Popen[str]:
    """The Eviction API call `kubectl drain` makes for each pod (started, not waited for)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": rel.namespace}}
    process = subprocess.Popen(
        [str(rel.plane.bin / "kubectl"), f"--kubeconfig={rel.plane.kubeconfig}", "create",
         "--raw", f"/api/v1/namespaces/{rel.namespace}/pods/{pod}/eviction", "-f", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=rel.plane.env)
    assert process.stdin is not None
    process.stdin.write(json.dumps(body))
    process.stdin.close()
    return process


def test_drain_evicts_busy_workers_one_at_a_time_and_their_jobs_finish(rel: Release) -> None:
    """What `kubectl drain` does to worker pods: evictions, held by the pool's
    PodDisruptionBudget (maxUnavailable 1) to one pod at a time; an evicted busy pod
    takes no new job and finishes its own within its grace period (SIGTERM drain), so
    nothing is retried. Both pods run as the chart's security contexts ask."""
    names = [unique("evict") for _ in range(3)]
    rel.apply(*(rel.job(n, "sleep", kwargs={"seconds": 10}, timeout=20) for n in names))

    def busy_pods() -> set[str] | None:  # 3 jobs at concurrency 2: two pods, both busy
        statuses = [rel.job_status(n) for n in names]
        if not all(s.get("status") == "active" for s in statuses):
            return None
        pods = {pod_of(s["worker"]) for s in statuses}
        return pods if len(pods) == 2 else None
    first, second = sorted(rel.wait_for("3 jobs running in 2 pods", busy_pods, timeout=90))
    for pod in (first, second):
        assert_restricted(rel.security_of(pod))
    budget = rel.get("pdb", rel.worker_deployment)
    assert budget["spec"]["maxUnavailable"] == 1
    rel.wait_for("the budget to allow one disruption of the 2 pods", lambda: (
        (s := rel.get("pdb", rel.worker_deployment).get("status") or {}).get(
            "currentHealthy") == 2 and s.get("disruptionsAllowed") == 1))

    # both at once, as a drain of their node starts: the budget lets exactly one go
    calls = {pod: evict(rel, pod) for pod in (first, second)}
    results = {pod: (call.wait(timeout=60), call.stderr.read()) for pod, call in calls.items()}
    evicted = [pod for pod, (code, _) in results.items() if code == 0]
    # the budget lets one go; two concurrent evictions may both pass when the disruption
    # controller rewrites the budget's status between them (Kubernetes's race, seen once
    # in CI): what podq guarantees below holds either way
    assert evicted, results
    held_back = {first, second} - set(evicted)
    for pod in held_back:
        assert "disruption budget" in results[pod][1], results
    evicted_at = time.monotonic()

    # a drain retries the other until the budget allows it (the first one gone, or the
    # operator's scale-down, as its jobs end, leaving fewer pods to keep)
    def evicted_too(held: str) -> bool:
        call = evict(rel, held)
        code = call.wait(timeout=60)
        stderr = call.stderr.read()
        assert code == 0 or "disruption budget" in stderr, stderr
        return code == 0
    for held in held_back:
        rel.wait_for(f"the eviction of {held}", lambda held=held: evicted_too(held),
                     timeout=90)
    statuses = rel.wait_complete(*names, timeout=90)
    assert all(s["attempts"] == 1 for s in statuses.values()), statuses  # drained, not killed
    assert {pod_of(s["worker"]) for s in statuses.values()} == {first, second}
    for pod in (first, second):
        rel.wait_for(f"pod {pod} gone", lambda pod=pod: rel.kubectl(
            "get", "pod", pod, check=False).returncode != 0, timeout=60)
    # within the grace period (longestJobTimeoutSeconds 20 + 30), not cut at its end
    assert time.monotonic() - evicted_at < 50


def test_scale_down_removes_idle_pods_first(rel: Release) -> None:
    # 6 jobs, 2 per pod: 3 pods. One long job; when the short ones finish the operator
    # scales down, and the ReplicaSet controller must pick idle pods (deletion cost 0),
    # never the one running the long job.
    long_job = unique("long")
    short = [unique("short") for _ in range(5)]
    deleted: dict[str, str] = {}  # pod -> its deletion cost when it got deletionTimestamp
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pod in rel.worker_pods():
                meta = pod["metadata"]
                if meta.get("deletionTimestamp") and meta["name"] not in deleted:
                    deleted[meta["name"]] = (meta.get("annotations") or {}).get(
                        "controller.kubernetes.io/pod-deletion-cost", "unset")
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rel.apply(rel.job(long_job, "sleep", kwargs={"seconds": 14}, timeout=20),
                  *(rel.job(n, "sleep", kwargs={"seconds": 3}, timeout=20) for n in short))
        rel.wait_for("3 worker pods", lambda: rel.replicas() == 3, timeout=60)
        statuses = rel.wait_complete(*short, timeout=90)
        final = rel.wait_complete(long_job, timeout=60)[long_job]
    finally:
        stop.set()  # what is deleted from now on goes because the queue is empty
        watcher.join()
    busy_pod = pod_of(final["worker"])
    assert final["attempts"] == 1
    assert busy_pod not in deleted, deleted  # removed while it ran the long job
    removed_while_busy = {p: c for p, c in deleted.items() if p != busy_pod and c != "0"}
    assert not removed_while_busy, deleted
    assert all(s["attempts"] == 1 for s in statuses.values()), statuses


def test_operator_pod_deleted_mid_burst_loses_nothing(rel: Release) -> None:
    # the acting replica (the Lease holder) goes; the standby takes over within about
    # a lease duration and the ReplicaSet starts a new standby
    leader = rel.wait_for("an operator pod holding the Lease", lambda: lease_holder(rel))
    names = [unique("burst") for _ in range(12)]
    rel.apply(*(rel.job(n, "echo", kwargs={"message": n}) for n in names[:6]))
    rel.kubectl("delete", "pod", leader, "--wait=false")
    rel.apply(*(rel.job(n, "echo", kwargs={"message": n}) for n in names[6:]))
    statuses = rel.wait_complete(*names, timeout=180)
    assert all(s["result"]["message"] == n for n, s in statuses.items())
    assert all(s["attempts"] == 1 for s in statuses.values()), statuses
    new_leader = rel.wait_for("another operator pod holding the Lease", lambda: (
        (h := lease_holder(rel)) not in (None, leader) and h))
    assert new_leader in {p["metadata"]["name"] for p in operator_pods(rel)}
    rel.wait_for("two operator pods running again", lambda: sorted(
        p["status"]["phase"] for p in operator_pods(rel)
        if not p["metadata"].get("deletionTimestamp")) == ["Running", "Running"])
