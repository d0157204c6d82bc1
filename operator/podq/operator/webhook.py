"""The validating admission webhook's HTTPS server (the checks are in admission.py).

Every replica serves it from start-up, the standbys of leader election too: the API
server reaches whichever pod its Service picks, and judging a manifest needs neither
the lease nor Redis. kopf's own admission server (@kopf.on.validate) runs only inside
kopf.operator(), i.e. on the leader, and its self-signed certificates need packages
podq does not ship; this small aiohttp server has neither limit.

The certificate (tls.crt, tls.key in one folder: a mounted Secret written by the
chart or by cert-manager) is read again when its files change, so a renewed
certificate is served without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from podq.operator import safejson
from podq.operator.access import QueueAccess
from podq.operator.admission import review

log = logging.getLogger("podq.operator.webhook")

PATH = "/validate"
# An AdmissionReview carries the object and, on update, its old version (each up to the
# API server's 1.5 MiB); aiohttp's default cap is 1 MiB.
MAX_BODY_BYTES = 8 * 1024 * 1024
CERT_CHECK_INTERVAL_S = 30.0


@dataclass(frozen=True)
class WebhookSettings:
    host: str
    port: int
    cert_dir: Path

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"


class Certificate:
    """An SSL context serving the folder's certificate, reloaded when the files change."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._files_stamp()
        self.context.load_cert_chain(settings.cert_file, settings.key_file)

    def _files_stamp(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime for p in (self.settings.cert_file, self.settings.key_file))

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        except (OSError, ssl.SSLError) as error:  # half-written update: try again later
            log.warning("webhook certificate not reloaded: %s", error)
            return False
        self._stamp = stamp
        log.info("webhook certificate reloaded from %s", self.settings.cert_dir)
        return True


def application(access: QueueAccess) -> web.Application:
    async def validate(request: web.Request) -> web.Response:
        try:
            body = safejson.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        return web.json_response(review(body, access))

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH, validate)
    return app


async def _watch_certificate(certificate: Certificate) -> None:
    while True:
        await asyncio.sleep(CERT_CHECK_INTERVAL_S)
        certificate.reload_if_changed()


@contextlib.asynccontextmanager
async def serving(settings: WebhookSettings | None, access: QueueAccess) -> AsyncIterator[None]:
    """Serve the webhook (when settings are given) for the duration of the block."""
    if settings is None:
        yield
        return
    certificate = Certificate(settings)
    runner = web.AppRunner(application(access), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port,
                      ssl_context=certificate.context).start()
    log.info("validating webhook on https://%s:%d%s", settings.host, settings.port, PATH)
    watcher = asyncio.ensure_future(_watch_certificate(certificate))
    try:
        yield
    finally:
        watcher.cancel()
        await runner.cleanup()
