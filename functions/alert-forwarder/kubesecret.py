"""One named Secret through the Kubernetes API: list, watch and update it, with the function's own kubeconfig.

alert-forwarder needs exactly two Secrets (the spool handover in its own namespace, and the per-node alert
tokens node-enroll keeps), so instead of the ``kubernetes`` client (+37 MiB, ~1.2 s of cold start, issue 12 §2)
this speaks the few REST calls on the standard library: ``list`` and ``watch`` with
``fieldSelector=metadata.name=<name>``, which RBAC authorises with ``resourceNames`` (verified on the real
kube-apiserver v1.24), and ``update`` with the object's resourceVersion (409 on a concurrent write).

Never ``get``: Falco's k8s_audit rule "K8s Secret Get Successfully" (priority ERROR) fires on every successful get
of a Secret, so a cache that polled with get would raise an alert about itself every period. A watch is one
request per ``WATCH_SECONDS``, and its verb is watch.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import yaml

MAX_OBJECT_BYTES = 3 * 1024 * 1024  # a Secret is at most 1 MiB of data; base64 and metadata on top
WATCH_SECONDS = 300


class KubeError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Kubeconfig:
    """The parts of a kubeconfig a ServiceAccount credential uses: server, CA, token (or client certificate)."""

    def __init__(self, text: str):
        try:
            doc = yaml.safe_load(text)
            ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
            ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
            cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
            user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        except (yaml.YAMLError, AttributeError, KeyError, IndexError, StopIteration, TypeError):
            raise KubeError("the kubeconfig is not a usable kubeconfig (current-context, cluster, user)") from None
        url = urllib.parse.urlsplit(str(cluster.get("server", "")))
        if url.scheme != "https" or not url.hostname:
            raise KubeError("the kubeconfig's server must be an https:// URL")
        self.host, self.port = url.hostname, url.port or 443
        self.base = url.path.rstrip("/")
        self.namespace = ctx.get("namespace") or "default"
        self.token = user.get("token")
        if not self.token and user.get("tokenFile"):
            with open(user["tokenFile"], encoding="utf-8") as f:
                self.token = f.read().strip()
        self.context = ssl.create_default_context()
        if cluster.get("certificate-authority-data"):
            self.context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif cluster.get("certificate-authority"):
            self.context.load_verify_locations(cafile=cluster["certificate-authority"])
        if user.get("client-certificate-data") and user.get("client-key-data"):
            self._load_client_cert(
                base64.b64decode(user["client-certificate-data"]), base64.b64decode(user["client-key-data"])
            )
        if not self.token and not (user.get("client-certificate-data")):
            raise KubeError("the kubeconfig's user has no token (and no client certificate)")

    def _load_client_cert(self, cert: bytes, key: bytes) -> None:
        with tempfile.NamedTemporaryFile() as c, tempfile.NamedTemporaryFile() as k:
            c.write(cert)
            k.write(key)
            c.flush()
            k.flush()
            self.context.load_cert_chain(c.name, k.name)


class SecretClient:
    """list / watch / update of the Secret ``namespace``/``name``. Safe to share between threads."""

    def __init__(self, kubeconfig: Kubeconfig, name: str, *, namespace: str | None = None, timeout: float = 10.0):
        self.kc = kubeconfig
        self.name = name
        self.namespace = namespace or kubeconfig.namespace
        self.timeout = timeout
        self.path = f"{self.kc.base}/api/v1/namespaces/{self.namespace}/secrets"
        self._selector = urllib.parse.quote(f"metadata.name={name}", safe="")

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.kc.host, self.kc.port, timeout=timeout, context=self.kc.context)

    def _headers(self) -> dict:
        h = {"Accept": "application/json", "User-Agent": "edgeguard-alert-forwarder"}
        if self.kc.token:
            h["Authorization"] = f"Bearer {self.kc.token}"
        return h

    def _request(self, method: str, url: str, body: bytes | None = None) -> dict:
        conn = self._conn(self.timeout)
        try:
            headers = self._headers()
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_OBJECT_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise KubeError(f"{method} secrets/{self.name}: {type(exc).__name__}: {str(exc)[:120]}") from None
        finally:
            conn.close()
        if resp.status >= 300:
            raise KubeError(f"{method} secrets/{self.name}: HTTP {resp.status}: {_message(data)}", resp.status)
        return json.loads(data)

    def list(self) -> tuple[dict | None, str]:
        """(the Secret, or None when it does not exist; the list's resourceVersion to watch from)."""
        doc = self._request("GET", f"{self.path}?fieldSelector={self._selector}")
        items = doc.get("items") or []
        return (items[0] if items else None), doc.get("metadata", {}).get("resourceVersion", "")

    def watch(self, resource_version: str, seconds: int = WATCH_SECONDS) -> Iterator[tuple[str, dict]]:
        """Yield (ADDED|MODIFIED|DELETED, Secret) until the server ends the watch; KubeError(410) when too old."""
        conn = self._conn(seconds + 30)
        url = (
            f"{self.path}?fieldSelector={self._selector}&watch=1&allowWatchBookmarks=false"
            f"&timeoutSeconds={seconds}&resourceVersion={urllib.parse.quote(resource_version)}"
        )
        try:
            conn.request("GET", url, headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 300:
                raise KubeError(
                    f"watch secrets/{self.name}: HTTP {resp.status}: {_message(resp.read(4096))}", resp.status
                )
            while True:
                line = resp.readline(MAX_OBJECT_BYTES)
                if not line:
                    return
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = (event.get("object") or {}).get("code")
                    raise KubeError(f"watch secrets/{self.name}: {_message(json.dumps(event.get('object')))}", status)
                yield event["type"], event["object"]
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise KubeError(f"watch secrets/{self.name}: {type(exc).__name__}: {str(exc)[:120]}") from None
        finally:
            conn.close()

    def update(self, secret: dict) -> dict:
        """PUT ``secret`` (carrying the resourceVersion it was read at): KubeError(409) when it changed since."""
        body = json.dumps(secret, separators=(",", ":")).encode("utf-8")
        return self._request("PUT", f"{self.path}/{urllib.parse.quote(self.name)}", body)


def _message(data: bytes | str) -> str:
    try:
        return str(json.loads(data).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return (data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))[:200]


def decode_data(secret: dict | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in ((secret or {}).get("data") or {}).items()}


class Watcher:
    """Keeps ``on_change(secret or None)`` told of the Secret: a list, then watches from its resourceVersion;
    relists after an error (with back-off) or when the watch is too old (410). ``in_sync_for(ttl)`` tells
    whether what was last delivered can still be trusted: a watch is open, or the last list is younger."""

    def __init__(
        self,
        client: SecretClient,
        on_change: Callable[[dict | None], None],
        *,
        name: str,
        log_error: Callable[..., None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client, self.on_change, self.log_error = client, on_change, log_error
        self.clock = clock
        self.name = name
        self.latest: dict | None = None
        self.synced_at: float | None = None
        self.watching = False
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def in_sync_for(self, ttl: float) -> bool:
        with self._lock:
            return self.watching or (self.synced_at is not None and self.clock() - self.synced_at <= ttl)

    def relist(self) -> dict | None:
        """List now (also used after a 409 on update); deliver and return what is there."""
        obj, rv = self.client.list()
        self._deliver(obj)
        return obj

    def _deliver(self, obj: dict | None) -> None:
        with self._lock:
            self.latest = obj
            self.synced_at = self.clock()
        self.on_change(obj)

    def _run(self) -> None:
        wait = 0.5
        while not self._stop.is_set():
            try:
                obj, rv = self.client.list()
                self._deliver(obj)
                wait = 0.5
                while not self._stop.is_set():
                    with self._lock:
                        self.watching = True
                    for kind, obj in self.client.watch(rv):
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        self._deliver(None if kind == "DELETED" else obj)
                        if self._stop.is_set():
                            break
                    with self._lock:
                        self.watching = False
                        self.synced_at = self.clock()  # the watch ended cleanly: in sync up to now
            except (KubeError, ValueError, KeyError, TypeError) as exc:
                with self._lock:
                    self.watching = False
                    self.errors += 1
                    self.last_error = str(exc)[:200]
                if not getattr(exc, "status", None) == 410:
                    self.log_error(
                        "kube.watch_failed",
                        object=f"secrets/{self.name}",
                        error=str(exc)[:200],
                        retry_in_s=round(wait, 1),
                    )
                    self._stop.wait(wait)
                    wait = min(30.0, wait * 2)
