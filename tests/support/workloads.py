"""Kubernetes objects for the retention tests: Pods, opted-in namespaces, every workload kind."""

from __future__ import annotations

import time
from collections.abc import Callable


def pod(name: str, *images: str, namespace: str = "team-a", status: dict | None = None) -> dict:
    """A Pod running `images`, one container each."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]},
    }
    if status is not None:
        body["status"] = status
    return body


def namespace(name: str, opted_in: bool = True) -> dict:
    """A Namespace, opted in to ccr-webhook (enforce) or not."""
    labels = {"ccr-webhook/policy": "enforce"} if opted_in else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


class Clock:
    """A clock the test sets."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
