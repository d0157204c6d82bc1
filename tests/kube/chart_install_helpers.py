"""Helpers of the chart tests on a real API server (test_chart_install.py,
test_chart_dry_run.py; their control plane is conftest.py's `plane`): helm against that
control plane, values files, namespaces, waiting; a kubeconfig holding a ServiceAccount's
token and `kubectl auth can-i` with it; the installed Deployments' operator and worker run
as local processes, the webhook asked as the API server would."""

from __future__ import annotations

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from podq.testing import ControlPlane, free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podq"
VENV_BIN = Path(sys.executable).parent
RELEASE, RELEASE_NS = "podq", "podq-system"


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
