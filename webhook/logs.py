"""JSON logs, one object a line, each carrying the uid of the AdmissionReview being answered.

The uid lives in a context variable set for the length of one request, so every line logged while
answering it (by any module) can be matched with the API server's audit log. Request bodies are never
logged: a Pod spec may carry secrets in its environment (a denial names only the Pod, container, image
and reason); the configuration names its credentials files, never their contents.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.config
import time
from collections.abc import Iterator, Mapping
from typing import Any

_REQUEST_UID: contextvars.ContextVar[str | None] = contextvars.ContextVar("ccr_webhook_request_uid", default=None)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, pid, uid, extra `fields`, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which gunicorn worker
        }
        uid = _REQUEST_UID.get()
        if uid is not None:
            entry["uid"] = uid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@contextlib.contextmanager
def request_uid(uid: str) -> Iterator[None]:
    """Tag every line logged inside the block with `uid`; gthread reuses threads, so it is reset after."""
    token = _REQUEST_UID.set(uid)
    try:
        yield
    finally:
        _REQUEST_UID.reset(token)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig mapping sending our loggers and gunicorn's to stderr as JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }


def setup_logging(level: str = "INFO") -> None:
    """Every line this process writes to stderr as JSON: our loggers, gunicorn's, and Python's warnings (urllib3's)."""
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)


def log_start(logger: logging.Logger, version: str, configuration: Mapping[str, Any], **fields: Any) -> None:
    """The first line of every process: its version, what it serves (`fields`) and its effective configuration."""
    logger.info(
        "starting ccr-webhook %s", version, extra={"fields": {"version": version, **fields, "config": configuration}}
    )
