"""The Kubernetes API client: from a kubeconfig file when one is named, else in-cluster, else $KUBECONFIG."""

from __future__ import annotations

from typing import Any


def kubernetes_client(kubeconfig: str | None = None) -> Any:
    """A `kubernetes.client.ApiClient` for the cluster this process runs in (or the one `kubeconfig` names)."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()
