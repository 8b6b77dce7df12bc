"""`ccr-webhook serve` for real: gunicorn over TLS (CA-verified) against real distribution registries."""

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonpatch
import pytest
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from tests.support.faulty_servers import SilentServer
from tests.support.waiting import deadline_ceiling, wait_until
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import push_sample_image
from webhook.testing.webhook_process import LocalWebhook
from webhook.tls.expiry import EXPIRY_METRIC

pytestmark = pytest.mark.integration

DEADLINE = 1.0
ANSWERED_WITHIN = deadline_ceiling(DEADLINE)  # "answered by the deadline", generous for a loaded CI
READ_TIMEOUT = ANSWERED_WITHIN + 1  # above it: an answer that waited for a silent registry's read timeout fails
MAX_REQUEST_BYTES = 64 * 1024


def registry_digest(url, repository, reference):
    """The Docker-Content-Digest a registry answers for a manifest HEAD, asked without our client."""
    head = urllib3.request(
        "HEAD", f"{url}/v2/{repository}/manifests/{reference}", headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}
    )
    assert head.status == 200, head.status
    return head.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def registries():
    """An upstream with four images (app a two-platform index), and a CCR holding all but tool."""
    with RegistryServer() as upstream, RegistryServer() as ccr:
        for seed, name in enumerate(("app", "init", "debug", "tool")):
            platforms = 2 if name == "app" else 1
            for server, prefix in ((upstream, ""), (ccr, "up/")):
                if not (name == "tool" and server is ccr):
                    client = RegistryClient(
                        server.url, insecure=True, connect_timeout=2, read_timeout=10, max_connections=2
                    )
                    push_sample_image(client, f"{prefix}team/{name}", "1.0", [512], seed, platforms)
        yield upstream, ccr


@pytest.fixture(scope="module")
def silent():
    """A configured upstream that never answers, an unlisted registry, and a configured one nothing listens on."""
    slow, unlisted = SilentServer(), SilentServer()
    yield slow, unlisted, f"127.0.0.1:{free_port()}"
    slow.close()
    unlisted.close()


def settings(registries, silent, on_resolve_error):
    upstream, ccr = registries
    return {
        "ccr": {"registry": ccr.host, "insecure": True},
        "upstreams": [
            {"registry": upstream.host, "insecure": True, "prefix": "up"},
            {"registry": silent[2], "insecure": True, "prefix": "down"},
            {"registry": silent[0].host, "insecure": True, "prefix": "slow"},
        ],
        "policy": {"swap": "exists", "onResolveError": on_resolve_error},  # the CCR's answer decides rewrite or pin
        "resolver": {"readTimeoutSeconds": READ_TIMEOUT, "connectTimeoutSeconds": 1},
        "webhook": {"deadlineSeconds": DEADLINE, "maxRequestBytes": MAX_REQUEST_BYTES},
    }


@pytest.fixture(scope="module")
def hook(registries, silent):
    with LocalWebhook(settings(registries, silent, "allow"), workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def strict_hook(registries, silent):
    with LocalWebhook(settings(registries, silent, "deny"), workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def images(registries, silent):
    """Image references by role, as Pods name them."""
    upstream, ccr = registries
    down = silent[2]
    return {
        "app": f"{upstream.host}/team/app:1.0",
        "init": f"{upstream.host}/team/init:1.0",
        "debug": f"{upstream.host}/team/debug:1.0",
        "tool": f"{upstream.host}/team/tool:1.0",
        "down": f"{down}/team/app:1.0",
        "slow": f"{silent[0].host}/team/app:1.0",
        "unlisted": f"{silent[1].host}/team/app:1.0",
        "ccr": ccr.host,
    }


def pool(server):
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1",
        server.port,
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(server.ca_file),
        maxsize=4,
        timeout=10,
        retries=False,
    )


def pod(containers, init=(), ephemeral=(), annotations=None):
    spec = {"containers": [{"name": name, "image": image} for name, image in containers]}
    if init:
        spec["initContainers"] = [{"name": name, "image": image} for name, image in init]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": name, "image": image} for name, image in ephemeral]
    metadata = {"name": "p", "namespace": "team"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def review(obj, uid="uid-1", **request):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "object": obj, **request},
    }


def admit(server, body, path="/mutate", headers=None):
    """POST a review; the HTTP reply and how long it took."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    started = time.monotonic()
    reply = pool(server).request(
        "POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    return reply, time.monotonic() - started


def response_of(server, body, path="/mutate"):
    reply, _ = admit(server, body, path)
    assert reply.status == 200, reply.data
    answer = json.loads(reply.data)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    return answer["response"]


def patch_of(response):
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


def test_health_and_readiness(hook):
    client = pool(hook)
    assert client.request("GET", "/healthz").status == 200
    assert client.request("GET", "/readyz").status == 200


def test_rewrites_to_the_ccr_pinned_to_the_registry_digest(hook, registries, images):
    upstream, ccr = registries
    response = response_of(hook, review(pod([("web", images["app"]), ("tool", images["tool"])])))
    assert response["allowed"]
    replaced = {op["path"]: op["value"] for op in patch_of(response) if op["op"] == "replace"}
    app_digest = registry_digest(upstream.url, "team/app", "1.0")
    assert app_digest == registry_digest(ccr.url, "up/team/app", "1.0")
    assert replaced["/spec/containers/0/image"] == f"{ccr.host}/up/team/app:1.0@{app_digest}"
    # the CCR lacks tool: pinned upstream to the digest the upstream reports
    assert (
        replaced["/spec/containers/1/image"] == f"{images['tool']}@{registry_digest(upstream.url, 'team/tool', '1.0')}"
    )


def test_patched_pod_comes_back_unchanged(hook, images):
    obj = pod([("web", images["app"]), ("tool", images["tool"])], init=[("init", images["init"])])
    patched = jsonpatch.apply_patch(obj, patch_of(response_of(hook, review(obj))))
    assert json.loads(patched["metadata"]["annotations"]["ccr-webhook.io/original-images"]) == {
        "containers/web": images["app"],
        "containers/tool": images["tool"],
        "initContainers/init": images["init"],
    }
    again = response_of(hook, review(patched, uid="uid-2"))
    assert again["allowed"] and "patch" not in again


def test_latest_and_implied_latest_are_denied_by_container_name(hook, images):
    bare = images["app"].rsplit(":", 1)[0]
    response = response_of(hook, review(pod([("web", images["app"]), ("a", f"{bare}:latest")], init=[("b", bare)])))
    assert not response["allowed"] and "patch" not in response
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert f'container "a" image "{bare}:latest": the tag latest is not allowed' in message
    assert f'init container "b" image "{bare}": no tag means latest' in message
    assert '"web"' not in message


def test_dry_run_warns_and_never_patches(hook, images):
    bare = images["app"].rsplit(":", 1)[0]
    response = response_of(hook, review(pod([("web", images["app"]), ("a", bare)])), path="/dry-run")
    assert response["allowed"] and "patch" not in response
    assert response["warnings"][0].startswith(f'dry-run: container "web" image "{images["app"]}" would be rewritten to')
    assert response["warnings"][1].startswith(f'dry-run: container "a" image "{bare}" would be denied: no tag means')


def test_init_and_ephemeral_containers(hook, images):
    ccr = images["ccr"]
    response = response_of(hook, review(pod([("web", images["app"])], init=[("init", images["init"])])))
    paths = [op["path"] for op in patch_of(response)]
    assert paths[:2] == ["/spec/containers/0/image", "/spec/initContainers/0/image"]
    old = pod([("web", images["app"])], ephemeral=[("debug-1", images["tool"])])
    new = pod([("web", images["app"])], ephemeral=[("debug-1", images["tool"]), ("debug-2", images["debug"])])
    response = response_of(
        hook, review(new, uid="uid-e", operation="UPDATE", subResource="ephemeralcontainers", oldObject=old)
    )
    [op] = patch_of(response)
    assert op["path"] == "/spec/ephemeralContainers/1/image" and op["value"].startswith(f"{ccr}/up/team/debug:1.0@")


def test_unlisted_registry_is_left_alone_and_never_contacted(hook, silent, images):
    response = response_of(hook, review(pod([("web", images["unlisted"])])))
    assert response["allowed"] and "patch" not in response and "warnings" not in response
    assert silent[1].held == []


@pytest.mark.parametrize("role", ["down", "slow"])
def test_unreachable_upstream_admits_unpinned_within_the_deadline(hook, images, role):
    reply, elapsed = admit(
        hook,
        review(
            pod(
                [("web", images[role]), ("ok", images["app"])],
            ),
            uid=f"uid-{role}",
        ),
    )
    assert elapsed < ANSWERED_WITHIN and reply.status == 200
    response = json.loads(reply.data)["response"]
    assert response["allowed"]
    assert patch_of(response)[0]["path"] == "/spec/containers/1/image"
    [warning] = response["warnings"]
    assert (
        warning.startswith(f'container "web" image "{images[role]}": cannot resolve') and "admitted unpinned" in warning
    )


@pytest.mark.parametrize("role", ["down", "slow"])
def test_unreachable_upstream_denies_when_policy_says_deny(strict_hook, images, role):
    reply, elapsed = admit(strict_hook, review(pod([("web", images[role])]), uid=f"uid-strict-{role}"))
    assert elapsed < ANSWERED_WITHIN and reply.status == 200
    response = json.loads(reply.data)["response"]
    assert not response["allowed"]
    assert response["status"]["message"].startswith(f'container "web" image "{images[role]}": cannot resolve')
    assert "policy.onResolveError is deny" in response["status"]["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{oops", "application/json", 400, "the body is not JSON"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "application/json", 400, "not a valid AdmissionReview"),
        (b"{}", "application/x-www-form-urlencoded", 400, "must be an AdmissionReview as application/json"),
        (b"{" + b" " * MAX_REQUEST_BYTES + b"}", "application/json", 413, "larger than webhook.maxRequestBytes"),
    ],
)
def test_unreadable_bodies_get_a_reason(hook, body, content_type, status, reason):
    reply, _ = admit(hook, body, headers={"Content-Type": content_type})
    assert reply.status == status and reason in reply.data.decode()


def _counter(server, name, **labels):
    text = pool(server).request("GET", "/metrics", headers={"Connection": "close"}).data.decode()
    wanted = name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted + " "))


def _answered_lines(server, uid_prefix):
    """The server's "answered" log lines for reviews whose uid starts with `uid_prefix`."""
    lines = (json.loads(line) for line in server.log().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("uid", "").startswith(uid_prefix) and line["message"] == "answered"]


def _answering_pids(server, uid_prefix):
    return {line["pid"] for line in _answered_lines(server, uid_prefix)}


def test_metrics_add_up_across_workers(hook, images):
    before = _counter(hook, "ccr_webhook_admission_requests_total", code="200", endpoint="mutate")
    sent = 0
    while len(_answering_pids(hook, "uid-metrics-")) < 2 and sent < 200:
        # an unreachable upstream's warning makes the answer logged at info, with the worker's pid
        body = review(pod([("web", images["down"])]), uid=f"uid-metrics-{sent}")
        reply, _ = admit(hook, body, headers={"Connection": "close"})
        assert reply.status == 200
        sent += 1
    assert len(_answering_pids(hook, "uid-metrics-")) == 2, "both workers answered"
    for _ in range(4):  # whichever worker answers /metrics, it counts every worker's requests
        assert _counter(hook, "ccr_webhook_admission_requests_total", code="200", endpoint="mutate") == before + sent


def test_metrics_name_each_lookup_s_registry_and_when_the_served_certificate_expires(hook, images):
    def samples():
        text = pool(hook).request("GET", "/metrics", headers={"Connection": "close"}).data.decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def lookups(registry):
        return sum(
            s.value
            for s in samples()
            if s.name == "ccr_webhook_resolver_lookups_total" and s.labels["registry"] == registry
        )

    down, ccr = images["down"].split("/")[0], images["ccr"]
    before = lookups(down)
    reply, _ = admit(hook, review(pod([("web", images["down"])]), uid="uid-registry-label"))
    assert reply.status == 200
    assert lookups(down) > before  # an error, or a hit on the cached error: under the upstream's own name
    registries = {s.labels["registry"] for s in samples() if s.name == "ccr_webhook_resolver_lookups_total"}
    assert {down, ccr, "other"} <= registries and len(registries) == 5  # three upstreams, the CCR, other
    (expiry,) = [s for s in samples() if s.name == EXPIRY_METRIC]
    assert expiry.labels == {"certificate": "serving"} and expiry.value > time.time() + 86400


def test_build_info_is_one_series_across_workers(hook):
    from importlib.metadata import version

    for _ in range(4):  # whichever worker answers
        text = pool(hook).request("GET", "/metrics", headers={"Connection": "close"}).data.decode()
        series = [line for line in text.splitlines() if line.startswith("ccr_webhook_build_info{")]
        assert series == [f'ccr_webhook_build_info{{version="{version("ccr-webhook")}"}} 1.0']


def test_the_log_is_json_only_and_starts_with_the_version_the_configuration_and_the_address(hook):
    from importlib.metadata import version

    lines = [json.loads(line) for line in hook.log().splitlines()]  # every line is one JSON object
    [start] = [line for line in lines if line["message"].startswith("starting ccr-webhook")]
    assert start["version"] == version("ccr-webhook") and start["listen"] == f"127.0.0.1:{hook.port}"
    assert start["config"]["webhook"]["deadlineSeconds"] == DEADLINE and start["config"]["policy"]["swap"] == "exists"
    [listening] = [line["message"] for line in lines if line["message"].startswith("Listening at:")]
    assert listening.startswith(f"Listening at: 127.0.0.1:{hook.port} (")


def test_a_second_serve_on_a_taken_port_refuses_in_one_line(hook):
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--config", str(hook.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"ccr-webhook serve: 127.0.0.1:{hook.port} (webhook.listen) is already in use by another process: "
        "stop it, or set another webhook.listen\n"
    )


def test_routine_answers_are_logged_only_at_debug(registries, silent, hook, images):
    response_of(hook, review(pod([("web", images["app"])]), uid="uid-routine"))
    assert _answered_lines(hook, "uid-routine") == []
    with LocalWebhook(settings(registries, silent, "allow"), workers=1, serve_args=["--log-level", "debug"]) as server:
        response_of(server, review(pod([("web", images["app"])]), uid="uid-routine"))
        [line] = _answered_lines(server, "uid-routine")
    assert line["level"] == "debug" and line["patched"] is True


def test_sigterm_lets_an_answer_in_flight_finish(registries, silent, images):
    with LocalWebhook(settings(registries, silent, "allow"), workers=1) as server:
        answers = []
        slow = threading.Thread(target=lambda: answers.append(admit(server, review(pod([("web", images["slow"])])))))
        looking_up = len(silent[0].held)
        slow.start()
        wait_until(lambda: len(silent[0].held) > looking_up, what="the answer in flight, asking the silent registry")
        assert server.terminate() == 0
        slow.join()
        reply, _ = answers[0]
        assert reply.status == 200 and json.loads(reply.data)["response"]["allowed"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "webhook.tlsCert and webhook.tlsKey (or --tls-cert and --tls-key) are required"),
        ({"tlsCert": "/nonexistent.crt", "tlsKey": "/nonexistent.key"}, "cannot load /nonexistent.crt"),
    ],
)
def test_serve_without_a_usable_certificate_fails_with_one_clear_line(tmp_path, files, message):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"ccr": {"registry": "ccr.local:5000"}, "webhook": files}))
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 2
    assert done.stderr.startswith("ccr-webhook serve: configuration error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
