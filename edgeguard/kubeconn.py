"""A kube.Connection for kubeapi without importing the ``kubernetes`` package, for the kubeconfigs functions use.

``kube.connection()`` lets the ``kubernetes`` package load the kubeconfig; importing it costs ~20 MiB RSS and
0.2-0.4 s before the first answer (measured for node-enroll under the real of-watchdog: docs/node-enroll.md),
which is what keeps a function over the edge budget (issue 12 §2: 64 MiB, 0.6 s). The credentials the bundle
hands its functions are simple: the ServiceAccount kubeconfig `edgeguard-bootstrap openfaas` writes (server,
certificate-authority-data, token), or the in-cluster config. Those, and the other static forms of a kubeconfig
(CA file, tls-server-name, tokenFile, client certificate and key as data or files), are built here on urllib3
and ssl, which every function loads anyway. Anything else (exec and auth-provider plugins, basic auth, a
proxy-url) is handed to ``kube.connection()``, so every kubeconfig the package accepts still works.

The same rules as kube.py: the secret is read through ``kube.load_kubeconfig`` (credentials registered with the
log redactor, insecure-skip-tls-verify refused), the connection is cached per secret and rebuilt when the
secret's bytes change, and every failure is a ``kube.KubeConfigError`` naming the secret, never its content.
"""
from __future__ import annotations

import base64
import hashlib
import os
import ssl
import tempfile
import threading
from pathlib import Path

from . import config, kube, log
from .kube import Connection, KubeConfigError

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_IN_CLUSTER = "in-cluster"
# The static parts of a kubeconfig user and cluster this module implements; any other key goes to the package.
_USER_KEYS = {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key", "client-key-data"}
_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "tls-server-name", "extensions",
                 "insecure-skip-tls-verify"}

_cache: dict[str, tuple[str, Connection]] = {}
_lock = threading.Lock()


def connection(kubeconfig_secret: str, *, sa_dir: Path = SA_DIR) -> Connection:
    """The Connection for the named kubeconfig secret, else the in-cluster config; cached per secret's bytes."""
    raw = config.read_secret_bytes(kubeconfig_secret)
    fingerprint = hashlib.sha256(raw).hexdigest() if raw and raw.strip() else _IN_CLUSTER
    with _lock:
        cached = _cache.get(kubeconfig_secret)
        if cached and cached[0] == fingerprint:
            return cached[1]
        conn = _build(kubeconfig_secret, fingerprint, sa_dir)
        _cache[kubeconfig_secret] = (fingerprint, conn)
        return conn


def reset() -> None:
    with _lock:
        _cache.clear()


def _build(secret: str, fingerprint: str, sa_dir: Path) -> Connection:
    if fingerprint == _IN_CLUSTER:
        return in_cluster(secret, sa_dir)
    doc = kube.load_kubeconfig(secret)
    if doc is None:  # emptied between the two reads
        return in_cluster(secret, sa_dir)
    cluster, user = _current(doc, secret)
    has_credential = bool(user.keys() & {"token", "tokenFile", "client-certificate", "client-certificate-data"})
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS or not has_credential:
        # exec/auth-provider plugins, basic auth, proxies, or no credential at all: the package's own rules
        return kube.connection(secret)
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"secret '{secret}': the current context's cluster has no http(s) server")
    try:
        pool = _pool(server, cluster, user)
        auth = _token_headers(user)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise KubeConfigError(f"secret '{secret}' is not a usable kubeconfig ({type(exc).__name__})") from None
    return Connection(server.rstrip("/"), pool, auth)


def _current(doc: dict, secret: str) -> tuple[dict, dict]:
    """The cluster and user of the current context, as kubectl and the package pick them."""
    def named(kind: str, name) -> dict | None:
        for entry in doc.get(kind) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                value = entry.get(kind[:-1])
                return value if isinstance(value, dict) else {}
        return None

    context = named("contexts", doc.get("current-context"))
    if context is None:
        raise KubeConfigError(f"secret '{secret}' has no current-context naming one of its contexts")
    cluster, user = named("clusters", context.get("cluster")), named("users", context.get("user"))
    if cluster is None or user is None:
        raise KubeConfigError(f"secret '{secret}': the current context names a cluster or user it does not define")
    return cluster, user


def _data_or_file(entry: dict, key: str) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"], validate=True)
    if entry.get(key):
        return Path(entry[key]).read_bytes()
    return None


def _pool(server: str, cluster: dict, user: dict):
    import urllib3

    if server.startswith("http://"):
        return urllib3.PoolManager(num_pools=2, maxsize=4)
    ca = _data_or_file(cluster, "certificate-authority")
    ctx = ssl.create_default_context(cadata=ca.decode("ascii") if ca else None)
    cert, key = _data_or_file(user, "client-certificate"), _data_or_file(user, "client-key")
    if cert is not None:
        _load_client_cert(ctx, cert, key)
    extra = {"server_hostname": cluster["tls-server-name"]} if cluster.get("tls-server-name") else {}
    return urllib3.PoolManager(num_pools=2, maxsize=4, ssl_context=ctx, **extra)


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    # ssl only loads a certificate chain from files: write them to a private folder, load, delete at once.
    with tempfile.TemporaryDirectory(prefix="edgeguard-kube-") as tmp:
        cert_path = os.path.join(tmp, "client.crt")
        with open(os.open(cert_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(cert)
        key_path = None
        if key is not None:
            key_path = os.path.join(tmp, "client.key")
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(key)
        ctx.load_cert_chain(cert_path, key_path)


class _TokenFile:
    """A bearer token read from a file, re-read when the file changes (projected ServiceAccount tokens rotate)."""

    def __init__(self, path: Path):
        self.path = path
        self._seen: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        mtime = self.path.stat().st_mtime_ns
        with self._lock:
            if self._seen is None or self._seen[0] != mtime:
                token = self.path.read_text(encoding="utf-8").strip()
                log.register_secret(token)
                self._seen = (mtime, token)
            return {"Authorization": f"Bearer {self._seen[1]}"} if self._seen[1] else {}


def _token_headers(user: dict):
    if user.get("token"):
        headers = {"Authorization": f"Bearer {user['token']}"}
        return lambda: headers
    if user.get("tokenFile"):
        reader = _TokenFile(Path(user["tokenFile"]))
        reader()  # fail at build time, naming the kubeconfig, rather than on every call
        return reader
    return dict  # client certificate only


def in_cluster(secret: str, sa_dir: Path = SA_DIR) -> Connection:
    """The ServiceAccount's own credentials, as load_incluster_config finds them; the token is re-read as it rotates."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(f"no Kubernetes credentials: mount the OpenFaaS secret '{secret}' or run in-cluster")
    import urllib3

    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    try:
        ctx = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
        reader = _TokenFile(sa_dir / "token")
        reader()
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"in-cluster Kubernetes config failed ({type(exc).__name__})") from None
    return Connection(f"https://{host}:{port}", urllib3.PoolManager(num_pools=2, maxsize=4, ssl_context=ctx), reader)
