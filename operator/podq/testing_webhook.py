"""The operator's validating webhook outside a cluster: for tests and `scripts/demo`'s
processes mode, where the operator runs as a local process and the API server calls it
by URL on loopback (the chart does the same with a Service and a certificate of its own).

`make_tls` makes a CA and a serving certificate for 127.0.0.1 with `openssl`;
`configuration` is the ValidatingWebhookConfiguration registering the webhook, with the
chart's rules and matchConditions (tests/chart/test_webhook_chart.py compares them).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

GROUP = "podq.dev"
WEBHOOK_NAME = "validate.podq.dev"
# the chart's: an update that keeps the spec (finalizers, labels, the operator's own
# writes) is never sent to the webhook
MATCH_CONDITION = ("request.operation != 'UPDATE' || !has(object.spec) ||"
                   " !has(oldObject.spec) || object.spec != oldObject.spec")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls(folder: Path, days: int = 2) -> Path:
    """ca.crt, and tls.crt/tls.key for 127.0.0.1 signed by it, in `folder` (the operator's
    --webhook-cert-dir, a TLS LoopbackCluster's nodes). Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
             "-subj", "/CN=podq local webhook CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign", cwd=folder)
    _openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1",
             cwd=folder)
    # clientAuth too: a cluster node presents it when it connects to another
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                    "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "tls.crt", "-days", str(days), "-extfile", "san.ext",
             cwd=folder)
    return folder


def configuration(name: str, port: int, tls: Path, failure_policy: str = "Ignore",
                  namespace: str | None = None) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration sending podq Jobs and CronJobs (of `namespace`
    only, when given) to https://127.0.0.1:PORT/validate, trusting tls/ca.crt."""
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "clientConfig": {"url": f"https://127.0.0.1:{port}/validate",
                         "caBundle": base64.b64encode((tls / "ca.crt").read_bytes()).decode()},
        "rules": [{"apiGroups": [GROUP], "apiVersions": ["*"],
                   "operations": ["CREATE", "UPDATE"],
                   "resources": ["jobs", "cronjobs"], "scope": "Namespaced"}],
        "matchPolicy": "Equivalent",
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
        "matchConditions": [{"name": "spec-created-or-changed",
                             "expression": MATCH_CONDITION}],
    }
    if namespace is not None:
        webhook["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [webhook]}
