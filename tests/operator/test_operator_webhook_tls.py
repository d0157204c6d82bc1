"""The webhook's HTTPS server on loopback: it serves the folder's certificate and, once
the files change (a renewal written into the mounted Secret), the new one without a
restart. Certificates are made here by openssl."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from podq.operator import webhook
from podq.operator.access import QueueAccess
from podq.testing import free_port


def self_signed(folder: Path, common_name: str) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "tls.key.new", "-out",
         "tls.crt.new", "-days", "1", "-subj", f"/CN={common_name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=folder, check=True, capture_output=True, timeout=60)
    # as the kubelet updates a Secret volume: the new files appear at once
    for name in ("tls.key", "tls.crt"):
        (folder / f"{name}.new").replace(folder / name)


async def post(port: int, cafile: Path, body: object) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(cafile))
    async with aiohttp.ClientSession() as session, session.post(
            f"https://127.0.0.1:{port}{webhook.PATH}", json=body, ssl=context) as response:
        return response.status, await response.json()


async def test_serves_reviews_and_a_renewed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook, "CERT_CHECK_INTERVAL_S", 0.05)
    self_signed(tmp_path, "first")
    (tmp_path / "first.crt").write_bytes((tmp_path / "tls.crt").read_bytes())
    settings = webhook.WebhookSettings("127.0.0.1", free_port(), tmp_path)
    review = {"request": {"uid": "u", "operation": "CREATE", "namespace": "a",
                          "kind": {"kind": "CronJob"},
                          "object": {"spec": {"schedule": "61 * * * *"}}}}
    async with webhook.serving(settings, QueueAccess(open=True)):
        status, answer = await post(settings.port, tmp_path / "first.crt", review)
        assert status == 200 and answer["response"]["allowed"] is False
        assert answer["response"]["status"]["message"].startswith("spec.schedule")
        assert answer["response"]["uid"] == "u"
        status, _ = await post(settings.port, tmp_path / "first.crt", ["not", "a", "review"])
        assert status == 400

        self_signed(tmp_path, "second")  # the renewal

        async def renewed() -> bool:
            try:
                status, _ = await post(settings.port, tmp_path / "tls.crt", review)
            except aiohttp.ClientConnectorCertificateError:
                return False
            return status == 200
        deadline = asyncio.get_running_loop().time() + 30
        while not await renewed():
            assert asyncio.get_running_loop().time() < deadline, "renewal not served in 30 s"
            await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await post(settings.port, tmp_path / "first.crt", review)


async def test_a_body_not_json_is_a_bad_request(tmp_path: Path) -> None:
    self_signed(tmp_path, "only")
    settings = webhook.WebhookSettings("127.0.0.1", free_port(), tmp_path)
    async with webhook.serving(settings, QueueAccess(open=True)):
        context = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
        async with aiohttp.ClientSession() as session, session.post(
                f"https://127.0.0.1:{settings.port}{webhook.PATH}", data=b"{nope",
                ssl=context) as response:
            assert response.status == 400
