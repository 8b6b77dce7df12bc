"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support import tally
from tests.support.local_registry import client as registry_client
from tests.support.workloads import namespace
from webhook.registry.client import RegistryClient
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import RegistryServer

# Every property test is repeatable and has no wall-clock deadline: a loaded 2-core CI must not fail a case for
# being slow. Tests that want their own example counts use tests.support.hostile.examples().
settings.register_profile(
    "ccr", deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ccr")


@pytest.fixture
def cluster() -> Iterator[LocalAPIServer]:
    """A fake API server that knows every workload kind, with the namespace team-a opted in."""
    with LocalAPIServer() as server:
        server.create(namespace("team-a"))
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    """The registry a module's images are copied from."""
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def ccr() -> Iterator[RegistryServer]:
    """The registry a module's images are copied into."""
    with RegistryServer() as server:
        yield server


@pytest.fixture
def empty_ccr() -> Iterator[RegistryServer]:
    """A CCR of its own for one test, empty at the start."""
    with RegistryServer() as server:
        yield server


@pytest.fixture
def empty_ccr_client(empty_ccr: RegistryServer) -> Iterator[RegistryClient]:
    """A client of `empty_ccr`."""
    client = registry_client(empty_ccr.url)
    yield client
    client.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the tests counted (generated inputs tried, and the like)."""
    if tally.COUNTS:
        terminalreporter.write_sep("-", "counted by the tests")
        for name, amount in sorted(tally.COUNTS.items()):
            terminalreporter.write_line(f"{name}: {amount}")
