"""A real containerd daemon as a node, for tests and benchmarks: its own config, root, state and unix socket.

Debian's `containerd` 1.6 runs as a pull client only: the CRI plugin and the kernel-dependent snapshotters
are disabled and nothing listens on TCP. Pulls go through `ctr` with `--hosts-dir`, which stands for
containerd's `config_path`: the node sees exactly the `hosts.toml` and CA the node side of the product wrote.
Images are unpacked by the native snapshotter (copies, no lasting mounts); whatever is left mounted under the
daemon's root is unmounted before its directories are removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CONTAINERD_BINARY = shutil.which("containerd") or "/usr/bin/containerd"
CTR_BINARY = shutil.which("ctr") or "/usr/bin/ctr"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.internal.v1.opt",
    "io.containerd.tracing.processor.v1.otlp",
)


def containerd_unavailable() -> str | None:
    """Why no containerd daemon can run here (a reason for pytest.skip), or None when one can."""
    if os.geteuid() != 0:
        return "containerd needs root (CI runs as root)"
    for binary in (CONTAINERD_BINARY, CTR_BINARY):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing: apt-get install containerd (./dev installs it)"
    return None


@dataclass(frozen=True)
class Pulled:
    """How one `ctr` pull ended: its exit code and what it printed."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class ContainerdNode:
    """One containerd daemon under a temporary directory; a context manager that always stops and removes it."""

    def __init__(self, name: str = "node") -> None:
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ccr-containerd-{name}-"))
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.socket = self.workdir / "containerd.sock"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self.process: subprocess.Popen | None = None

    def _write_config(self) -> None:
        disabled = ", ".join(f'"{plugin}"' for plugin in DISABLED_PLUGINS)
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"disabled_plugins = [{disabled}]\n"
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            '  level = "warn"\n'
            "[metrics]\n"
            '  address = ""\n'
        )

    def start(self) -> ContainerdNode:
        """Start the daemon and wait (bounded) until it answers on its socket."""
        self._write_config()
        (self.workdir / "tmp").mkdir(exist_ok=True)  # temporary mounts of an unpack land here, under cleanup's eye
        env = {**os.environ, "TMPDIR": str(self.workdir / "tmp")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [CONTAINERD_BINARY, "--config", str(self.config_path)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd {self.name} exited with {self.process.returncode}:\n{self.log()}")
            if self.socket.exists() and self._ctr("version", timeout=5.0).ok:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"containerd {self.name} did not answer within {START_TIMEOUT_SECONDS} s:\n{self.log()}")

    def log(self) -> str:
        """What the daemon wrote so far (the end of it)."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def _ctr(self, *args: str, timeout: float) -> Pulled:
        try:
            done = subprocess.run(
                [CTR_BINARY, "--address", str(self.socket), "--namespace", "ccr-tests", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            output = (err.stdout or b"") + (err.stderr or b"")
            text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
            return Pulled(-1, f"ctr {' '.join(args)}: no answer within {timeout} s\n{text}")
        return Pulled(done.returncode, done.stdout + done.stderr)

    def pull(
        self,
        reference: str,
        hosts_dir: str | Path,
        timeout: float = 120.0,
        concurrency: int = 3,
        snapshotter: str = "native",
    ) -> Pulled:
        """Pull `reference` as containerd's CRI plugin would (3 layers at once, then unpacked: by the native
        snapshotter, which mounts nothing; `overlayfs`, the CRI default, mounts while it unpacks), configured by
        `hosts_dir` alone (containerd's `config_path`)."""
        return self._ctr(
            "images",
            "pull",
            "--hosts-dir",
            str(hosts_dir),
            "--max-concurrent-downloads",
            str(concurrency),
            "--snapshotter",
            snapshotter,
            reference,
            timeout=timeout,
        )

    def images(self) -> list[str]:
        """The image names this node holds."""
        listed = self._ctr("images", "list", "--quiet", timeout=30.0)
        return [line for line in listed.output.splitlines() if line.strip()] if listed.ok else []

    def forget(self) -> None:
        """Remove every image and all content, so the next pull of anything is cold again."""
        for name in self.images():
            self._ctr("images", "remove", "--sync", name, timeout=30.0)
        content = self._ctr("content", "list", "--quiet", timeout=30.0)
        digests = [line for line in content.output.splitlines() if line.startswith("sha256:")]
        if digests:
            self._ctr("content", "remove", *digests, timeout=30.0)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after a bounded wait)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_SECONDS)
        self.process = None

    def cleanup(self) -> None:
        """Stop the daemon, unmount anything left under its root, remove its directories."""
        self.stop()
        for mount in _mounts_under(self.workdir):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30.0, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ContainerdNode:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _mounts_under(directory: Path) -> list[str]:
    """Mount points below `directory`, deepest first."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(directory) + "/"
    found = [
        fields[1] for fields in (line.split() for line in lines) if len(fields) > 1 and fields[1].startswith(prefix)
    ]
    return sorted(found, key=len, reverse=True)
