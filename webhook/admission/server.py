"""gunicorn, run from Python, serving the webhook over TLS with keep-alive.

The gthread worker keeps connections alive between requests (the API server reuses them), so a TLS
handshake is paid once per connection, not once per review as with the sync worker. The configuration
is loaded once by the master and inherited by the workers; each worker builds its own application,
resolver and registry connections after the fork, because thread pools and sockets do not survive it.
"""

from __future__ import annotations

import logging
import math
import ssl
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from webhook.admission.app import create_app
from webhook.admission.metrics import Metrics, forget_worker
from webhook.admission.warming import Warming
from webhook.config import Config, ConfigError
from webhook.config.view import effective_view
from webhook.hints import HintClient
from webhook.logs import log_start, setup_logging
from webhook.registry.client import Registries
from webhook.registry.evaluate import evaluate_images
from webhook.registry.resolver import Resolver
from webhook.tls import gunicorn_ssl_context
from webhook.version import VERSION

log = logging.getLogger("webhook.admission")
KEEPALIVE_SECONDS = 60  # the API server keeps idle connections for 90 s; a minute of reuse is most of it


def build_app(config: Config) -> Flask:
    """The application with its resolver, metrics and warm hints, built in each worker process."""
    metrics = Metrics(
        registries=[*(upstream.registry for upstream in config.upstreams), config.ccr.registry],
        certificates={"serving": config.webhook.tls_cert},
    )
    resolver = Resolver(config, Registries(config), observe=metrics.count_lookup)
    url = config.webhook.warmer_url
    warming = Warming(config, resolver, HintClient(url, on_result=metrics.count_hints) if url else None)
    return create_app(
        config, lambda images, timeout: evaluate_images(images, config, resolver, timeout), metrics, warming
    )


class JsonLogger(Logger):
    """gunicorn's logger writing JSON lines, with no access log: the API server's audit log records every review."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        setup_logging(cfg.loglevel.upper())

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Listening at:") and args and not args[0]:
            # With reuse_port each worker binds its own socket and the master holds none to name: name the address.
            args = (",".join(self.cfg.bind), *args[1:])
        super().info(msg, *args, **kwargs)


class WebhookServer(BaseApplication):
    """A gunicorn application whose settings come from the Config rather than gunicorn's command line."""

    def __init__(self, config: Config, log_level: str, threads: int) -> None:
        webhook = config.webhook
        if not webhook.tls_cert or not webhook.tls_key:
            raise ConfigError(
                "webhook.tlsCert and webhook.tlsKey (or --tls-cert and --tls-key) are required: "
                "the API server calls webhooks over HTTPS only"
            )
        try:  # loaded here, in the master: every worker inherits a good pair, and a bad one fails once, here
            # TLS 1.2+, reloading the pair when the files change; each worker reloads on its own after the fork.
            self.ssl_context = gunicorn_ssl_context(webhook.tls_cert, webhook.tls_key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"webhook.tlsCert and webhook.tlsKey: cannot load {webhook.tls_cert} with {webhook.tls_key}: {err}"
            ) from None
        self.config = config
        self.log_level = log_level
        self.threads = threads
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        """gunicorn settings derived from the webhook configuration."""
        webhook = self.config.webhook
        return {
            "bind": [webhook.listen],
            "workers": webhook.workers,
            # gthread, with the handshake and the request gathered in the event loop (see worker.py).
            "worker_class": "webhook.admission.worker.GuardedThreadWorker",
            # One listening socket per worker: the kernel spreads connections over them. With one shared
            # socket the first worker to wake takes most kept-alive connections and the other idles.
            "reuse_port": True,
            "threads": self.threads,
            "keepalive": KEEPALIVE_SECONDS,
            "certfile": webhook.tls_cert,
            "keyfile": webhook.tls_key,
            "ssl_context": self.ssl_context,
            "graceful_timeout": math.ceil(webhook.deadline_seconds) + 5,
            "logger_class": JsonLogger,
            "loglevel": self.log_level,
            "child_exit": lambda arbiter, worker: forget_worker(worker.pid),
            "proc_name": "ccr-webhook",
            "control_socket_disable": True,  # Kubernetes manages the process; a shared socket path would clash
            "on_starting": lambda arbiter: log_start(
                log, VERSION, effective_view(self.config), listen=webhook.listen, workers=webhook.workers
            ),
        }

    def load_config(self) -> None:
        for key, value in self.gunicorn_options().items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return build_app(self.config)
