"""Local servers for the demo, tests and benchmarks: real distribution registries and ccr-webhook processes, loopback.

Product code, not test code, because `ccr-webhook demo` runs the same servers the tests do."""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

_PORTS_BELOW_EPHEMERAL = 12000  # how far below the kernel's ephemeral range free_port picks
_handed_out: collections.deque[int] = collections.deque(maxlen=4096)  # not handed out twice in a run


def _ephemeral_start() -> int:
    """The first port the kernel gives outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, and that no outgoing connection will take.

    Picked below the ephemeral range: a port the kernel hands out for bind(0) can be taken as the local
    port of an outgoing connection between this call and the server's own bind, which made servers exit
    with EADDRINUSE. The same port is never handed out twice in one run (a caller may not have bound yet).
    """
    top = _ephemeral_start()
    bottom = max(1024, top - _PORTS_BELOW_EPHEMERAL)
    for _ in range(200):
        port = random.randrange(bottom, top)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.append(port)
        return port
    raise RuntimeError(f"no free port between {bottom} and {top} after 200 tries")


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """Block until 127.0.0.1:`port` accepts connections; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate `process` and reap it, killing it if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


class RegistryServer:
    """One distribution registry process with its own storage directory.

    `auth` is None (open), or a dict placed as the registry's `auth:` section (htpasswd, token).
    `tls` is None (plain HTTP), or the paths of a PEM certificate and key to serve HTTPS with.
    `storage` is None (the filesystem driver under `root`), or the `storage:` section to use instead
    (`webhook.testing.s3.S3Server.storage()`: several registries on one bucket, as production's replicas).
    Restartable: stop() then start() keeps the storage and the port.
    """

    def __init__(
        self,
        auth: dict | None = None,
        root: Path | None = None,
        tls: tuple[str | Path, str | Path] | None = None,
        storage: dict[str, Any] | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ccr-registry-"))
        self.root = root or self.workdir / "storage"
        self.auth = auth
        self.tls = tls
        self.storage = storage
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        """host:port, as an image reference names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _write_config(self) -> Path:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                **(self.storage or {"filesystem": {"rootdirectory": str(self.root)}}),
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "ccr-webhook-tests"},
        }
        if self.auth:
            config["auth"] = self.auth
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        path = self.workdir / "config.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def command(self, config: Path) -> list[str]:
        """The command line that serves `config`; a subclass may wrap it (in a namespace, under limits)."""
        return [REGISTRY_BINARY, "serve", str(config)]

    def start(self) -> RegistryServer:
        config = self._write_config()
        # The machine's AWS settings (a CA bundle, a profile) are not for a local registry: its S3 is on loopback.
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(self.command(config), stdout=log, stderr=log, env=env)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class LocalCommand:
    """A `ccr-webhook COMMAND --config FILE ...` subprocess with its own work directory, configuration file and log.

    The configuration is written from `settings` (the YAML mapping); the subprocess imports this very
    source tree, so the demo and the tests run the code they ship.
    """

    def __init__(self, command: str, settings: dict, prefix: str) -> None:
        self.command = command
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = self.workdir / f"{command}.log"
        self.process: subprocess.Popen | None = None
        self.source_root = Path(__file__).resolve().parents[2]  # the directory holding webhook/ (another: a baseline)

    def launch(self, *args: str) -> subprocess.Popen:
        """Start the command with `args` after `--config FILE`, its output going to the log."""
        path = os.pathsep.join(filter(None, [str(self.source_root), os.environ.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "webhook.cli", self.command, "--config", str(self.config_path), *args]
        with open(self.log_path, "ab") as log:  # from the source root: it is imported before an installed copy
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": path}, cwd=self.source_root
            )
        return self.process

    def log(self) -> str:
        """Everything the command wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_listening(self, port: int, timeout: float) -> None:
        """Block until the launched command listens on `port`; if it exits or times out, say why from its log."""
        try:
            wait_for_port(port, self.process, timeout)
        except (RuntimeError, TimeoutError) as err:
            raise type(err)(f"ccr-webhook {self.command}: {err}; its log ends:\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Kubernetes stops a container, and the exit code once it has stopped."""
        if self.process is None:
            raise RuntimeError(f"ccr-webhook {self.command} was never started")
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def cleanup(self) -> None:
        """Stop the process and remove its work directory."""
        if self.process is not None:
            stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
