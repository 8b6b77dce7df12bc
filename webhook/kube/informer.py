"""The one list+watch loop over a Kubernetes resource, shared by the warmer and retention.

An `Informer` lists every object of one resource (page by page, with an optional label selector), hands
the listing to its handlers, then watches from the listing's resourceVersion with bookmarks allowed, so
the version it resumes from keeps up even while no object it wants changes. It lists again when the API
server answers 410 Gone (its history no longer reaches that version), when a handler joins (it needs the
whole picture), every `resync_seconds` if set, and after an error, waiting a capped, doubling backoff
first. It lists and watches only while it has handlers, so an informer shared by parts that come and go
(the warmer's leader, retention) costs the API server nothing while no part listens. Every request has
a deadline, and stop() cuts the open watch short. Objects are plain JSON with
`kind` and `apiVersion` set, never client models: the warmer and retention read a few fields of many.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from operator import methodcaller
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from webhook.errors import CCRWebhookError

Obj = dict[str, Any]
log = logging.getLogger("webhook.kube.informer")
LIST_PAGE = 500
CONNECT_SECONDS = 10.0
LIST_SECONDS = 60.0  # per page
WATCH_SLACK_SECONDS = 30.0  # a watch request may take this much longer than its timeoutSeconds before it is cut


class Handler(Protocol):
    """What an informer tells: every full listing, and each change after it."""

    def listed(self, objects: list[Obj]) -> None:
        """Every object there is now (a handler forgets what is not in it)."""

    def changed(self, event_type: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED object (DELETED also when it stops matching the label selector)."""


class _Expired(CCRWebhookError):
    """410 Gone: the watch cannot resume from its version; list again."""


class Informer:
    """List, then watch, one resource through `list_call` (a kubernetes client list method) for its handlers."""

    def __init__(
        self,
        list_call: Callable[..., Any],
        *,
        kind: str,
        api_version: str,
        label_selector: str = "",
        resync_seconds: float | None = None,
        watch_seconds: float = 300.0,
        retry_seconds: float = 1.0,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self.kind, self.api_version = kind, api_version
        self._call = list_call
        self._selector = {"label_selector": label_selector} if label_selector else {}
        self._resync, self._watch_seconds = resync_seconds, watch_seconds
        self._retry, self._retry_max = retry_seconds, retry_max_seconds
        self._handlers: list[Handler] = []
        self._lock = threading.Lock()
        self._handlers_changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._relist = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    def add_handler(self, handler: Handler) -> None:
        """Tell `handler` from now on; a running informer lists again so the new handler gets the whole picture."""
        with self._lock:
            self._handlers.append(handler)
            self._handlers_changed.notify_all()
        self._cut_watch(relist=True)

    def remove_handler(self, handler: Handler) -> None:
        """Stop telling `handler` (it may still hear the event being handed out); with none left, stop watching."""
        with self._lock:
            self._handlers = [known for known in self._handlers if known is not handler]
            idle = not self._handlers
        if idle:
            self._cut_watch(relist=True)

    def start(self) -> Informer:
        """Start the loop in a background thread (once; later calls do nothing while it runs)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"informer-{self.kind}", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, cutting the open watch short; wait up to `timeout` seconds for it to end."""
        self._stop.set()
        with self._lock:
            self._handlers_changed.notify_all()
        self._cut_watch(relist=False)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def list_now(self) -> list[Obj]:
        """A fresh listing of every object, for the caller only (handlers are not told)."""
        return self._list()[0]

    # -- the loop --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        delay = self._retry
        expired_before = False
        while not self._stop.is_set():
            with self._lock:
                while not self._handlers and not self._stop.is_set():
                    self._handlers_changed.wait(self._retry_max)  # no one listens: neither list nor watch
            if self._stop.is_set():
                return
            try:
                self._relist.clear()
                objects, version = self._list()
                self._hand(methodcaller("listed", objects))
                delay = self._retry
                self._follow(version)
                expired_before = False
                continue
            except _Expired:
                log.info("watch of %s expired (410 Gone): listing again", self.kind)
                if not expired_before:
                    expired_before = True
                    continue
            except ApiException as err:
                if err.status == 410 and not expired_before:  # a stale `continue` token of a paged listing
                    expired_before = True
                    continue
                if not self._stop.is_set():
                    log.warning(
                        "list/watch of %s failed: HTTP %s %s; again in %g s", self.kind, err.status, err.reason, delay
                    )
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError, TypeError) as err:
                if self._relist.is_set() and not self._stop.is_set():
                    continue  # the watch was cut for a new handler
                if not self._stop.is_set():
                    log.warning("list/watch of %s failed: %s; again in %g s", self.kind, err, delay)
            except Exception:  # whatever else breaks, the loop goes on after the backoff
                if not self._stop.is_set():
                    log.exception("list/watch of %s failed; again in %g s", self.kind, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self._retry_max)

    def _list(self) -> tuple[list[Obj], str]:
        """Every object, page by page, typed; and the listing's resourceVersion."""
        objects: list[Obj] = []
        token: str | None = None
        while True:
            page_args: dict[str, Any] = {"_continue": token} if token else {}
            response = self._call(
                limit=LIST_PAGE,
                _preload_content=False,
                _request_timeout=(CONNECT_SECONDS, LIST_SECONDS),
                **self._selector,
                **page_args,
            )
            page = json.loads(response.data)
            objects += [self._typed(item) for item in page.get("items") or []]
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return objects, str(metadata["resourceVersion"])

    def _follow(self, version: str) -> None:
        """Watch from `version`, one request after another, until a resync or relist is due or stop()."""
        resync_at = time.monotonic() + self._resync if self._resync else None
        while not self._stop.is_set() and not self._relist.is_set():
            remaining = self._watch_seconds if resync_at is None else resync_at - time.monotonic()
            if remaining <= 0:
                return
            seconds = max(1, int(min(self._watch_seconds, remaining)))
            response = self._call(
                watch=True,
                resource_version=version,
                timeout_seconds=seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(CONNECT_SECONDS, seconds + WATCH_SLACK_SECONDS),
                **self._selector,
            )
            with self._lock:
                self._response = response
            if self._stop.is_set() or self._relist.is_set():
                self._cut_watch(relist=self._relist.is_set())
            try:
                for event in _events(response):
                    version = self._apply(event, version)
                    if self._stop.is_set() or self._relist.is_set():
                        return
            finally:
                with self._lock:
                    self._response = None
                response.close()
                response.release_conn()

    def _apply(self, event: Obj, version: str) -> str:
        """Hand one watch event over; return the version to resume from."""
        event_type, obj = event.get("type"), event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ValueError(f"watch error {obj.get('code')}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            typed = self._typed(obj)
            self._hand(methodcaller("changed", str(event_type), typed))
        return version

    def _hand(self, tell: Callable[[Handler], None]) -> None:
        """Tell every handler; one that fails is logged, never stops the others or the loop."""
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            try:
                tell(handler)
            except Exception:
                log.exception("a handler of the %s informer failed", self.kind)

    def _typed(self, obj: Obj) -> Obj:
        return {**obj, "kind": self.kind, "apiVersion": self.api_version}

    def _cut_watch(self, *, relist: bool) -> None:
        """End the open watch request now (to stop, or to list again)."""
        if relist:
            self._relist.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()  # wakes the reader blocked on the socket, unlike close()
            except Exception:  # the reader may be closing it at the same moment
                log.debug("closing the %s watch", self.kind, exc_info=True)


def _events(response: Any) -> Iterator[Obj]:
    """The JSON events of a watch response, one per line."""
    for line in iter_resp_lines(response):
        if line and not line.isspace():
            yield json.loads(line)
