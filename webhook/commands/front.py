"""`ccr-webhook front`: the CCR front, the pull endpoint nodes reach as the CCR.

    ccr-webhook front --config FILE

Serves held content from the CCR registry (`ccr.endpoint`) and fetches what it lacks under a configured
upstream's prefix once, streaming it to every node while it arrives, then committing it. Runs until
SIGTERM (or SIGINT); a fetch cut by the stop is not committed and is fetched again after the restart.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import threading

from webhook.commands import add_config_argument, configuration, stop_on_signals
from webhook.config import ConfigError
from webhook.config.view import effective_view
from webhook.listen import ensure_free
from webhook.logs import log_start, setup_logging
from webhook.version import VERSION


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `front`."""
    parser = subparsers.add_parser(
        "front",
        help="run the CCR front (pull endpoint that fills misses from upstream once)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    from webhook.front.server import FrontServer

    setup_logging()
    config = configuration(args)
    settings = config.front
    ensure_free(settings.listen, "front.listen")
    if settings.peering:
        ensure_free(settings.peer_listen, "front.peerListen")
    try:
        server = FrontServer(config)
    except (OSError, ssl.SSLError) as err:  # its addresses are free (above): a TLS pair that does not load
        raise ConfigError(f"front.tlsCert/tlsKey or front.peerTlsCert/peerTlsKey: cannot load: {err}") from None
    log_start(logging.getLogger("webhook.front"), VERSION, effective_view(config), listen=settings.listen)
    stop = stop_on_signals()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="front", daemon=True)
    thread.start()
    logging.getLogger("webhook.front").info("serving on %s", config.front.listen)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0
