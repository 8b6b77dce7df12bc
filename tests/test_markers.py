"""Every test module that starts a server is marked `integration`, so `pytest -m "not integration"` is a true
fast loop (no registry, gunicorn, API server or listening socket): an unmarked one fails here, by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# What starts a server (a process, or a thread listening on a port) when a test module names it.
STARTERS = {
    "RegistryServer",  # the distribution registry binary
    "SmallDiskRegistry",
    "LocalCommand",  # a ccr-webhook process
    "LocalWebhook",
    "LocalWarmer",
    "LocalAPIServer",  # the in-memory Kubernetes API server
    "ContainerdNode",  # a containerd daemon
    "LoopbackServer",
    "RegistryProxy",
    "TokenIssuer",
    "SilentServer",
    "WanProxy",
    "warm_scene",
    "running_cluster",
    "HTTPServer",
    "ThreadingHTTPServer",
    "create_server",
    "bind",  # socket.bind
    "gunicorn",
}
# conftest.py's fixtures that start one.
SERVER_FIXTURES = {"cluster", "empty_ccr", "upstream", "ccr"}
# Modules that match the heuristic but start nothing, with the reason.
NOT_SERVERS = {
    "test_check_cli.py": "binds a trap port that --offline must never connect to; nothing listens to serve",
    "test_processes.py": "binds ports to check the harness's port picking; nothing is served",
}


def starts_servers(tree: ast.Module) -> set[str]:
    """The names in a module's code that start a server: imported or called starters, server fixtures asked for."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found |= {alias.name for alias in node.names} & STARTERS
            found |= set((node.module or "").split(".")) & STARTERS
        elif isinstance(node, ast.Import):
            found |= {part for alias in node.names for part in alias.name.split(".")} & STARTERS
        elif isinstance(node, ast.Attribute) and node.attr in STARTERS:
            found.add(node.attr)
        elif isinstance(node, ast.List) and any(
            isinstance(e, ast.Constant) and e.value == "gunicorn" for e in node.elts
        ):
            found.add("gunicorn")  # started as [python, -m, gunicorn, ...]
        elif isinstance(node, ast.FunctionDef) and (node.name.startswith("test_") or _is_fixture(node)):
            found |= {arg.arg for arg in node.args.args} & SERVER_FIXTURES
    return found


def _is_fixture(node: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)


def marked_integration(tree: ast.Module) -> bool:
    """Whether the module sets `pytestmark` to (a list holding) pytest.mark.integration."""
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)
        and "pytest.mark.integration" in ast.unparse(node.value)
        for node in tree.body
    )


MODULES = sorted(str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_a_module_that_starts_servers_is_marked_integration(name: str) -> None:
    tree = ast.parse((TESTS / name).read_text())
    starters = starts_servers(tree)
    if name in NOT_SERVERS or not starters:
        return
    assert marked_integration(tree), f"{name} starts servers ({', '.join(sorted(starters))}) but lacks pytestmark"


def test_the_heuristic_sees_a_server_and_the_marker() -> None:
    unmarked = ast.parse("from webhook.testing.processes import RegistryServer\n\ndef test_x(cluster): pass\n")
    assert starts_servers(unmarked) == {"RegistryServer", "cluster"} and not marked_integration(unmarked)
    marked = ast.parse("import pytest\nimport socket\npytestmark = pytest.mark.integration\nsocket.socket().bind(1)\n")
    assert starts_servers(marked) == {"bind"} and marked_integration(marked)
    assert starts_servers(ast.parse('run([sys.executable, "-m", "gunicorn"])')) == {"gunicorn"}
    assert not starts_servers(ast.parse("from webhook.policy.decide import plan_image\n"))
