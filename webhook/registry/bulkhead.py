"""A thread pool shared by several registries, with at most `per_key` tasks running at once for any one of them.

Tasks over a key's share wait in that key's own queue, not on a pool thread, so a registry that answers
slowly (or trickles bytes) holds at most its share of the threads and the others' lookups still run.
A queued task whose Future is cancelled (the caller's deadline passed) is skipped, never started.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from webhook.errors import CCRWebhookError

MAX_QUEUED_PER_KEY = 4096


class BulkheadFull(CCRWebhookError):
    """A key already has MAX_QUEUED_PER_KEY tasks waiting; the task was not queued."""


class Bulkhead:
    """Runs tasks on `threads` threads, at most `per_key` at once per key, the rest queued per key (bounded)."""

    def __init__(self, threads: int, per_key: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._per_key = per_key
        self._running: dict[Hashable, int] = {}
        self._queued: dict[Hashable, deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]]] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run `fn(*args)` when `key` has a free share; its Future, which may be cancelled while it waits."""
        future: Future[Any] = Future()
        with self._lock:
            if self._running.get(key, 0) >= self._per_key:
                queue = self._queued.setdefault(key, deque())
                if len(queue) >= MAX_QUEUED_PER_KEY:
                    future.set_exception(
                        BulkheadFull(f"more than {MAX_QUEUED_PER_KEY} lookups already wait for this registry")
                    )
                else:
                    queue.append((future, fn, args))
                return future
            self._running[key] = self._running.get(key, 0) + 1
        self._pool.submit(self._run, key, future, fn, args)
        return future

    def _run(self, key: Hashable, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run one task, then the next still wanted in its key's queue, on this same thread."""
        while True:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as err:
                    future.set_exception(err)
            with self._lock:
                queue = self._queued.get(key)
                if not queue:
                    self._queued.pop(key, None)
                    self._running[key] -= 1
                    if not self._running[key]:
                        del self._running[key]
                    return
                future, fn, args = queue.popleft()
