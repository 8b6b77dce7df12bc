"""A process refuses to start on an address another process listens on; the workers of one `serve` still share.

And the front process, like `serve` and `warmer` elsewhere, logs JSON only, its version first, and has build_info."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.listen import CannotListen, ensure_free
from webhook.testing.front_process import LocalFront
from webhook.testing.processes import free_port
from webhook.version import VERSION

pytestmark = pytest.mark.integration


def listener(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # as gunicorn's workers bind
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


def test_a_free_address_passes_and_stays_free() -> None:
    port = free_port()
    ensure_free(f"127.0.0.1:{port}", "webhook.listen")
    ensure_free("127.0.0.1:0", "webhook.listen")
    listener(port, reuse_port=False).close()  # the probe left nothing bound


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_an_address_someone_listens_on_is_refused_naming_the_key(reuse_port: bool) -> None:
    port = free_port()
    with (
        listener(port, reuse_port),
        pytest.raises(CannotListen, match=rf"127.0.0.1:{port} \(front.listen\) is already"),
    ):
        ensure_free(f"127.0.0.1:{port}", "front.listen")


def test_workers_of_one_process_can_still_share_the_port_after_the_check() -> None:
    port = free_port()
    ensure_free(f"127.0.0.1:{port}", "webhook.listen")
    with listener(port, reuse_port=True), listener(port, reuse_port=True):
        pass


@pytest.mark.parametrize(
    ("command", "section", "key"),
    [
        ("front", "front", "listen"),
        ("warmer", "warmer", "listen"),
        ("warmer", "warmer", "metricsListen"),
        ("node-agent", "nodes", "listen"),
        ("node-agent", "nodes", "fallbackListen"),
    ],
)
def test_front_warmer_and_node_agent_refuse_a_taken_port_in_one_line(
    tmp_path: Path, command: str, section: str, key: str
) -> None:
    port = free_port()
    settings = {"ccr": {"registry": "127.0.0.1:1", "insecure": True}}
    settings[section] = {"listen": f"127.0.0.1:{free_port()}", key: f"127.0.0.1:{port}"}
    if section == "warmer":
        settings[section].setdefault("metricsListen", f"127.0.0.1:{free_port()}")
    if section == "nodes":
        settings[section].setdefault("fallbackListen", f"127.0.0.1:{free_port()}")
    (tmp_path / "config.yaml").write_text(json.dumps(settings))
    with listener(port, reuse_port=True):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ccr-webhook"), command, "--config", str(tmp_path / "config.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"ccr-webhook {command}: 127.0.0.1:{port} ({section}.{key}) is already in use by another process: "
        f"stop it, or set another {section}.{key}\n"
    )


def test_a_front_logs_json_only_its_version_first_and_refuses_a_second_front_on_its_port(tmp_path: Path) -> None:
    """The `ccr-webhook front` process, as the others: start-up line, build_info, and no second one on its port."""
    settings = {"ccr": {"registry": f"127.0.0.1:{free_port()}", "insecure": True}}
    with LocalFront(settings) as front:
        metrics = front.metrics().splitlines()
        second = subprocess.run(
            [str(Path(sys.executable).parent / "ccr-webhook"), "front", "--config", str(front.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = [json.loads(line) for line in front.log().splitlines()]  # every line one JSON object
    assert lines[0]["message"] == f"starting ccr-webhook {VERSION}" and lines[0]["listen"] == front.host
    assert lines[0]["config"]["front"]["listen"] == front.host
    assert f'ccr_webhook_build_info{{version="{VERSION}"}} 1.0' in metrics
    assert second.returncode == 2 and second.stderr.startswith(f"ccr-webhook front: {front.host} (front.listen) is")
