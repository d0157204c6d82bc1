"""The `podq` command: its parser and dispatch. Each group of subcommands is a module:
worker and worker-health in podq.cli_worker, enqueue in podq.cli_enqueue, status in
podq.cli_status, info, drain and resume in podq.cli_queues; abort, retry, jobs and
cronjob run in podq.cli_jobs; what they share in podq.cli_common."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

from podq import cli_enqueue, cli_jobs, cli_queues, cli_status, cli_worker
from podq.cli_common import CliError, version
from podq.logs import configure
from podq.redact import install_logging_filter, redact


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podq", description="podq: async Python jobs on Redis")
    parser.add_argument("--version", action="version", version=f"podq {version()}",
                        help="print podq's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_worker.add_parsers(sub)
    cli_enqueue.add_parsers(sub)
    cli_queues.add_info_parser(sub)
    cli_status.add_parsers(sub)
    cli_queues.add_drain_parsers(sub)
    sub.add_parser("operator", help="run the Kubernetes operator (needs podq[operator])")
    sub.add_parser("web", help="the dashboard: queues, jobs and workers (podq web --help)")
    cli_jobs.add_parsers(sub)
    return parser


# a dotted path to a settings object, as SAQ's command takes it: `saq module.settings`
SETTINGS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def refuse_saq_form(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """`podq module.settings` (SAQ's `saq module.settings`) is no podq command: argparse
    would answer a bare "invalid choice"; say the podq command that runs that worker
    (parser.error: usage, the message, exit 2)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    commands = {name for action in parser._actions
                if isinstance(action, argparse._SubParsersAction) for name in action.choices}
    if first is None or first in commands or not SETTINGS_PATH.fullmatch(first):
        return
    parser.error(f"{first!r} is not a podq command; to run a worker with the settings"
                 f" {first} (SAQ's `saq {first}`): podq worker {first} (options: podq"
                 " worker --help)")


# -- operator ---------------------------------------------------------------------------


def cmd_operator(argv: list[str]) -> int:
    try:
        from podq.operator.main import main as operator_main
    except ImportError:
        print(
            "podq operator needs the operator extra: pip install 'podq[operator]'", file=sys.stderr
        )
        return 2
    return int(operator_main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "operator":
        return cmd_operator(argv[1:])
    if argv and argv[0] == "web":
        from podq.web.main import main as web_main

        return web_main(argv[1:])
    parser = build_parser()
    refuse_saq_form(parser, argv)
    args = parser.parse_args(argv)
    level = logging.INFO
    if getattr(args, "verbose", 0):
        level = logging.DEBUG
    if not getattr(args, "quiet", False):
        configure(level, getattr(args, "log_format", "plain"))
    install_logging_filter()
    handlers = {**cli_worker.HANDLERS, **cli_enqueue.HANDLERS, **cli_queues.HANDLERS,
                **cli_status.HANDLERS, **cli_jobs.HANDLERS}
    try:
        return asyncio.run(handlers[args.command](args))
    except CliError as e:
        print(f"podq: error: {redact(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
