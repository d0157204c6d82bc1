"""`podq operator`: command line, logging, and running kopf."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import kopf
from aiohttp import web
from kubernetes_asyncio import client

from podq import redis_url as redis_urls
from podq.cli_common import EXIT_REDIS_TOO_OLD, state_defaults
from podq.operator import handlers, kube, safejson, webhook
from podq.operator.access import QueueAccess
from podq.operator.handlers import Options
from podq.operator.leader import LeaderElector, LeaseSettings
from podq.operator.metrics import serving, standby_metrics
from podq.operator.queues import Halt
from podq.redact import install_logging_filter, remember_url

log = logging.getLogger("podq.operator")

DEFAULT_WEBHOOK_CERT_DIR = Path("/etc/podq/webhook-tls")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podq operator",
        description="Run the podq operator: Job and CronJob resources (podq.dev), status "
        "mirroring from Redis, worker autoscaling.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeat for several; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default when no --namespace is given)")
    parser.add_argument("--redis-url", help=redis_urls.HELP)
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain",
                        help="plain text, or one JSON object a line (default: plain)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--liveness", metavar="URL",
                        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument("--metrics-host", default=Options.metrics_host, metavar="ADDRESS",
                        help="address to serve metrics on (default: %(default)s)")
    access = parser.add_argument_group("queue access (docs/security.md)")
    access.add_argument("--allow-queue", action="append", default=[], metavar="QUEUE=NS[,NS]",
                        help="let Jobs of these namespaces ('*': all) use this queue; repeat"
                        " per queue. Jobs on a queue not granted to their namespace are"
                        " refused (condition and Event QueueNotAllowed)")
    access.add_argument("--queue-access", choices=["explicit", "open"],
                        help="explicit: only --allow-queue grants (the default when one is"
                        " given); open: every namespace may use every queue (the default"
                        " without grants: single-tenant use)")
    hook = parser.add_argument_group("validating admission webhook (docs/operator.md)")
    hook.add_argument("--webhook-port", type=int, metavar="PORT",
                      help="serve the validating webhook (HTTPS, path /validate) on this port;"
                      " every replica serves it, standbys too (default: not served)")
    hook.add_argument("--webhook-host", default="0.0.0.0", metavar="ADDRESS",
                      help="address to serve the webhook on (default: %(default)s)")
    hook.add_argument("--webhook-cert-dir", type=Path, default=DEFAULT_WEBHOOK_CERT_DIR,
                      metavar="DIR", help="folder holding the webhook's tls.crt and tls.key,"
                      " read again when they change (default: %(default)s)")
    ha = parser.add_argument_group("high availability (several replicas)")
    ha.add_argument("--leader-elect", action="store_true",
                    help="act only while holding a coordination.k8s.io Lease; other replicas"
                    " wait as standbys and take over when the leader stops renewing")
    ha.add_argument("--leader-election-name", default="podq-operator", metavar="NAME",
                    help="name of the Lease (default: %(default)s)")
    ha.add_argument("--leader-election-namespace", metavar="NAMESPACE",
                    help="namespace of the Lease (default: $POD_NAMESPACE, else the pod's own"
                    " namespace, else the first --namespace, else default)")
    ha.add_argument("--lease-duration", type=float, metavar="SECONDS",
                    default=LeaseSettings.lease_duration_s,
                    help="how long a standby waits after the lease last changed")
    ha.add_argument("--renew-deadline", type=float, metavar="SECONDS",
                    default=LeaseSettings.renew_deadline_s,
                    help="the leader exits after failing to renew for this long")
    ha.add_argument("--retry-period", type=float, metavar="SECONDS",
                    default=LeaseSettings.retry_period_s,
                    help="interval between renewals and between a standby's attempts")
    tuning = parser.add_argument_group("tuning (tests use small values)")
    tuning.add_argument("--reconcile-interval", type=float, metavar="SECONDS",
                        default=Options.reconcile_interval,
                        help="how often every unfinished Job is checked against Redis")
    tuning.add_argument("--flush-interval", type=float, metavar="SECONDS",
                        default=Options.flush_interval,
                        help="coalescing window of status patches")
    tuning.add_argument("--status-patch-rate", type=float, metavar="PER_SECOND",
                        default=Options.status_patch_rate,
                        help="ceiling on status patches per second")
    tuning.add_argument("--api-parallelism", type=int, metavar="N",
                        default=Options.api_parallelism,
                        help="Kubernetes API requests the status writer keeps in flight")
    tuning.add_argument("--stabilisation-window", type=float, metavar="SECONDS",
                        default=Options.stabilisation_window,
                        help="scale a worker Deployment down only after this long")
    tuning.add_argument("--autoscale-interval", type=float, metavar="SECONDS",
                        default=Options.autoscale_interval,
                        help="periodic autoscaling pass (changes trigger one at once)")
    tuning.add_argument("--cron-refresh", type=float, metavar="SECONDS",
                        default=Options.cron_refresh,
                        help="how often a CronJob re-reads its spec and children")
    return state_defaults(parser)


def configure_logging(log_format: str, verbose: bool) -> None:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    # kubernetes_asyncio and aiohttp are chatty at debug level; kopf logs every handler
    # call at INFO, which at thousands of Jobs drowns what podq itself reports
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    # no Redis password in any log line or in kopf's Events from log records (podq.redact)
    install_logging_filter("kopf.objects")
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.redis_url = redis_urls.redis_url(args.redis_url)
    remember_url(args.redis_url)
    configure_logging(args.log_format, args.verbose)
    safejson.install()  # no object the API server accepts can crash the decoding
    try:
        access = QueueAccess.parse(args.allow_queue, args.queue_access)
    except ValueError as invalid:
        build_parser().error(str(invalid))
    clusterwide = args.all_namespaces or not args.namespace
    options = Options(
        redis_url=args.redis_url,
        reconcile_interval=args.reconcile_interval,
        flush_interval=args.flush_interval,
        status_patch_rate=args.status_patch_rate,
        stabilisation_window=args.stabilisation_window,
        autoscale_interval=args.autoscale_interval,
        cron_refresh=args.cron_refresh,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        api_parallelism=args.api_parallelism,
        queue_access=access,
        scan_namespaces=clusterwide or any(set("*?[!") & set(ns) for ns in args.namespace),
    )
    assert handlers.startup  # the handlers register themselves with kopf on import
    halt = Halt()  # a Redis too old for podq: the operator stops, main() exits with it

    def run_operator() -> Awaitable[None]:
        return kopf.operator(
            standalone=True,  # no kopf peering: one replica acts (the Lease holder)
            clusterwide=clusterwide,
            namespaces=args.namespace,
            memo=kopf.Memo(options=options, halt=halt),
            liveness_endpoint=args.liveness,
            stop_flag=halt.flag,
        )

    hook = None
    if args.webhook_port:
        hook = webhook.WebhookSettings(args.webhook_host, args.webhook_port, args.webhook_cert_dir)
        for path in (hook.cert_file, hook.key_file):
            if not path.is_file():
                build_parser().error(f"--webhook-cert-dir: no {path}")

    async def run(main: Callable[[], Awaitable[None]]) -> None:
        async with webhook.serving(hook, access):  # before the lease: standbys serve too
            await main()

    try:
        if args.leader_elect:
            try:
                settings = LeaseSettings(
                    name=args.leader_election_name,
                    namespace=args.leader_election_namespace or lease_namespace(args.namespace),
                    identity=f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
                    lease_duration_s=args.lease_duration, renew_deadline_s=args.renew_deadline,
                    retry_period_s=args.retry_period)
            except ValueError as invalid:
                build_parser().error(f"{invalid} (--retry-period, --renew-deadline,"
                                     " --lease-duration)")
            standby = Standby(args.liveness, args.metrics_host, args.metrics_port)
            asyncio.run(run(lambda: run_elected(settings, run_operator, standby)))
        else:
            asyncio.run(run(run_operator))
    except KeyboardInterrupt:
        pass
    return EXIT_REDIS_TOO_OLD if halt.error is not None else 0


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def lease_namespace(watched: list[str]) -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    exact = [ns for ns in watched if not set("*?[!") & set(ns)]
    return exact[0] if exact else "default"


@dataclass(frozen=True)
class Standby:
    """What a standby serves while it waits: the liveness probe, and its metrics port
    (`podq_operator_leader 0`, so every replica behind the Service answers a scrape)."""

    liveness: str | None
    metrics_host: str
    metrics_port: int | None


async def run_elected(settings: LeaseSettings, run_operator: Callable[[], Awaitable[None]],
                      standby: Standby) -> None:
    """Wait as a standby (alive for the liveness probe), then run the operator while
    holding the lease. Losing it ends the process at once, as controller-runtime does:
    another replica may be acting from that moment; the pod restarts as a standby."""
    clients = await kube.connect(pool_size=4)
    elector = LeaderElector(client.CoordinationV1Api(clients.api), settings)
    try:
        async with standby_liveness(standby.liveness), \
                standby_metrics(standby.metrics_host, standby.metrics_port):
            await elector.acquire()
        operator = asyncio.ensure_future(run_operator())
        holding = asyncio.ensure_future(elector.hold())
        await asyncio.wait({operator, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            log.critical("leadership lost: exiting so that only the new leader acts")
            logging.shutdown()
            os._exit(1)
        holding.cancel()
        await operator
    finally:
        if elector.leading:
            await elector.release()
        await clients.close()


@contextlib.asynccontextmanager
async def standby_liveness(url: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while waiting (kopf serves it once leading)."""
    if not url:
        yield
        return
    parsed = urllib.parse.urlsplit(url)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})
    async with serving(parsed.hostname, parsed.port, parsed.path or "/", alive):
        yield
