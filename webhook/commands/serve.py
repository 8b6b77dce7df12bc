"""`ccr-webhook serve`: the admission webhook over HTTPS, run by gunicorn."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile

from webhook.commands import add_config_argument, configuration, registries_of
from webhook.config import Config, ConfigError
from webhook.listen import ensure_free

# prometheus_client reads this when first imported, so it is set before webhook.admission.server is imported.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `serve` and its options."""
    parser = subparsers.add_parser("serve", help="serve the admission webhook over HTTPS", description=__doc__)
    add_config_argument(parser)
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: webhook.listen)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serving certificate, PEM (default: webhook.tlsCert)")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key, PEM (default: webhook.tlsKey)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: webhook.workers)")
    # Each review waiting on a slow registry holds a thread, so fewer threads stall sooner when an upstream is
    # slow; more threads contend for the GIL, which widens the latency tail under load (bench/admission).
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        metavar="N",
        help="threads per worker: each review waiting on a registry holds one (default: 8)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning"),
        default="info",
        help="info logs denials, warnings and errors; debug also every routine answer",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; gunicorn lets in-flight reviews finish before the workers stop."""
    config = with_command_line(configuration(args), args)
    # Checked here, once, in one line: inside gunicorn a bad credentials file is a "Worker failed to boot",
    # and the workers share their port (SO_REUSEPORT) with anyone, a second `serve` included.
    registries_of(config).close()
    ensure_free(config.webhook.listen, "webhook.listen")
    metrics_dir = tempfile.mkdtemp(prefix="ccr-webhook-metrics-")
    os.environ[_MULTIPROC_ENV] = metrics_dir
    master = os.getpid()
    try:
        from webhook.admission.server import WebhookServer

        WebhookServer(config, args.log_level, args.threads).run()
    finally:
        # Workers leave through SystemExit from inside run() too; only the master removes the directory.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def with_command_line(config: Config, args: argparse.Namespace) -> Config:
    """`config` with the webhook settings of the command line over the file's; bad options are ConfigErrors."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; give both or neither")
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    overrides = {"listen": args.listen, "tls_cert": args.tls_cert, "tls_key": args.tls_key, "workers": args.workers}
    webhook = dataclasses.replace(
        config.webhook, **{key: value for key, value in overrides.items() if value is not None}
    )
    return dataclasses.replace(config, webhook=webhook)
