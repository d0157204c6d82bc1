"""The Helm chart's Redis wiring, rendered by our helm (`helm template`): an external Redis
with a password Secret and TLS, a URL from a Secret, the embedded Redis with a generated
or existing password, or without auth."""

from __future__ import annotations

from typing import Any

import yaml
from chart_helpers import ALL_ON, ALL_ON_EMBEDDED, by_kind, env_of, one, pod_specs

# ----------------------------------------------------------------- Redis


def test_external_redis_with_password_secret_and_tls(render) -> None:
    objs = render(ALL_ON)
    for name, pod in pod_specs(objs).items():
        c = pod["containers"][0]
        env_list = [e["name"] for e in c["env"]]
        # $(VAR) expansion only sees variables defined earlier in the list
        assert env_list.index("PODQ_REDIS_PASSWORD") < env_list.index("PODQ_REDIS_URL"), name
        env = env_of(c)
        assert env["PODQ_REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "redis-auth", "key": "pw"}}
        assert env["PODQ_REDIS_URL"]["value"] == (
            "rediss://:$(PODQ_REDIS_PASSWORD)@redis.data.svc:6379/2"
            "?ssl_ca_certs=/etc/podq/redis-tls/ca.pem")
        assert {"name": "redis-tls", "mountPath": "/etc/podq/redis-tls", "readOnly": True} in (
            c["volumeMounts"])
        (vol,) = [v for v in pod["volumes"] if v["name"] == "redis-tls"]
        assert vol["secret"] == {"secretName": "redis-ca",
                                 "items": [{"key": "ca.pem", "path": "ca.pem"}]}
    assert not [o for o in objs if o["metadata"]["name"] == "podq-redis"]


def test_redis_user_name_keeps_its_place(render) -> None:
    objs = render({"redis": {"url": "redis://app@r:6379/0",
                             "password": {"existingSecret": "s"}}})
    env = env_of(one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
        "containers"][0])
    assert env["PODQ_REDIS_URL"]["value"] == "redis://app:$(PODQ_REDIS_PASSWORD)@r:6379/0"


def test_redis_url_from_secret(render) -> None:
    objs = render({"redis": {"urlSecret": {"name": "redis-url", "key": "u"}}})
    for pod in pod_specs(objs).values():
        env = env_of(pod["containers"][0])
        assert env["PODQ_REDIS_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": "redis-url", "key": "u"}}
        assert "PODQ_REDIS_PASSWORD" not in env


def test_embedded_redis_is_official_image_with_generated_password(render) -> None:
    objs = render(ALL_ON_EMBEDDED)
    redis = one(objs, "Deployment", "podq-redis")
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("docker.io/library/redis:")
    assert "bitnami" not in yaml.safe_dump(objs)
    assert "--requirepass" in c["args"]
    assert c["args"][c["args"].index("--maxmemory-policy") + 1] == "noeviction"
    secret = one(objs, "Secret", "podq-redis")
    assert len(secret["data"]["redis-password"]) > 30
    service = one(objs, "Service", "podq-redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    for name, pod in pod_specs(objs).items():
        if name == "podq-redis":
            continue
        env = env_of(pod["containers"][0])
        assert env["PODQ_REDIS_URL"]["value"] == "redis://:$(PODQ_REDIS_PASSWORD)@podq-redis:6379/0"
        assert env["PODQ_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "podq-redis", "key": "redis-password"}
    policy = one(objs, "NetworkPolicy", "podq-redis")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "redis", "protocol": "TCP"}]


def redis_secrets(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Secrets but the webhook's certificate (generated at each render, see
    test_webhook_chart.py)."""
    return [o for o in by_kind(objs, "Secret") if o["type"] != "kubernetes.io/tls"]


def test_embedded_redis_password_from_an_existing_secret(render) -> None:
    """For Argo CD, which renders without the cluster: no generated Secret that would
    change at every render."""
    objs = render({"redis": {"embedded": {"enabled": True, "existingSecret": "my-redis",
                                          "existingSecretKey": "pw"}}})
    assert not redis_secrets(objs)
    for name, pod in pod_specs(objs).items():
        env = env_of(pod["containers"][0])
        key = "REDIS_PASSWORD" if name == "podq-redis" else "PODQ_REDIS_PASSWORD"
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "pw"}, name


def test_embedded_redis_without_auth(render) -> None:
    objs = render({"redis": {"embedded": {"enabled": True, "auth": False}}})
    assert not redis_secrets(objs)
    redis = one(objs, "Deployment", "podq-redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" not in redis["args"]
    operator = one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"]
    assert env_of(operator["containers"][0])["PODQ_REDIS_URL"]["value"] == (
        "redis://podq-redis:6379/0")
