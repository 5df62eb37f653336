"""Kubernetes API access for the functions that need it.

OpenFaaS CE ignores ``com.openfaas.serviceaccount``, so each such function gets a
dedicated ServiceAccount's kubeconfig as an OpenFaaS secret (bootstrap creates
it). Without it, in-cluster config is the fallback. ``kubernetes`` is imported
here lazily: it costs ~45 MB RSS and most requests never need it.

The client is rebuilt when the secret's content changes, so a rotated or
re-issued ServiceAccount credential takes effect without a pod restart.

``connection()`` hands kubeapi only what a REST call needs from the loaded client: the
server, the connection pool the client built from the kubeconfig (CA, client certificate,
proxy, TLS server name) and the auth headers, read per request so in-cluster tokens are
refreshed as the client would refresh them. The client's API classes and models (the
``CoreV1Api`` tree: +21 MiB and ~0.8 s more at the first request, measured in
docs/configmap-secret-scrubber.md) are never imported.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from . import config, log

_clients: dict[str, tuple[str, object]] = {}
_lock = threading.Lock()
_IN_CLUSTER = "in-cluster"


class KubeConfigError(RuntimeError):
    """The function has no usable Kubernetes credentials; the message names the secret, never its content."""


def load_kubeconfig(kubeconfig_secret: str) -> dict | None:
    """The kubeconfig mapping stored in the named secret, or None when the secret is absent or empty.

    Credentials inside it are registered with the log redactor. A kubeconfig that
    turns TLS verification off is refused: the API server's identity must be checked.
    """
    raw = config.read_secret_bytes(kubeconfig_secret)
    if raw is None or not raw.strip():
        return None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise KubeConfigError(f"secret '{kubeconfig_secret}' is not valid YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list) or not isinstance(doc.get("users"), list):
        raise KubeConfigError(f"secret '{kubeconfig_secret}' is not a kubeconfig (needs clusters and users lists)")
    for entry in doc["users"]:
        user = (entry or {}).get("user") or {} if isinstance(entry, dict) else {}
        for key in ("token", "client-key-data", "password"):
            if isinstance(user.get(key), str):
                log.register_secret(user[key])
    for entry in doc["clusters"]:
        cluster = (entry or {}).get("cluster") or {} if isinstance(entry, dict) else {}
        if cluster.get("insecure-skip-tls-verify"):
            raise KubeConfigError(f"secret '{kubeconfig_secret}' sets insecure-skip-tls-verify; "
                                  "give it the cluster's certificate-authority-data instead")
    return doc


def api_client(kubeconfig_secret: str):
    """A ``kubernetes.client.ApiClient`` from the named secret, else in-cluster config.

    Cached per secret and rebuilt when the secret's bytes change. Raises
    KubeConfigError (never a library exception) when no client can be built.
    """
    raw = config.read_secret_bytes(kubeconfig_secret)
    fingerprint = hashlib.sha256(raw).hexdigest() if raw and raw.strip() else _IN_CLUSTER
    with _lock:
        cached = _clients.get(kubeconfig_secret)
        if cached and cached[0] == fingerprint:
            return cached[1]
        client = _build(kubeconfig_secret, fingerprint)
        _clients[kubeconfig_secret] = (fingerprint, client)
        return client


@dataclass(frozen=True)
class Connection:
    """What kubeapi needs to reach the API server, and nothing of the client's models."""

    host: str                          # https://host:port, no trailing slash
    pool: Any                          # the urllib3 PoolManager (or ProxyManager) the client built
    auth_headers: Callable[[], dict]   # called per request: in-cluster tokens rotate

    @classmethod
    def of(cls, api_client) -> "Connection":
        """The connection of a ``kubernetes.client.ApiClient`` (ours, or one a test made)."""
        cfg = api_client.configuration

        def auth_headers() -> dict:
            # auth_settings() runs the client's refresh hook (in-cluster: the projected token file)
            return {s["key"]: s["value"] for s in cfg.auth_settings().values()
                    if s.get("in") == "header" and s.get("value")}

        return cls(cfg.host.rstrip("/"), api_client.rest_client.pool_manager, auth_headers)


def connection(kubeconfig_secret: str) -> Connection:
    """The Connection of ``api_client(kubeconfig_secret)``: same cache, same rebuild on rotation, same errors."""
    return Connection.of(api_client(kubeconfig_secret))


def reset() -> None:
    """Forget cached clients."""
    with _lock:
        _clients.clear()


def _build(kubeconfig_secret: str, fingerprint: str):
    from kubernetes import client, config as kconfig

    if fingerprint != _IN_CLUSTER:
        doc = load_kubeconfig(kubeconfig_secret)
        try:
            return kconfig.new_client_from_config_dict(doc)
        except Exception as exc:  # ConfigException, binascii.Error, AttributeError... all mean "unusable"
            # The library's message can quote the file; name only the secret and the kind of failure.
            raise KubeConfigError(f"secret '{kubeconfig_secret}' is not a usable kubeconfig "
                                  f"({type(exc).__name__})") from None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            kconfig.load_incluster_config()
        except Exception as exc:
            raise KubeConfigError(f"in-cluster Kubernetes config failed ({type(exc).__name__})") from None
        return client.ApiClient()
    raise KubeConfigError(
        f"no Kubernetes credentials: mount the OpenFaaS secret '{kubeconfig_secret}' or run in-cluster")
