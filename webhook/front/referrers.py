"""The OCI 1.1 referrers list of a manifest the CCR cannot list, from the upstream its repository mirrors.

The CCR answers first (the handler relays it); only its 404, for a repository under a configured
upstream's prefix, comes here. Upstream's list is read within a deadline and MAX_MANIFEST_BYTES, must be an
OCI image index (anything else is an upstream that failed, never passed on), and is filtered by the
`artifactType` the request asked for, saying so with `OCI-Filters-Applied`. An upstream without the
referrers API (a 404) leaves the answer a 404, as the spec has it: clients then fall back to the
`sha256-<hex>` tag, which the front serves like any manifest.
"""

from __future__ import annotations

import json
import logging

from webhook.front.answers import UpstreamUnavailable
from webhook.front.upstream import Origin
from webhook.registry.client import OCI_INDEX
from webhook.registry.errors import RegistryError

log = logging.getLogger("webhook.front")
UPSTREAM_REFERRERS_SECONDS = 30.0


def upstream_referrers(origin: Origin, digest: str, artifact_type: str | None) -> tuple[bytes, dict[str, str]] | None:
    """The referrers index of `digest` upstream and its answer's headers; None when upstream has no referrers API."""
    try:
        listed = origin.client.referrers(origin.repository, digest, timeout=UPSTREAM_REFERRERS_SECONDS)
    except RegistryError as err:
        log.warning("referrers of %s in %s: %s", digest, origin.target_repository, err)
        raise UpstreamUnavailable(f"upstream {origin.registry} did not list the referrers") from None
    if listed is None:
        return None
    try:
        index = json.loads(listed.data)
        manifests = index["manifests"] if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(entry, dict) for entry in manifests):
            raise ValueError("no list of descriptors")
    except (ValueError, KeyError) as err:
        raise UpstreamUnavailable(f"upstream {origin.registry} listed the referrers as no OCI index ({err})") from None
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type is None:
        return listed.data, headers
    index["manifests"] = [entry for entry in manifests if entry.get("artifactType") == artifact_type]
    return json.dumps(index).encode(), {**headers, "OCI-Filters-Applied": "artifactType"}
