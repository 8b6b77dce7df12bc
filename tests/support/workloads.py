"""Kubernetes objects for the retention tests: Pods, opted-in namespaces, every workload kind."""

from __future__ import annotations


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
