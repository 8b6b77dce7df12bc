"""What the node agent writes for containerd, and how: `hosts.toml` and the CA under `<config_path>/<ccr host>/`.

containerd (1.5 and later, with `config_path` set) reads `<config_path>/<registry host>/hosts.toml` on every
pull and tries its `[host]` entries in order, then `server`: the front at the CCR Service's address first,
over TLS verified by the CA written beside it, then the agent's node-local fallback, pull-only, on loopback.
Files are replaced atomically (a temporary file in the same directory, then rename), so a pull never reads
half a file; nothing outside that one directory is touched, and `remove` takes away exactly what was written.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HOSTS_FILE = "hosts.toml"
CA_FILE = "ca.crt"
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def _quoted(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_hosts_toml(front_url: str, ca_path: str | None, fallback_url: str | None, authorization: str | None) -> str:
    """hosts.toml for the CCR's name: the front (`front_url`), then the pull-only fallback when there is one.

    `ca_path` is the CA file as containerd sees it (TLS only); `authorization` an `Authorization` header value
    sent to the front alone (the CCR's pull account), never to the fallback."""
    lines = ["# Written by ccr-webhook node-agent; rewritten while it runs, removed when it is uninstalled."]
    if fallback_url is not None:
        lines += [f"server = {_quoted(fallback_url)}", 'capabilities = ["pull"]']
    lines += ["", f"[host.{_quoted(front_url)}]", '  capabilities = ["pull", "resolve"]']
    if ca_path is not None:
        lines.append(f"  ca = {_quoted(ca_path)}")
    if authorization is not None:
        lines += [f"  [host.{_quoted(front_url)}.header]", f"    Authorization = {_quoted(authorization)}"]
    return "\n".join(lines) + "\n"


def containerd_config_paths(config_text: str) -> tuple[str, ...] | None:
    """The `config_path` directories containerd's main config gives its CRI image service (1.x: the `cri` plugin's
    `registry`, 2.x: `io.containerd.cri.v1.images`), or None when it sets none; raises ValueError if not TOML."""
    document = tomllib.loads(config_text)
    plugins = document.get("plugins", {})
    for plugin in ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "cri"):
        registry = plugins.get(plugin, {}).get("registry", {}) if isinstance(plugins.get(plugin), dict) else {}
        value = registry.get("config_path") if isinstance(registry, dict) else None
        if isinstance(value, str) and value.strip():
            return tuple(part for part in value.split(os.pathsep) if part)
    return None


def certificates(pem: str) -> list[str]:
    """The PEM certificate blocks of a bundle, each normalized to end with one newline."""
    return [block.strip() + "\n" for block in _PEM_BLOCK.findall(pem)]


@dataclass
class TrustedCAs:
    """The CA bundle nodes trust for the front: the current CAs, plus each replaced one until its overlap ends."""

    overlap: datetime.timedelta
    current: list[str] = field(default_factory=list)
    retired: dict[str, datetime.datetime] = field(default_factory=dict)  # CA PEM -> until when it is still trusted

    def update(self, pem: str, now: datetime.datetime) -> bool:
        """Take the certificates of `pem` (one CA or a bundle) as current; a CA no longer in it is trusted on for the
        overlap. True when the bundle to write changed."""
        before = self.bundle()
        fresh = certificates(pem)
        for old in self.current:
            if old not in fresh:
                self.retired[old] = now + self.overlap
        self.current = fresh
        self.retired = {old: until for old, until in self.retired.items() if until > now and old not in fresh}
        return self.bundle() != before

    def bundle(self) -> str:
        """Every trusted CA, the current ones first, in one PEM file."""
        return "".join(self.current + list(self.retired))


class NodeFiles:
    """The agent's one directory on the node, `<host_dir>/<ccr host>`: written atomically, removed whole."""

    def __init__(self, host_dir: str | Path, registry: str) -> None:
        self.directory = Path(host_dir) / registry

    def read(self, name: str) -> str:
        """What file `name` holds now ('' when it does not exist)."""
        try:
            return (self.directory / name).read_text()
        except OSError:
            return ""

    def write(self, name: str, text: str) -> bool:
        """Replace file `name` with `text` unless it holds that already; True when it was written."""
        if self.read(name) == text:
            return False
        path = self.directory / name
        self.directory.mkdir(mode=0o755, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600 if name == HOSTS_FILE else 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return True

    def remove(self) -> None:
        """Remove what the agent wrote (its files, then its directory if nothing else is left in it)."""
        for name in (HOSTS_FILE, CA_FILE):
            (self.directory / name).unlink(missing_ok=True)
        for leftover in self.directory.glob(".*.*"):  # temporary files of a write cut short
            leftover.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass  # absent, or holding files someone else put there: left alone
