"""`podq operator`: command line, logging, and running kopf."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import kopf

from podq.operator import handlers
from podq.operator.handlers import Options

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


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
    parser.add_argument("--redis-url", default=os.environ.get("PODQ_REDIS_URL", DEFAULT_REDIS_URL),
                        help="Redis URL (default: $PODQ_REDIS_URL or %(default)s)")
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--liveness", metavar="URL",
                        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
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
    return parser


def configure_logging(log_format: str, verbose: bool) -> None:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    # kubernetes_asyncio and aiohttp are chatty at debug level; kopf logs every handler
    # call at INFO, which at thousands of Jobs drowns what podq itself reports
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.verbose)
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
        api_parallelism=args.api_parallelism,
        scan_namespaces=clusterwide or any(set("*?[!") & set(ns) for ns in args.namespace),
    )
    assert handlers.startup  # the handlers register themselves with kopf on import
    try:
        asyncio.run(kopf.operator(
            standalone=True,  # one replica (Deployment strategy Recreate); no peering
            clusterwide=clusterwide,
            namespaces=args.namespace,
            memo=kopf.Memo(options=options),
            liveness_endpoint=args.liveness,
        ))
    except KeyboardInterrupt:
        pass
    return 0
