"""The chart's Redis wiring against real redis-servers: the URL the chart renders (password
from a Secret spliced in by `$(VAR)` expansion, TLS with the CA mounted from a Secret) is
the one the worker and its liveness probe use to serve jobs; the embedded Redis's
arguments start a real redis-server that refuses clients without the password.

What the kubelet does is done here by hand, and only that: Secret values into env vars,
`$(VAR)` expansion of later env values and of args, volume mount paths mapped to folders.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from chart_helpers import ROOT

from podq.queue import Queue
from podq.redis_url import redis_url
from podq.testing import free_port, wait_for_port

VENV_BIN = Path(sys.executable).parent
PASSWORD = "s3cretPassw0rd-with_safe.chars~"
# what a generated Secret may hold: every character that means something in a URL
HOSTILE_PASSWORD = "p/ss@w:rd%2F?#&=x"


def kubelet_env(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's env as the kubelet resolves it: secretKeyRef values, then `$(NAME)`
    references to variables defined earlier in the list."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)), entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = "pod-name" if "name" in entry["valueFrom"]["fieldRef"][
                "fieldPath"] else "podq-system"
    return env


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(params=[PASSWORD, HOSTILE_PASSWORD], ids=["plain", "hostile"])
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """redis-server with TLS only (no plain port) and a password, on loopback."""
    certs = tmp_path / "certs"
    certs.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=podq-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=certs)
    (certs / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt",
            cwd=certs)
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file",
         str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.crt"),
         "--tls-auth-clients", "no", "--requirepass", request.param, "--save", "",
         "--appendonly", "no", "--dir", str(data), "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30)
        yield {"port": port, "ca": certs / "ca.crt", "password": request.param}
    finally:
        server.terminate()
        server.wait(10)


def test_tls_redis_url_with_secret_password_serves_jobs(
    render, tls_redis: dict[str, Any], tmp_path: Path
) -> None:
    objs = render({"redis": {"url": f"redis://127.0.0.1:{tls_redis['port']}/0",
                             "password": {"existingSecret": "redis-auth", "key": "password"},
                             "tls": {"enabled": True, "caSecret": "redis-ca",
                                     "caKey": "ca.crt"}},
                   "workers": {"queue": "tls-queue"}})
    worker = one(objs, "Deployment", "podq-worker")
    pod = worker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    password = tls_redis["password"]
    env = kubelet_env(container, {("redis-auth", "password"): password})
    # the kubelet splices the Secret in raw; podq percent-encodes it (podq.redis_url)
    assert env["PODQ_REDIS_URL"].startswith(f"rediss://:{password}@127.0.0.1:")
    url = redis_url(environ=env)
    assert url.startswith(f"rediss://:{quote(password, safe='')}@127.0.0.1:")

    # the CA Secret's volume, mounted where the URL's ssl_ca_certs points
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "redis-tls"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "redis-tls"]
    assert volume["secret"]["secretName"] == "redis-ca"
    mounted = tmp_path / "mounts" / "redis-tls"
    mounted.mkdir(parents=True)
    for item in volume["secret"]["items"]:
        shutil.copy(tls_redis["ca"], mounted / item["path"])
    assert f"ssl_ca_certs={mount['mountPath']}/" in url
    env["PODQ_REDIS_URL"] = env["PODQ_REDIS_URL"].replace(mount["mountPath"], str(mounted))
    url = redis_url(environ=env)

    # the server is verified against the mounted CA: without it, the handshake fails
    without_ca = url.split("?")[0]
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(without_ca, socket_timeout=3).ping()
    assert redis.Redis.from_url(url).ping()

    process_env = {**os.environ, **env, "HOME": str(tmp_path)}
    worker_proc = subprocess.Popen(
        [str(VENV_BIN / "podq"), "worker", *container["args"]], env=process_env,
        cwd=ROOT / "worker_image")
    try:
        async def run() -> Any:
            queue = Queue.from_url(url, name="tls-queue")
            try:
                job = await queue.enqueue("echo", kwargs={"message": "over TLS"})
                assert job is not None
                await job.refresh(until_complete=30)
                return job
            finally:
                await queue.disconnect()

        job = asyncio.run(run())
        assert job.status == "complete" and job.result["message"] == "over TLS"
        probe = container["livenessProbe"]["exec"]["command"]
        result = subprocess.run([str(VENV_BIN / "podq"), *probe[1:]], env=process_env,
                                cwd=ROOT / "worker_image", capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    finally:
        worker_proc.terminate()
        worker_proc.wait(20)


def test_embedded_redis_arguments_start_a_password_protected_redis(
    render, tmp_path: Path
) -> None:
    objs = render({"redis": {"embedded": {"enabled": True, "maxmemory": "64mb"}}})
    deployment = one(objs, "Deployment", "podq-redis")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    password = "generatedPassword0123456789abcde"
    env = kubelet_env(container, {("podq-redis", "redis-password"): password})
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    assert container["command"] == ["redis-server"]

    (data_mount,) = container["volumeMounts"]
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    args = [str(data) if a == data_mount["mountPath"] else a for a in args]
    args[args.index("--port") + 1] = str(port)  # the Service's targetPort, on loopback here
    server = subprocess.Popen(["redis-server", *args, "--bind", "127.0.0.1",
                               "--logfile", str(tmp_path / "redis.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30)
        # the operator's URL, with the Service name resolved to where the server listens
        operator = one(objs, "Deployment", "podq-operator")
        url = kubelet_env(operator["spec"]["template"]["spec"]["containers"][0],
                          {("podq-redis", "redis-password"): password})["PODQ_REDIS_URL"]
        assert url == f"redis://:{password}@podq-redis:6379/0"
        client = redis.Redis.from_url(url.replace("podq-redis:6379", f"127.0.0.1:{port}"))
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024 * 1024)}
        assert client.config_get("save") == {"save": ""}
        client.close()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).set("x", "1")
    finally:
        server.terminate()
        server.wait(10)
