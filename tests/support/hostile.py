"""Hostile input for property-based tests: image strings of every odd form, AdmissionReview documents with wrong
types, missing fields, unicode and deep nesting, and the checks every answer to them must pass.

`registries` fill image strings with hosts a test cares about (its configured upstream, the CCR, hosts nobody
may contact); everything else is generated.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Sequence
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from webhook.policy.review import API_VERSION, ORIGINAL_IMAGES_ANNOTATION


def examples(count: int) -> settings:
    """Hypothesis settings for `count` examples, bounded and repeatable: the same ones on every run, none remembered."""
    return settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


ODD_HOSTS = (
    "169.254.169.254",
    "169.254.169.254:80",
    "[fe80::1]",
    "[fe80::1]:5000",
    "[::1]:5000",
    "10.0.0.1:5000",
    "127.0.0.1",
    "0.0.0.0:5000",
    "localhost",
    "localhost:5000",
    "metadata.google.internal",
    "user:pw@registry.example",
    "registry.example@169.254.169.254",
    "xn--80ak6aa92e.com",
    "REGISTRY.EXAMPLE:5000",
    "docker.io",
    "index.docker.io",
)
_DIGEST = st.sampled_from(["sha256:" + "a" * 64, "sha256:" + "0" * 63, "sha512:" + "b" * 128, "md5:" + "c" * 32])
_SEPARATED = st.builds(
    str.__add__, st.sampled_from([".", "_", "__", "-", "--"]), st.text("ab01", min_size=1, max_size=3)
)
_COMPONENT = st.builds(
    lambda head, rest: head + "".join(rest),
    st.text("abxyz0189", min_size=1, max_size=8),
    st.lists(_SEPARATED, max_size=2),
)
_TAG = st.sampled_from(["latest", "1.0", "v1.2.3-rc.1", "_x", "-bad", "a" * 129]) | st.text(
    "Aa0_.-", min_size=1, max_size=20
)
_IMAGE_TAIL = st.tuples(st.lists(_COMPONENT, min_size=1, max_size=4), st.none() | _TAG, st.none() | _DIGEST)
_ANYTHING = st.text(st.characters(codec="utf-8"), max_size=40) | st.text(
    max_size=8
)  # the second may hold lone surrogates


def image_strings(registries: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Image references: well formed under odd hosts, almost well formed, and plain garbage."""
    hosts = st.sampled_from([*ODD_HOSTS, *registries]) | st.just("")
    composed = st.builds(_compose, hosts, _IMAGE_TAIL)
    mangled = st.builds(
        lambda image, junk, where: image[:where] + junk + image[where:], composed, _ANYTHING, st.integers(0, 60)
    )
    return st.one_of(composed, composed, mangled, _ANYTHING, st.just("a" * 5000 + ":1"), st.just(" nginx:1 "))


def _compose(host: str, tail: tuple[list[str], str | None, str | None]) -> str:
    path, tag, digest = tail
    image = "/".join(([host] if host else []) + path)
    return image + (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ANYTHING,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANYTHING, inner, max_size=3),
    max_leaves=8,
)


def _container(image: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    named = st.fixed_dictionaries({"image": image}, optional={"name": st.none() | _ANYTHING | st.integers()})
    return st.one_of(named, named, named, st.fixed_dictionaries({"name": _ANYTHING}), JSON)


def _pod(image: st.SearchStrategy[str]) -> st.SearchStrategy[dict]:
    containers = st.lists(_container(image), max_size=4) | JSON
    spec = st.fixed_dictionaries(
        {"containers": containers}, optional={"initContainers": containers, "ephemeralContainers": containers}
    )
    annotations = (
        st.none()
        | st.dictionaries(_ANYTHING, _ANYTHING, max_size=2)
        | st.fixed_dictionaries(
            {ORIGINAL_IMAGES_ANNOTATION: st.sampled_from(['{"containers/a": "x:1"}', "[]", "not json", "{}"]) | JSON}
        )
    )
    metadata = st.fixed_dictionaries({}, optional={"name": _ANYTHING, "annotations": annotations}) | st.none() | JSON
    return st.fixed_dictionaries(
        {"apiVersion": st.just("v1"), "kind": st.just("Pod") | _ANYTHING, "spec": spec | JSON},
        optional={"metadata": metadata},
    )


def reviews(registries: Sequence[str] = ()) -> st.SearchStrategy[Any]:
    """AdmissionReview documents: mostly well formed around hostile Pods, some with a part replaced by anything."""
    image = image_strings(registries)
    request = st.fixed_dictionaries(
        {"uid": st.just("uid-hostile") | _ANYTHING | st.integers(), "object": _pod(image)},
        optional={
            "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]) | JSON,
            "subResource": st.sampled_from(["", "ephemeralcontainers", "status"]) | JSON,
            "oldObject": _pod(image),
            "dryRun": st.booleans() | JSON,
        },
    )
    review = st.fixed_dictionaries(
        {"apiVersion": st.just(API_VERSION), "kind": st.just("AdmissionReview"), "request": request}
    )
    return st.one_of(review, review, review, st.builds(_broken, review, st.sampled_from(_BREAKABLE), JSON), JSON)


_BREAKABLE = (
    "apiVersion",
    "kind",
    "request",
    "request.uid",
    "request.object",
    "request.object.spec",
    "request.object.kind",
    "request.object.metadata",
    "request.object.spec.containers",
)


def _broken(review: dict, path: str, value: Any) -> dict:
    """`review` with the part at dotted `path` replaced by `value`, or removed when `value` is None."""
    broken = copy.deepcopy(review)
    *parents, last = path.split(".")
    node = broken
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return broken


def deeply_nested(depth: int) -> bytes:
    """A review whose Pod carries `depth` nested lists in an annotation-free field the webhook never reads."""
    return (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"deep","operation":"CREATE",'
        b'"object":{"kind":"Pod","spec":{"containers":[],"x":' + b"[" * depth + b"]" * depth + b"}}}}"
    )


_IMAGE_POINTER = re.compile(r"^/spec/(containers|initContainers|ephemeralContainers)/\d+/image$")
_ANNOTATION_POINTER = "/metadata/annotations/" + ORIGINAL_IMAGES_ANNOTATION.replace("/", "~1")


def check_answer(review: Any, answer: dict) -> None:
    """An answer to `review` is an AdmissionReview for its uid whose patch applies and touches only images and our
    annotation."""
    assert answer["apiVersion"] == API_VERSION and answer["kind"] == "AdmissionReview", answer
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"] and isinstance(response["allowed"], bool)
    if "patch" not in response:
        return
    assert response["allowed"] and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    for op in ops:
        assert _touches_only_what_is_ours(op), op
    pod = review["request"]["object"]
    jsonpatch.apply_patch(pod, ops)  # raises if any op does not apply


def _touches_only_what_is_ours(op: dict) -> bool:
    if op["op"] == "replace":
        return bool(_IMAGE_POINTER.match(op["path"])) and isinstance(op["value"], str)
    ours = {ORIGINAL_IMAGES_ANNOTATION}
    return op["op"] == "add" and (
        op["path"] == _ANNOTATION_POINTER
        or (op["path"] == "/metadata/annotations" and set(op["value"]) == ours)
        or (
            op["path"] == "/metadata"
            and set(op["value"]) == {"annotations"}
            and set(op["value"]["annotations"]) == ours
        )
    )
