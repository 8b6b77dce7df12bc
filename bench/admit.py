"""The API server's side of admission: an AdmissionReview for one Pod POSTed to the webhook, the patch applied."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
import uuid
from typing import Any

import jsonpatch


class PodDenied(Exception):
    """The webhook refused the Pod (or answered something other than an AdmissionReview)."""


def pod_review(pod_name: str, image: str) -> dict[str, Any]:
    """An AdmissionReview v1 asking to CREATE a one-container Pod running `image`."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "namespace": "bench"},
           "spec": {"containers": [{"name": "app", "image": image}]}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "bench",
                        "name": pod_name, "operation": "CREATE", "object": pod, "dryRun": False}}


def admitted_pod(review: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The Pod as the API server stores it: the review's object with the answer's JSONPatch applied."""
    response = answer.get("response") or {}
    if response.get("uid") != review["request"]["uid"]:
        raise PodDenied(f"the answer is not for this review: {answer!r}")
    if not response.get("allowed"):
        raise PodDenied(f"the webhook denied the Pod: {(response.get('status') or {}).get('message')}")
    pod = review["request"]["object"]
    if response.get("patchType") != "JSONPatch":
        return pod
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))


def admit_image(url: str, context: ssl.SSLContext, pod_name: str, image: str, timeout: float = 30.0) -> str:
    """POST a review for a Pod running `image` to `url` (the webhook's /mutate); return the image the Pod ends up with."""
    review = pod_review(pod_name, image)
    request = urllib.request.Request(url, data=json.dumps(review).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=timeout) as reply:
        answer = json.loads(reply.read())
    return admitted_pod(review, answer)["spec"]["containers"][0]["image"]
