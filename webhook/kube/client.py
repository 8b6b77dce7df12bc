"""How ccr-webhook's commands reach the Kubernetes API: one way to load the client configuration for all of them."""

from __future__ import annotations

from typing import Any


def kubernetes_client(kubeconfig: str | None) -> Any:
    """An ApiClient from `kubeconfig` if given, else the in-cluster account, else $KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()
