"""The chart's validating webhook: the configuration points at a Service that reaches
the operator's webhook port; the generated certificate is valid for that Service and
signed by the CA in the caBundle; cert-manager as an option."""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path
from typing import Any

from chart_helpers import by_kind, one

# what tests/kube/test_webhook.py and scripts/demo register by URL on the real API server
from podq.testing_webhook import MATCH_CONDITION, configuration

HOOK = "podq-operator-webhook"
DNS_NAMES = [HOOK, f"{HOOK}.podq-system", f"{HOOK}.podq-system.svc",
             f"{HOOK}.podq-system.svc.cluster.local"]


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"]
    return pod["containers"][0] | {"_volumes": pod["volumes"]}


def test_default_webhook_reaches_the_operator_with_a_certificate_it_trusts(
    render, tmp_path: Path,
) -> None:
    objs = render()
    (config,) = by_kind(objs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["name"] == "validate.podq.dev"
    assert hook["failurePolicy"] == "Ignore"  # the documented default (docs/operator.md)
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [{"apiGroups": ["podq.dev"], "apiVersions": ["*"],
                              "operations": ["CREATE", "UPDATE"],
                              "resources": ["jobs", "cronjobs"], "scope": "Namespaced"}]
    assert "namespaceSelector" not in hook  # every namespace: the operator watches all
    assert hook["matchConditions"] == [{"name": "spec-created-or-changed",
                                        "expression": MATCH_CONDITION}]
    assert hook["clientConfig"]["service"] == {"name": HOOK, "namespace": "podq-system",
                                               "path": "/validate", "port": 443}
    (tmp_path / "ca.crt").write_text("a CA")
    (local,) = configuration("local", 1, tmp_path)["webhooks"]
    assert {k: v for k, v in hook.items() if k != "clientConfig"} == {
        k: v for k, v in local.items() if k != "clientConfig"}

    # the Service sends port 443 to the operator pods' port named webhook
    service = one(objs, "Service", HOOK)
    operator = one(objs, "Deployment", "podq-operator")
    assert service["spec"]["selector"] == operator["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443,
                                         "targetPort": "webhook", "protocol": "TCP"}]
    container = operator_container(objs)
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    assert "--webhook-port=9443" in container["args"]
    assert "--webhook-cert-dir=/etc/podq/webhook-tls" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount == {"name": "webhook-tls", "mountPath": "/etc/podq/webhook-tls",
                     "readOnly": True}
    volume = next(v for v in container["_volumes"] if v["name"] == "webhook-tls")
    secret = one(objs, "Secret", "podq-operator-webhook-tls")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]

    # the certificate: for the Service's names, signed by the caBundle's CA, with its key
    files = {name: base64.b64decode(value) for name, value in secret["data"].items()}
    assert files["ca.crt"] == base64.b64decode(hook["clientConfig"]["caBundle"])
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    verified = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"],
                              cwd=tmp_path, capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    names = subprocess.run(["openssl", "x509", "-in", "tls.crt", "-noout", "-ext",
                            "subjectAltName"], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout
    listed = {n.strip().removeprefix("DNS:") for n in names.splitlines()[-1].split(",")}
    assert listed == set(DNS_NAMES), names
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "tls.crt", tmp_path / "tls.key")  # the key matches the certificate

    # the operator accepts connections on the webhook port under the NetworkPolicy
    policies = render({"networkPolicy": {"enabled": True}})
    ingress = one(policies, "NetworkPolicy", "podq-operator")["spec"]["ingress"]
    assert {"ports": [{"port": "webhook", "protocol": "TCP"}]} in ingress


def test_fail_policy_timeout_and_namespaced_mode(render, render_error) -> None:
    objs = render({"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 3},
                   "operator": {"watchNamespaces": ["team-a", "team-b"]}})
    (hook,) = by_kind(objs, "ValidatingWebhookConfiguration")[0]["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 3
    assert hook["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}
    assert "failurePolicy" in render_error({"webhook": {"failurePolicy": "Sometimes"}})
    assert "timeoutSeconds" in render_error({"webhook": {"timeoutSeconds": 60}})


def test_cert_manager_issues_the_certificate_and_injects_the_ca(render) -> None:
    objs = render({"webhook": {"certManager": {"enabled": True}}})
    assert not by_kind(objs, "Secret")  # cert-manager writes it
    (issuer,) = by_kind(objs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    certificate = one(objs, "Certificate", HOOK)
    assert certificate["spec"]["secretName"] == "podq-operator-webhook-tls"
    assert certificate["spec"]["dnsNames"] == DNS_NAMES
    assert certificate["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"],
                                                "kind": "Issuer"}
    (config,) = by_kind(objs, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"podq-system/{HOOK}"}
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]

    # an issuer of the cluster's own instead of the self-signed one
    objs = render({"webhook": {"certManager": {"enabled": True, "issuerRef": {
        "name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert not by_kind(objs, "Issuer")
    assert one(objs, "Certificate", HOOK)["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer"}


def test_webhook_off_renders_none_of_it(render) -> None:
    objs = render({"webhook": {"enabled": False}, "networkPolicy": {"enabled": True}})
    assert not by_kind(objs, "ValidatingWebhookConfiguration")
    assert not [o for o in objs if "webhook" in o["metadata"]["name"]]
    container = operator_container(objs)
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert "webhook" not in str(container["ports"]) + str(container["volumeMounts"])
