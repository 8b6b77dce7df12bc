"""Secrets stay secret and TLS stays strict, on the real processes.

The webhook and the warmer run with registry credentials (a token-auth upstream, an htpasswd upstream given
the wrong password, an htpasswd CCR), errors are provoked on purpose (refused credentials, a missing tag,
failed warms), and then every log line, the /metrics of both, the Events in the API server and every
admission answer are searched for the passwords, their Basic forms and every token the token service issued.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.support.registry_auth import htpasswd_auth, token_auth
from tests.support.token_issuer import TokenIssuer
from tests.support.waiting import wait_until
from tests.support.warmer_scene import labelled_namespace, pod
from webhook.registry.client import RegistryClient
from webhook.testing.apiserver import LocalAPIServer
from webhook.testing.processes import RegistryServer
from webhook.testing.sample_image import push_sample_image
from webhook.testing.warmer_process import LocalWarmer
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

USER = "robot"
TOKEN_PASSWORD, CCR_PASSWORD, RIGHT_BASIC_PASSWORD = "t0ken-upstream-pa55", "ccr-pa55-w0rd", "basic-upstream-pa55"
WRONG_BASIC_PASSWORD = "wr0ng-basic-pa55"  # what the webhook is given for the htpasswd upstream


def basic(password: str) -> str:
    return base64.b64encode(f"{USER}:{password}".encode()).decode()


def docker_config(path: Path, passwords: dict[str, str]) -> Path:
    """A docker config.json with `USER` and a password for each host."""
    path.write_text(json.dumps({"auths": {host: {"auth": basic(password)} for host, password in passwords.items()}}))
    return path


def https(hook: LocalWebhook) -> urllib3.HTTPSConnectionPool:
    """A client of the webhook server trusting its CA."""
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1", hook.port, cert_reqs="CERT_REQUIRED", ca_certs=str(hook.ca_file), timeout=10, retries=False
    )


class Cluster:
    """The registries, the token service, the fake API server, the warmer and the webhook of this module."""

    def __init__(
        self,
        workdir: Path,
        issuer: TokenIssuer,
        tokened: RegistryServer,
        basic_up: RegistryServer,
        ccr: RegistryServer,
        api: LocalAPIServer,
        digest: str,
    ) -> None:
        self.workdir, self.issuer, self.api = workdir, issuer, api
        self.tokened, self.basic_up, self.ccr = tokened, basic_up, ccr
        self.good = f"{tokened.host}/team/app:1.0"
        self.refused = f"{basic_up.host}/team/app:1.0"  # refused when its tag is resolved
        self.refused_copy = f"{self.refused}@{digest}"  # pinned: refused when it is copied
        self.missing = f"{tokened.host}/team/app:9.9"
        self.answers: list[bytes] = []

    def settings(self, credentials: Path) -> dict:
        registries = {"insecure": True, "credentials": str(credentials)}
        return {
            "ccr": {"registry": self.ccr.host, **registries},
            "upstreams": [
                {"registry": self.tokened.host, "prefix": "a", **registries},
                {"registry": self.basic_up.host, "prefix": "b", **registries},
            ],
            "resolver": {"negativeCacheSeconds": 0.2, "ccrCacheSeconds": 0.2},
            "warmer": {"maxAttempts": 1, "leaseSeconds": 2, "eventIntervalSeconds": 0},
        }

    def admit(self, hook: LocalWebhook, image: str, uid: str) -> None:
        """Send a review for `image`; keep the raw answer."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": uid, "operation": "CREATE", "object": pod(uid, image)},
        }
        reply = https(hook).request(
            "POST", "/mutate", body=json.dumps(review), headers={"Content-Type": "application/json"}
        )
        assert reply.status == 200, reply.data
        self.answers.append(reply.data)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="ccr-secrets-"))
    for sub in ("up", "ccr"):
        (workdir / sub).mkdir()
    issuer = TokenIssuer({USER: TOKEN_PASSWORD}, anonymous_pull=False).start()
    try:
        with (
            RegistryServer(auth=token_auth(workdir, issuer)) as tokened,
            RegistryServer(auth=htpasswd_auth(workdir / "up", USER, RIGHT_BASIC_PASSWORD)) as basic_up,
            RegistryServer(auth=htpasswd_auth(workdir / "ccr", USER, CCR_PASSWORD)) as ccr,
            LocalAPIServer() as api,
        ):
            for server, password in ((tokened, TOKEN_PASSWORD), (basic_up, RIGHT_BASIC_PASSWORD)):
                writer = RegistryClient(
                    server.url,
                    insecure=True,
                    credentials=str(docker_config(workdir / f"{server.port}.json", {server.host: password})),
                    connect_timeout=2,
                    read_timeout=10,
                    max_connections=2,
                )
                digest = push_sample_image(writer, "team/app", "1.0", [2048], seed=41).digest
            yield Cluster(workdir, issuer, tokened, basic_up, ccr, api, digest)
    finally:
        issuer.stop()


def secrets_of(cluster: Cluster) -> list[str]:
    """Every string that must never show: passwords, their Basic forms, every token issued so far."""
    passwords = (TOKEN_PASSWORD, CCR_PASSWORD, RIGHT_BASIC_PASSWORD, WRONG_BASIC_PASSWORD)
    return [*passwords, *(basic(password) for password in passwords), *cluster.issuer.issued]


def test_credentials_and_tokens_never_show_in_logs_metrics_events_or_answers(cluster):
    credentials = docker_config(
        cluster.workdir / "config.json",
        {
            cluster.tokened.host: TOKEN_PASSWORD,
            cluster.basic_up.host: WRONG_BASIC_PASSWORD,
            cluster.ccr.host: CCR_PASSWORD,
        },
    )
    settings = cluster.settings(credentials)
    cluster.api.create(labelled_namespace())
    for name, image in (("good", cluster.good), ("refused", cluster.refused_copy), ("missing", cluster.missing)):
        cluster.api.create(pod(name, image))  # the warmer's Pod watch warms them: Events on each
    warmer = LocalWarmer(settings, cluster.api.write_kubeconfig(cluster.workdir / "kubeconfig"), "secrets").start()
    webhook = {**settings, "webhook": {"warmerUrl": f"http://127.0.0.1:{warmer.hint_port}"}}
    try:
        with LocalWebhook(webhook, workers=1, serve_args=["--log-level", "debug"]) as hook:
            for uid, image in enumerate(
                (cluster.good, cluster.refused, cluster.refused_copy, cluster.missing, cluster.good)
            ):
                cluster.admit(hook, image, f"uid-{uid}")
            warmer.hint(
                [{"source": cluster.refused}, {"source": cluster.missing}, {"source": cluster.refused_copy}], wait=10
            )
            reasons = lambda: {event["reason"] for event in cluster.api.objects("Event", "team")}  # noqa: E731
            wait_until(lambda: {"CCRWarmFinished", "CCRWarmFailed"} <= reasons(), timeout=30, what="warm Events")
            metrics = https(hook).request("GET", "/metrics").data.decode()
            webhook_log = hook.log()
        warmer_metrics, warmer_log = warmer.metrics(), warmer.log()
    finally:
        warmer.cleanup()
    events = json.dumps(cluster.api.objects("Event", "team"))
    assert "refused the configured user and password" in webhook_log + events  # the errors did happen
    assert cluster.issuer.issued, "the token service was used"
    for where, text in (
        ("webhook log", webhook_log),
        ("warmer log", warmer_log),
        ("webhook /metrics", metrics),
        ("warmer /metrics", warmer_metrics),
        ("Events", events),
        ("admission answers", b"".join(cluster.answers).decode()),
    ):
        for secret in secrets_of(cluster):
            assert secret not in text, f"a credential or token shows in the {where}"


def test_only_tls_1_2_or_newer_is_served_and_the_key_is_private(cluster):
    with LocalWebhook({"ccr": {"registry": cluster.ccr.host, "insecure": True}}, workers=1) as hook:
        assert (hook.workdir / "tls.key").stat().st_mode & 0o777 == 0o600
        for version, served in (
            (ssl.TLSVersion.TLSv1_1, False),
            (ssl.TLSVersion.TLSv1_2, True),
            (ssl.TLSVersion.TLSv1_3, True),
        ):
            context = ssl.create_default_context(cafile=str(hook.ca_file))
            context.minimum_version = context.maximum_version = version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1, so the refusal is the server's
            with socket.create_connection(("127.0.0.1", hook.port), timeout=10) as raw:
                if served:
                    with context.wrap_socket(raw, server_hostname="localhost") as conn:
                        assert (
                            conn.version()
                            == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
                        )
                else:
                    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):  # the server's alert
                        context.wrap_socket(raw, server_hostname="localhost")
