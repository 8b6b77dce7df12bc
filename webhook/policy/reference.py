"""Image references: parse and normalize with the distribution reference grammar. No I/O.

The grammar itself comes from docker-image-py, which mirrors Go's distribution/reference;
this module wraps it in a small immutable type with the operations ccr-webhook needs.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from docker_image import digest as digest_grammar
from docker_image import reference as grammar
from docker_image.regexp import ImageRegexps

from webhook.errors import CCRWebhookError

DEFAULT_REGISTRY = "docker.io"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")  # the algorithms the OCI spec registers
_LOOKS_LIKE_HOST = re.compile(r"^(localhost|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+):[0-9]+$")


class InvalidImageReference(CCRWebhookError):
    """An image string that the distribution reference grammar refuses, with the reason."""

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(f"invalid image reference {image!r}: {reason}")
        self.image = image
        self.reason = reason


def is_digest(text: str) -> bool:
    """Whether `text` is a content digest the OCI spec registers: `sha256:` and 64, or `sha512:` and 128, hex digits."""
    return _DIGEST.fullmatch(text) is not None


def is_repository_name(name: str) -> bool:
    """Whether `name` is a repository path (no registry host) by the distribution grammar, within its length bound."""
    return len(name) <= grammar.NAME_TOTAL_LENGTH_MAX and ImageRegexps.REMOTE_NAME_REGEXP.fullmatch(name) is not None


def is_tag(text: str) -> bool:
    """Whether `text` is a tag by the distribution grammar (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, ASCII only)."""
    return ImageRegexps.ANCHORED_TAG_REGEXP.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalized image reference: registry host, repository path, optional tag and digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, `registry/repository`."""
        return f"{self.registry}/{self.repository}"

    @property
    def implies_latest(self) -> bool:
        """True when the reference names `latest`, explicitly or by carrying neither tag nor digest."""
        return self.tag == "latest" or (self.tag is None and self.digest is None)

    @property
    def reference(self) -> str | None:
        """What the registry's manifest endpoint takes: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def with_digest(self, digest: str) -> ImageReference:
        """The same image pinned to `digest`, keeping the tag for people to read."""
        return replace(self, digest=digest)

    def with_registry(self, registry: str, prefix: str = "") -> ImageReference:
        """The same image moved under `registry`, its repository placed below `prefix`."""
        repository = f"{prefix.strip('/')}/{self.repository}" if prefix.strip("/") else self.repository
        return replace(self, registry=registry, repository=repository)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@functools.lru_cache(maxsize=8192)
def parse_image(image: str) -> ImageReference:
    """Parse `image` as the container runtime would (`nginx` is `docker.io/library/nginx`).

    Raises InvalidImageReference with a reason an operator can act on.
    """
    if not isinstance(image, str) or not image:
        raise InvalidImageReference(str(image), "the image is empty")
    if image != image.strip():
        raise InvalidImageReference(image, "the image has leading or trailing white space")
    if _LOOKS_LIKE_HOST.match(image):
        raise InvalidImageReference(
            image, "this is a registry host:port with no repository; name an image such as host:port/repo:tag"
        )
    try:
        parsed = grammar.Reference.parse_normalized_named(_lowercase_host(image))
    except (grammar.InvalidReference, digest_grammar.InvalidDigest) as err:
        raise InvalidImageReference(image, str(err) or "invalid reference format") from None
    registry, repository = parsed.domain(), parsed.path()
    if registry != registry.lower():  # a one-label host in capitals: its lower-case form would mean Docker Hub
        raise InvalidImageReference(
            image, f"the registry host {registry} is ambiguous; name it with its domain or port"
        )
    if not registry:
        raise InvalidImageReference(image, "the reference has no registry")
    return ImageReference(registry=registry, repository=repository, tag=parsed["tag"], digest=parsed["digest"])


def _lowercase_host(image: str) -> str:
    """`image` with its registry host in lower case when it names one with a dot, a colon or `localhost`.

    Host names are case-insensitive: `DOCKER.IO/library/nginx` is docker.io's nginx, and must meet the same
    upstream (and Docker Hub's normalization) as the lower-case form. Ports stay as written. A host of one
    label in capitals (`Registry/app`) is a host to the runtime, but `registry/app` is Docker Hub's: refused.
    """
    host, slash, rest = image.partition("/")
    if slash and (any(mark in host for mark in ".:") or host.lower() == "localhost"):
        return host.lower() + slash + rest
    return image
