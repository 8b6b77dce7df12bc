"""Retention inside the warmer: every replica follows the cluster's usage, the leader evicts every `retention.interval`.

Every replica follows usage from its start, so a replica that becomes leader already knows what was
named while it waited. The first run comes one interval after start, never at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from webhook.config import Config
from webhook.kube.informer import Informer
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.run import CCRWriter, Retention, RunResult
from webhook.retention.watch import ClusterUsage

log = logging.getLogger(__name__)


class ScheduledRetention:
    """Follows usage through `api_client` and runs retention against `ccr` every interval while `is_leader()`.

    `pods` is the process's shared Pod informer, if it has one.
    """

    def __init__(
        self,
        config: Config,
        api_client: Any,
        ccr: CCRWriter,
        is_leader: Callable[[], bool],
        *,
        metrics: RetentionMetrics | None = None,
        on_evicted: Callable[[str, str], None] | None = None,
        pods: Informer | None = None,
    ) -> None:
        self._config = config
        self._is_leader = is_leader
        self.usage = ClusterUsage(api_client, config, pods=pods)
        self.retention = Retention(
            config, ccr, self.usage.tracker, self.usage.confirm, metrics=metrics, on_evicted=on_evicted
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> ScheduledRetention:
        """Start following usage and the schedule (nothing at all unless retention.enabled)."""
        if self._config.retention.enabled:
            self.usage.start()
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the schedule and the watches."""
        self._stop.set()
        self.usage.stop()

    def run_once(self) -> RunResult | None:
        """One run if this replica leads and usage has been listed in full; None otherwise. Never raises."""
        if not self._is_leader() or not self.usage.wait_synced(0):
            return None
        try:
            return self.retention.run()
        except Exception:
            log.exception("retention: the run failed; next try in %g s", self._config.retention.interval_seconds)
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self._config.retention.interval_seconds):
            self.run_once()
