"""The warmer's metrics: a failed copy is counted by the registry error behind it."""

from __future__ import annotations

from tests.support.warm_requests import DIGEST
from webhook.copier.engine import CopyError
from webhook.registry.errors import NotFound, RegistryAuthError, RegistryUnavailable
from webhook.warmer.metrics import failure_reason


def copy_error(cause: Exception) -> CopyError:
    try:
        raise CopyError("img", "copy blob", cause) from cause
    except CopyError as err:
        return err


def test_failure_reasons_follow_the_registry_error_behind_a_copy_error():
    assert failure_reason(copy_error(RegistryAuthError("HTTP 401"))) == "auth"
    assert failure_reason(copy_error(RegistryUnavailable("HTTP 503"))) == "unavailable"
    assert failure_reason(NotFound("blob", DIGEST)) == "not-found"
    assert failure_reason(RuntimeError("bug")) == "error"
