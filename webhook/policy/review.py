"""AdmissionReview v1 in and out: the images of a Pod with their JSON-pointer paths, and the answer.

No HTTP and no registry here: `parse_review` turns a decoded review into an `AdmissionRequest`, the
caller has the images decided, and `build_result` turns the decisions into the review to send back
(a JSONPatch of image fields plus one annotation, a denial naming every refused image, or, in dry-run
mode, warnings saying what would have happened).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.errors import CCRWebhookError
from webhook.policy.decide import Action, Decision, WarmRequest
from webhook.policy.workloads import CONTAINER_LISTS, PodSpecError, container_images

API_VERSION = "admission.k8s.io/v1"
ORIGINAL_IMAGES_ANNOTATION = "ccr-webhook.io/original-images"
EPHEMERAL_SUBRESOURCE = "ephemeralcontainers"
_LABELS = {"containers": "container", "initContainers": "init container", "ephemeralContainers": "ephemeral container"}
_AUDIT_KINDS = {"containers": "container", "initContainers": "init", "ephemeralContainers": "ephemeral"}
_AUDIT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a container name is a DNS label
_AUDIT_KEY_LIMIT = 63
_ANNOTATION_POINTER = "/metadata/annotations/" + ORIGINAL_IMAGES_ANNOTATION.replace("~", "~0").replace("/", "~1")
_QUOTED_LIMIT = 200  # an image string is the Pod author's; keep one from swelling every message it appears in
# One encoder each, made once: json.dumps with options builds a new encoder on every call (hot path).
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_dumps_sorted = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_quote = json.JSONEncoder(ensure_ascii=False).encode


class BadReview(CCRWebhookError):
    """The body is not an AdmissionReview v1 for a Pod; `reason` says what is wrong, for a 400 answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Mode(str, enum.Enum):
    """Whether the answer is applied (enforce) or only reported (dry-run)."""

    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


@dataclass(frozen=True, slots=True)
class PodImage:
    """One container's image field: which list, which index, the container's name and the image."""

    field: str
    index: int
    name: str
    image: str

    @property
    def pointer(self) -> str:
        """The JSON pointer of the image field, as the patch names it."""
        return f"/spec/{self.field}/{self.index}/image"

    @property
    def key(self) -> str:
        """`field/name`, the key of the original-images annotation."""
        return f"{self.field}/{self.name}"

    def audit_key(self, action: Action) -> str:
        """The audit annotation key of this image's decision: `container.web.rewrite`, valued the image decided.

        The action is in the key, not the value, because the API server refuses to give an audit annotation
        a second value: on reinvocation (a later webhook adds a sidecar, this one is called again) an image
        already rewritten is decided `leave`, and one admitted unpinned may now be pinned. Each such verdict
        is a key of its own, and a key repeated in a later round carries the same value, the image.
        """
        kind = _AUDIT_KINDS[self.field]
        name = self.name if _AUDIT_NAME.fullmatch(self.name) else ""
        key = f"{kind}.{name}.{action.value}"
        if not name or len(key) > _AUDIT_KEY_LIMIT:  # a qualified name's part: 63 characters of [-A-Za-z0-9_.]
            digest = hashlib.sha256(self.name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            room = _AUDIT_KEY_LIMIT - len(kind) - len(action.value) - len(digest) - 4
            key = f"{kind}.{name[:room]}-{digest}.{action.value}" if name else f"{kind}.{digest}.{action.value}"
        return key

    @property
    def label(self) -> str:
        """How messages name it: `init container "setup" image "busybox:1.36"`."""
        return f"{_LABELS[self.field]} {_quoted(self.name)} image {_quoted(self.image)}"


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What admission needs from a review: its uid, whether it is a dry run, and the images to decide."""

    uid: str
    dry_run: bool
    images: tuple[PodImage, ...]
    annotate: bool  # record original images in an annotation (the API server ignores metadata on a subresource)
    metadata: Mapping[str, Any] | None = None  # the Pod's metadata; None when it has none
    namespace: str = ""  # for the log: whose Pod a denial refuses
    pod: str = ""  # its name, or its generateName when the API server has not named it yet


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    """The review to send back, the decisions behind it, and the warm hints it may cause."""

    review: dict[str, Any]
    decisions: tuple[Decision, ...]
    warm_requests: tuple[WarmRequest, ...]

    @property
    def allowed(self) -> bool:
        """Whether the Pod is admitted."""
        return bool(self.review["response"]["allowed"])


def parse_review(review: Any) -> AdmissionRequest:
    """Validate a decoded AdmissionReview and collect the images admission decides (none for what it lets through)."""
    if not isinstance(review, dict):
        raise BadReview("the body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise BadReview(
            f"expected apiVersion {API_VERSION} and kind AdmissionReview, got "
            f"{review.get('apiVersion')!r} and {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing or not a string")
    dry_run = request.get("dryRun") is True
    operation, sub_resource = request.get("operation"), request.get("subResource") or ""
    if operation == "CREATE" and not sub_resource:
        pod = _pod(request, "object")
        images = tuple(_images(pod))
        metadata = _metadata(pod)
        return AdmissionRequest(uid, dry_run, images, True, metadata, *_whose(request, metadata))
    if operation == "UPDATE" and sub_resource == EPHEMERAL_SUBRESOURCE:
        pod = _pod(request, "object")
        changed = _changed_images(pod, request.get("oldObject"), ("ephemeralContainers",))
        return AdmissionRequest(uid, dry_run, changed, False, None, *_whose(request, pod.get("metadata")))
    if operation == "UPDATE" and not sub_resource:
        # `kubectl set image` changes a running Pod's image: judged like a CREATE, the images left as they
        # were are not (they were decided when the Pod was created, and may be the webhook's own rewrite).
        pod = _pod(request, "object")
        changed = _changed_images(pod, request.get("oldObject"), CONTAINER_LISTS)
        metadata = _metadata(pod)
        return AdmissionRequest(uid, dry_run, changed, True, metadata, *_whose(request, metadata))
    return AdmissionRequest(uid, dry_run, (), annotate=False)


def _whose(request: Mapping[str, Any], metadata: Any) -> tuple[str, str]:
    """The Pod's namespace and name (its generateName before the API server names it), "" where not given."""
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = request.get("namespace") or metadata.get("namespace")
    name = request.get("name") or metadata.get("name") or metadata.get("generateName")
    return (namespace if isinstance(namespace, str) else ""), (name if isinstance(name, str) else "")


def _changed_images(pod: Mapping[str, Any], old: Any, lists: tuple[str, ...]) -> tuple[PodImage, ...]:
    """The images of `pod` in `lists` that `old` (the Pod before the UPDATE) did not have for that container."""
    before = (
        {(i.field, i.name): i.image for i in _images(old, "request.oldObject", lists)} if isinstance(old, dict) else {}
    )
    return tuple(image for image in _images(pod, lists=lists) if before.get((image.field, image.name)) != image.image)


def _pod(request: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    pod = request.get(key)
    if not isinstance(pod, dict) or pod.get("kind") != "Pod":
        raise BadReview(f"request.{key} must be a Pod")
    if not isinstance(pod.get("spec"), dict):
        raise BadReview(f"request.{key}.spec is missing or not an object")
    return pod


def _metadata(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    metadata = pod.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise BadReview("request.object.metadata must be an object")
    if not isinstance(metadata.get("annotations", {}), (dict, type(None))):
        raise BadReview("request.object.metadata.annotations must be an object")
    return metadata


def _images(
    pod: Mapping[str, Any], where: str = "request.object", lists: tuple[str, ...] = CONTAINER_LISTS
) -> list[PodImage]:
    """The images of the Pod's container lists; a container without an image is left to the API server's validation."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    try:
        found = list(container_images(spec, lists=lists))
    except PodSpecError as err:
        raise BadReview(f"{where}.spec.{err}") from None
    return [PodImage(c.container_list, c.index, c.name or str(c.index), c.image) for c in found if c.image is not None]


def build_result(request: AdmissionRequest, decisions: Sequence[Decision], mode: Mode) -> AdmissionResult:
    """The AdmissionReview answering `request`, given one decision per image in order."""
    if len(decisions) != len(request.images):
        raise ValueError(f"{len(request.images)} images but {len(decisions)} decisions")
    pairs = list(zip(request.images, decisions, strict=True))
    denied = [f"{image.label}: {decision.reason}" for image, decision in pairs if decision.action is Action.DENY]
    audit = {"mode": mode.value}
    audit.update((image.audit_key(decision.action), image.image) for image, decision in pairs)
    if mode is Mode.DRY_RUN:
        notes = [_dry_run_warning(image, decision) for image, decision in pairs]
        response = _response(request.uid, [note for note in notes if note], audit)
        return AdmissionResult(_review(response), tuple(decisions), ())
    warnings = [
        f"{image.label}: {decision.reason}"
        for image, decision in pairs
        if decision.action is Action.UNPINNED or decision.warn
    ]
    warnings += _cold_warnings(pairs)
    response = _response(request.uid, warnings, audit)
    if denied:
        response["allowed"] = False
        response["status"] = {"code": 403, "reason": "Forbidden", "message": "; ".join(denied)}
        return AdmissionResult(_review(response), tuple(decisions), ())
    patch = build_patch(request, pairs)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(_dumps(patch).encode()).decode("ascii")
    return AdmissionResult(_review(response), tuple(decisions), () if request.dry_run else warm_requests(decisions))


def build_patch(request: AdmissionRequest, pairs: Sequence[tuple[PodImage, Decision]]) -> list[dict[str, Any]]:
    """JSONPatch ops: `replace` for each changed image, and the original-images annotation (not on a subresource)."""
    changed = [(image, decision.new_image) for image, decision in pairs if decision.new_image is not None]
    ops: list[dict[str, Any]] = [{"op": "replace", "path": image.pointer, "value": new} for image, new in changed]
    if not ops or not request.annotate:
        return ops
    annotations = request.metadata.get("annotations") if request.metadata is not None else None
    value = merge_original_images(annotations, {image.key: image.image for image, _ in changed})
    if request.metadata is None:
        ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: value}}})
    elif annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {ORIGINAL_IMAGES_ANNOTATION: value}})
    else:
        ops.append({"op": "add", "path": _ANNOTATION_POINTER, "value": value})
    return ops


def merge_original_images(annotations: Mapping[str, Any] | None, originals: Mapping[str, str]) -> str:
    """The annotation's JSON value: what it already recorded (reinvocation), with `originals` written over it."""
    merged: dict[str, str] = {}
    try:
        recorded = json.loads((annotations or {}).get(ORIGINAL_IMAGES_ANNOTATION) or "{}")
    except (TypeError, ValueError):
        recorded = {}
    if isinstance(recorded, dict):
        merged.update((key, value) for key, value in recorded.items() if isinstance(value, str))
    merged.update(originals)
    return _dumps_sorted(merged)


def error_result(uid: str, message: str) -> AdmissionResult:
    """An answer that admits the Pod unchanged with a warning: what an internal error must never turn into a 500."""
    response = _response(uid, [f"ccr-webhook: {message}; images admitted unchanged"], {"error": message})
    return AdmissionResult(_review(response), (), ())


def allowed_unchanged(uid: str) -> AdmissionResult:
    """The answer for a review with no images to decide (an UPDATE, or a Pod with no containers)."""
    return AdmissionResult(_review({"uid": uid, "allowed": True}), (), ())


def encode_review(result: AdmissionResult) -> bytes:
    """The review as compact JSON bytes for the HTTP body."""
    return _dumps(result.review).encode()


def _dry_run_warning(image: PodImage, decision: Decision) -> str | None:
    if decision.action is Action.DENY:
        return f"dry-run: {image.label} would be denied: {decision.reason}"
    if decision.action is Action.REWRITE:
        why = f": {decision.reason}" if decision.warn else ""
        return f"dry-run: {image.label} would be rewritten to {decision.new_image}{why}"
    if decision.action is Action.PIN:
        return f"dry-run: {image.label} would be pinned to {decision.new_image}"
    if decision.action is Action.UNPINNED:
        return f"dry-run: {image.label}: {decision.reason}"
    return None


def _cold_warnings(pairs: Sequence[tuple[PodImage, Decision]]) -> list[str]:
    """One warning per distinct image the CCR said it lacks (a Pod often runs one image in several containers)."""
    cold: dict[str, str] = {}
    for image, decision in pairs:
        if decision.cold and decision.image not in cold:
            cold[decision.image] = f"{image.label}: {decision.cold}"
    return list(cold.values())


def warm_requests(decisions: Sequence[Decision]) -> tuple[WarmRequest, ...]:
    """Each distinct warm request once, in Pod order."""
    return tuple(dict.fromkeys(decision.warm for decision in decisions if decision.warm is not None))


def _response(uid: str, warnings: list[str], audit: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True, "auditAnnotations": audit}
    if warnings:
        response["warnings"] = warnings
    return response


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _quoted(text: str) -> str:
    """`text` in double quotes, escaped as JSON, cut short when absurdly long."""
    if len(text) > _QUOTED_LIMIT:
        text = text[:_QUOTED_LIMIT] + "…"
    return _quote(text)
