"""The benchmark's images: one per published size, incompressible, several layers each, pushed to the upstream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webhook.registry.client import RegistryClient
from webhook.testing.sample_image import PushedImage, push_sample_image

MB = 1_000_000  # the published table's megabytes
LAYER_SHARES = (0.35, 0.25, 0.18, 0.12, 0.10)  # a base image, runtimes, the application: a few uneven layers


def layer_sizes(total_bytes: int) -> list[int]:
    """Split `total_bytes` (at least one per layer) by LAYER_SHARES; the last takes the rounding so they add up."""
    if total_bytes < len(LAYER_SHARES):
        raise ValueError(f"{total_bytes} bytes cannot make {len(LAYER_SHARES)} layers")
    sizes = [max(1, int(total_bytes * share)) for share in LAYER_SHARES[:-1]]
    return [*sizes, total_bytes - sum(sizes)]


@dataclass(frozen=True)
class BenchImage:
    """The image standing for one published size, as pushed to the upstream."""

    size_mb: int
    pushed: PushedImage

    @property
    def total_bytes(self) -> int:
        """Every blob and manifest of the image, the bytes one pull moves."""
        return self.pushed.total_bytes

    def reference(self, registry: str) -> str:
        """The image by tag in `registry`, as a Pod spec names it."""
        return f"{registry}/{self.pushed.repository}:{self.pushed.tag}"


def push_bench_images(
    client: RegistryClient, sizes_mb: Sequence[int], scale: float, tar_layers: bool = False
) -> list[BenchImage]:
    """Push one image per size, scaled by `scale`; layers already there are not uploaded again. `tar_layers`: layers
    a runtime can unpack (containerd nodes), under a tag of their own."""
    images = []
    for size_mb in sizes_mb:
        total = max(len(LAYER_SHARES), round(size_mb * MB * scale))
        tag = f"scale-{scale:g}" + ("-tar" if tar_layers else "")
        pushed = push_sample_image(
            client, f"bench/app-{size_mb}mb", tag, layer_sizes(total), seed=size_mb, tar_layers=tar_layers
        )
        images.append(BenchImage(size_mb, pushed))
    return images
