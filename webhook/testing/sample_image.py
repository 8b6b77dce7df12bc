"""A deterministic generated image for the demo, the tests and the benchmarks.

Layers are incompressible bytes drawn from a seed, generated again on every pass instead of being kept:
a first streaming pass computes a layer's digest, a second one uploads it, so layers of many gigabytes
need no more memory than one chunk. The same seed and sizes always give the same digests. The layers are
raw bytes by default: registries and the copy engine never look inside. With `tar_layers` each layer
is a tar archive holding one file of those bytes, which a runtime (containerd in the node tests) can
unpack. Blobs are pushed before manifests, child manifests before the index, and the tag last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, digest_of

CHUNK_BYTES = 1024 * 1024
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))


class GeneratedLayer:
    """`size` incompressible bytes from `seed`, the same each time it is iterated (in 1 MiB chunks)."""

    def __init__(self, seed: str, size: int) -> None:
        if size < 0:
            raise ValueError(f"a layer size cannot be negative: {size}")
        self.seed = seed
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        generator = random.Random(self.seed)
        remaining = self.size
        while remaining > 0:
            chunk = generator.randbytes(min(CHUNK_BYTES, remaining))
            remaining -= len(chunk)
            yield chunk

    @functools.cached_property
    def digest(self) -> str:
        """The sha256 digest, from one streaming pass."""
        hasher = hashlib.sha256()
        for chunk in self:
            hasher.update(chunk)
        return f"sha256:{hasher.hexdigest()}"


class TarLayer(GeneratedLayer):
    """A GeneratedLayer of `content_size` bytes wrapped as the one file of an uncompressed tar archive, streamed."""

    def __init__(self, seed: str, content_size: int) -> None:
        info = tarfile.TarInfo("ccr-sample-data")
        info.size, info.mode, info.mtime = content_size, 0o644, 0
        self._header = info.tobuf(format=tarfile.GNU_FORMAT)
        self._content = GeneratedLayer(seed, content_size)
        self._padding = -content_size % tarfile.BLOCKSIZE
        super().__init__(seed, len(self._header) + content_size + self._padding + 2 * tarfile.BLOCKSIZE)

    def __iter__(self) -> Iterator[bytes]:
        yield self._header
        yield from self._content
        yield b"\0" * (self._padding + 2 * tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class PushedImage:
    """What push_sample_image pushed: the tagged manifest or index, its child manifests, every blob."""

    repository: str
    tag: str
    digest: str
    media_type: str
    manifests: tuple[str, ...]
    blobs: tuple[str, ...]
    total_bytes: int

    @property
    def reference(self) -> str:
        """`repository:tag@digest`, as a Pod would name it pinned (prefix it with the registry host)."""
        return f"{self.repository}:{self.tag}@{self.digest}"


def _canonical_json(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, digest: str, size: int, **extra: object) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _push_blob_if_missing(
    client: RegistryClient, repository: str, digest: str, size: int, chunks: Iterable[bytes]
) -> None:
    if client.blob_size(repository, digest) is None:
        client.upload_blob(repository, digest, size, chunks)


def push_sample_image(
    client: RegistryClient,
    repository: str,
    tag: str,
    layer_sizes: Sequence[int],
    seed: int,
    platforms: int = 1,
    created: str = "1970-01-01T00:00:00Z",
    tar_layers: bool = False,
) -> PushedImage:
    """Push a generated image (an OCI manifest, or a linux/amd64 + linux/arm64 index when `platforms` is 2).

    `created` is the build time its configs state (RFC 3339), which retention ranks images by; `tar_layers`
    makes layers a runtime can unpack (a layer size is then its file's size, the archive a little larger).
    """
    kind = TarLayer if tar_layers else GeneratedLayer
    if not 1 <= platforms <= len(PLATFORMS):
        raise ValueError(f"platforms must be 1 to {len(PLATFORMS)}, got {platforms}")
    blobs: list[str] = []
    children: list[tuple[dict, bytes]] = []
    total = 0
    for os_name, architecture in PLATFORMS[:platforms]:
        layers = [kind(f"ccr-sample:{seed}:{architecture}:{index}", size) for index, size in enumerate(layer_sizes)]
        for layer in layers:
            _push_blob_if_missing(client, repository, layer.digest, layer.size, layer)
        config = _canonical_json(
            {
                "architecture": architecture,
                "os": os_name,
                "created": created,
                "config": {"Labels": {"io.ccr-webhook.sample-seed": str(seed)}},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            }
        )
        _push_blob_if_missing(client, repository, digest_of(config), len(config), [config])
        manifest = _canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(CONFIG_MEDIA_TYPE, digest_of(config), len(config)),
                "layers": [_descriptor(LAYER_MEDIA_TYPE, layer.digest, layer.size) for layer in layers],
            }
        )
        blobs += [layer.digest for layer in layers] + [digest_of(config)]
        total += sum(layer.size for layer in layers) + len(config) + len(manifest)
        children.append(({"os": os_name, "architecture": architecture}, manifest))
    if platforms == 1:
        top, media_type = children[0][1], OCI_MANIFEST
    else:
        for _, manifest in children:
            client.put_manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
        top, media_type = (
            _canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [
                        _descriptor(OCI_MANIFEST, digest_of(manifest), len(manifest), platform=platform)
                        for platform, manifest in children
                    ],
                }
            ),
            OCI_INDEX,
        )
        total += len(top)
    digest = client.put_manifest(repository, tag, top, media_type)
    return PushedImage(
        repository, tag, digest, media_type, tuple(digest_of(manifest) for _, manifest in children), tuple(blobs), total
    )
