"""The generated sample image's layers: deterministic, incompressible; the platforms offered."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from webhook.testing.sample_image import CHUNK_BYTES, GeneratedLayer, push_sample_image


def test_a_generated_layer_is_the_same_every_time_and_its_digest_is_its_sha256():
    layer = GeneratedLayer("seed-a", CHUNK_BYTES * 2 + 123)
    first, second = b"".join(layer), b"".join(GeneratedLayer("seed-a", layer.size))
    assert first == second and len(first) == layer.size
    assert layer.digest == "sha256:" + hashlib.sha256(first).hexdigest()
    assert GeneratedLayer("seed-b", layer.size).digest != layer.digest
    assert all(len(chunk) <= CHUNK_BYTES for chunk in layer)


def test_a_generated_layer_is_incompressible():
    data = b"".join(GeneratedLayer("seed", 200_000))
    assert len(zlib.compress(data, 9)) > 0.99 * len(data)


def test_only_one_or_two_platforms_are_offered():
    with pytest.raises(ValueError, match="platforms must be 1 to 2"):
        push_sample_image(None, "r", "t", [1], seed=1, platforms=3)
