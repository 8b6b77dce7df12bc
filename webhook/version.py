"""The version of ccr-webhook, from the installed package's metadata (pyproject.toml): its one source."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    VERSION = version("ccr-webhook")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"

BUILD_INFO = "ccr_webhook_build_info"


def register_build_info(registry: Any) -> None:
    """Add `ccr_webhook_build_info{version=...} 1` to a prometheus_client `registry`: which release runs where.

    One series however many gunicorn workers write it ("max" across their files). prometheus_client is
    imported here, not at the top: `serve` must set PROMETHEUS_MULTIPROC_DIR before it first loads.
    """
    from prometheus_client import Gauge

    info = Gauge(
        BUILD_INFO,
        "Always 1; the version label says which ccr-webhook release this process runs.",
        ["version"],
        registry=registry,
        multiprocess_mode="max",
    )
    info.labels(VERSION).set(1)
