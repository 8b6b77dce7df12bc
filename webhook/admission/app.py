"""The Flask application: admission endpoints, health, readiness and metrics, with dependencies passed in.

Every AdmissionReview the webhook can read gets an AdmissionReview back: an unexpected error while
deciding admits the Pod unchanged with a warning (logged with its traceback, counted), never a 500,
because a 500 hands the decision to the webhook's failurePolicy. Bodies it cannot read get a 400 (or
413 when too large) with the reason in plain text.

The two admission endpoints are WSGI middleware in front of Flask (`app.wsgi_app`, as Flask documents
for middleware): they are the hot path, and Flask's request and response machinery cost a fifth of the
CPU of a review. Everything else goes through Flask.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask, Response

from webhook.admission.metrics import Metrics
from webhook.admission.warming import Warming
from webhook.config import Config
from webhook.logs import request_uid
from webhook.policy.decide import Action, Decision
from webhook.policy.review import (
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

# Decide the images of a Pod within `timeout` seconds: one decision per image, in order.
Evaluate = Callable[[Sequence[str], float], list[Decision]]

# Share of the deadline given to the registries; the rest is for reading the body and writing the answer.
EVALUATION_SHARE = 0.9
_PATHS = {"/mutate": Mode.ENFORCE, "/dry-run": Mode.DRY_RUN}
_ENDPOINTS = {Mode.ENFORCE: "mutate", Mode.DRY_RUN: "dry-run"}
_STATUS = {200: "200 OK", 400: "400 Bad Request", 405: "405 Method Not Allowed", 413: "413 Content Too Large"}
# The message of an image's line, by endpoint and whether it was refused: a dry run refuses nothing.
_VERDICT_LINES = {
    (Mode.ENFORCE, True): "denied",
    (Mode.ENFORCE, False): "warned",
    (Mode.DRY_RUN, True): "would deny",
    (Mode.DRY_RUN, False): "would warn",
}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
log = logging.getLogger("webhook.admission.app")


def create_app(config: Config, evaluate: Evaluate, metrics: Metrics, warming: Warming | None = None) -> Flask:
    """The webhook's Flask application: POST /mutate and /dry-run, GET /healthz, /readyz and /metrics."""
    app = Flask("webhook")
    app.add_url_rule("/healthz", "healthz", lambda: Response("ok\n", content_type=_TEXT))
    # Ready once this worker has its configuration and evaluator. Upstream registries are not checked on
    # purpose: failing readiness for them takes the webhook out of its Service and lets failurePolicy decide.
    app.add_url_rule("/readyz", "readyz", lambda: Response("ready\n", content_type=_TEXT))
    app.add_url_rule("/metrics", "metrics", lambda: _exposition(metrics))
    app.wsgi_app = AdmissionEndpoints(app.wsgi_app, config, evaluate, metrics, warming)  # type: ignore[method-assign]
    return app


class AdmissionEndpoints:
    """WSGI middleware answering /mutate (enforce) and /dry-run; every other path goes on to `next_app`."""

    def __init__(
        self,
        next_app: WSGIApplication,
        config: Config,
        evaluate: Evaluate,
        metrics: Metrics,
        warming: Warming | None = None,
    ) -> None:
        self.next_app = next_app
        self.warming = warming
        self.deadline = config.webhook.deadline_seconds
        self.max_bytes = config.webhook.max_request_bytes
        self.evaluate = evaluate
        self.metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        mode = _PATHS.get(environ.get("PATH_INFO", ""))
        if mode is None:
            return self.next_app(environ, start_response)
        started = time.monotonic()
        if environ["REQUEST_METHOD"] == "POST":
            status, content_type, body = self.answer(environ, mode, started)
        else:
            status, content_type, body = 405, _TEXT, b"POST an AdmissionReview here\n"
        self.metrics.observe_request(_ENDPOINTS[mode], status, time.monotonic() - started)
        start_response(_STATUS[status], [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def answer(self, environ: WSGIEnvironment, mode: Mode, started: float) -> tuple[int, str, bytes]:
        """Status, content type and body for one POSTed review."""
        content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if content_type != _JSON:
            return _reason(400, f"the body must be an AdmissionReview as {_JSON}, not {content_type or 'nothing'}")
        body = self.read_body(environ)
        if body is None:
            return _reason(413, f"the body is larger than webhook.maxRequestBytes ({self.max_bytes} bytes)")
        try:
            admission = parse_review(json.loads(body))
        except BadReview as err:
            return _reason(400, f"not a valid AdmissionReview: {err.reason}")
        except (ValueError, RecursionError) as err:
            return _reason(400, f"the body is not JSON: {err}")
        with request_uid(admission.uid):
            result = self.decide(admission, mode, started)
            log_answer(admission, result, mode, started)
        return 200, _JSON, encode_review(result)

    def read_body(self, environ: WSGIEnvironment) -> bytes | None:
        """The request body, or None when it is larger than allowed (not read further then)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > self.max_bytes:
            return None
        body = environ["wsgi.input"].read(length if length >= 0 else self.max_bytes + 1)
        return body if len(body) <= self.max_bytes else None

    def decide(self, admission: AdmissionRequest, mode: Mode, started: float) -> AdmissionResult:
        """The result for a parsed review; any unexpected error admits the Pod unchanged with a warning."""
        if not admission.images:
            return allowed_unchanged(admission.uid)
        timeout = max(0.0, self.deadline * EVALUATION_SHARE - (time.monotonic() - started))
        try:
            decisions = self.evaluate([image.image for image in admission.images], timeout)
            if self.warming is not None:
                remaining = max(0.0, self.deadline * EVALUATION_SHARE - (time.monotonic() - started))
                decisions = self.warming.ensure_warm(admission, mode, decisions, remaining)
            result = build_result(admission, decisions, mode)
            if self.warming is not None:
                self.warming.hint(admission, mode, result)
        except Exception:
            log.exception("internal error while deciding; the Pod is admitted unchanged")
            self.metrics.count_internal_error()
            return error_result(admission.uid, "internal error while deciding")
        self.metrics.count_decisions(result.decisions, mode)
        return result


def log_answer(admission: AdmissionRequest, result: AdmissionResult, mode: Mode, started: float) -> None:
    """One line per answer: info when a person should look (a denial, a warning), debug otherwise.

    Routine answers stay at debug because the API server's audit log already records every review
    with its patch and our auditAnnotations, and a line per Pod costs a tenth of the request's CPU.
    An answer worth a look also logs a line per image that was denied (or would be, on /dry-run) or
    warned about, with whose Pod, which container and image, the verdict and its reason as fields.
    """
    response = result.review["response"]
    level = logging.INFO if not response["allowed"] or "warnings" in response else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    whose = {"endpoint": _ENDPOINTS[mode], "namespace": admission.namespace, "pod": admission.pod}
    log.log(
        level,
        "answered",
        extra={
            "fields": {
                **whose,
                "allowed": response["allowed"],
                "patched": "patch" in response,
                "warnings": len(response.get("warnings", ())),
                "images": len(result.decisions),
                "ms": round((time.monotonic() - started) * 1000, 2),
            }
        },
    )
    if level == logging.INFO:
        # not strict: an internal error answers with no decisions at all
        for image, decision in zip(admission.images, result.decisions, strict=False):
            if decision.action is Action.DENY or decision.warn:
                fields = {**whose, "container": image.name, "image": image.image, "verdict": decision.action.value}
                log.info(
                    _VERDICT_LINES[mode, decision.action is Action.DENY],
                    extra={"fields": {**fields, "reason": decision.reason}},
                )


def _exposition(metrics: Metrics) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def _reason(status: int, text: str) -> tuple[int, str, bytes]:
    return status, _TEXT, (text + "\n").encode()
