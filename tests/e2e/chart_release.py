"""The chart release the e2e tests share, and helpers to watch what it runs (kubectl)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podq.testing import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
# run in a pod's container by `kubectl exec`: who it runs as, under which seccomp mode,
# no_new_privs bit and capabilities (its own and those of the container's main process,
# the podq command), and whether the root filesystem and /tmp take a write
SECURITY_PROBE = r"""
import json, os
def status(pid):
    with open(f'/proc/{pid}/status') as f:
        fields = dict(line.split(':', 1) for line in f)
    return {k: fields[k].strip() for k in ('Uid', 'Gid', 'Seccomp', 'NoNewPrivs', 'CapEff',
                                          'CapPrm', 'CapBnd')}
def writable(path):
    try:
        open(path, 'w').close()
    except OSError as err:
        return err.strerror
    os.unlink(path)
    return 'yes'
def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return []
main = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()
        and any(a.endswith(b'/podq') or a == b'podq' for a in cmdline(p)[:2])]
print(json.dumps({'exec': status('self'), 'main': [status(p) for p in main],
                  'root': writable('/opt/podq/probe'), 'tmp': writable('/tmp/probe')}))
"""
CHART = ROOT / "charts" / "podq"
RELEASE, NAMESPACE = "podq", "podq-system"


def script_module(name: str) -> Any:
    """A module of scripts/lib, e.g. podq_node (what a node needs, whether this machine
    can run one) or podq_oci (image archives)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "lib" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def node_module() -> Any:
    return script_module("podq_node")


@dataclass
class Release:
    """The chart installed on the node, and helpers to watch what it runs."""

    plane: ControlPlane
    namespace: str
    worker_deployment: str

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl("-n", self.namespace, *args, **kwargs)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, *manifests: dict) -> None:
        self.kubectl("apply", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))

    def job(self, name: str, function: str, **spec: Any) -> dict:
        return {"apiVersion": "podq.dev/v1alpha1", "kind": "Job",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {"function": function, **spec}}

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 90) -> Any:
        return self.plane.wait_for(what, predicate, timeout=timeout, interval=0.1)

    def job_status(self, name: str) -> dict:
        return self.get("pqjob", name).get("status") or {}

    def wait_complete(self, *names: str, timeout: float = 120) -> dict[str, dict]:
        statuses: dict[str, dict] = {}

        def all_done() -> bool:
            for item in self.get("pqjob")["items"]:
                if item["metadata"]["name"] in names:
                    statuses[item["metadata"]["name"]] = item.get("status") or {}
            failed = [n for n, s in statuses.items() if s.get("status") in ("failed", "aborted")]
            assert not failed, {n: statuses[n] for n in failed}
            return all(statuses.get(n, {}).get("status") == "complete" for n in names)

        self.wait_for(f"jobs {', '.join(names)} complete", all_done, timeout)
        return statuses

    def worker_pods(self) -> list[dict]:
        return self.get("pods", "-l", "app.kubernetes.io/component=worker")["items"]

    def replicas(self) -> int:
        return self.get("deployment", self.worker_deployment)["spec"].get("replicas", 0)

    def wait_scaled_to_zero(self, timeout: float = 90) -> None:
        self.wait_for("worker Deployment at 0 and its pods gone",
                      lambda: self.replicas() == 0 and not self.worker_pods(), timeout)

    def security_of(self, pod: str) -> dict:
        """SECURITY_PROBE's findings in the pod's (only) container."""
        out = self.kubectl("exec", pod, "--", "python3", "-c", SECURITY_PROBE).stdout
        return json.loads(out)

    def delete_jobs(self) -> None:
        self.kubectl("delete", "pqjob", "--all", "--wait=true", "--timeout=60s")
