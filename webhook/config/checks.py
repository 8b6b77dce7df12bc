"""The validators of single configuration values, and the errors the configuration raises.

A check takes a value already of the declared type, returns it normalized, or raises `Invalid` with a message
that leaves the key out: the reader knows where the value was read and puts that in front.
"""

from __future__ import annotations

import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from webhook.errors import CCRWebhookError

_HOST_PORT = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_PREFIX = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_HOST_PATTERN = re.compile(r"^(?:[a-z0-9*?-]+(?:\.[a-z0-9*?-]+)*|\[[0-9a-f:.]+\])$")
_LEGACY_DOCKER_HUB = "index.docker.io"
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(d|h|m|s)")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
API_SERVER_WEBHOOK_LIMIT_SECONDS = 30
# The ECDSA curves cosign signs with, and the hash each signs over (sigstore's defaults).
SIGNING_CURVES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class ConfigError(CCRWebhookError):
    """The configuration is invalid; the message names the key and what is expected."""


class Invalid(ConfigError):
    """A value is wrong; `key` names the key within its section when a check over a whole section finds it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_duration(value: str) -> float:
    """Seconds in a duration such as `168h`, `7d`, `1h30m`, `90s` or plain `90`; ValueError for anything else."""
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"{value!r} is not a duration")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def registry_host(value: str) -> str:
    """A registry as images name it, `host[:port]`, lower case."""
    if not _HOST_PORT.match(value):
        raise Invalid(f"{value!r} is not a registry host[:port] (no scheme, no path)")
    return value.lower()


def upstream_host(value: str) -> str:
    """A registry host, with Docker Hub's legacy name `index.docker.io` read as `docker.io`."""
    host = registry_host(value)
    return "docker.io" if host == _LEGACY_DOCKER_HUB else host


def endpoint_url(value: str) -> str:
    """`http(s)://host[:port]`, trailing slashes dropped; whether plain HTTP is allowed is the section's rule."""
    value = value.rstrip("/")
    if not re.match(r"^https?://[^/?#@]+$", value):
        raise Invalid(f"{value!r} must be http(s)://host[:port] with no path or credentials")
    return value


def repository_prefix(value: str) -> str:
    """A repository path in the CCR (`docker.io`, `mirror/ghcr`), surrounding slashes dropped."""
    prefix = value.strip("/")
    if not _PREFIX.match(prefix):
        raise Invalid(f"{prefix!r} is not a valid repository path (lowercase, / separated)")
    return prefix


def host_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    """Host names or globs (`*.s3.amazonaws.com`), lower case."""
    patterns = tuple(pattern.lower() for pattern in value)
    for pattern in patterns:
        if not _HOST_PATTERN.match(pattern):
            raise Invalid(f"{pattern!r} is not a host name or a glob of one (no scheme, port or path)")
    return patterns


def listen_address(value: str) -> str:
    """`host:port` to listen on."""
    if not re.match(r"^.+:[0-9]{1,5}$", value):
        raise Invalid(f"{value!r} must be host:port")
    return value


def peer_addresses(value: tuple[str, ...]) -> tuple[str, ...]:
    """`host:port` of every CCR front replica's peer endpoint, each once."""
    for address in value:
        if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$", address):
            raise Invalid(f"{address!r} must be host:port")
    if len(set(value)) != len(value):
        raise Invalid("a peer is listed twice")
    return value


def kubernetes_name(value: str) -> str:
    """A DNS label, as Kubernetes names namespaces and Leases."""
    if not _DNS_LABEL.match(value):
        raise Invalid(f"{value!r} is not a Kubernetes name (lowercase letters, digits, -)")
    return value


def label_key(value: str) -> str:
    """A Kubernetes label key, `[prefix/]name`."""
    if not _LABEL_KEY.match(value):
        raise Invalid(f"{value!r} is not a label key ([prefix/]name)")
    return value


def below_webhook_limit(value: float) -> float:
    """Seconds that stay below the API server's hard limit on a webhook call."""
    if value > API_SERVER_WEBHOOK_LIMIT_SECONDS - 1:
        raise Invalid(f"{value} must stay below the API server's {API_SERVER_WEBHOOK_LIMIT_SECONDS} s webhook limit")
    return value


def tag_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    """Regular expressions a whole tag is matched against (`^v?[0-9]+$`, `stable`); each must compile."""
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as err:
            raise Invalid(f"{pattern!r} is not a regular expression: {err}") from None
    return value


def repository_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    """CCR repository globs (`docker.io/library/*`, `ghcr.io/**`): `*` stays within a path segment, `**` does not."""
    for pattern in value:
        if not pattern or not re.fullmatch(r"[a-z0-9._/*?-]+", pattern):
            raise Invalid(f"{pattern!r} is not a repository glob (lowercase path, `*`, `**`, `?`)")
    return value


def none_if_empty(value: str) -> str | None:
    """An empty string switches the feature off."""
    return value or None


def not_empty(value: tuple[str, ...]) -> tuple[str, ...]:
    """A list that must name at least one thing."""
    if not value:
        raise Invalid("must list at least one entry")
    return value


def public_keys(value: tuple[str, ...]) -> tuple[str, ...]:
    """PEM public keys, each given as a file's path or as the PEM text; returned as PEM texts, each one loadable."""
    if not value:
        raise Invalid("must list at least one public key")
    return tuple(_public_key_pem(entry) for entry in value)


def _public_key_pem(entry: str) -> str:
    text = entry
    if not entry.lstrip().startswith("-----BEGIN"):
        try:
            with open(entry, encoding="ascii") as handle:
                text = handle.read(65536)
        except (OSError, UnicodeDecodeError) as err:
            raise Invalid(f"cannot read public key file {entry!r}: {getattr(err, 'strerror', None) or err}") from None
    where = "the inline PEM" if text is entry else repr(entry)
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise Invalid(f"{where} is not a PEM public key (`cosign public-key` prints one)") from None
    unsupported = unsupported_key(key)
    if unsupported:
        raise Invalid(f"{where}: {unsupported}")
    return text


def unsupported_key(key: object) -> str | None:
    """Why a public key cannot check cosign signatures, or None for ECDSA P-256/384/521, Ed25519 and RSA."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in SIGNING_CURVES:
            return None
        return f"ECDSA curve {key.curve.name} is not one cosign signs with (P-256, P-384, P-521)"
    if isinstance(key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        return None
    return f"a {type(key).__name__}; only ECDSA, Ed25519 and RSA keys check cosign signatures"
