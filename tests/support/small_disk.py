"""A registry whose storage is a tmpfs of a few hundred KiB: a CCR whose disk fills up, for real.

The registry runs under `unshare --mount` with the tmpfs mounted in its own mount namespace, so the
mount exists for that process only and vanishes with it (nothing stays mounted if a test dies), and a
full disk is answered with the registry's own error (HTTP 500, `no space left on device`). `grow()`
remounts it larger, as an operator expanding the volume would. Mounting needs root (CAP_SYS_ADMIN), as
the developers' machines and CI have; `supported()` says whether this machine allows it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from webhook.testing.processes import RegistryServer

_MOUNT_THEN_RUN = 'mount -t tmpfs -o "size=$1" tmpfs "$0" && shift && exec "$@"'


def supported() -> bool:
    """Whether a process may mount a tmpfs in a mount namespace of its own here."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


class SmallDiskRegistry(RegistryServer):
    """A RegistryServer storing into a private tmpfs of `size_bytes`."""

    def __init__(self, size_bytes: int) -> None:
        super().__init__()
        self.size_bytes = size_bytes

    def command(self, config: Path) -> list[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _MOUNT_THEN_RUN,
            str(self.root),
            str(self.size_bytes),
            *super().command(config),
        ]

    def grow(self, size_bytes: int) -> None:
        """Remount the registry's tmpfs with room for `size_bytes`, while it runs."""
        assert self.process is not None, "the registry is not running"
        subprocess.run(
            ["nsenter", "-t", str(self.process.pid), "-m", "mount", "-o", f"remount,size={size_bytes}", str(self.root)],
            check=True,
            capture_output=True,
            timeout=10,
        )
        self.size_bytes = size_bytes
