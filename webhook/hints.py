"""Warm hints: the webhook telling the warmer in its own Pod, over loopback, which images the CCR lacks.

    POST /hints[?wait=SECONDS]   {"requests": [{"source": "<upstream image>", "target": "<CCR image>"}]}
    200 {"results": [{"source": ..., "target": ..., "state": ..., "reason": ...}]}

`state` is `present` (the CCR holds it), `queued`, `running`, `done`, `failed` or `rejected` (with a
reason). With `wait` the answer comes when every accepted image is done or failed, or when the wait is
over. Only loopback clients are served (the warmer's HTTPService, `loopback_only`, refuses any other peer
before it reads the body); a hint is a suggestion the warmer checks against its own
configuration, never an instruction to contact a registry.

The webhook side (`HintClient`) never makes admission wait on a hint: `send` hands the hints to one
background sender through a bounded backlog, and hints that do not fit, or that the warmer does not
take, are dropped and counted. Only `warm` (for `policy.copy: force`) waits, and only as long as told.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from webhook.errors import CCRWebhookError
from webhook.http_service import JSON, Reply, Request, Route
from webhook.policy.decide import WarmRequest

PATH = "/hints"
MAX_HINTS = 64  # per request; the sender batches up to this many
MAX_WAIT_SECONDS = 30.0  # the API server's own limit for a webhook
IN_CCR = frozenset({"present", "done"})
log = logging.getLogger("webhook.hints")


class BadHints(CCRWebhookError):
    """A hint body that is not the protocol's JSON."""


@dataclass(frozen=True, slots=True)
class Hint:
    """One image the webhook saw: its upstream source and the CCR target it expects."""

    source: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class HintResult:
    """What became of one hint."""

    source: str
    target: str | None
    state: str
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The protocol's JSON object for this result."""
        found = {"source": self.source, "target": self.target, "state": self.state, "reason": self.reason}
        return {key: value for key, value in found.items() if value is not None}


def encode_hints(requests: Sequence[WarmRequest]) -> bytes:
    """The body of a hint POST for `requests`."""
    return json.dumps({"requests": [{"source": str(r.source), "target": str(r.target)} for r in requests]}).encode()


def parse_hints(body: bytes) -> list[Hint]:
    """The hints of a POST body; BadHints says what is wrong with it."""
    try:
        document = json.loads(body or b"null")
    except ValueError as err:
        raise BadHints(f"the body is not JSON: {err}") from None
    items = document.get("requests") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise BadHints('the body must be {"requests": [{"source": ..., "target": ...}]}')
    if len(items) > MAX_HINTS:
        raise BadHints(f"at most {MAX_HINTS} hints per request, got {len(items)}")
    hints = []
    for index, item in enumerate(items):
        source = item.get("source") if isinstance(item, dict) else None
        target = item.get("target") if isinstance(item, dict) else None
        if not isinstance(source, str) or not isinstance(target, (str, type(None))):
            raise BadHints(f"requests[{index}] must have a string source (and a string target)")
        hints.append(Hint(source, target))
    return hints


def hints_route(handle: Callable[[list[Hint], float], list[HintResult]]) -> Route:
    """The POST /hints route (serve it `loopback_only`): body parsed, `handle(hints, wait_seconds)` answered as JSON."""

    def route(request: Request) -> Reply:
        try:
            wait = float(request.query.get("wait") or 0)
            hints = parse_hints(request.body)
        except (ValueError, BadHints) as err:
            return Reply(400, f"{err}\n".encode())
        results = handle(hints, min(max(wait, 0.0), MAX_WAIT_SECONDS))
        return Reply(200, json.dumps({"results": [r.as_json() for r in results]}).encode(), JSON)

    return route


class HintClient:
    """Sends hints to the warmer at `url`; `on_result(result, count)` hears `sent` and `dropped` counts."""

    def __init__(
        self, url: str, *, timeout: float = 0.5, backlog: int = 256, on_result: Callable[[str, int], None] | None = None
    ) -> None:
        self._url = url.rstrip("/") + PATH
        self._timeout = timeout
        self._backlog: queue.Queue[WarmRequest] = queue.Queue(backlog)
        self._on_result = on_result or (lambda result, count: None)
        self._http = urllib3.PoolManager(maxsize=4, retries=False)
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, requests: Sequence[WarmRequest]) -> None:
        """Queue `requests` for the background sender; never blocks (what does not fit is dropped and counted)."""
        self._start_sender()
        dropped = 0
        for request in requests:
            try:
                self._backlog.put_nowait(request)
            except queue.Full:
                dropped += 1
        if dropped:
            self._on_result("dropped", dropped)

    def warm(self, requests: Sequence[WarmRequest], timeout: float) -> set[WarmRequest]:
        """Hint `requests` and wait up to `timeout` seconds: those the CCR holds by then (none if the warmer fails)."""
        results = self._post(requests, timeout)
        if results is None:
            self._on_result("dropped", len(requests))
            return set()
        self._on_result("sent", len(requests))
        return {request for request, result in zip(requests, results, strict=False) if result.get("state") in IN_CCR}

    def _start_sender(self) -> None:
        """Start the sender thread on first use (so each forked gunicorn worker has its own)."""
        if self._sender is None:
            with self._lock:
                if self._sender is None:
                    self._sender = threading.Thread(target=self._send_forever, name="warm-hints", daemon=True)
                    self._sender.start()

    def _send_forever(self) -> None:
        while True:
            batch = [self._backlog.get()]
            while len(batch) < MAX_HINTS and not self._backlog.empty():
                batch.append(self._backlog.get_nowait())
            sent = self._post(batch, 0.0) is not None
            self._on_result("sent" if sent else "dropped", len(batch))

    def _post(self, requests: Sequence[WarmRequest], wait: float) -> list[dict[str, Any]] | None:
        """POST the hints; the results in order, or None when the warmer did not take them."""
        timeout = urllib3.Timeout(connect=self._timeout, read=self._timeout + wait)
        try:
            response = self._http.request(
                "POST",
                f"{self._url}?wait={wait:g}",
                body=encode_hints(requests),
                headers={"Content-Type": JSON},
                timeout=timeout,
            )
            results = json.loads(response.data)["results"] if response.status == 200 else None
        except (urllib3.exceptions.HTTPError, ValueError, KeyError, TypeError) as err:
            log.warning("warm hints not delivered: %s", err)
            return None
        if results is None or len(results) != len(requests):
            log.warning("warm hints refused: HTTP %s %s", response.status, response.data[:200].decode(errors="replace"))
            return None
        return results
