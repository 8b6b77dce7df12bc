"""In the cluster: one Secret holds the CA and serving pair, the webhook configurations trust its CA bundle."""

from __future__ import annotations

import base64
import datetime
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from webhook.errors import CCRWebhookError
from webhook.tls.certs import CertificateError, KeyPair, load_certificates, service_dns_names
from webhook.tls.files import write_serving_files
from webhook.tls.renewal import RenewalPolicy, TLSMaterial, plan_tls_material

log = logging.getLogger(__name__)


MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ccr-webhook-certs"


@dataclass(frozen=True)
class BootstrapSettings:
    """Which Secret, Service and webhook configurations the bootstrap looks after."""

    namespace: str = "ccr-system"
    secret: str = "ccr-webhook-tls"
    service: str = "ccr-webhook"
    webhook_configurations: tuple[str, ...] = ("ccr-webhook",)
    extra_dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    policy: RenewalPolicy = field(default_factory=RenewalPolicy)
    write_dir: str | None = None

    @property
    def dns_names(self) -> list[str]:
        return service_dns_names(self.service, self.namespace, self.cluster_domain) + list(self.extra_dns_names)


@dataclass(frozen=True)
class BootstrapResult:
    """What one bootstrap pass did."""

    secret: str  # created | renewed | unchanged | external (a Secret not ours: used, never changed)
    reason: str | None
    patched: tuple[str, ...]  # "configuration/webhook" whose caBundle was set
    missing: tuple[str, ...]  # webhook configurations not found (yet)
    files_written: bool
    material: TLSMaterial


class BootstrapError(CCRWebhookError):
    """The bootstrap cannot do its job; the message says what an operator should look at."""


def bootstrap_certificates(
    api_client: Any, settings: BootstrapSettings, now: datetime.datetime | None = None
) -> BootstrapResult:
    """Make the TLS Secret valid (create, renew), set the caBundle of our webhooks, write the files.

    Safe to run in every replica at once: the Secret is written with its resourceVersion, so of two
    replicas renewing together one wins and the other reads and adopts the winner's material. A Secret
    without our managed-by label was made by someone else (bring your own certificate): it is used and
    published as it is, never changed. The caBundle is set before the files are written, so the API
    server trusts a new CA before any replica serves a certificate it signed.
    """
    from kubernetes import client  # here, not at the top: the server imports this module and needs no client

    core = client.CoreV1Api(api_client)
    action, reason, material = "unchanged", None, None
    for _attempt in range(5):
        secret = _read_secret(core, settings)
        if secret is not None and (secret.metadata.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            action, material = "external", _material_from_secret(secret, settings, external=True)
            break
        current = _material_from_secret(secret, settings) if secret is not None else None
        material, reason = plan_tls_material(
            current, settings.dns_names, list(settings.ip_addresses), settings.policy, now
        )
        if reason is None:
            break
        if _write_secret(core, settings, secret, material):
            action = "created" if secret is None else "renewed"
            log.info("TLS Secret %s/%s %s: %s", settings.namespace, settings.secret, action, reason)
            break
        log.info(
            "TLS Secret %s/%s changed under us (another replica); reading it again", settings.namespace, settings.secret
        )
    else:
        raise BootstrapError(
            f"Secret {settings.namespace}/{settings.secret} kept changing under us; is something else writing it?"
        )
    assert material is not None
    patched, missing = publish_ca_bundle(api_client, settings, material.ca_bundle)
    written = write_serving_files(settings.write_dir, material) if settings.write_dir else False
    return BootstrapResult(action, reason, patched, missing, written, material)


def _read_secret(core: Any, settings: BootstrapSettings) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_secret(settings.secret, settings.namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _material_from_secret(secret: Any, settings: BootstrapSettings, external: bool = False) -> TLSMaterial | None:
    """The material in a Secret; None if ours is incomplete (it is then made anew)."""
    data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
    ca_bundle, cert, key = data.get("ca.crt"), data.get("tls.crt"), data.get("tls.key")
    if external:
        if not (ca_bundle and cert and key):
            raise BootstrapError(
                f"Secret {settings.namespace}/{settings.secret} is not managed by {MANAGED_BY} and lacks ca.crt, "
                "tls.crt or tls.key; complete it, or delete it to have one generated"
            )
        return TLSMaterial(
            KeyPair(load_certificates(ca_bundle)[0].public_bytes(serialization.Encoding.PEM), b""),
            ca_bundle,
            KeyPair(cert, key),
        )
    if not (ca_bundle and cert and key and data.get("ca.key")):
        return None
    try:
        signing_ca = load_certificates(ca_bundle)[0].public_bytes(serialization.Encoding.PEM)
    except CertificateError:
        return None
    return TLSMaterial(KeyPair(signing_ca, data["ca.key"]), ca_bundle, KeyPair(cert, key))


def _write_secret(core: Any, settings: BootstrapSettings, existing: Any, material: TLSMaterial) -> bool:
    """Create or replace the Secret; False if another writer got there first (409)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode()

    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=settings.secret,
            namespace=settings.namespace,
            labels={MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/name": settings.service},
            resource_version=existing.metadata.resource_version if existing is not None else None,
        ),
        type="kubernetes.io/tls",
        data={
            "tls.crt": b64(material.serving.cert_pem),
            "tls.key": b64(material.serving.key_pem),
            "ca.crt": b64(material.ca_bundle),
            "ca.key": b64(material.ca.key_pem),
        },
    )
    try:
        if existing is None:
            core.create_namespaced_secret(settings.namespace, body)
        else:
            core.replace_namespaced_secret(settings.secret, settings.namespace, body)
    except ApiException as err:
        if err.status == 409:
            return False
        raise
    return True


def publish_ca_bundle(
    api_client: Any, settings: BootstrapSettings, ca_bundle: bytes
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Set `caBundle` on every webhook of the named configurations that calls our Service.

    Webhooks that call another Service (someone else's, added to the same configuration) are left
    alone. One JSON patch per configuration, guarded by `test` operations on the webhook names, so a
    configuration reordered meanwhile is not patched at the wrong index. Returns (patched, missing).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    admission = client.AdmissionregistrationV1Api(api_client)
    wanted = base64.b64encode(ca_bundle).decode()
    patched: list[str] = []
    missing: list[str] = []
    for name in settings.webhook_configurations:
        try:
            configuration = admission.read_mutating_webhook_configuration(name)
        except ApiException as err:
            if err.status == 404:
                missing.append(name)
                continue
            raise
        operations: list[dict[str, Any]] = []
        for index, webhook in enumerate(configuration.webhooks or []):
            service = webhook.client_config.service
            if service is None or (service.name, service.namespace) != (settings.service, settings.namespace):
                continue
            if webhook.client_config.ca_bundle == wanted:
                continue
            operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.name})
            operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted})
            patched.append(f"{name}/{webhook.name}")
        if operations:
            admission.patch_mutating_webhook_configuration(
                name, operations, _content_type="application/json-patch+json"
            )
            log.info("caBundle set on %s", ", ".join(p for p in patched if p.startswith(name + "/")))
    return tuple(patched), tuple(missing)


def run_certificate_bootstrap(
    api_client: Any,
    settings: BootstrapSettings,
    stop: threading.Event,
    interval_seconds: float = 300.0,
    on_pass: Callable[[BootstrapResult], None] | None = None,
) -> None:
    """Bootstrap, then check again every `interval_seconds` until `stop` is set.

    Each pass repairs whatever drifted: a renewal due, a Secret renewed by another replica, a caBundle
    that a re-apply of the manifests or a restore cleared. A failed pass (API server unreachable) is
    logged and retried sooner; the files on disk keep serving meanwhile.
    """
    retry = min(10.0, interval_seconds)
    while not stop.is_set():
        wait = interval_seconds
        try:
            result = bootstrap_certificates(api_client, settings)
            if result.missing:
                log.warning(
                    "webhook configuration(s) %s not found yet; caBundle will be set when they exist",
                    ", ".join(result.missing),
                )
                wait = retry
            if on_pass is not None:
                on_pass(result)
        except Exception as err:
            log.error("certificate bootstrap failed, retrying in %.0f s: %s", retry, err)
            wait = retry
        stop.wait(wait)
