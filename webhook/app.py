"""The Flask application: admission endpoints, health, readiness and metrics, with dependencies passed in.

Every AdmissionReview the webhook can read gets an AdmissionReview back: an unexpected error while
deciding admits the Pod unchanged with a warning (logged with its traceback, counted), never a 500,
because a 500 hands the decision to the webhook's failurePolicy. Bodies it cannot read get a 400 (or
413 when too large) with the reason in plain text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from webhook.admission import (
    AdmissionRequest,
    AdmissionResult,
    BadReview,
    Mode,
    allowed_unchanged,
    build_result,
    encode_review,
    error_result,
    parse_review,
)
from webhook.config import Config
from webhook.logs import request_uid
from webhook.metrics import Metrics
from webhook.policy import Decision

# Decide the images of a Pod within `timeout` seconds: one decision per image, in order.
Evaluate = Callable[[Sequence[str], float], list[Decision]]

# Share of the deadline given to the registries; the rest is for reading the body and writing the answer.
EVALUATION_SHARE = 0.9
_ENDPOINTS = {Mode.ENFORCE: "mutate", Mode.DRY_RUN: "dry-run"}
log = logging.getLogger("webhook.app")


def create_app(config: Config, evaluate: Evaluate, metrics: Metrics) -> Flask:
    """The webhook's Flask application: POST /mutate and /dry-run, GET /healthz, /readyz and /metrics."""
    app = Flask("webhook")
    app.config["MAX_CONTENT_LENGTH"] = config.webhook.max_request_bytes
    endpoint = AdmissionEndpoint(config, evaluate, metrics)
    for mode, name in _ENDPOINTS.items():
        app.add_url_rule(f"/{name}", name, endpoint.view(mode), methods=["POST"])
    app.add_url_rule("/healthz", "healthz", lambda: _text(200, "ok"))
    # Ready once this worker has its configuration and evaluator. Upstream registries are not checked on
    # purpose: failing readiness for them takes the webhook out of its Service and lets failurePolicy decide.
    app.add_url_rule("/readyz", "readyz", lambda: _text(200, "ready"))
    app.add_url_rule("/metrics", "metrics", lambda: _exposition(metrics))
    return app


class AdmissionEndpoint:
    """Answers AdmissionReviews in one mode: read, parse, decide within the deadline, answer, count."""

    def __init__(self, config: Config, evaluate: Evaluate, metrics: Metrics) -> None:
        self.deadline = config.webhook.deadline_seconds
        self.evaluate = evaluate
        self.metrics = metrics

    def view(self, mode: Mode) -> Callable[[], Response]:
        """The Flask view function for `mode`."""
        name = _ENDPOINTS[mode]
        requests, duration = self.metrics.admission_requests, self.metrics.admission_duration.labels(name)

        def answer() -> Response:
            started = time.monotonic()
            response = self.answer(mode, started)
            requests.labels(name, str(response.status_code)).inc()
            duration.observe(time.monotonic() - started)
            return response

        return answer

    def answer(self, mode: Mode, started: float) -> Response:
        """The HTTP response for the current request."""
        if request.mimetype != "application/json":
            return _text(400, f"the body must be an AdmissionReview as application/json, not {request.mimetype or 'nothing'}")
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return _text(413, f"the body is larger than webhook.maxRequestBytes ({request.max_content_length} bytes)")
        try:
            admission = parse_review(json.loads(body))
        except BadReview as err:
            return _text(400, f"not a valid AdmissionReview: {err.reason}")
        except (ValueError, RecursionError) as err:
            return _text(400, f"the body is not JSON: {err}")
        with request_uid(admission.uid):
            result = self.decide(admission, mode, started)
            response = result.review["response"]
            log.info("answered", extra={"fields": {
                "endpoint": _ENDPOINTS[mode], "allowed": response["allowed"], "patched": "patch" in response,
                "images": len(admission.images), "ms": round((time.monotonic() - started) * 1000, 2),
            }})
        return Response(encode_review(result), 200, content_type="application/json")

    def decide(self, admission: AdmissionRequest, mode: Mode, started: float) -> AdmissionResult:
        """The result for a parsed review; any unexpected error admits the Pod unchanged with a warning."""
        if not admission.images:
            return allowed_unchanged(admission.uid)
        timeout = max(0.0, self.deadline * EVALUATION_SHARE - (time.monotonic() - started))
        try:
            decisions = self.evaluate([image.image for image in admission.images], timeout)
            result = build_result(admission, decisions, mode)
        except Exception:
            log.exception("internal error while deciding; the Pod is admitted unchanged")
            self.metrics.internal_errors.inc()
            return error_result(admission.uid, "internal error while deciding")
        for decision in result.decisions:
            self.metrics.decisions.labels(decision.action.value, mode.value).inc()
        return result


def _exposition(metrics: Metrics) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _text(status: int, text: str) -> Response:
    return Response(text + "\n", status, content_type="text/plain; charset=utf-8")
