"""The errors of the registry client: one type per thing an operator or a caller does differently.

Every message names the registry endpoint and the repository, and never carries a credential or a
token: messages are built from status codes, registry error codes and our own words only, and what
an error body says is redacted (after decoding, before shortening) by the caller's `redact`.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3.exceptions

from webhook.errors import CCRWebhookError


class RegistryError(CCRWebhookError):
    """A registry operation failed; `detail` says what, `endpoint` and `repository` say where."""

    def __init__(self, detail: str, *, endpoint: str | None = None, repository: str | None = None) -> None:
        self.detail = detail
        self.endpoint = endpoint
        self.repository = repository
        where = ", ".join(
            part
            for part in (
                f"registry {endpoint}" if endpoint else "",
                f"repository {repository}" if repository else "",
            )
            if part
        )
        super().__init__(f"{where}: {detail}" if where else detail)


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or did not answer properly in time (refused, timeout, 5xx, dropped)."""


class RegistryServerError(RegistryUnavailable):
    """The registry answered with a 5xx: reachable, but failing on its side (storage full, a broken object)."""


class RegistryAuthError(RegistryError):
    """The registry refused us (401/403) even after authenticating, or we cannot authenticate at all."""


class NotFound(RegistryError):
    """The registry has no such manifest, blob or repository (404)."""

    def __init__(
        self, kind: str, reference: str, *, endpoint: str | None = None, repository: str | None = None
    ) -> None:
        self.kind = kind
        self.reference = reference
        super().__init__(f"{kind} {reference} not found", endpoint=endpoint, repository=repository)


class RateLimited(RegistryError):
    """The registry asked us to slow down (429); `retry_after` is the seconds it asked for, if it said."""

    def __init__(
        self, detail: str, retry_after: float | None, *, endpoint: str | None = None, repository: str | None = None
    ) -> None:
        self.retry_after = retry_after
        suffix = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(detail + suffix, endpoint=endpoint, repository=repository)


class RegistryProtocolError(RegistryError):
    """The registry answered something we cannot use: an unexpected status, garbage, a digest mismatch."""


class InsufficientStorage(RegistryError):
    """The registry has no room for what it was asked to store or fetch (507): the CCR front over its storage
    budget says so. Not transient: room comes back when retention evicts or the budget is raised; `reason` is
    what the registry said (redacted)."""

    def __init__(self, detail: str, reason: str, *, endpoint: str | None = None, repository: str | None = None) -> None:
        self.reason = reason
        super().__init__(detail, endpoint=endpoint, repository=repository)


class RegistryNotAllowed(RegistryError):
    """A registry that the configuration does not list was asked for; ccr-webhook never contacts it."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def registry_error_codes(body: bytes, redact: Callable[[str], str] = lambda text: text) -> str:
    """The `errors[].code: message` of a distribution error body, redacted and short, or '' if it has none.

    Details are left out (structures for programs), except the text detail of the catch-all code
    UNKNOWN, whose message says nothing: `UNKNOWN: unknown error: write .../data: no space left on device`.
    A long text keeps its start and its end.
    """
    try:
        errors = json.loads(body.decode("utf-8")).get("errors") or []
        parts = [
            ": ".join(str(part) for part in (error["code"], error.get("message"), _unknown_detail(error)) if part)
            for error in errors[:3]
        ]
    except (ValueError, AttributeError, TypeError, KeyError, UnicodeDecodeError):
        return ""
    text = redact("; ".join(parts))
    return text if len(text) <= 200 else text[:120] + " … " + text[-77:]


def _unknown_detail(error: dict[str, Any]) -> str | None:
    """What went wrong behind an UNKNOWN error, as the registry logs it; None for every other code."""
    detail = error.get("detail")
    if error["code"] != "UNKNOWN":
        return None
    if isinstance(detail, str) and detail.strip():
        return detail.strip().splitlines()[0]
    if not isinstance(detail, dict):
        return None
    # distribution's storage driver error: {"DriverName": "filesystem", "Enclosed": {"Op", "Path", "Err": errno}}
    enclosed = detail.get("Enclosed")
    if isinstance(enclosed, dict) and isinstance(enclosed.get("Err"), int):
        reason = os.strerror(enclosed["Err"])  # Go writes errno texts in lower case: keep the registry's own words
        return (
            f"{detail.get('DriverName')}: {enclosed.get('Op')} {enclosed.get('Path')}: {reason[:1].lower()}{reason[1:]}"
        )
    return None


def error_for_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    what: str,
    *,
    endpoint: str,
    repository: str | None,
    missing: tuple[str, str] | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> RegistryError:
    """The error for an unexpected answer to `what` (e.g. 'HEAD manifest latest'); `missing` is (kind, ref) for 404.

    `redact` masks the credentials the body may echo (a token service echoing what it was sent).
    """
    codes = registry_error_codes(body, redact)
    said = f" ({codes})" if codes else ""
    where: dict[str, Any] = {"endpoint": endpoint, "repository": repository}
    if status in (401, 403):
        return RegistryAuthError(
            f"{what}: access denied, HTTP {status}{said}; check the credentials configured for this registry "
            "and that they grant this repository",
            **where,
        )
    if status == 404 and missing is not None:
        return NotFound(*missing, **where)
    if status == 429:
        return RateLimited(
            f"{what}: rate limited, HTTP 429{said}", parse_retry_after(headers.get("Retry-After")), **where
        )
    if status == 507:
        reason = codes.partition(": ")[2] or codes  # the registry's own words, without the error code
        return InsufficientStorage(f"{what}: no room to store it, HTTP 507{said}", reason, **where)
    if status >= 500:
        return RegistryServerError(f"{what}: registry error, HTTP {status}{said}", **where)
    return RegistryProtocolError(f"{what}: unexpected HTTP {status}{said}", **where)


def describe_transport_error(error: BaseException) -> str:
    """A short, credential-free description of a connection failure (urllib3 messages carry URLs)."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        text = str(error)
        marker = "Failed to establish a new connection: "
        return "cannot connect: " + (text.split(marker, 1)[1] if marker in text else type(error).__name__)
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return "no answer in time (read timed out)"
    if isinstance(error, urllib3.exceptions.EmptyPoolError):
        return "every connection to the registry is busy and none came free in time"
    if isinstance(error, urllib3.exceptions.SSLError):
        return "TLS failed: " + str(error.args[0] if error.args else error)[:200]
    if isinstance(error, urllib3.exceptions.ProtocolError):
        reason = error.args[1] if len(error.args) > 1 else error
        return f"connection dropped: {type(reason).__name__}"
    return f"connection failed: {type(error).__name__}"
