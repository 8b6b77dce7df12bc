"""The Flask application in process: routes, status codes, errors that never become 500s, metrics, logs."""

import base64
import io
import json
import logging

import pytest
from werkzeug.test import EnvironBuilder

from webhook.admission.app import EVALUATION_SHARE, create_app
from webhook.admission.metrics import Metrics
from webhook.config import parse_config
from webhook.logs import JsonFormatter
from webhook.policy.decide import ImageFacts, Lookup, decide_image, plan_image

CCR = "ccr.local:5000"
D1 = "sha256:" + "1" * 64
CONFIG = parse_config(
    {
        "ccr": {"registry": CCR},
        "upstreams": [{"registry": "docker.io"}],
        "webhook": {"maxRequestBytes": 4096, "deadlineSeconds": 1.5},
    }
)


def review(*images, uid="uid-1"):
    containers = [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": containers},
            },
        },
    }


HELD = ImageFacts(digest=D1, in_ccr=True)


class FakeEvaluator:
    """Decides with the real policy and fixed registry facts, remembering the timeouts it was given."""

    def __init__(self, facts=HELD, error=None):
        self.facts, self.error, self.timeouts = facts, error, []

    def __call__(self, images, timeout):
        self.timeouts.append(timeout)
        if self.error:
            raise self.error
        plans = [plan_image(image, CONFIG) for image in images]
        return [decide_image(plan, self.facts, CONFIG) if isinstance(plan, Lookup) else plan for plan in plans]


@pytest.fixture
def evaluator():
    return FakeEvaluator()


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def client(evaluator, metrics):
    return create_app(CONFIG, evaluator, metrics).test_client()


def post(client, body, path="/mutate", content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_mutate_answers_with_a_patch(client, evaluator):
    reply = post(client, review("nginx:1.25"))
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    response = reply.get_json()["response"]
    assert response["allowed"] and response["uid"] == "uid-1"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch[0] == {
        "op": "replace",
        "path": "/spec/containers/0/image",
        "value": f"{CCR}/docker.io/library/nginx:1.25@{D1}",
    }
    assert 0 < evaluator.timeouts[0] <= CONFIG.webhook.deadline_seconds * EVALUATION_SHARE


def test_dry_run_answers_with_warnings_only(client):
    response = post(client, review("nginx:1.25", "nginx:latest"), path="/dry-run").get_json()["response"]
    assert response["allowed"] and "patch" not in response
    assert len(response["warnings"]) == 2 and all(w.startswith("dry-run: ") for w in response["warnings"])


def test_a_review_without_images_is_not_evaluated(client, evaluator):
    response = post(client, review()).get_json()["response"]
    assert response == {"uid": "uid-1", "allowed": True} and evaluator.timeouts == []


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        ("{}", "text/plain", "must be an AdmissionReview as application/json, not text/plain"),
        ("{not json", "application/json", "the body is not JSON"),
        ("[" * 2000 + "]" * 2000, "application/json", "the body is not JSON"),
        (b"\xff\xfe\x00", "application/json", "the body is not JSON"),
        ({"kind": "AdmissionReview"}, "application/json", "not a valid AdmissionReview: expected apiVersion"),
    ],
)
def test_unreadable_bodies_get_400_with_the_reason(client, metrics, body, content_type, reason):
    reply = post(client, body, content_type=content_type)
    assert reply.status_code == 400 and reason in reply.get_data(as_text=True)
    assert sample(metrics, "ccr_webhook_admission_requests_total", endpoint="mutate", code="400") == 1


def test_oversize_bodies_get_413(client, metrics):
    reply = post(client, review("nginx:1.25", *["busybox:1.36"] * 100))
    assert reply.status_code == 413 and "webhook.maxRequestBytes (4096 bytes)" in reply.get_data(as_text=True)
    assert sample(metrics, "ccr_webhook_admission_requests_total", endpoint="mutate", code="413") == 1


def test_an_evaluation_error_admits_unchanged_logs_and_counts(metrics, caplog):
    app = create_app(CONFIG, FakeEvaluator(error=RuntimeError("boom")), metrics)
    with caplog.at_level(logging.ERROR, logger="webhook.admission.app"):
        reply = post(app.test_client(), review("nginx:1.25"))
    response = reply.get_json()["response"]
    assert reply.status_code == 200 and response["allowed"] and "patch" not in response
    assert "internal error" in response["warnings"][0] and "boom" not in reply.get_data(as_text=True)
    assert "boom" in caplog.text and caplog.records[0].exc_info
    assert sample(metrics, "ccr_webhook_internal_errors_total") == 1


def test_metrics_count_requests_decisions_and_durations(client, metrics):
    post(client, review("nginx:1.25", "nginx:latest"))
    post(client, review("nginx:1.25"), path="/dry-run")
    assert sample(metrics, "ccr_webhook_admission_requests_total", endpoint="mutate", code="200") == 1
    assert sample(metrics, "ccr_webhook_admission_requests_total", endpoint="dry-run", code="200") == 1
    assert sample(metrics, "ccr_webhook_decisions_total", action="rewrite", mode="enforce") == 1
    assert sample(metrics, "ccr_webhook_decisions_total", action="deny", mode="enforce") == 1
    assert sample(metrics, "ccr_webhook_decisions_total", action="rewrite", mode="dry-run") == 1
    assert sample(metrics, "ccr_webhook_admission_duration_seconds_count", endpoint="mutate") == 1
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.mimetype == "text/plain"
    text = reply.get_data(as_text=True)
    assert 'ccr_webhook_decisions_total{action="deny",mode="enforce"} 1.0' in text
    assert "ccr_webhook_resolver_lookups_total" in text


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_data(as_text=True) == "ready\n"
    assert client.get("/mutate").status_code == 405


def logged(client, body, path="/mutate", level=logging.INFO):
    """The JSON lines logged at `level` and above while answering `body`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("webhook")
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        post(client, body, path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_logged_while_answering_carries_the_uid(client):
    lines = logged(client, review("nginx:1.25", uid="uid-logged"), level=logging.DEBUG)
    assert lines and all(line["uid"] == "uid-logged" for line in lines)
    assert {"time", "level", "logger", "message"} <= set(lines[-1])
    assert lines[-1]["allowed"] is True and lines[-1]["patched"] is True
    assert "nginx" not in json.dumps(lines), "request bodies and images stay out of the logs"


@pytest.mark.parametrize(("images", "level"), [(["nginx:1.25"], "DEBUG"), (["nginx:latest"], "INFO")])
def test_routine_answers_log_at_debug_denials_at_info(client, caplog, images, level):
    with caplog.at_level(logging.DEBUG, logger="webhook.admission.app"):
        post(client, review(*images))
    assert [record.levelname for record in caplog.records if record.getMessage() == "answered"] == [level]


@pytest.mark.parametrize(("size", "status"), [(4000, "400 Bad Request"), (5000, "413 Content Too Large")])
def test_a_body_without_content_length_is_read_only_up_to_the_limit(client, size, status):
    environ = EnvironBuilder(
        path="/mutate", method="POST", content_type="application/json", input_stream=io.BytesIO(b" " * size)
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    started = {}
    body = b"".join(client.application.wsgi_app(environ, lambda status, headers: started.update(status=status)))
    assert started["status"] == status
    assert (b"larger than webhook.maxRequestBytes" in body) == (size > CONFIG.webhook.max_request_bytes)


@pytest.mark.parametrize(("path", "message"), [("/mutate", "denied"), ("/dry-run", "would deny")])
def test_a_denial_logs_whose_pod_which_container_and_image_and_why(client, path, message):
    body = review("nginx:1.25", "nginx:latest", uid="uid-denied")
    body["request"]["namespace"] = "team-a"
    lines = logged(client, body, path)
    [verdict] = [line for line in lines if line["message"] == message]
    assert verdict["uid"] == "uid-denied" and verdict["namespace"] == "team-a" and verdict["pod"] == "p"
    assert verdict["container"] == "c1" and verdict["image"] == "nginx:latest" and verdict["verdict"] == "deny"
    assert "latest" in verdict["reason"]
    [answered] = [line for line in lines if line["message"] == "answered"]
    assert answered["namespace"] == "team-a" and answered["pod"] == "p"
    assert "nginx:1.25" not in json.dumps(lines), "an image that was admitted stays out of the log"


def test_a_pod_not_named_yet_is_logged_by_its_generate_name(client):
    body = review("nginx:latest")
    body["request"]["object"]["metadata"] = {"generateName": "web-7d9f4-", "namespace": "team-b"}
    [verdict] = [line for line in logged(client, body) if line["message"] == "denied"]
    assert verdict["pod"] == "web-7d9f4-" and verdict["namespace"] == "team-b"
