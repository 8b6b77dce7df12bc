"""The version of ccr-webhook, from the installed package's metadata (pyproject.toml): its one source."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("ccr-webhook")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
