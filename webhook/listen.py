"""Refuse to start on an address another process already listens on, before any server binds it.

`serve`'s workers each bind their own socket with SO_REUSEPORT (the kernel spreads connections over
them), which would also let a second `serve` on the same port start and take half the traffic. So every
process's start-up (`serve` in its master, before gunicorn forks; `front`; `warmer`) first binds each
address once *without* SO_REUSEPORT: that fails while anyone listens there, and is closed at once.
"""

from __future__ import annotations

import errno
import socket

from webhook.errors import CCRWebhookError
from webhook.http_service import split_listen


class CannotListen(CCRWebhookError):
    """An address this process must serve is taken by another process, or not this host's; names it and its key."""


def ensure_free(listen: str, key: str) -> None:
    """CannotListen when `listen` (`host:port`, `[v6]:port`; from config `key`) is in use; port 0 is always free."""
    host, port = split_listen(listen)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as every server here sets it: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CannotListen(
                    f"{listen} ({key}) is already in use by another process: stop it, or set another {key}"
                ) from None
            raise CannotListen(f"cannot listen on {listen} ({key}): {err.strerror or err}") from None
