"""The published CCR deployment-time table this benchmark reproduces (3 nodes, a registry ~110 ms RTT away)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedRow:
    """One row: the image size in MB and the seconds to deploy it, without and with the CCR."""

    size_mb: int
    baseline_seconds: float
    ccr_seconds: float

    @property
    def ccr_saving(self) -> float:
        """The published CCR's saving over the baseline, as a fraction."""
        return 1 - self.ccr_seconds / self.baseline_seconds


PUBLISHED = (
    PublishedRow(133, 66, 48),
    PublishedRow(670, 87, 65),
    PublishedRow(1210, 140, 89),
    PublishedRow(2230, 250, 136),
)
PUBLISHED_SIZES_MB = tuple(row.size_mb for row in PUBLISHED)
