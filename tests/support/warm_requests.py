"""A warm request as the webhook and the warmer pass them: an image pinned upstream and its mirror in the CCR."""

from __future__ import annotations

from webhook.policy.decide import WarmRequest
from webhook.policy.reference import parse_image

DIGEST = "sha256:" + "d" * 64


def warm_request(image: str = f"docker.io/library/nginx:1.25@{DIGEST}") -> WarmRequest:
    """The request to copy `image` (from docker.io) to its mirror in ccr.local."""
    source = parse_image(image)
    return WarmRequest(source, source.with_registry("ccr.local", "docker.io"))
