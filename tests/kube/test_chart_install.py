"""The Helm chart against a real API server: server-side dry-run of its renderings, a real
`helm install`/`upgrade`/`uninstall`, and the real operator run under the token of the
chart's ServiceAccount, to prove its RBAC is enough (Jobs complete, CronJobs fire, TTL
deletes, the worker Deployment is scaled, nothing is forbidden) and no broader than
needed (`kubectl auth can-i` as that ServiceAccount).

The chart installs cluster-scoped objects (CRDs, ClusterRoles), so this module runs its
own control plane, apart from the session's: no other test sees Helm-owned CRDs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from podq.testing import ControlPlane, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podq"
VENV_BIN = Path(sys.executable).parent
RELEASE, RELEASE_NS = "podq", "podq-system"

# the chart's rendering with every option on (tests/chart/test_chart_render.py has the
# same; kept here as data so the two test folders stay independent)
ALL_ON: dict[str, Any] = {
    "commonLabels": {"team": "data"},
    "imagePullSecrets": [{"name": "regcred"}],
    "crds": {"annotations": {"example.com/owner": "data"}},
    "redis": {"url": "redis://redis.data.svc:6379/2",
              "password": {"existingSecret": "redis-auth", "key": "pw"},
              "tls": {"enabled": True, "caSecret": "redis-ca", "caKey": "ca.pem"}},
    "operator": {"watchNamespaces": ["team-a", "team-b"], "logFormat": "plain",
                 "priorityClassName": "system-cluster-critical",
                 "tolerations": [{"key": "ops", "operator": "Exists"}]},
    "workers": {"settings": "app.tasks.settings", "concurrency": 20,
                "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 30},
                "longestJobTimeoutSeconds": 3600,
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}}}],
                "podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"},
                "pools": [{"name": "emails", "concurrency": 50},
                          {"name": "reports", "autoscaling": {"enabled": False}, "replicas": 2}]},
    "networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True},
                "grafanaDashboard": {"enabled": True}},
    "extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {"a": "b"}}],
}
ALL_ON_EMBEDDED = {**ALL_ON, "redis": {"embedded": {"enabled": True}}}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane.up(tmp_path_factory.mktemp("chart-control-plane"))
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    with cp:
        yield cp


def helm(plane: ControlPlane, *args: str, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    home = plane.run_dir / "helm-home"
    env = {**plane.env, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    result = subprocess.run([str(plane.bin / "helm"), *args], capture_output=True, text=True,
                            env=env, timeout=180, input=input, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def values_file(folder: Path, values: dict[str, Any]) -> str:
    path = folder / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    if plane.kubectl("get", "namespace", name, check=False).returncode != 0:
        plane.kubectl("create", "namespace", name)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60,
             on_timeout: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
        time.sleep(0.25)


def sa_kubeconfig(plane: ControlPlane, namespace: str, service_account: str,
                  into: Path) -> Path:
    """A kubeconfig holding only a token of the ServiceAccount (`kubectl create token`)."""
    token = plane.kubectl("create", "token", service_account, "-n", namespace,
                          "--duration=1h").stdout.strip()
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "podq", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"]}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "podq", "user": service_account,
                                                "namespace": namespace}}],
        "current-context": "sa",
    }
    path = into / f"{service_account}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def can_i(plane: ControlPlane, kubeconfig: Path, *args: str) -> bool:
    result = subprocess.run([str(plane.bin / "kubectl"), f"--kubeconfig={kubeconfig}", "auth",
                             "can-i", *args], capture_output=True, text=True, timeout=30,
                            check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {result.stdout}{result.stderr}"
    return answer == "yes"


def container_of(plane: ControlPlane, namespace: str, deployment: str) -> dict[str, Any]:
    body = plane.kubectl_json("get", "deployment", deployment, "-n", namespace)
    return body["spec"]["template"]["spec"]["containers"][0]


class Local:
    """A process standing in for a pod of the chart: the image's entrypoint with the
    args the installed Deployment gives it."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.webhook_port: int | None = None
        self.log = log
        self._file = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._file.close()


@pytest.fixture
def local_processes() -> Iterator[list[Local]]:
    started: list[Local] = []
    yield started
    for process in reversed(started):
        process.stop()
        print(f"--- {process.log.name} ---\n{process.text()[-6000:]}")


def write_webhook_certificate(plane: ControlPlane, namespace: str, secret: str,
                              into: Path) -> None:
    data = plane.kubectl_json("get", "secret", secret, "-n", namespace)["data"]
    into.mkdir(exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        (into / name).write_bytes(base64.b64decode(data[name]))


def assert_webhook_answers(plane: ControlPlane, port: int) -> None:
    """What the API server does through the Service (which has no pod to reach here):
    trust the operator's certificate through the configuration's caBundle under the
    Service's name, post an AdmissionReview, read the refusal naming the field."""
    config = plane.kubectl_json("get", "validatingwebhookconfiguration",
                                f"podq-operator-{RELEASE_NS}")
    (hook,) = config["webhooks"]
    service = hook["clientConfig"]["service"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode())
    review = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "request": {"uid": "u1", "operation": "CREATE", "namespace": "x",
                                     "kind": {"kind": "CronJob"},
                                     "object": {"spec": {"schedule": "0 0 31 2 *"}}}})
    request = (f"POST {service['path']} HTTP/1.1\r\nHost: {service['name']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(review)}\r\n"
               f"Connection: close\r\n\r\n{review}").encode()
    name = f"{service['name']}.{service['namespace']}.svc"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["response"]["allowed"] is False, body
    assert body["response"]["status"]["message"].startswith("spec.schedule"), body


def start_operator(plane: ControlPlane, namespace: str, deployment: str, kubeconfig: Path,
                   tmp_path: Path, processes: list[Local]) -> tuple[Local, int]:
    """`podq operator` (the operator image's entrypoint) with the installed Deployment's
    args and Redis env, under the ServiceAccount's token; waits for its liveness endpoint."""
    container = container_of(plane, namespace, deployment)
    port = free_port()
    args = [re.sub(r"^--liveness=http://0\.0\.0\.0:\d+/", f"--liveness=http://127.0.0.1:{port}/",
                   a) for a in container["args"]]
    # the webhook: its certificate from the chart's Secret, as the pod mounts it, and
    # served on loopback
    webhook_port = free_port()
    certs = tmp_path / f"webhook-tls-{deployment}"
    for i, arg in enumerate(args):
        if arg.startswith("--webhook-cert-dir="):
            write_webhook_certificate(plane, namespace, f"{deployment}-webhook-tls", certs)
            args[i] = f"--webhook-cert-dir={certs}"
        elif arg.startswith("--webhook-port="):
            args[i:i + 1] = [f"--webhook-port={webhook_port}", "--webhook-host=127.0.0.1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["KUBECONFIG"] = str(kubeconfig)
    env["HOME"] = str(tmp_path)
    operator = Local([str(VENV_BIN / "podq"), "operator", *args], env,
                     tmp_path / f"operator-{deployment}.log", tmp_path)
    processes.append(operator)
    operator.webhook_port = webhook_port if f"--webhook-port={webhook_port}" in args else None

    def healthy() -> bool:
        assert operator.proc.poll() is None, f"operator exited:\n{operator.text()[-4000:]}"
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_for("the operator's liveness endpoint", healthy, 60, operator.text)
    return operator, port


def start_worker(plane: ControlPlane, namespace: str, deployment: str, tmp_path: Path,
                 processes: list[Local]) -> Local:
    """`podq worker` (the worker image's entrypoint) with the installed Deployment's args,
    in a folder laid out as the image's /app (podq_hello.py)."""
    container = container_of(plane, namespace, deployment)
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["HOME"] = str(tmp_path)
    worker = Local([str(VENV_BIN / "podq"), "worker", *container["args"]], env,
                   tmp_path / f"worker-{deployment}.log", ROOT / "worker_image")
    processes.append(worker)
    return worker


def job_condition(plane: ControlPlane, namespace: str, name: str, type_: str) -> bool:
    result = plane.kubectl("get", "job.podq.dev", name, "-n", namespace, "-o", "json",
                           check=False)
    if result.returncode != 0:
        return False
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or []
    return any(c["type"] == type_ and c["status"] == "True" for c in conditions)


async def patch_pod_as(kubeconfig: Path, namespace: str, pod: str,
                       body: dict[str, Any]) -> tuple[int | None, int | None]:
    """PATCH a pod's status, then the pod itself, with the credentials of kubeconfig (no
    GET first, as kubectl would need); the HTTP error status of each, None when it
    succeeded."""
    outcomes: list[int | None] = []
    async with await config.new_client_from_config(config_file=str(kubeconfig),
                                                   persist_config=False) as api:
        core = client.CoreV1Api(api)
        for call in (core.patch_namespaced_pod_status, core.patch_namespaced_pod):
            try:
                await call(pod, namespace, body)
                outcomes.append(None)
            except ApiException as error:
                outcomes.append(error.status)
    return outcomes[0], outcomes[1]


def assert_nothing_forbidden(operator: Local, allowed: str | None = None) -> None:
    """No log line of the operator reports an RBAC refusal, but those matching `allowed`."""
    for line in operator.text().splitlines():
        if any(marker in line for marker in ("Forbidden", "forbidden", " 403")):
            assert allowed and re.search(allowed, line), (
                f"the operator hit RBAC limits:\n{line}\n--- log ---\n{operator.text()[-6000:]}")


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


# ---------------------------------------------------------------- server-side dry-run


@pytest.mark.parametrize("values", [{}, ALL_ON, ALL_ON_EMBEDDED,
                                    {"operator": {"watchNamespaces": ["team-a"]},
                                     "crds": {"install": False}}],
                         ids=["default", "all-on", "all-on-embedded", "namespaced"])
def test_rendered_manifests_pass_server_side_dry_run(plane: ControlPlane, tmp_path: Path,
                                                     values: dict[str, Any]) -> None:
    """The API server (its schemas, defaulting, admission) accepts every object the chart
    renders. ServiceMonitor is left out: its CRD belongs to the Prometheus Operator."""
    namespace = f"dry-{uuid.uuid4().hex[:6]}"
    for name in (namespace, "team-a", "team-b"):
        ensure_namespace(plane, name)
    rendered = helm(plane, "template", f"r{uuid.uuid4().hex[:6]}", str(CHART), "-n", namespace,
                    "--kube-version", "1.37.2", "-f", values_file(tmp_path, values)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    sent = [o for o in objs if o["kind"] != "ServiceMonitor"]
    assert len(sent) >= len(objs) - 1
    manifest = yaml.safe_dump_all(sent)
    result = plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                           input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    items = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in sent)
    for item in items:
        if item["kind"] == "Deployment":
            # what the API server made of the pod template: still secure
            pod = item["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("values", [ALL_ON, ALL_ON_EMBEDDED], ids=["all-on", "all-on-embedded"])
def test_every_pod_passes_the_restricted_pod_security_standard(
    plane: ControlPlane, tmp_path: Path, values: dict[str, Any]
) -> None:
    """Pods made from each Deployment's template are admitted (server-side dry-run) in a
    namespace that enforces the `restricted` Pod Security Standard."""
    namespace = f"restricted-{uuid.uuid4().hex[:6]}"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl("label", "namespace", namespace,
                  "pod-security.kubernetes.io/enforce=restricted")
    rendered = helm(plane, "template", "podq", str(CHART), "-n", namespace,
                    "--kube-version", "1.37.2", "-f", values_file(tmp_path, values)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) >= 4
    # the check is real: a pod without the security settings is refused there (once the
    # admission plugin's namespace cache has seen the label)
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare",
                                                            "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}

    def bare_refused() -> bool:
        result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bare),
                               check=False)
        return result.returncode != 0 and "restricted" in result.stderr

    wait_for("PodSecurity enforcement in the new namespace", bare_refused, 30)
    # the pods' ServiceAccounts must exist for admission
    accounts = [o for o in objs if o["kind"] == "ServiceAccount"]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(accounts))
    for deployment in deployments:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": deployment["metadata"]["name"], "namespace": namespace,
                            "labels": deployment["spec"]["template"]["metadata"]["labels"]},
               "spec": deployment["spec"]["template"]["spec"]}
        result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod),
                               check=False)
        assert result.returncode == 0, f"{deployment['metadata']['name']}: {result.stderr}"
        assert "violate" not in result.stderr, result.stderr


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
