"""The rooms of webhook/ import downwards only, the policy core does no I/O, and production never imports the harness.

Read from the source with `ast`, so the rule holds for lazy imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "webhook"

# Which rooms each room may import, besides itself. A room is a subpackage or a top-level module.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "logs": set(),
    "listen": {"errors", "http_service"},
    "config": {"errors"},
    "policy": {"config", "errors"},
    "registry": {"config", "errors", "policy"},
    "copier": {"config", "errors", "policy", "registry"},
    "http_service": {"errors"},
    "hints": {"config", "errors", "policy", "http_service"},
    "kube": {"config", "errors"},
    "tls": {"config", "errors", "kube"},
    "admission": {"config", "errors", "version", "logs", "policy", "registry", "hints", "http_service", "tls"},
    "retention": {"config", "errors", "logs", "policy", "registry", "kube"},
    # front asks retention's storage budget (retention/budget.py) before a cold fetch: one measure for the
    # writers and for eviction, as the warmer does; retention never imports front.
    "front": {
        "config",
        "errors",
        "version",
        "logs",
        "policy",
        "registry",
        "copier",
        "http_service",
        "tls",
        "kube",
        "retention",
    },
    "node": {"config", "errors", "version", "logs", "policy", "registry", "front", "http_service", "kube"},
    "warmer": {
        "config",
        "errors",
        "version",
        "logs",
        "policy",
        "registry",
        "copier",
        "hints",
        "http_service",
        "kube",
        "retention",
    },
    "commands": {
        "config",
        "errors",
        "version",
        "listen",
        "logs",
        "policy",
        "registry",
        "copier",
        "kube",
        "tls",
        "admission",
        "warmer",
        "retention",
        "front",
        "node",
    },
    "cli": {"config", "errors", "version", "registry", "copier", "commands"},
    "testing": set(),  # the harness sits on top: filled in below with every room
}
ALLOWED["testing"] = set(ALLOWED) - {"testing"}
# The one production module that may import the harness: the demo command, lazily.
HARNESS_USERS = {"webhook/commands/demo.py"}
# What the pure core must never import: sockets, HTTP, processes, threads, the Kubernetes client.
IO_MODULES = {
    "socket",
    "ssl",
    "http",
    "urllib",
    "urllib3",
    "requests",
    "subprocess",
    "threading",
    "concurrent",
    "asyncio",
    "kubernetes",
    "gunicorn",
    "flask",
    "shutil",
    "tempfile",
    "select",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """Every absolute module name `path` imports, at any depth of the file."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "webhook":
                names.extend(f"webhook.{alias.name}" for alias in node.names)
            else:
                names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write the absolute webhook.… name")
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_point_down(path: Path) -> None:
    room = _room(path)
    if room == "__init__":
        return
    assert room in ALLOWED, f"{room}: a new room; place it in ALLOWED and in docs/architecture.md"
    relative = str(path.relative_to(PACKAGE.parent))
    for name in _imports(path):
        if not name.startswith("webhook."):
            continue
        target = name.split(".")[1]
        if target == "testing" and relative in HARNESS_USERS:
            continue
        assert target == room or target in ALLOWED[room], f"{relative} imports {name}: {room} may not import {target}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "policy").rglob("*.py")), ids=lambda p: p.name)
def test_policy_core_does_no_io(path: Path) -> None:
    for name in _imports(path):
        assert name.split(".")[0] not in IO_MODULES, f"policy/{path.name} imports {name}: the policy core is pure"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import and an I/O import in the core are both seen."""
    module = tmp_path / "decide.py"
    module.write_text("import socket\ndef f():\n    from webhook.admission import app\n")
    assert _imports(module) == ["socket", "webhook.admission"]
