"""No connection that an image string alone chose, over the real server: listeners standing where odd images point
record every connection made to them, and none is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import urllib3

from tests.support.faulty_servers import SilentServer
from tests.support.hostile import ODD_HOSTS
from webhook.testing.processes import RegistryServer
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baits() -> Iterator[list[SilentServer]]:
    """Listeners where odd images point (127.0.0.1 and 127.0.0.2), counting every connection they get."""
    servers = [SilentServer(), SilentServer("127.0.0.2")]
    yield servers
    for server in servers:
        server.close()


def test_the_server_contacts_no_host_that_only_an_image_names(baits):
    first, second = baits
    port = first.host.rsplit(":", 1)[1]
    images = [
        f"{first.host}/team/app:1.0",
        f"{second.host}/team/app:1.0",
        f"localhost:{port}/team/app:1.0",
        f"127.0.0.1:{port}/team/app@sha256:{'a' * 64}",
        f"user:pw@{first.host}/team/app:1.0",
        f"{first.host}:80/team/app:1.0",
        f"127.1:{port}/team/app:1.0",
        *(f"{host}/team/app:1.0" for host in ODD_HOSTS),
    ]
    with RegistryServer() as upstream, RegistryServer() as ccr:
        settings_ = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [{"registry": upstream.host, "insecure": True, "prefix": "up"}],
            "webhook": {"warmerUrl": ""},
        }
        with LocalWebhook(settings_, workers=1) as hook:
            client = urllib3.HTTPSConnectionPool(
                "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
            )
            for index, image in enumerate(images):
                review = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "uid": f"egress-{index}",
                        "operation": "CREATE",
                        "object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}},
                    },
                }
                reply = client.request(
                    "POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"}
                )
                assert reply.status == 200, reply.data
                assert "patch" not in json.loads(reply.data)["response"], image
    assert first.held == [] and second.held == []
