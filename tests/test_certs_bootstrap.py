"""The in-cluster certificate bootstrap, against the fake API server through the real kubernetes client:
the Secret is created and renewed, the caBundle set on our webhooks only, replicas racing agree."""

from __future__ import annotations

import base64
import datetime
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from webhook import tls
from webhook.cli import main
from webhook.testing.apiserver import LocalAPIServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
MWC_FILE = ROOT / "manifests/base/webhook/mutatingwebhookconfiguration.yaml"
HOST = "ccr-webhook.ccr-system.svc"
FOREIGN = {
    "name": "other.example.com",
    "admissionReviewVersions": ["v1"],
    "sideEffects": "None",
    "clientConfig": {"service": {"name": "other", "namespace": "other-system", "path": "/x"}, "caBundle": "b3RoZXI="},
}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture
def cluster():
    """The fake API server holding the shipped MutatingWebhookConfiguration (plus a foreign webhook)."""
    with LocalAPIServer() as server:
        configuration = yaml.safe_load(MWC_FILE.read_text())
        configuration["webhooks"].append(FOREIGN)
        server.create(configuration)
        yield server


@pytest.fixture
def api(cluster):
    client = cluster.api_client()
    yield client
    client.close()


def secret_data(cluster) -> dict[str, bytes]:
    secret = cluster.get("Secret", "ccr-webhook-tls", "ccr-system")
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def ca_bundles(cluster) -> dict[str, bytes | None]:
    configuration = cluster.get("MutatingWebhookConfiguration", "ccr-webhook")
    return {
        w["name"]: base64.b64decode(w["clientConfig"]["caBundle"]) if "caBundle" in w["clientConfig"] else None
        for w in configuration["webhooks"]
    }


def test_first_run_creates_the_secret_sets_our_ca_bundles_and_writes_the_files(cluster, api, tmp_path):
    result = tls.bootstrap_certificates(api, tls.BootstrapSettings(write_dir=str(tmp_path)))
    assert result.secret == "created" and result.missing == ()
    assert sorted(result.patched) == ["ccr-webhook/dry-run.ccr-webhook.io", "ccr-webhook/enforce.ccr-webhook.io"]
    secret = cluster.get("Secret", "ccr-webhook-tls", "ccr-system")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"][tls.MANAGED_BY_LABEL] == tls.MANAGED_BY
    data = secret_data(cluster)
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    tls.verify_serving_certificate(data["ca.crt"], data["tls.crt"], HOST)
    bundles = ca_bundles(cluster)
    assert bundles["enforce.ccr-webhook.io"] == bundles["dry-run.ccr-webhook.io"] == data["ca.crt"]
    assert bundles[FOREIGN["name"]] == b"other"  # someone else's webhook in the same configuration: untouched
    assert (tmp_path / "tls.crt").read_bytes() == data["tls.crt"] and (tmp_path / "tls.key").read_bytes() == data[
        "tls.key"
    ]
    assert (tmp_path / "ca.crt").read_bytes() == data["ca.crt"]


def test_a_second_run_changes_nothing(cluster, api, tmp_path):
    settings = tls.BootstrapSettings(write_dir=str(tmp_path))
    tls.bootstrap_certificates(api, settings)
    version = cluster.resource_version
    writes_before = len([r for r in cluster.requests if r.method != "GET"])
    result = tls.bootstrap_certificates(api, settings)
    assert (result.secret, result.patched, result.files_written) == ("unchanged", (), False)
    assert cluster.resource_version == version
    assert len([r for r in cluster.requests if r.method != "GET"]) == writes_before


def test_renewal_before_expiry_keeps_the_ca_so_the_ca_bundle_stays(cluster, api, tmp_path):
    settings = tls.BootstrapSettings(write_dir=str(tmp_path))
    tls.bootstrap_certificates(api, settings, now=now() - datetime.timedelta(days=61))  # 29 of 90 days left
    before = secret_data(cluster)
    bundle_patches = len(cluster.requests_to("PATCH", "mutatingwebhookconfigurations"))
    result = tls.bootstrap_certificates(api, settings)
    assert result.secret == "renewed" and result.reason.startswith("the serving certificate expires")
    after = secret_data(cluster)
    assert after["ca.crt"] == before["ca.crt"] and after["ca.key"] == before["ca.key"]
    assert after["tls.crt"] != before["tls.crt"]
    assert tls.describe_certificate(after["tls.crt"]).not_after - now() > datetime.timedelta(days=89)
    assert len(cluster.requests_to("PATCH", "mutatingwebhookconfigurations")) == bundle_patches  # nothing to re-publish
    assert (tmp_path / "tls.crt").read_bytes() == after["tls.crt"]


def test_a_cleared_ca_bundle_is_set_again(cluster, api):
    settings = tls.BootstrapSettings()
    tls.bootstrap_certificates(api, settings)
    configuration = cluster.get("MutatingWebhookConfiguration", "ccr-webhook")
    del configuration["webhooks"][0]["clientConfig"]["caBundle"]  # as a careless re-apply or restore would
    cluster.update(configuration)
    result = tls.bootstrap_certificates(api, settings)
    assert result.secret == "unchanged" and result.patched == ("ccr-webhook/enforce.ccr-webhook.io",)
    assert ca_bundles(cluster)["enforce.ccr-webhook.io"] == secret_data(cluster)["ca.crt"]
    (patch,) = cluster.requests_to("PATCH", "mutatingwebhookconfigurations")[-1:]
    assert patch.content_type == "application/json-patch+json"
    assert {"op": "test", "path": "/webhooks/0/name", "value": "enforce.ccr-webhook.io"} in patch.body


def test_a_missing_webhook_configuration_is_reported_not_fatal(api, cluster):
    cluster.delete("MutatingWebhookConfiguration", "ccr-webhook")
    result = tls.bootstrap_certificates(api, tls.BootstrapSettings())
    assert result.secret == "created" and result.missing == ("ccr-webhook",) and result.patched == ()


def test_a_replica_that_loses_the_race_adopts_the_winners_certificate(cluster, api):
    settings = tls.BootstrapSettings()
    tls.bootstrap_certificates(api, settings, now=now() - datetime.timedelta(days=61))
    # Both replicas decide to renew; the other one's update lands between our read and our write.
    cluster.fail_next(409, method="PUT", path_contains="/secrets/ccr-webhook-tls")
    result = tls.bootstrap_certificates(api, settings)
    assert result.secret == "renewed"  # on the second attempt, after reading again
    assert len(cluster.requests_to("PUT", "/secrets/")) == 2
    data = secret_data(cluster)
    assert result.material.serving.cert_pem == data["tls.crt"]


def test_replicas_starting_together_end_up_serving_the_same_certificate(cluster, tmp_path):
    results, errors = {}, []

    def replica(name: str) -> None:
        client = cluster.api_client()
        try:
            results[name] = tls.bootstrap_certificates(client, tls.BootstrapSettings(write_dir=str(tmp_path / name)))
        except Exception as err:
            errors.append(err)
        finally:
            client.close()

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(r.secret for r in results.values()).count("created") == 1
    served = {(tmp_path / name / "tls.crt").read_bytes() for name in results}
    assert served == {secret_data(cluster)["tls.crt"]}


def test_a_secret_someone_else_made_is_used_and_never_changed(cluster, api, tmp_path):
    ca = tls.generate_ca("corporate CA")
    pair = tls.issue_serving_cert(ca, tls.service_dns_names("ccr-webhook", "ccr-system"), days=5)  # expiring soon
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "ccr-webhook-tls", "namespace": "ccr-system"},
            "data": {
                k: base64.b64encode(v).decode()
                for k, v in {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem}.items()
            },
        }
    )
    version = cluster.get("Secret", "ccr-webhook-tls", "ccr-system")["metadata"]["resourceVersion"]
    result = tls.bootstrap_certificates(api, tls.BootstrapSettings(write_dir=str(tmp_path)))
    assert result.secret == "external"
    assert cluster.get("Secret", "ccr-webhook-tls", "ccr-system")["metadata"]["resourceVersion"] == version
    assert ca_bundles(cluster)["enforce.ccr-webhook.io"] == ca.cert_pem
    assert (tmp_path / "tls.crt").read_bytes() == pair.cert_pem


def test_an_incomplete_foreign_secret_is_an_error_that_says_what_to_do(cluster, api):
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ccr-webhook-tls", "namespace": "ccr-system"},
            "data": {},
        }
    )
    with pytest.raises(tls.BootstrapError, match="delete it to have one generated"):
        tls.bootstrap_certificates(api, tls.BootstrapSettings())


def test_watch_loop_retries_after_a_failure_and_stops_when_told(cluster, api, tmp_path):
    stop = threading.Event()
    passes: list[tls.BootstrapResult] = []

    def on_pass(result: tls.BootstrapResult) -> None:
        passes.append(result)
        if len(passes) == 2:
            stop.set()

    cluster.fail_next(503, method="GET", path_contains="/secrets/")
    thread = threading.Thread(
        target=tls.run_certificate_bootstrap,
        args=(api, tls.BootstrapSettings(write_dir=str(tmp_path)), stop, 0.01, on_pass),
    )
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert [p.secret for p in passes] == ["created", "unchanged"]
    assert (tmp_path / "tls.crt").exists()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`certs bootstrap` sets the process's logging up as the CLI does (JSON to stderr); put it back afterwards,
    or later tests' log lines would go to this test's closed capture."""
    loggers = [logging.getLogger(name) for name in ("", "gunicorn.error", "gunicorn.access")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("cli_logging")
def test_cli_bootstrap_with_a_kubeconfig(cluster, tmp_path, capsys):
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    assert main(["certs", "bootstrap", "--kubeconfig", str(kubeconfig), "--write-dir", str(tmp_path / "tls")]) == 0
    assert "secret created (no certificate yet)" in capsys.readouterr().out
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == secret_data(cluster)["tls.crt"]
    cluster.delete("MutatingWebhookConfiguration", "ccr-webhook")
    assert main(["certs", "bootstrap", "--kubeconfig", str(kubeconfig)]) == 1
    assert "not found: ccr-webhook" in capsys.readouterr().err


def test_cli_generate_then_inspect(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", "generate", "--out", str(out), "--ip", "127.0.0.1", "--days", "30"]) == 0
    tls.verify_serving_certificate((out / "ca.crt").read_bytes(), (out / "tls.crt").read_bytes(), "127.0.0.1")
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    ca_before = (out / "ca.crt").read_bytes()
    assert main(["certs", "generate", "--out", str(out), "--reuse-ca", "--service", "ccr", "--days", "30"]) == 0
    assert (out / "ca.crt").read_bytes() == ca_before
    capsys.readouterr()
    assert (
        main(
            [
                "certs",
                "inspect",
                str(out / "tls.crt"),
                "--ca",
                str(out / "ca.crt"),
                "--host",
                "ccr.ccr-system.svc",
                "--warn-days",
                "7",
            ]
        )
        == 0
    )
    assert "verified" in capsys.readouterr().out
    assert main(["certs", "inspect", str(out / "tls.crt"), "--ca", str(out / "ca.crt"), "--host", HOST]) == 1
    assert main(["certs", "inspect", str(out / "tls.crt"), "--warn-days", "60"]) == 1  # expires in 30 days
    assert "EXPIRING" in capsys.readouterr().out
