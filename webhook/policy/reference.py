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

from webhook.errors import CCRWebhookError

DEFAULT_REGISTRY = "docker.io"
_LOOKS_LIKE_HOST = re.compile(r"^(localhost|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+):[0-9]+$")


class InvalidImageReference(CCRWebhookError):
    """An image string that the distribution reference grammar refuses, with the reason."""

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(f"invalid image reference {image!r}: {reason}")
        self.image = image
        self.reason = reason


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
        parsed = grammar.Reference.parse_normalized_named(image)
    except (grammar.InvalidReference, digest_grammar.InvalidDigest) as err:
        raise InvalidImageReference(image, str(err) or "invalid reference format") from None
    registry, repository = parsed.domain(), parsed.path()
    if not registry:
        raise InvalidImageReference(image, "the reference has no registry")
    return ImageReference(registry=registry, repository=repository, tag=parsed["tag"], digest=parsed["digest"])
