"""The policy cannot be sidestepped, and keeps its word when things go wrong: gunicorn over TLS, real registries.

`kubectl set image` on a running Pod, a registry named in capitals, a second admission round after
another webhook injects a sidecar (reinvocation), and an upstream that is down, rate limited or silent
while the CCR holds a verified copy of the tag.
"""

import copy
import json

import pytest

from tests.support.faulty_servers import SilentServer
from tests.support.registry_proxy import RegistryProxy
from tests.test_serve_integration import patch_of, pool, registry_digest
from webhook.copier.engine import copy_image
from webhook.registry.client import RegistryClient
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.review_client import admitted_pod, pod_object, pod_review, record_audit_annotations
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook

pytestmark = pytest.mark.integration

WEBHOOK = "enforce.ccr-webhook.io"
TAGS = ("1.0", "2.0", "2.1", "2.2")  # 1.0 for the policy tests; one tag per upstream fault, never cached before


def client(server):
    return RegistryClient(server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2)


@pytest.fixture(scope="module")
def scene():
    """An upstream behind a fault proxy, configured in capitals; a silent one and a dead one; the CCR holds
    copies of team/app under every prefix, made by the copy engine, as the warmer would have made them."""
    silent = SilentServer()
    with RegistryServer() as upstream, RegistryServer() as ccr:
        proxy = RegistryProxy(upstream.host).start()
        source, mirror = client(upstream), client(ccr)
        for seed, tag in enumerate(TAGS):
            pushed = push_sample_image(source, "team/app", tag, [512], seed=10 + seed)
            for prefix in ("up", "gone", "silent"):
                copy_image(source, "team/app", pushed.digest, mirror, f"{prefix}/team/app", tag=tag)
        push_sample_image(source, "team/tool", "1.0", [512], seed=30)
        name = f"LocalHost:{proxy.port}"  # the registry as Pods name it; configured in capitals below
        dead = f"127.0.0.1:{free_port()}"
        settings = {
            "ccr": {"registry": ccr.host, "insecure": True},
            "upstreams": [
                {"registry": name.upper(), "endpoint": proxy.url, "insecure": True, "prefix": "up"},
                {"registry": dead, "insecure": True, "prefix": "gone"},
                {"registry": silent.host, "insecure": True, "prefix": "silent"},
            ],
            "policy": {"swap": "exists"},  # so an image the CCR lacks is pinned upstream, apart from a rewrite
            "resolver": {"readTimeoutSeconds": 4, "connectTimeoutSeconds": 1},
            "webhook": {"deadlineSeconds": 1.5, "warmerUrl": ""},
        }
        with LocalWebhook(settings, workers=1) as hook:
            yield {
                "hook": hook,
                "upstream": upstream,
                "ccr": ccr,
                "proxy": proxy,
                "name": name,
                "dead": dead,
                "silent": silent.host,
            }
        proxy.stop()
    silent.close()


def send(hook, review):
    reply = pool(hook).request(
        "POST", "/mutate", body=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    assert reply.status == 200, reply.data
    response = json.loads(reply.data)["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def update_review(old, new):
    review = pod_review(new)
    review["request"].update(operation="UPDATE", oldObject=old)
    return review


def test_kubectl_set_image_on_a_running_pod_is_judged_like_a_create(scene):
    hook, name, ccr = scene["hook"], scene["name"].lower(), scene["ccr"]
    running = admitted_pod(
        review := pod_review(pod_object("web", "team", [("web", f"{name}/team/app:1.0")])), send(hook, review)
    )
    app_digest = registry_digest(ccr.url, "up/team/app", "1.0")
    assert running["spec"]["containers"][0]["image"] == f"{ccr.host}/up/team/app:1.0@{app_digest}"

    latest = copy.deepcopy(running)
    latest["spec"]["containers"][0]["image"] = f"{name}/team/app:latest"  # kubectl set image pod/web web=...:latest
    refused = send(hook, update_review(running, latest))
    assert not refused["allowed"] and "the tag latest is not allowed" in refused["status"]["message"]

    tool = copy.deepcopy(running)
    tool["spec"]["containers"][0]["image"] = f"{name}/team/tool:1.0"
    updated = admitted_pod(review := update_review(running, tool), send(hook, review))
    tool_digest = registry_digest(scene["upstream"].url, "team/tool", "1.0")
    assert updated["spec"]["containers"][0]["image"] == f"{name}/team/tool:1.0@{tool_digest}"
    assert json.loads(updated["metadata"]["annotations"]["ccr-webhook.io/original-images"]) == {
        "containers/web": f"{name}/team/tool:1.0"
    }

    relabelled = copy.deepcopy(running)
    relabelled["metadata"]["labels"] = {"tier": "web"}
    untouched = send(hook, update_review(running, relabelled))
    assert untouched["allowed"] and "patch" not in untouched


@pytest.mark.parametrize("spelling", ["lower", "upper", "as configured"])
def test_a_registry_named_in_any_case_is_the_configured_upstream(scene, spelling):
    name = {"lower": scene["name"].lower(), "upper": scene["name"].upper(), "as configured": scene["name"]}[spelling]
    response = send(scene["hook"], pod_review(pod_object("web", "team", [("web", f"{name}/team/app:1.0")])))
    digest = registry_digest(scene["ccr"].url, "up/team/app", "1.0")
    assert patch_of(response)[0]["value"] == f"{scene['ccr'].host}/up/team/app:1.0@{digest}"


def test_a_second_round_after_a_sidecar_is_injected_gives_no_audit_annotation_a_new_value(scene):
    hook, name = scene["hook"], scene["name"].lower()
    pod = pod_object("web", "team", [("web", f"{name}/team/app:1.0")], [("setup", f"{name}/team/tool:1.0")])
    recorded = {}
    first = send(hook, review := pod_review(pod, uid="reinvoked"))
    assert record_audit_annotations(recorded, WEBHOOK, first) == []
    after = admitted_pod(review, first)
    after["spec"]["containers"].append({"name": "mesh", "image": f"{name}/team/tool:1.0"})  # another webhook's sidecar
    second = send(hook, review := pod_review(after, uid="reinvoked"))
    assert record_audit_annotations(recorded, WEBHOOK, second) == []
    final = admitted_pod(review, second)
    assert final["spec"]["containers"][1]["image"].endswith(registry_digest(scene["upstream"].url, "team/tool", "1.0"))
    assert {key.split("/", 1)[1] for key in recorded} >= {
        "container.web.rewrite",
        "init.setup.pin",
        "container.mesh.pin",
        "container.web.leave",
        "init.setup.leave",
    }


@pytest.mark.parametrize(
    ("fault", "tag", "prefix", "said"),
    [
        ("429", "2.0", "up", "rate limited, HTTP 429"),
        ("503", "2.1", "up", "registry error, HTTP 503"),
        ("down", "1.0", "gone", "connect"),
        ("silent", "1.0", "silent", "no answer"),
    ],
)
def test_an_upstream_that_cannot_be_asked_pins_to_the_ccrs_verified_copy_with_a_warning(
    scene, fault, tag, prefix, said
):
    host = {"up": scene["name"], "gone": scene["dead"], "silent": scene["silent"]}[prefix]
    if fault in ("429", "503"):
        scene["proxy"].faults[:] = [(int(fault), {"Retry-After": "30"} if fault == "429" else {})] * 3
    try:
        response = send(scene["hook"], pod_review(pod_object("web", "team", [("web", f"{host}/team/app:{tag}")])))
    finally:
        scene["proxy"].faults.clear()
    digest = registry_digest(scene["ccr"].url, f"{prefix}/team/app", tag)
    assert response["allowed"]
    assert patch_of(response)[0]["value"] == f"{scene['ccr'].host}/{prefix}/team/app:{tag}@{digest}"
    [warning] = response["warnings"]
    assert said in warning and f"pinned to {digest}, what the CCR's copy of this tag holds" in warning
