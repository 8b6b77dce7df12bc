"""How ccr-webhook's commands reach the Kubernetes API: one way to load the client configuration for all of them."""

from __future__ import annotations

import os
from typing import Any

from webhook.errors import CCRWebhookError


class NoCluster(CCRWebhookError):
    """No Kubernetes API to talk to: not in a Pod, and no usable kubeconfig; the message says where it looked."""


def kubernetes_client(kubeconfig: str | None) -> Any:
    """An ApiClient from `kubeconfig` if given, else the in-cluster account, else $KUBECONFIG or ~/.kube/config."""
    from kubernetes import client, config

    if kubeconfig:
        return _from_kubeconfig(kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return _from_kubeconfig(None)


def _from_kubeconfig(path: str | None) -> Any:
    import yaml
    from kubernetes import config

    where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        return config.new_client_from_config(config_file=path)
    except (config.ConfigException, OSError, yaml.YAMLError, ValueError) as err:  # ValueError: bad base64 in it
        detail = " ".join(str(err).split()) or type(err).__name__
        raise NoCluster(
            f"no Kubernetes cluster to talk to: not running in a Pod, and kubeconfig {where}: {detail} "
            "(pass --kubeconfig FILE or set KUBECONFIG)"
        ) from None
