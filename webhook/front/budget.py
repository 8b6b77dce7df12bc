"""The storage budget at the front: a cold blob that cannot fit under retention.maxBytes is refused before it spools.

The measure and the rule are retention's own (`retention.budget`: what the CCR holds, read at most once a
minute, plus the writes since; `budget_refusal`), so the front refuses exactly what retention would have to
evict. A refusal is one JSON log line (the flight's: repository, blob, size, stored bytes, budget), the
fetches metric's `over-budget` outcome, and the answer table's 507 to every reader of the flight. A CCR that
cannot be read for the measure does not stop a fetch: the budget guards the disk, no reason to stop serving.
"""

from __future__ import annotations

import logging

from webhook.config import Config
from webhook.front.flights import Flight, OverBudget
from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryError
from webhook.retention.budget import StoredBytes, budget_refusal

log = logging.getLogger("webhook.front")


class FetchBudget:
    """Asks the storage budget before a cold fetch spools (`admit`), and counts what the front commits (`committed`)."""

    def __init__(self, stored: StoredBytes, max_bytes: int) -> None:
        self._stored, self._max_bytes = stored, max_bytes

    @classmethod
    def of(cls, config: Config, ccr: RegistryClient) -> FetchBudget | None:
        """The budget `config` sets for the CCR (retention.maxBytes, measured over the upstreams' prefixes), if any."""
        max_bytes = config.retention.max_bytes
        if max_bytes is None:
            return None
        return cls(StoredBytes(ccr, [upstream.prefix for upstream in config.upstreams]), max_bytes)

    def admit(self, flight: Flight, size: int) -> None:
        """Let `flight` spool `size` bytes, or raise OverBudget (with the numbers to log) when they do not fit."""
        try:
            stored = self._stored.current()
        except RegistryError as err:
            log.warning("blob %s: the CCR's size is unknown (%s); fetched without the budget check", flight.digest, err)
            return
        refusal = budget_refusal(stored, size, self._max_bytes)
        if refusal is None:
            return
        fields = {
            "repository": flight.origin.target_repository,
            "blob": flight.digest,
            "size": size,
            "stored_bytes": stored,
            "max_bytes": self._max_bytes,
        }
        raise OverBudget(refusal, fields)  # logged by the flight, these fields in its line

    def committed(self, size: int) -> None:
        """Count `size` bytes the front wrote into the CCR, until the next reading of the CCR sees them."""
        self._stored.add(size)
