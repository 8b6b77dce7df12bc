"""What the node agent writes for containerd: hosts.toml, the CA bundle through a rotation, its one directory."""

from __future__ import annotations

import datetime
import os
import tomllib
from pathlib import Path

import pytest

from webhook.node.hosts import (
    CA_FILE,
    HOSTS_FILE,
    NodeFiles,
    TrustedCAs,
    containerd_config_paths,
    render_hosts_toml,
)

FRONT = "https://10.96.0.50:5000"
CA_PATH = "/etc/containerd/certs.d/ccr.ccr-system.svc:5000/ca.crt"


def _pem(name: str) -> str:
    return f"-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"


def test_hosts_toml_lists_the_front_first_and_the_pull_only_fallback_last() -> None:
    text = render_hosts_toml(FRONT, CA_PATH, "http://127.0.0.1:5010", "Basic cHVsbDpzZWNyZXQ=")
    document = tomllib.loads(text)
    assert document["server"] == "http://127.0.0.1:5010"  # containerd appends `server` after every [host]
    assert document["capabilities"] == ["pull"]  # never asked to resolve a tag
    front = document["host"][FRONT]
    assert front["capabilities"] == ["pull", "resolve"]
    assert front["ca"] == CA_PATH
    assert front["header"] == {"Authorization": "Basic cHVsbDpzZWNyZXQ="}  # the account goes to the front only
    assert list(document["host"]) == [FRONT]


def test_hosts_toml_for_plain_http_and_no_fallback_names_the_front_alone() -> None:
    document = tomllib.loads(render_hosts_toml("http://10.96.0.50:5000", None, None, None))
    assert "server" not in document and "ca" not in document["host"]["http://10.96.0.50:5000"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
            ("/etc/containerd/certs.d",),
        ),
        (
            '[plugins."io.containerd.grpc.v1.cri".registry]\n'
            'config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"',
            ("/etc/containerd/certs.d", "/etc/docker/certs.d"),
        ),
        (  # containerd 2.x
            'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = "/etc/containerd/certs.d"\n',
            ("/etc/containerd/certs.d",),
        ),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = ""\n', None),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n', None),
        ("", None),
    ],
)
def test_the_config_path_containerd_reads(config: str, expected: tuple[str, ...] | None) -> None:
    assert containerd_config_paths(config) == expected


def test_a_rotated_ca_is_trusted_beside_the_new_one_until_the_overlap_ends() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cas = TrustedCAs(datetime.timedelta(hours=1))
    assert cas.update(_pem("old"), start)
    assert not cas.update(_pem("old"), start + datetime.timedelta(minutes=1))  # nothing new to write
    assert cas.update(_pem("new"), start + datetime.timedelta(minutes=2))
    assert cas.bundle() == _pem("new") + _pem("old")  # the new one first, the old one still trusted
    assert not cas.update(_pem("new"), start + datetime.timedelta(minutes=61))
    assert cas.update(_pem("new"), start + datetime.timedelta(minutes=63))  # the overlap is over
    assert cas.bundle() == _pem("new")


def test_a_bundle_is_taken_certificate_by_certificate() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cas = TrustedCAs(datetime.timedelta(hours=1))
    cas.update(_pem("old") + _pem("new"), start)  # a restarted agent finds both in its ca.crt
    assert cas.update(_pem("new"), start)  # the mounted CA is the new one alone
    assert cas.bundle() == _pem("new") + _pem("old")  # the old one is still trusted for the overlap
    cas.update(_pem("new"), start + datetime.timedelta(hours=2))
    assert cas.bundle() == _pem("new")


def test_a_ca_that_comes_back_is_current_again_not_retired() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cas = TrustedCAs(datetime.timedelta(hours=1))
    cas.update(_pem("a"), start)
    cas.update(_pem("b"), start)
    cas.update(_pem("a"), start)
    assert cas.bundle() == _pem("a") + _pem("b")


def test_files_are_replaced_whole_and_removed_without_touching_anything_else(tmp_path: Path) -> None:
    neighbour = tmp_path / "docker.io"
    neighbour.mkdir()
    (neighbour / HOSTS_FILE).write_text("# someone else's\n")
    files = NodeFiles(tmp_path, "ccr.ccr-system.svc:5000")
    assert files.write(HOSTS_FILE, "one\n")
    inode = os.stat(files.directory / HOSTS_FILE).st_ino
    assert not files.write(HOSTS_FILE, "one\n")  # unchanged: not rewritten
    assert files.write(HOSTS_FILE, "two\n")
    assert os.stat(files.directory / HOSTS_FILE).st_ino != inode  # a new file renamed over the old one
    assert files.write(CA_FILE, _pem("ca"))
    assert sorted(path.name for path in files.directory.iterdir()) == [CA_FILE, HOSTS_FILE]

    files.remove()
    assert not files.directory.exists()
    assert (neighbour / HOSTS_FILE).read_text() == "# someone else's\n"


def test_removal_leaves_a_file_someone_else_put_in_the_directory(tmp_path: Path) -> None:
    files = NodeFiles(tmp_path, "ccr.ccr-system.svc:5000")
    files.write(HOSTS_FILE, "x\n")
    (files.directory / "client.cert").write_text("theirs\n")
    files.remove()
    assert [path.name for path in files.directory.iterdir()] == ["client.cert"]
