"""The Kubernetes REST calls the functions make, on plain JSON dicts, with one error type.

Credentials come from kube.connection() (the kubeconfig or the in-cluster config: CA,
client certificates, token refresh, the insecure-skip-tls-verify refusal); requests go
straight over the urllib3 pool it built. The ``kubernetes`` package's typed API classes
and models are never imported: ``CoreV1Api`` alone costs +21 MiB RSS and
~0.8 s before the first answer (docs/configmap-secret-scrubber.md), and its models
drop fields they do not know, while the scrubber round-trips whole pod specs.

Errors: every failed call raises KubeError. ``status`` is the HTTP status (None when
no answer came: timeout, refused, TLS); ``.conflict``, ``.not_found``, ``.forbidden``
and ``.invalid`` name what the real kube-apiserver (v1.24, tests/edgeguard_core/
test_kubeapi_cluster.py) answers: 409 for an existing name on create and for a failed
delete precondition, 404, 403 from RBAC, 422 for an invalid object or a failed
JSON-patch ``test`` op (v1.24 words the latter generically, so callers that pin a
resourceVersion must re-read to tell a lost race from a bad patch).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode

from . import kube

JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# a list of metadata only (meta.k8s.io/v1 PartialObjectMetadataList, since Kubernetes 1.15); plain JSON otherwise
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"

# kind -> (group/version prefix, plural, namespaced)
RESOURCES = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
}


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status, or None for transport errors and timeouts."""

    def __init__(self, status: int | None, reason: str, verb: str = "", what: str = ""):
        super().__init__(f"{verb} {what}: {status or 'no response'} {reason}".strip())
        self.status = status
        self.reason = reason
        self.verb = verb
        self.what = what

    @property
    def conflict(self) -> bool:
        """The object changed under us or exists already: 409, or a 422 that names a failed JSON-patch ``test``."""
        if self.status == 409:
            return True
        return self.status == 422 and "test" in self.reason.lower()

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def invalid(self) -> bool:
        return self.status == 422


def path(kind: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    p = prefix
    if namespaced and namespace is not None:
        p += f"/namespaces/{quote(namespace, safe='')}"
    p += f"/{plural}"
    if name is not None:
        p += f"/{quote(name, safe='')}"
        if subresource:
            p += f"/{subresource}"
    return p


def _what(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class Client:
    """The verbs on ``kube.Connection``; ``field_manager`` is sent with every create and patch.

    ``on_error`` sees every KubeError before it is raised (a function's API-error metric), including the 404
    that ``get`` turns into None.
    """

    def __init__(
        self,
        connection: kube.Connection,
        *,
        timeout: float = 10.0,
        field_manager: str | None = None,
        on_error: Callable[[KubeError], None] | None = None,
    ):
        self.connection = connection
        self.timeout = timeout
        self.field_manager = field_manager
        self.on_error = on_error

    @classmethod
    def for_secret(cls, kubeconfig_secret: str, **kwargs) -> Client:
        """From the function's kubeconfig secret (else in-cluster); raises kube.KubeConfigError."""
        return cls(kube.connection(kubeconfig_secret), **kwargs)

    # --- reads ---------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path(kind, namespace, name), verb="get", what=_what(kind, namespace, name))
        except KubeError as err:
            if err.not_found:
                return None
            raise

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        limit: int = 500,
        metadata_only: bool = False,
    ) -> list[dict]:
        return list(
            self.each(
                kind,
                namespace,
                field_selector=field_selector,
                label_selector=label_selector,
                limit=limit,
                metadata_only=metadata_only,
            )
        )

    def each(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
        limit: int = 100,
        metadata_only: bool = False,
    ) -> Iterator[dict]:
        """Items page by page (``continue``), so a sweep never holds every object at once.

        ``metadata_only``: each item is its ``metadata`` (and kind) only, as the API server's
        PartialObjectMetadataList answers; a ConfigMap's data then never crosses the wire."""
        cont = None
        while True:
            q = [("limit", str(limit))]
            if field_selector:
                q.append(("fieldSelector", field_selector))
            if label_selector:
                q.append(("labelSelector", label_selector))
            if cont:
                q.append(("continue", cont))
            doc = self.request(
                "GET",
                path(kind, namespace),
                query=q,
                verb="list",
                what=f"{kind} in {namespace or 'all namespaces'}",
                accept=METADATA_ONLY if metadata_only else JSON,
            )
            yield from doc.get("items") or []
            cont = (doc.get("metadata") or {}).get("continue")
            if not cont:
                return

    # --- writes --------------------------------------------------------------------------
    def create(self, kind: str, namespace: str | None, body: dict) -> dict:
        name = (body.get("metadata") or {}).get("name", "")
        return self.request(
            "POST",
            path(kind, namespace),
            body=body,
            query=self._managed(),
            verb="create",
            what=_what(kind, namespace, name),
        )

    def patch(self, kind: str, namespace: str | None, name: str, body, content_type: str) -> dict:
        return self.request(
            "PATCH",
            path(kind, namespace, name),
            body=body,
            content_type=content_type,
            query=self._managed(),
            verb="patch",
            what=_what(kind, namespace, name),
        )

    def delete(self, kind: str, namespace: str | None, name: str, options: dict | None = None) -> dict:
        """``options``: a DeleteOptions body (preconditions, propagationPolicy), or None."""
        return self.request(
            "DELETE", path(kind, namespace, name), body=options, verb="delete", what=_what(kind, namespace, name)
        )

    def evict(self, namespace: str, name: str) -> dict:
        """The pods/eviction subresource (policy/v1), as ``kubectl drain`` evicts: PodDisruptionBudgets are honoured
        (429 while one forbids it)."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        return self.request(
            "POST",
            path("Pod", namespace, name, "eviction"),
            body=body,
            verb="create",
            what=f"Eviction {namespace}/{name}",
        )

    def _managed(self) -> builtins.list[tuple[str, str]]:  # `list` in this class is the method
        return [("fieldManager", self.field_manager)] if self.field_manager else []

    # --- transport -----------------------------------------------------------------------
    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query=None,
        body=None,
        content_type: str | None = None,
        verb: str = "",
        what: str = "",
        accept: str = JSON,
    ) -> dict:
        """One call: the decoded JSON answer ({} when empty) on 2xx, else KubeError."""
        import urllib3  # the connection's transport: already loaded with it

        conn = self.connection
        url = conn.host + resource_path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": accept, "User-Agent": f"edgeguard/{self.field_manager or 'kubeapi'}"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type or JSON
            data = json.dumps(body).encode("utf-8")
        try:
            headers.update(conn.auth_headers())
            resp = conn.pool.request(
                method,
                url,
                body=data,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(total=self.timeout),
                preload_content=True,
            )
        except Exception as exc:  # urllib3 timeouts, refused connections, TLS failures, a failed token refresh
            raise self._failed(KubeError(None, type(exc).__name__, verb, what)) from None
        raw = resp.data or b""
        if 200 <= resp.status < 300:
            if not raw:
                return {}
            try:
                return json.loads(raw)
            except ValueError:
                raise self._failed(KubeError(resp.status, "response is not JSON", verb, what)) from None
        raise self._failed(KubeError(resp.status, _status_message(raw), verb, what))

    def _failed(self, err: KubeError) -> KubeError:
        if self.on_error is not None:
            self.on_error(err)
        return err


def _status_message(raw: bytes) -> str:
    """The first 300 characters of the API server's Status message (the body of an error answer)."""
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            return str(doc.get("message") or doc.get("reason") or "")[:300]
    except ValueError:
        pass
    return ""
