"""The front's failure answers: one table from error type to status, OCI error code and Retry-After.

Request handling raises one of these errors (or a flight's FlightFailed) wherever it stops; the handler
turns it into an answer through ANSWERS, in the OCI distribution error format, or cuts the connection if
the answer's head has gone out already. Codes are the spec's where it has one (NAME_INVALID, TAG_INVALID,
DIGEST_INVALID, MANIFEST_UNKNOWN, BLOB_UNKNOWN, UNAUTHORIZED, UNSUPPORTED), distribution's otherwise
(UNAVAILABLE, RANGE_INVALID, PAGINATION_NUMBER_INVALID); an upstream that failed is a 502 UNAVAILABLE,
never a 404 code.

A cold blob over the CCR's storage budget (OverBudget) is a 507 Insufficient Storage with the spec's DENIED:
containerd's fetcher (1.6, remotes/docker/fetcher.go `open`) tries the next host only on a 404 and retries
nothing but 401, 408 and 429, so any other status fails the pull with "unexpected status code …: 507
Insufficient Storage - Server message: denied: <why>", which kubelet shows in the Pod's event as it is and
retries with its back-off. 507 says what happened (no room to store it) where a 503 would say "try again
shortly" and a 404 would send a node with a fallback host past the CCR to upstream; DENIED is a code
containerd knows by name (an unknown one prints as "unknown"). No Retry-After: room comes back only when
retention evicts or the budget is raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from webhook.errors import CCRWebhookError
from webhook.front.flights import FlightFailed, OverBudget, SpoolFull

RETRY_AFTER_SECONDS = 10


class Refused(CCRWebhookError):
    """A request the front answers with an error rather than content; ANSWERS says which."""


class NotAPullPath(Refused):
    """A path outside the OCI distribution pull API (and the front's own /metrics, /healthz)."""


class NameInvalid(Refused):
    """A repository name outside the distribution grammar."""


class TagInvalid(Refused):
    """A manifest reference that is neither a digest nor a tag of the distribution grammar."""


class DigestInvalid(Refused):
    """A digest that is not sha256 or sha512 in lower-case hex of the exact length."""


class PaginationInvalid(Refused):
    """A listing's `n` that is not a small whole number."""


class PullOnly(Refused):
    """A write method: the front serves pulls only."""


class PeerUnauthorized(Refused):
    """A peer request without the peers' shared secret."""


class ManifestUnknown(Refused):
    """No such manifest: not in the CCR, and not upstream (or not under a configured upstream's prefix)."""


class BlobUnknown(Refused):
    """No such blob: not in the CCR, and not upstream (or not under a configured upstream's prefix)."""


class ReferrersUnsupported(Refused):
    """No referrers API for this manifest: the CCR has none, nor its upstream (clients use the tag schema)."""


class RangeNotSatisfiable(Refused):
    """A Range that starts past the end of a blob of `size` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__("unsatisfiable range")
        self.size = size


class Misdirected(Refused):
    """A peer asked this replica for a blob that it streams from another peer itself: the asker passes it over."""


class CCRUnreachable(Refused):
    """The CCR registry did not answer: try again shortly."""


class UpstreamUnavailable(Refused):
    """An upstream registry did not answer or did not serve the content properly."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An error answer: status, OCI error code, Retry-After seconds if any."""

    status: int
    code: str
    retry_after: int | None = None


# First match wins: a subclass comes before its base (SpoolFull before FlightFailed).
ANSWERS: tuple[tuple[type[Exception], Answer], ...] = (
    (NotAPullPath, Answer(404, "NOT_FOUND")),
    (NameInvalid, Answer(400, "NAME_INVALID")),
    (TagInvalid, Answer(400, "TAG_INVALID")),
    (DigestInvalid, Answer(400, "DIGEST_INVALID")),
    (PaginationInvalid, Answer(400, "PAGINATION_NUMBER_INVALID")),
    (PeerUnauthorized, Answer(401, "UNAUTHORIZED")),
    (PullOnly, Answer(405, "UNSUPPORTED")),
    (ManifestUnknown, Answer(404, "MANIFEST_UNKNOWN")),
    (BlobUnknown, Answer(404, "BLOB_UNKNOWN")),
    (ReferrersUnsupported, Answer(404, "UNSUPPORTED")),
    (RangeNotSatisfiable, Answer(416, "RANGE_INVALID")),
    (Misdirected, Answer(421, "UNAVAILABLE")),
    (SpoolFull, Answer(503, "UNAVAILABLE", RETRY_AFTER_SECONDS)),
    (OverBudget, Answer(507, "DENIED")),
    (CCRUnreachable, Answer(503, "UNAVAILABLE", RETRY_AFTER_SECONDS)),
    (FlightFailed, Answer(502, "UNAVAILABLE")),
    (UpstreamUnavailable, Answer(502, "UNAVAILABLE")),
)


def answer_for(error: Exception) -> Answer | None:
    """The answer for `error`, or None for an error the table does not know (a bug: let it propagate)."""
    for kind, answer in ANSWERS:
        if isinstance(error, kind):
            return answer
    return None


def error_body(code: str, message: str) -> bytes:
    """An OCI distribution error body."""
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def answer_headers(error: Exception, answer: Answer, body: bytes) -> dict[str, str]:
    """The headers of the answer to `error`: JSON of `body`'s length, Retry-After, Content-Range for a 416."""
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if answer.retry_after is not None:
        headers["Retry-After"] = str(answer.retry_after)
    if isinstance(error, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.size}"
    return headers
