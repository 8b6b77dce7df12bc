"""AdmissionReview in and out, as pure functions: parsing, patches, annotations, denials, dry-run."""

import base64
import copy
import json

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.policy.decide import Action, Decision, WarmRequest
from webhook.policy.reference import parse_image
from webhook.policy.review import (
    ORIGINAL_IMAGES_ANNOTATION,
    BadReview,
    Mode,
    PodImage,
    allowed_unchanged,
    build_result,
    error_result,
    parse_review,
)

CCR = "ccr.local:5000"
D1 = "sha256:" + "1" * 64


def pod(containers=(("web", "nginx:1.25"),), init=(), ephemeral=(), annotations=None, metadata=True):
    """A Pod object with (name, image) containers."""
    spec = {"containers": [{"name": name, "image": image} for name, image in containers]}
    if init:
        spec["initContainers"] = [{"name": name, "image": image} for name, image in init]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": name, "image": image} for name, image in ephemeral]
    obj = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    if metadata:
        obj["metadata"] = {"name": "p", "namespace": "default"}
        if annotations is not None:
            obj["metadata"]["annotations"] = annotations
    return obj


def review(obj, operation="CREATE", sub_resource=None, old=None, dry_run=False, uid="uid-1"):
    request = {"uid": uid, "operation": operation, "object": obj, "dryRun": dry_run}
    if sub_resource:
        request["subResource"] = sub_resource
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def rewrite(image):
    """What policy says for an upstream image the CCR holds."""
    ref = parse_image(image)
    new = ref.with_digest(D1).with_registry(CCR, ref.registry)
    return Decision(Action.REWRITE, image, "the CCR holds this digest", new_image=str(new))


def leave(image):
    return Decision(Action.LEAVE, image, "already in the wanted form")


def deny(image):
    return Decision(Action.DENY, image, "the tag latest is not allowed; use a version tag or a digest")


def unpinned(image):
    return Decision(Action.UNPINNED, image, f"cannot resolve {image} to a digest (timed out); admitted unpinned")


def pin_and_warm(image):
    ref = parse_image(image).with_digest(D1)
    warm = WarmRequest(ref, ref.with_registry(CCR, ref.registry))
    return Decision(Action.PIN, image, "pinned upstream", new_image=str(ref), warm=warm)


def answer(obj, decide, mode=Mode.ENFORCE, **review_args):
    request = parse_review(review(obj, **review_args))
    return request, build_result(request, [decide(image.image) for image in request.images], mode)


def patch_of(result):
    response = result.review["response"]
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def patched(obj, result):
    return jsonpatch.apply_patch(obj, patch_of(result) or [])


def original_images(obj):
    return json.loads(obj["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION])


# --- parsing ---------------------------------------------------------------------------------------


def test_create_collects_every_image_with_its_pointer_and_name():
    obj = pod(
        containers=[("web", "nginx:1.25"), ("side", "envoy:1")],
        init=[("init", "busybox:1.36")],
        ephemeral=[("debug", "busybox:1.37")],
    )
    request = parse_review(review(obj))
    assert request.uid == "uid-1" and request.annotate and not request.dry_run
    assert [(i.pointer, i.key, i.image) for i in request.images] == [
        ("/spec/containers/0/image", "containers/web", "nginx:1.25"),
        ("/spec/containers/1/image", "containers/side", "envoy:1"),
        ("/spec/initContainers/0/image", "initContainers/init", "busybox:1.36"),
        ("/spec/ephemeralContainers/0/image", "ephemeralContainers/debug", "busybox:1.37"),
    ]


def test_labels_name_the_kind_of_container():
    assert PodImage("initContainers", 0, "init", "busybox").label == 'init container "init" image "busybox"'
    assert PodImage("containers", 0, "web", "a" * 500).label.endswith('a…"')


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_pass_untouched(operation):
    request = parse_review(review(pod(), operation=operation))
    assert request.images == ()
    assert allowed_unchanged(request.uid).review["response"] == {"uid": "uid-1", "allowed": True}


def test_ephemeral_subresource_decides_only_new_ephemeral_containers():
    old = pod(ephemeral=[("debug-1", "busybox:1.36")])
    new = pod(ephemeral=[("debug-1", "busybox:1.36"), ("debug-2", "busybox:1.37")])
    request = parse_review(review(new, operation="UPDATE", sub_resource="ephemeralcontainers", old=old))
    assert [(i.pointer, i.name) for i in request.images] == [("/spec/ephemeralContainers/1/image", "debug-2")]
    assert not request.annotate


def test_container_without_image_is_left_to_api_validation_and_nameless_one_gets_its_index():
    obj = pod()
    obj["spec"]["containers"] = [{"name": "noimage"}, {"image": "nginx:1.25"}]
    assert [(i.key, i.pointer) for i in parse_review(review(obj)).images] == [
        ("containers/1", "/spec/containers/1/image")
    ]


def _broken(change):
    body = review(pod())
    change(body)
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "must be a JSON object"),
        (_broken(lambda b: b.update(apiVersion="admission.k8s.io/v1beta1")), "expected apiVersion admission.k8s.io/v1"),
        (_broken(lambda b: b.update(kind="Pod")), "kind AdmissionReview"),
        (_broken(lambda b: b.pop("request")), "request is missing"),
        (_broken(lambda b: b["request"].pop("uid")), "request.uid is missing"),
        (_broken(lambda b: b["request"].update(uid=7)), "request.uid is missing or not a string"),
        (_broken(lambda b: b["request"].update(object=None)), "request.object must be a Pod"),
        (_broken(lambda b: b["request"]["object"].update(kind="Deployment")), "request.object must be a Pod"),
        (_broken(lambda b: b["request"]["object"].pop("spec")), "request.object.spec is missing"),
        (_broken(lambda b: b["request"]["object"]["spec"].update(containers={})), "spec.containers must be a list"),
        (
            _broken(lambda b: b["request"]["object"]["spec"].update(initContainers=["x"])),
            "spec.initContainers[0] must be an object",
        ),
        (
            _broken(lambda b: b["request"]["object"]["spec"]["containers"][0].update(image=5)),
            "spec.containers[0].image must be a string",
        ),
        (_broken(lambda b: b["request"]["object"].update(metadata=[])), "metadata must be an object"),
        (
            _broken(lambda b: b["request"]["object"]["metadata"].update(annotations="x")),
            "annotations must be an object",
        ),
    ],
)
def test_malformed_reviews_say_what_is_wrong(body, reason):
    with pytest.raises(BadReview) as caught:
        parse_review(body)
    assert reason in caught.value.reason


# --- enforce ---------------------------------------------------------------------------------------


def test_rewrite_patches_only_the_image_and_records_the_original():
    obj = pod(
        containers=[("web", "nginx:1.25"), ("side", f"{CCR}/docker.io/library/envoy:1@{D1}")],
        init=[("init", "busybox:1.36")],
    )
    decide = {"nginx:1.25": rewrite, "busybox:1.36": rewrite}
    _, result = answer(obj, lambda image: decide.get(image, leave)(image))
    response = result.review["response"]
    assert result.allowed and response["uid"] == "uid-1"
    assert [op["op"] for op in patch_of(result)] == ["replace", "replace", "add"]
    after = patched(obj, result)
    assert after["spec"]["containers"][0]["image"] == f"{CCR}/docker.io/library/nginx:1.25@{D1}"
    assert after["spec"]["containers"][1] == obj["spec"]["containers"][1]
    assert after["spec"]["initContainers"][0]["image"] == f"{CCR}/docker.io/library/busybox:1.36@{D1}"
    assert original_images(after) == {"containers/web": "nginx:1.25", "initContainers/init": "busybox:1.36"}
    assert json.loads(response["auditAnnotations"]["decisions"]) == {
        "containers/web": "rewrite",
        "containers/side": "leave",
        "initContainers/init": "rewrite",
    }
    assert response["auditAnnotations"]["mode"] == "enforce"


@pytest.mark.parametrize(
    ("annotations", "metadata", "path"),
    [
        (None, True, "/metadata/annotations"),
        ({"team": "a"}, True, "/metadata/annotations/ccr-webhook.io~1original-images"),
        (None, False, "/metadata"),
    ],
)
def test_annotation_is_added_wherever_the_pod_lacks_it(annotations, metadata, path):
    obj = pod(annotations=annotations, metadata=metadata)
    _, result = answer(obj, rewrite)
    assert patch_of(result)[-1]["path"] == path
    after = patched(obj, result)
    assert original_images(after) == {"containers/web": "nginx:1.25"}
    assert {k: v for k, v in after["metadata"]["annotations"].items() if k != ORIGINAL_IMAGES_ANNOTATION} == (
        annotations or {}
    )


def test_reinvocation_merges_the_annotation():
    recorded = json.dumps({"containers/web": "nginx:1.25"})
    obj = pod(
        containers=[("web", f"{CCR}/docker.io/library/nginx:1.25@{D1}"), ("side", "envoy:1")],
        annotations={ORIGINAL_IMAGES_ANNOTATION: recorded},
    )
    _, result = answer(obj, lambda image: leave(image) if image.startswith(CCR) else rewrite(image))
    assert original_images(patched(obj, result)) == {"containers/web": "nginx:1.25", "containers/side": "envoy:1"}


def test_an_unreadable_annotation_is_replaced():
    obj = pod(annotations={ORIGINAL_IMAGES_ANNOTATION: "not json"})
    _, result = answer(obj, rewrite)
    assert original_images(patched(obj, result)) == {"containers/web": "nginx:1.25"}


def test_nothing_to_change_means_no_patch():
    _, result = answer(pod(), leave)
    assert patch_of(result) is None and result.allowed and "warnings" not in result.review["response"]


def test_denial_names_every_denied_container_and_image():
    obj = pod(containers=[("web", "nginx:latest"), ("ok", "envoy:1")], init=[("init", "busybox")])
    _, result = answer(obj, lambda image: leave(image) if image == "envoy:1" else deny(image))
    response = result.review["response"]
    assert not result.allowed and "patch" not in response and result.warm_requests == ()
    assert response["status"]["code"] == 403 and response["status"]["reason"] == "Forbidden"
    message = response["status"]["message"]
    assert 'container "web" image "nginx:latest": the tag latest is not allowed' in message
    assert 'init container "init" image "busybox": ' in message
    assert '"ok"' not in message


def test_unpinned_images_are_admitted_with_a_warning():
    _, result = answer(
        pod(containers=[("web", "nginx:1.25"), ("side", "envoy:1")]),
        lambda image: unpinned(image) if image == "nginx:1.25" else rewrite(image),
    )
    response = result.review["response"]
    assert result.allowed and patch_of(result)[0]["path"] == "/spec/containers/1/image"
    assert response["warnings"] == [
        'container "web" image "nginx:1.25": cannot resolve nginx:1.25 to a digest (timed out); admitted unpinned'
    ]


def test_an_image_the_ccr_lacks_is_admitted_with_one_warning_per_image():
    def cold(image):
        decision = rewrite(image)
        return Decision(decision.action, image, decision.reason, decision.new_image, cold="not in the CCR yet")

    _, result = answer(
        pod(containers=[("web", "nginx:1.25"), ("side", "envoy:1")], init=[("migrate", "nginx:1.25")]),
        lambda image: cold(image) if image == "nginx:1.25" else rewrite(image),
    )
    assert result.allowed and len(patch_of(result)) == 4  # three images and the annotation
    assert result.review["response"]["warnings"] == ['container "web" image "nginx:1.25": not in the CCR yet']
    _, dry = answer(pod(), cold, mode=Mode.DRY_RUN)
    assert all("not in the CCR" not in warning for warning in dry.review["response"]["warnings"])


def test_ephemeral_subresource_patch_has_no_annotation():
    old = pod(ephemeral=[("debug-1", "busybox:1.36")])
    new = pod(ephemeral=[("debug-1", "busybox:1.36"), ("debug-2", "busybox:1.37")])
    _, result = answer(new, rewrite, operation="UPDATE", sub_resource="ephemeralcontainers", old=old)
    assert patch_of(result) == [
        {
            "op": "replace",
            "path": "/spec/ephemeralContainers/1/image",
            "value": f"{CCR}/docker.io/library/busybox:1.37@{D1}",
        }
    ]


def test_warm_requests_once_each_and_none_on_a_dry_run_request():
    obj = pod(containers=[("a", "nginx:1.25"), ("b", "nginx:1.25")])
    _, result = answer(obj, pin_and_warm)
    assert result.warm_requests == (pin_and_warm("nginx:1.25").warm,)
    _, dry = answer(obj, pin_and_warm, dry_run=True)
    assert dry.warm_requests == () and patch_of(dry) is not None


def test_error_result_admits_unchanged_with_a_warning():
    response = error_result("uid-9", "internal error while deciding").review["response"]
    assert response["allowed"] and response["uid"] == "uid-9" and "patch" not in response
    assert response["warnings"] == ["ccr-webhook: internal error while deciding; images admitted unchanged"]


def test_decisions_must_match_the_images():
    request = parse_review(review(pod()))
    with pytest.raises(ValueError):
        build_result(request, [], Mode.ENFORCE)


# --- dry-run ---------------------------------------------------------------------------------------


def test_dry_run_mode_allows_without_patch_and_says_what_would_happen():
    obj = pod(
        containers=[
            ("web", "nginx:1.25"),
            ("pin", "envoy:1"),
            ("bad", "nginx:latest"),
            ("slow", "redis:7"),
            ("same", f"{CCR}/x@{D1}"),
        ]
    )
    decide = {"nginx:1.25": rewrite, "envoy:1": pin_and_warm, "nginx:latest": deny, "redis:7": unpinned}
    _, result = answer(obj, lambda image: decide.get(image, leave)(image), mode=Mode.DRY_RUN)
    response = result.review["response"]
    assert result.allowed and "patch" not in response and "status" not in response and result.warm_requests == ()
    assert response["warnings"] == [
        f'dry-run: container "web" image "nginx:1.25" would be rewritten to {CCR}/docker.io/library/nginx:1.25@{D1}',
        f'dry-run: container "pin" image "envoy:1" would be pinned to docker.io/library/envoy:1@{D1}',
        'dry-run: container "bad" image "nginx:latest" would be denied: the tag latest is not allowed; '
        "use a version tag or a digest",
        'dry-run: container "slow" image "redis:7": cannot resolve redis:7 to a digest (timed out); admitted unpinned',
    ]
    assert all(len(warning) < 256 for warning in response["warnings"])
    audit = response["auditAnnotations"]
    assert audit["mode"] == "dry-run" and audit["would-deny"].startswith('container "bad" image "nginx:latest"')
    assert json.loads(audit["decisions"])["containers/web"] == "rewrite"


# --- every patch is clean --------------------------------------------------------------------------

_names = st.text("abcdefghij-", min_size=1, max_size=6)
_images = st.sampled_from(["nginx:1.25", "busybox:1.36", "quay.io/org/app:2", f"{CCR}/docker.io/library/x@{D1}"])
_containers = st.lists(st.tuples(_names, _images), max_size=4, unique_by=lambda c: c[0])
_verdicts = st.sampled_from([rewrite, leave, unpinned, pin_and_warm])


@given(
    _containers.filter(bool),
    _containers,
    st.one_of(st.none(), st.dictionaries(_names, _names, max_size=2)),
    st.booleans(),
    st.data(),
)
def test_every_patch_applies_and_touches_only_images_and_the_annotation(containers, init, annotations, metadata, data):
    obj = pod(containers=containers, init=init, annotations=annotations, metadata=metadata)
    verdicts = {image: data.draw(_verdicts) for _, image in containers + init}
    _, result = answer(obj, lambda image: verdicts[image](image))
    after = patched(copy.deepcopy(obj), result)
    expected = copy.deepcopy(obj)
    changed = {}
    for field, listed in (("containers", containers), ("initContainers", init)):
        for index, (name, image) in enumerate(listed):
            new = verdicts[image](image).new_image
            if new is not None:
                expected["spec"][field][index]["image"] = new
                changed[f"{field}/{name}"] = image
    if changed:
        expected.setdefault("metadata", {}).setdefault("annotations", {})
        expected["metadata"]["annotations"] = {
            **(expected["metadata"]["annotations"] or {}),
            ORIGINAL_IMAGES_ANNOTATION: after["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION],
        }
        assert original_images(after) == changed
    assert after == expected
