"""The API server's side of admission, for the demo and the benchmarks: build a review, POST it, apply the answer."""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import jsonpatch

_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class PodDenied(Exception):
    """The webhook refused the Pod; the message is the webhook's."""


def pod_object(
    name: str,
    namespace: str,
    containers: Sequence[tuple[str, str]],
    init_containers: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A Pod running `containers` (name, image pairs) after `init_containers`."""
    spec: dict[str, Any] = {"containers": [{"name": n, "image": i} for n, i in containers]}
    if init_containers:
        spec["initContainers"] = [{"name": n, "image": i} for n, i in init_containers]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pod_review(pod: dict[str, Any], *, dry_run: bool = False, uid: str | None = None) -> dict[str, Any]:
    """The AdmissionReview v1 the API server sends to CREATE `pod` (a fresh uid unless one is given)."""
    metadata = pod["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": metadata.get("namespace"),
            "name": metadata.get("name"),
            "operation": "CREATE",
            "userInfo": {"username": "ccr-webhook-demo"},
            "object": pod,
            "dryRun": dry_run,
        },
    }


def send_review(url: str, review: dict[str, Any], context: ssl.SSLContext, timeout: float = 30.0) -> dict[str, Any]:
    """POST `review` to `url` (the webhook's /mutate or /dry-run) over HTTPS; the `response` of its answer."""
    request = urllib.request.Request(
        url, data=json.dumps(review).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=timeout) as reply:
        answer = json.loads(reply.read())
    response = answer.get("response") or {}
    if response.get("uid") != review["request"]["uid"]:
        raise ValueError(f"the webhook answered another review: {answer!r}")
    return response


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch operations of an admission response (none when it has no patch)."""
    if response.get("patchType") != "JSONPatch":
        return []
    return json.loads(base64.b64decode(response["patch"]))


def admitted_pod(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The Pod as the API server stores it: the review's object with the patch applied; PodDenied if refused."""
    if not response.get("allowed"):
        raise PodDenied((response.get("status") or {}).get("message") or "denied")
    return jsonpatch.apply_patch(review["request"]["object"], patch_of(response))


def record_audit_annotations(recorded: dict[str, str], webhook: str, response: dict[str, Any]) -> list[str]:
    """Add a response's audit annotations to `recorded` as the API server does, as `<webhook>/<key>`.

    What it refuses comes back, as the messages it logs: a key that is not a qualified name, and a key
    it already holds with another value ("admission annotations are not allowed to be overwritten"), as
    happens when a webhook reinvoked after another one's change answers differently the second time.
    """
    refused = []
    for key, value in (response.get("auditAnnotations") or {}).items():
        name = f"{webhook}/{key}"
        if len(key) > 63 or not _QUALIFIED_NAME_PART.fullmatch(key) or not _DNS_SUBDOMAIN.fullmatch(webhook):
            refused.append(f"{name}: not a qualified name")
        elif recorded.get(name, value) != value:
            refused.append(f"{name}: admission annotations are not allowed to be overwritten")
        else:
            recorded[name] = value
    return refused
