"""Certificates for the webhook's TLS: a CA, serving certificates it signs, their renewal, and a server
context that picks up a renewed certificate without a restart.

The API server refuses a serving certificate that names its host only in the Common Name, so every
name and address goes into the subjectAlternativeName extension.

In the cluster, `bootstrap_certificates` keeps one Secret (CA and serving pair) valid and publishes the
CA as the `caBundle` of the webhook configurations; `reloading_ssl_context` serves whatever pair is on
disk at the moment of each TLS handshake.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from webhook.errors import CCRWebhookError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write both files; the key is created readable by its owner only."""
        Path(cert_path).write_bytes(self.cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key_pem)
        os.chmod(key_path, 0o600)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_ca(
    common_name: str = "ccr-webhook CA", days: int = 3650, *, now: datetime.datetime | None = None
) -> KeyPair:
    """A self-signed CA that may sign serving certificates only (path length 0); `now` backdates it for tests."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now or _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(
    ca: KeyPair,
    dns_names: list[str],
    ip_addresses: list[str] | None = None,
    days: int = 365,
    *,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A serving certificate signed by `ca`, valid for every DNS name and IP address given (as SANs).

    It never outlives its CA: a chain whose leaf is still valid but whose CA has expired fails to verify.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    ip_addresses = ip_addresses or []
    sans += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    now = now or _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(dns_names) or list(ip_addresses))[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,  # type: ignore[arg-type]
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# ---------------------------------------------------------------------------------------------------
# Looking at certificates


class CertificateError(CCRWebhookError):
    """A certificate, key or chain is unusable; the message says which and why."""


def service_dns_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    """Every name under which a Service is reached in the cluster; the API server uses `<svc>.<ns>.svc`."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ]


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; CertificateError if there is none or one is broken."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise CertificateError(f"not a PEM certificate bundle: {err}") from None
    return certs


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator wants to know about a certificate."""

    subject: str
    issuer: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool

    def remaining_fraction(self, now: datetime.datetime) -> float:
        """How much of the validity period is left at `now`: 1.0 when issued, 0.0 at expiry (clamped)."""
        lifetime = (self.not_after - self.not_before).total_seconds()
        left = (self.not_after - now).total_seconds()
        return max(0.0, min(1.0, left / lifetime)) if lifetime > 0 else 0.0


def describe_certificate(cert_pem: bytes) -> CertificateInfo:
    """The first certificate of `cert_pem`, described."""
    cert = load_certificates(cert_pem)[0]
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(address) for address in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        is_ca=is_ca,
    )


def key_matches_certificate(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of the first certificate in `cert_pem`."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = load_certificates(cert_pem)[0]
    except (ValueError, TypeError, CertificateError):
        return False
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == (cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def verify_serving_certificate(
    ca_bundle_pem: bytes, cert_pem: bytes, host: str, now: datetime.datetime | None = None
) -> None:
    """Check, as a TLS client would, that `cert_pem` chains to a CA of the bundle and is valid for `host`.

    `host` is a DNS name or an IP address. Raises CertificateError saying what is wrong.
    """
    try:
        address = ipaddress.ip_address(host)
        subject: x509.GeneralName = x509.IPAddress(address)
    except ValueError:
        subject = x509.DNSName(host)
    chain = load_certificates(cert_pem)
    builder = PolicyBuilder().store(Store(load_certificates(ca_bundle_pem))).time(now or _now())
    try:
        builder.build_server_verifier(subject).verify(chain[0], chain[1:])
    except Exception as err:  # cryptography's VerificationError is not importable under one stable name
        raise CertificateError(f"certificate is not valid for {host}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# Deciding what to serve: the CA, the bundle of CAs clients trust, the serving pair


@dataclass(frozen=True)
class TLSMaterial:
    """The CA that signs (cert + key), the CA bundle clients trust (signing CA first), the serving pair."""

    ca: KeyPair
    ca_bundle: bytes
    serving: KeyPair


@dataclass(frozen=True)
class RenewalPolicy:
    """Lifetimes and when to renew.

    A serving certificate is reissued when less than `renew_fraction` of its life is left (a third, as
    cert-manager does), so a renewal that fails has weeks of retries before anything expires. The CA is
    replaced when less than two serving lifetimes are left; the old CA stays in the bundle until it
    expires, so certificates it signed keep verifying while the new ones roll out.
    """

    serving_days: int = 90
    ca_days: int = 3650
    renew_fraction: float = 1 / 3

    def serving_due(self, info: CertificateInfo, now: datetime.datetime) -> bool:
        return info.remaining_fraction(now) < self.renew_fraction

    def ca_due(self, info: CertificateInfo, now: datetime.datetime) -> bool:
        return info.not_after - now < datetime.timedelta(days=2 * self.serving_days)


def plan_tls_material(
    current: TLSMaterial | None,
    dns_names: list[str],
    ip_addresses: list[str],
    policy: RenewalPolicy,
    now: datetime.datetime | None = None,
) -> tuple[TLSMaterial, str | None]:
    """The material to use from now on, and why it changed (None: `current` is fine, keep it as it is)."""
    now = now or _now()
    if current is None:
        return _fresh_material(None, dns_names, ip_addresses, policy, now), "no certificate yet"
    if not key_matches_certificate(current.ca.cert_pem, current.ca.key_pem):
        return _fresh_material(
            None, dns_names, ip_addresses, policy, now
        ), "the CA key does not match the CA certificate"
    ca_info = describe_certificate(current.ca.cert_pem)
    if policy.ca_due(ca_info, now):
        return _fresh_material(
            current, dns_names, ip_addresses, policy, now
        ), f"the CA expires {ca_info.not_after:%Y-%m-%d}"
    reason = _serving_problem(current, dns_names, ip_addresses, policy, now)
    bundle = _bundle([load_certificates(current.ca.cert_pem)[0], *load_certificates(current.ca_bundle)], now)
    if reason is None and bundle == current.ca_bundle:
        return current, None
    serving = (
        current.serving
        if reason is None
        else issue_serving_cert(current.ca, dns_names, ip_addresses, policy.serving_days, now=now)
    )
    return TLSMaterial(current.ca, bundle, serving), reason or "expired CAs dropped from the bundle"


def _serving_problem(
    current: TLSMaterial, dns_names: list[str], ip_addresses: list[str], policy: RenewalPolicy, now: datetime.datetime
) -> str | None:
    """Why the serving pair must be reissued, or None if it may stay."""
    try:
        info = describe_certificate(current.serving.cert_pem)
        if info.not_after <= now:
            return f"the serving certificate expired {info.not_after:%Y-%m-%d}"
        verify_serving_certificate(current.ca.cert_pem, current.serving.cert_pem, (dns_names or ip_addresses)[0], now)
    except CertificateError as err:
        return f"the serving certificate does not verify against the CA: {err}"
    if not key_matches_certificate(current.serving.cert_pem, current.serving.key_pem):
        return "the serving key does not match the serving certificate"
    if set(info.dns_names) != set(dns_names) or set(info.ip_addresses) != {
        str(ipaddress.ip_address(a)) for a in ip_addresses
    }:
        return "the serving certificate names other hosts than the Service"
    if policy.serving_due(info, now):
        return f"the serving certificate expires {info.not_after:%Y-%m-%d}"
    return None


def _fresh_material(
    previous: TLSMaterial | None,
    dns_names: list[str],
    ip_addresses: list[str],
    policy: RenewalPolicy,
    now: datetime.datetime,
) -> TLSMaterial:
    """A new CA and serving pair; the CAs of `previous` stay in the bundle while they are valid."""
    ca = generate_ca(days=policy.ca_days, now=now)
    serving = issue_serving_cert(ca, dns_names, ip_addresses, policy.serving_days, now=now)
    older = load_certificates(previous.ca_bundle) if previous else []
    return TLSMaterial(ca, _bundle([load_certificates(ca.cert_pem)[0], *older], now), serving)


def _bundle(cas: list[x509.Certificate], now: datetime.datetime) -> bytes:
    """PEM of the CAs still valid at `now`, first occurrence first, no duplicates."""
    seen: set[bytes] = set()
    pem = b""
    for cert in cas:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in seen or cert.not_valid_after_utc <= now:
            continue
        seen.add(der)
        pem += cert.public_bytes(serialization.Encoding.PEM)
    return pem


# ---------------------------------------------------------------------------------------------------
# Writing the serving pair to disk, so a reloading server picks it up


def write_serving_files(directory: str | os.PathLike[str], material: TLSMaterial) -> bool:
    """Write tls.key, tls.crt and ca.crt into `directory` if they differ; True if anything changed.

    Each file is replaced by a rename, so a reader never sees half a file. Every changed file is written
    to its temporary first and the renames follow one another, key first: a reader can still catch the
    new key beside the old certificate, but only between two renames (a reloading server keeps its old
    pair until the two agree).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content, mode in (
            ("tls.key", material.serving.key_pem, 0o600),
            ("tls.crt", material.serving.cert_pem, 0o644),
            ("ca.crt", material.ca_bundle, 0o644),
        ):
            path = directory / name
            if path.exists() and path.read_bytes() == content:
                continue
            temporary = directory / f".{name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            staged.append((temporary, path))
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _path in staged:
            if temporary.exists():
                temporary.unlink()
    return bool(staged)


# ---------------------------------------------------------------------------------------------------
# The server side: a context that reloads the pair when the files change


class ReloadingCertificate:
    """Serves the certificate pair that is on disk now; see `reloading_ssl_context`.

    Nothing here may fail a handshake: the callback runs inside OpenSSL's handshake, where any exception
    aborts it. Whatever goes wrong while reloading (files missing, a pair caught between two renames, a
    bug) is logged and the handshake gets the last pair that loaded.
    """

    START_RETRY_SECONDS = 2.0  # how long the first load waits for a pair caught mid-renewal to agree

    def __init__(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        self.cert_path = str(cert_path)
        self.key_path = str(key_path)
        self._lock = threading.Lock()
        self._stamp, self._current = self._first_load()  # a pair that cannot be loaded at start is an error
        self._failed_stamp: object = None
        self.reloads = 0
        self.context = self._current
        self.context.sni_callback = self._on_client_hello
        _RELOADING.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def _first_load(self) -> tuple[tuple[bytes | None, bytes | None], ssl.SSLContext]:
        """The pair on disk and its context. A pair that does not agree (the writer is between its two
        renames) is read again for a moment; missing files, or a pair that still disagrees, raise."""
        deadline = time.monotonic() + self.START_RETRY_SECONDS
        while True:
            stamp = cert_pem, key_pem = Path(self.cert_path).read_bytes(), Path(self.key_path).read_bytes()
            try:
                return stamp, self._build(cert_pem, key_pem)
            except ssl.SSLError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _build(self, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        """A server context for exactly these bytes: the pair that was compared is the pair that is loaded,
        whatever happens to the files meanwhile."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with _pem_path(cert_pem) as cert_file, _pem_path(key_pem) as key_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def _file_stamp(self) -> tuple[bytes | None, bytes | None]:
        """What is in the two files now. Their content, not their mtime: a file rewritten in place
        within one clock tick keeps its size and mtime, and reading two small files costs far less
        than the handshake it precedes. Symlinks (Secret volumes swap one) are followed."""
        stamps: list[bytes | None] = []
        for path in (self.cert_path, self.key_path):
            try:
                with open(path, "rb") as handle:
                    stamps.append(handle.read())
            except OSError:
                stamps.append(None)
        return stamps[0], stamps[1]

    def current(self) -> ssl.SSLContext:
        """The context for the pair on disk; the last good one while the files are missing or disagree."""
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp == self._failed_stamp:
            return self._current
        with self._lock:
            if stamp != self._stamp and stamp != self._failed_stamp:
                cert_pem, key_pem = stamp
                try:
                    if cert_pem is None or key_pem is None:
                        raise FileNotFoundError(
                            f"{self.cert_path if cert_pem is None else self.key_path} cannot be read"
                        )
                    context = self._build(cert_pem, key_pem)
                except (OSError, ssl.SSLError) as err:
                    self._failed_stamp = stamp
                    log.warning(
                        "TLS certificate at %s not loaded, still serving the previous one: %s", self.cert_path, err
                    )
                except Exception:
                    self._failed_stamp = stamp
                    log.exception("TLS certificate at %s not loaded, still serving the previous one", self.cert_path)
                else:
                    self._stamp, self._current = stamp, context
                    self.reloads += 1
                    log.info("TLS certificate reloaded from %s", self.cert_path)
            return self._current

    def _on_client_hello(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        # Called for every handshake, with or without SNI, before the certificate is chosen. An exception
        # raised here would abort the handshake, so none leaves.
        try:
            ssl_object.context = self.current()
        except Exception:
            log.exception("TLS certificate check failed; this handshake keeps the last loaded pair")
            try:
                ssl_object.context = self._current
            except Exception:
                log.exception("TLS context not switched; this handshake uses the listening socket's pair")


# A lock held by another thread at a fork stays held in the child forever: each process gets new ones.
_RELOADING: weakref.WeakSet[ReloadingCertificate] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [reloading._after_fork() for reloading in list(_RELOADING)])


@contextlib.contextmanager
def _pem_path(content: bytes) -> Iterator[str]:
    """A path from which OpenSSL reads `content`: an anonymous in-memory file on Linux (a private key
    never touches a disk), elsewhere a temporary file readable by its owner only, removed after use."""
    try:
        fd = os.memfd_create("ccr-webhook-tls", os.MFD_CLOEXEC) if os.path.isdir("/proc/self/fd") else -1
    except (AttributeError, OSError):  # not Linux, or a seccomp profile that forbids it
        fd = -1
    if fd >= 0:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="ccr-webhook-tls-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        yield path
    finally:
        os.unlink(path)


def reloading_ssl_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server `ssl.SSLContext` (TLS 1.2 minimum) that serves the pair on disk at each handshake.

    Every handshake reads the two files (small, cheap) and, when they changed, loads those bytes into a new
    context that this and later handshakes use; connections already open keep theirs, so nothing is
    dropped. A pair that does not load (missing, or key and certificate disagree mid-update) is skipped:
    the last good pair is served until the files change again. Only the first load may fail (OSError,
    ssl.SSLError); after it no reload problem fails a handshake.
    """
    return ReloadingCertificate(cert_path, key_path).context


def gunicorn_ssl_context(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """A gunicorn `ssl_context` hook serving a reloading pair: `ssl_context = gunicorn_ssl_context(cert, key)`.

    The pair is loaded here, when gunicorn reads its configuration in the master, and an unloadable pair
    raises here (OSError, ssl.SSLError). Every worker inherits that loaded pair through fork and reloads
    on its own from then on, so a worker's first handshake has a pair to fall back on. (Loading lazily,
    at a worker's first connection, failed that connection when it came while the files were being
    renewed: gunicorn raises from the hook before it has wrapped the socket and answers a plaintext
    error, which clients report as WRONG_VERSION_NUMBER.) gunicorn only turns TLS on when `certfile`
    and `keyfile` are set, so set them to the same paths.
    """
    context = reloading_ssl_context(cert_path, key_path)

    def ssl_context(config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return ssl_context


# ---------------------------------------------------------------------------------------------------
# In the cluster: one Secret holds the material, the webhook configurations trust its CA bundle

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
    policy: RenewalPolicy = RenewalPolicy()
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
                f"Secret {settings.namespace}/{settings.secret} is not managed by {MANAGED_BY} and lacks ca.crt, tls.crt or tls.key; "
                f"complete it, or delete it to have one generated"
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
