"""Push a tiny single-layer image to a registry with plain HTTP, and read back the digest the registry reports."""

from __future__ import annotations

import hashlib
import json

import urllib3

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_http = urllib3.PoolManager()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(url: str, repository: str, data: bytes) -> dict:
    started = _http.request("POST", f"{url}/v2/{repository}/blobs/uploads/")
    assert started.status == 202, started.status
    location = started.headers["Location"]
    location = location if location.startswith("http") else url + location
    separator = "&" if "?" in location else "?"
    done = _http.request("PUT", f"{location}{separator}digest={_digest(data)}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert done.status == 201, done.status
    return {"mediaType": "application/octet-stream", "digest": _digest(data), "size": len(data)}


def push_tiny_image(url: str, repository: str, tag: str, seed: str = "") -> str:
    """Push a one-layer OCI image as `repository:tag`, its content (and so its digest) set by `seed` alone."""
    layer = _push_blob(url, repository, f"layer {seed}".encode())
    config = _push_blob(url, repository, json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {**config, "mediaType": "application/vnd.oci.image.config.v1+json"},
                           "layers": [{**layer, "mediaType": "application/vnd.oci.image.layer.v1.tar"}]}).encode()
    put = _http.request("PUT", f"{url}/v2/{repository}/manifests/{tag}", body=manifest,
                        headers={"Content-Type": OCI_MANIFEST})
    assert put.status == 201, put.status
    return registry_digest(url, repository, tag)


def registry_digest(url: str, repository: str, reference: str) -> str:
    """The Docker-Content-Digest the registry answers for a manifest HEAD."""
    head = _http.request("HEAD", f"{url}/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert head.status == 200, head.status
    return head.headers["Docker-Content-Digest"]
