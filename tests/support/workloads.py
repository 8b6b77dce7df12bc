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


def deployment(name: str, *images: str, namespace: str = "team-a", replicas: int = 1) -> dict:
    """A Deployment whose pod template runs `images`, one container each."""
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}},
    }


def namespace(name: str, opted_in: bool = True) -> dict:
    """A Namespace, opted in to ccr-webhook (enforce) or not."""
    labels = {"ccr-webhook/policy": "enforce"} if opted_in else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
