"""The registries the registry client's tests share across this folder: open, Basic auth, token auth (with its
issuer), a client and a sample image on the open one, and a fault-injecting proxy in front of it per test."""

from __future__ import annotations

import pytest

from tests.support.local_registry import client as make_client
from tests.support.registry_auth import PASSWORD, USER, htpasswd_auth, token_auth
from tests.support.registry_proxy import RegistryProxy
from tests.support.token_issuer import TokenIssuer
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image


@pytest.fixture(scope="package")
def open_registry():
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="package")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("basic")
    with RegistryServer(auth=htpasswd_auth(workdir, USER, PASSWORD)) as server:
        yield server


@pytest.fixture(scope="package")
def issuer():
    issuer = TokenIssuer({USER: PASSWORD}, refresh_tokens={"refresh-token-never-shown": USER}).start()
    yield issuer
    issuer.stop()


@pytest.fixture(scope="package")
def token_registry(tmp_path_factory, issuer):
    with RegistryServer(auth=token_auth(tmp_path_factory.mktemp("token"), issuer)) as server:
        yield server


@pytest.fixture
def proxy(open_registry):
    proxy = RegistryProxy(open_registry.host).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="package")
def client(open_registry):
    client = make_client(open_registry.url)
    yield client
    client.close()


@pytest.fixture(scope="package")
def sample(client):
    return push_sample_image(client, "sample/single", "v1", [3000, 70000], seed=1)
