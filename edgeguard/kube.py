"""Kubernetes API access for the functions that need it.

OpenFaaS CE ignores ``com.openfaas.serviceaccount``, so each such function gets a
dedicated ServiceAccount's kubeconfig as an OpenFaaS secret (bootstrap creates
it). Without it, in-cluster config is the fallback. ``kubernetes`` is imported
here lazily: it costs ~45 MB RSS and most requests never need it.
"""
from __future__ import annotations

import os
import threading

import yaml

from . import config

_clients: dict[str, object] = {}
_lock = threading.Lock()


class KubeConfigError(RuntimeError):
    pass


def api_client(kubeconfig_secret: str):
    """A cached ``kubernetes.client.ApiClient`` built from the named secret, else in-cluster config."""
    with _lock:
        client = _clients.get(kubeconfig_secret)
        if client is None:
            client = _clients[kubeconfig_secret] = _build(kubeconfig_secret)
        return client


def reset() -> None:
    """Forget cached clients (tests, rotated credentials)."""
    with _lock:
        _clients.clear()


def _build(kubeconfig_secret: str):
    from kubernetes import client, config as kconfig

    raw = config.read_secret_bytes(kubeconfig_secret)
    if raw is not None and raw.strip():
        try:
            doc = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise KubeConfigError(f"secret '{kubeconfig_secret}' is not a valid kubeconfig: {exc.__class__.__name__}") from None
        if not isinstance(doc, dict):
            raise KubeConfigError(f"secret '{kubeconfig_secret}' is not a kubeconfig mapping")
        return kconfig.new_client_from_config_dict(doc)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kconfig.load_incluster_config()
        return client.ApiClient()
    raise KubeConfigError(
        f"no Kubernetes credentials: mount the OpenFaaS secret '{kubeconfig_secret}' or run in-cluster")
