"""Kubernetes API access for the functions that need it.

OpenFaaS CE ignores ``com.openfaas.serviceaccount``, so each such function gets a
dedicated ServiceAccount's kubeconfig as an OpenFaaS secret (bootstrap creates
it). Without it, in-cluster config is the fallback. Credentials are rebuilt when
the secret's content changes, so a rotated or re-issued ServiceAccount credential
takes effect without a pod restart; a kubeconfig that turns TLS verification off
is refused.

``connection()`` is what edgeguard.kubeapi calls through: the server, a urllib3 pool
with the cluster's CA (and client certificate), and the auth headers, read per
request. For what bootstrap writes and in-cluster config, and every other static
kubeconfig (a token, token file, username/password or client certificate and key as
data or files; the CA as data or file; tls-server-name) it is built here with ssl
and urllib3 alone: with the ``kubernetes`` package's loader the scrubber took 70.0 MiB
(watchdog + python) after its first request instead of 50.6, and a first answer
~0.16 s later (docs/configmap-secret-scrubber.md, "Memory").
A kubeconfig using anything else (exec plugins, auth providers, proxy-url) is loaded
by the package, which implements them all; ``api_client()`` is that package's client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from . import config, log

_clients: dict[str, tuple[str, object]] = {}
_connections: dict[str, tuple[str, Connection]] = {}
_lock = threading.Lock()
_connections_lock = threading.Lock()  # not _lock: a kubeconfig left to the package builds through api_client()
_IN_CLUSTER = "in-cluster"
# where a pod's ServiceAccount is mounted (overridable for tests)
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# What connection() reads itself; a kubeconfig with other keys goes to the kubernetes package.
_CLUSTER_KEYS = {
    "server",
    "certificate-authority",
    "certificate-authority-data",
    "tls-server-name",
    "insecure-skip-tls-verify",
    "extensions",
}
_USER_KEYS = {
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
    "extensions",
}


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
            raise KubeConfigError(
                f"secret '{kubeconfig_secret}' sets insecure-skip-tls-verify; "
                "give it the cluster's certificate-authority-data instead"
            )
    return doc


def api_client(kubeconfig_secret: str):
    """A ``kubernetes.client.ApiClient`` from the named secret, else in-cluster config.

    Cached per secret and rebuilt when the secret's bytes change. Raises
    KubeConfigError (never a library exception) when no client can be built.
    """
    return _cached(_clients, _lock, kubeconfig_secret, _build)


def _cached(cache: dict, lock, kubeconfig_secret: str, build: Callable[[str, str], Any]):
    """build(secret, fingerprint), kept until the secret's bytes change; one build per change, however many
    threads ask (the scrubber's job worker and its requests)."""
    raw = config.read_secret_bytes(kubeconfig_secret)
    fingerprint = hashlib.sha256(raw).hexdigest() if raw and raw.strip() else _IN_CLUSTER
    with lock:
        cached = cache.get(kubeconfig_secret)
        if cached and cached[0] == fingerprint:
            return cached[1]
        value = build(kubeconfig_secret, fingerprint)
        cache[kubeconfig_secret] = (fingerprint, value)
        return value


@dataclass(frozen=True)
class Connection:
    """What kubeapi needs to reach the API server, and nothing of the client's models."""

    host: str  # https://host:port, no trailing slash
    pool: Any  # the urllib3 PoolManager (or ProxyManager) the client built
    auth_headers: Callable[[], dict]  # called per request: in-cluster tokens rotate

    @classmethod
    def of(cls, api_client) -> Connection:
        """The connection of a ``kubernetes.client.ApiClient`` (ours, or one a test made)."""
        cfg = api_client.configuration

        def auth_headers() -> dict:
            # auth_settings() runs the client's refresh hook (in-cluster: the projected token file)
            return {
                s["key"]: s["value"] for s in cfg.auth_settings().values() if s.get("in") == "header" and s.get("value")
            }

        return cls(cfg.host.rstrip("/"), api_client.rest_client.pool_manager, auth_headers)


def connection(kubeconfig_secret: str) -> Connection:
    """The API server's Connection from the named secret, else in-cluster config.

    Cached per secret and rebuilt when the secret's bytes change (a rotated or re-issued credential takes effect
    at the next call). Raises KubeConfigError, naming the secret and the kind of failure, never its content.
    """
    return _cached(_connections, _connections_lock, kubeconfig_secret, _connect)


class _Unusable(Exception):
    """Why a kubeconfig cannot be used (a kind of failure, never its content)."""


def _connect(kubeconfig_secret: str, fingerprint: str) -> Connection:
    doc = load_kubeconfig(kubeconfig_secret) if fingerprint != _IN_CLUSTER else None
    if doc is None:  # no secret (or it was emptied since it was read)
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeConfigError(
                f"no Kubernetes credentials: mount the OpenFaaS secret '{kubeconfig_secret}' or run in-cluster"
            )
        try:
            return _in_cluster()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise KubeConfigError(f"in-cluster Kubernetes config failed ({type(exc).__name__})") from None
    try:
        cluster, user = _current(doc)
        if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
            return _by_the_package(kubeconfig_secret)  # exec, auth-provider, proxy-url...
        return _from_kubeconfig(cluster, user)
    except (_Unusable, OSError, ValueError, TypeError) as exc:  # ssl.SSLError is an OSError
        why = str(exc) if isinstance(exc, _Unusable) else type(exc).__name__
        raise KubeConfigError(f"secret '{kubeconfig_secret}' is not a usable kubeconfig ({why})") from None


def _by_the_package(kubeconfig_secret: str) -> Connection:
    return Connection.of(api_client(kubeconfig_secret))


def _named(entries, name, what: str) -> dict:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            return body if isinstance(body, dict) else {}
    raise _Unusable(f"no {what} named by the current context")


def _current(doc: dict) -> tuple[dict, dict]:
    """(cluster, user) of the current context, as kubectl picks them."""
    name = doc.get("current-context")
    if not name:
        raise _Unusable("no current-context")
    context = _named(doc.get("contexts"), name, "context")
    return _named(doc["clusters"], context.get("cluster"), "cluster"), _named(doc["users"], context.get("user"), "user")


def _from_kubeconfig(cluster: dict, user: dict) -> Connection:
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise _Unusable("cluster has no http(s) server")
    ca_data = None
    if cluster.get("certificate-authority-data"):
        try:
            ca_data = base64.b64decode(cluster["certificate-authority-data"], validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            raise _Unusable("certificate-authority-data is not base64 PEM") from None
    ctx = _ssl_context(
        cadata=ca_data,
        cafile=cluster.get("certificate-authority"),
        cert=_pem(user, "client-certificate"),
        key=_pem(user, "client-key"),
    )
    auth: Callable[[], dict]
    if user.get("token"):
        bearer = {"authorization": f"Bearer {user['token']}"}
        auth = bearer.copy
    elif user.get("tokenFile"):
        auth = _TokenFile(str(user["tokenFile"]))
        auth()  # a missing or unreadable file is found now, naming the kubeconfig, not at every call
    elif user.get("username") is not None and user.get("password") is not None:
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        log.register_secret(basic)
        auth = {"authorization": f"Basic {basic}"}.copy
    else:
        auth = dict  # a client certificate, or anonymous
    return Connection(server.rstrip("/"), _pool(server, ctx, cluster.get("tls-server-name")), auth)


def _pem(user: dict, name: str) -> tuple[str, bytes] | None:
    """("file", path) or ("data", PEM bytes) of a client certificate or key, or None."""
    if user.get(f"{name}-data"):
        try:
            return "data", base64.b64decode(user[f"{name}-data"], validate=True)
        except binascii.Error:
            raise _Unusable(f"{name}-data is not base64") from None
    if user.get(name):
        return "file", str(user[name]).encode()
    return None


def _ssl_context(*, cadata: str | None = None, cafile: str | None = None, cert=None, key=None):
    import shutil
    import ssl  # only when connecting: most requests never reach the API
    import tempfile

    ctx = ssl.create_default_context(cafile=cafile, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert or key:
        if not (cert and key):
            raise _Unusable("a client certificate needs both certificate and key")
        # load_cert_chain reads files only: key material given as data goes to a private folder, removed at once
        tmp = tempfile.mkdtemp(prefix="edgeguard-kube-")
        try:
            paths = []
            for i, (kind, value) in enumerate((cert, key)):
                if kind == "file":
                    paths.append(value.decode())
                    continue
                path = os.path.join(tmp, str(i))
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(value)
                paths.append(path)
            ctx.load_cert_chain(paths[0], paths[1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ctx


def _pool(server: str, ctx, server_hostname: str | None = None):
    import urllib3  # requests' and kubernetes' transport: one of the few runtime dependencies

    kwargs: dict[str, Any] = {"num_pools": 2, "maxsize": 4}
    if server.startswith("https://"):
        kwargs["ssl_context"] = ctx
        if server_hostname:  # the name the certificate must carry, as kubectl checks it
            kwargs["server_hostname"] = server_hostname
            kwargs["assert_hostname"] = server_hostname
    return urllib3.PoolManager(**kwargs)


class _TokenFile:
    """Auth headers from a token file, re-read when it changes (projected ServiceAccount tokens rotate)."""

    def __init__(self, path: str):
        self.path = path
        self._seen: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        mtime = os.stat(self.path).st_mtime_ns
        with self._lock:
            if self._seen is None or self._seen[0] != mtime:
                with open(self.path, encoding="utf-8") as f:
                    token = f.read().strip()
                log.register_secret(token)
                self._seen = (mtime, token)
            return {"authorization": f"Bearer {self._seen[1]}"} if self._seen[1] else {}


def _in_cluster() -> Connection:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    server = f"https://{host}:{port}"
    ctx = _ssl_context(cafile=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt"))
    auth = _TokenFile(os.path.join(SERVICE_ACCOUNT_DIR, "token"))
    auth()
    return Connection(server, _pool(server, ctx), auth)


def reset() -> None:
    """Forget cached clients and connections."""
    with _lock:
        _clients.clear()
        _connections.clear()


def _build(kubeconfig_secret: str, fingerprint: str):
    from kubernetes import client
    from kubernetes import config as kconfig

    if fingerprint != _IN_CLUSTER:
        doc = load_kubeconfig(kubeconfig_secret)
        try:
            return kconfig.new_client_from_config_dict(doc)
        except Exception as exc:  # ConfigException, binascii.Error, AttributeError... all mean "unusable"
            # The library's message can quote the file; name only the secret and the kind of failure.
            raise KubeConfigError(
                f"secret '{kubeconfig_secret}' is not a usable kubeconfig ({type(exc).__name__})"
            ) from None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            kconfig.load_incluster_config()
        except Exception as exc:
            raise KubeConfigError(f"in-cluster Kubernetes config failed ({type(exc).__name__})") from None
        return client.ApiClient()
    raise KubeConfigError(
        f"no Kubernetes credentials: mount the OpenFaaS secret '{kubeconfig_secret}' or run in-cluster"
    )
