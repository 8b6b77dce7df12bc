"""The registry client over TLS with a private CA: refused without caFile, trusted with it (CCR and upstreams)."""

from __future__ import annotations

import pytest

from tests.support.local_registry import client as make_client
from webhook import tls
from webhook.config import parse_config
from webhook.registry.client import (
    Registries,
    RegistryUnavailable,
)
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_ca_registry(tmp_path_factory):
    """A registry serving HTTPS for 127.0.0.1 with a certificate from a CA no system trusts; and that CA's file."""
    workdir = tmp_path_factory.mktemp("private-ca")
    ca = tls.generate_ca("ccr-webhook test CA")
    tls.issue_serving_cert(ca, [], ["127.0.0.1"]).write(workdir / "tls.crt", workdir / "tls.key")
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    with RegistryServer(tls=(workdir / "tls.crt", workdir / "tls.key")) as server:
        yield server, workdir / "ca.crt"


def test_a_registry_with_a_private_ca_fails_tls_without_ca_file_and_is_trusted_with_it(private_ca_registry, tmp_path):
    server, ca_file = private_ca_registry
    assert server.url == f"https://{server.host}"
    with pytest.raises(RegistryUnavailable, match=r"TLS failed: .*certificate verify failed") as raised:
        make_client(server.url, insecure=False).resolve_digest("tls/app", "v1")
    assert server.url in str(raised.value)
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(tls.generate_ca("another CA").cert_pem)
    with pytest.raises(RegistryUnavailable, match=r"TLS failed: .*certificate verify failed"):
        make_client(server.url, insecure=False, ca_file=str(other_ca)).resolve_digest("tls/app", "v1")
    # caFile in the configuration reaches the client, for the CCR and for an upstream alike
    registries = Registries(
        parse_config(
            {
                "ccr": {"registry": server.host, "caFile": str(ca_file)},
                "upstreams": [{"registry": "mirror.local:5000", "endpoint": server.url, "caFile": str(ca_file)}],
            }
        )
    )
    pushed = push_sample_image(registries.ccr, "tls/app", "v1", [500], seed=10)
    assert registries.upstream("mirror.local:5000").resolve_digest("tls/app", "v1") == pushed.digest
    registries.close()
