"""The chart's `web` option: `podq web` as its own Deployment and Service, read-only
unless a Secret holds a write token, reaching Redis like the operator does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import CHART, KUBE_VERSION, by_kind, env_of, one, run_helm

WEB_ON: dict[str, Any] = {"web": {"enabled": True}}


def test_web_is_off_by_default(render) -> None:
    objs = render()
    assert not [o for o in objs if o["metadata"]["name"].endswith("-web")]


def test_web_renders_a_deployment_and_a_service(render) -> None:
    objs = render(WEB_ON)
    deployment = one(objs, "Deployment", "podq-web")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["podq", "web"]
    assert c["args"] == ["--host=0.0.0.0", "--port=8080"]  # every queue, read-only
    assert c["image"].startswith("ghcr.io/podq/operator:")
    assert env_of(c)["PODQ_REDIS_URL"]["value"] == "redis://redis:6379/0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(objs, "Service", "podq-web")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http",
                                         "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "web"


def test_web_token_comes_from_a_secret_file_and_queues_are_listed(render) -> None:
    objs = render({"web": {"enabled": True, "queues": ["emails", "reports"],
                           "token": {"existingSecret": "podq-web-token", "key": "write"}},
                   "redis": {"password": {"existingSecret": "redis-auth"}}})
    pod = one(objs, "Deployment", "podq-web")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["--host=0.0.0.0", "--port=8080", "--queue=emails",
                         "--queue=reports", "--token-file=/etc/podq/web-token/write"]
    assert {"name": "web-token", "mountPath": "/etc/podq/web-token",
            "readOnly": True} in c["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "web-token")
    assert volume["secret"] == {"secretName": "podq-web-token",
                                "items": [{"key": "write", "path": "write"}]}
    env = env_of(c)
    assert "PODQ_WEB_TOKEN" not in env  # a file, never the environment
    assert env["PODQ_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    assert env["PODQ_REDIS_URL"]["value"] == "redis://:$(PODQ_REDIS_PASSWORD)@redis:6379/0"


def test_web_network_policy_opens_its_port_only(render) -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]
    objs = render({"web": {"enabled": True, "networkPolicyFrom": peers},
                   "networkPolicy": {"enabled": True}, "redis": {"embedded": {"enabled": True}}})
    policy = one(objs, "NetworkPolicy", "podq-web")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}],
                                          "from": peers}]
    # the embedded Redis admits the release's pods, the dashboard's among them
    redis_policy = one(objs, "NetworkPolicy", "podq-redis")
    web_labels = one(objs, "Deployment", "podq-web")["spec"]["template"]["metadata"]["labels"]
    wanted = redis_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert wanted.items() <= web_labels.items()
    assert len(by_kind(objs, "Service")) >= 2


def test_web_schema_refuses_unknown_keys(render_error) -> None:
    assert "additional properties" in render_error({"web": {"enabled": True, "tokn": "x"}}
                                                   ).lower()


def test_helm_lint_is_clean_with_the_dashboard(helm_bin: str, tmp_path: Path) -> None:
    values = {"web": {"enabled": True, "queues": ["a"], "token": {"existingSecret": "t"}},
              "networkPolicy": {"enabled": True}, "redis": {"embedded": {"enabled": True}}}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run_helm(helm_bin, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
                      "--values", str(values_file), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout, result.stdout


def test_podq_web_accepts_the_args_the_chart_renders(render) -> None:
    from podq.web.main import build_parser

    objs = render({"web": {"enabled": True, "queues": ["a", "b"], "port": 9000,
                           "token": {"existingSecret": "t"}}})
    (c,) = one(objs, "Deployment", "podq-web")["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(c["args"])
    assert (args.host, args.port, args.queues) == ("0.0.0.0", 9000, ["a", "b"])
    assert args.token_file == "/etc/podq/web-token/token"
    assert {"name": "http", "containerPort": 9000, "protocol": "TCP"} in c["ports"]


def test_the_operator_image_has_what_podq_web_needs() -> None:
    """The chart runs the dashboard from the operator image: podq[operator] brings
    aiohttp (kopf's), and the package data carries the templates and assets."""
    import tomllib

    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"]["package-data"]["podq"]
    assert "web/templates/*.html" in package_data and "web/static/*" in package_data
    dockerfile = (CHART.parents[1] / "worker_image" / "Dockerfile.operator").read_text()
    (extras,) = re.findall(r"pip install '\.\[([^\]]*)\]'", dockerfile)
    assert "operator" in extras.split(","), extras  # with fast (hiredis) since 2fb2801
    assert any(d.startswith("kopf") for d in project["project"]["optional-dependencies"][
        "operator"])
    from importlib.metadata import requires

    assert any(r.startswith("aiohttp") for r in requires("kopf") or [])
