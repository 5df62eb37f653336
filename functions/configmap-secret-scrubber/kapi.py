"""The few Kubernetes REST calls the scrubber makes, as plain JSON dicts.

The ``kubernetes`` client (pinned to the 37.x generator in requirements.txt)
provides configuration, authentication, TLS and the HTTP pool; requests go
through its ``param_serialize``/``call_api`` so objects stay plain dicts. Typed
models would drop fields they do not know and differ between client
generations, and this function round-trips whole pod specs.
"""
from __future__ import annotations

import json
from urllib.parse import quote

FIELD_MANAGER = "configmap-secret-scrubber"

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

# group/version prefix and plural per kind the scrubber touches
RESOURCES = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
}


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status, or None for transport errors/timeouts."""

    def __init__(self, status: int | None, reason: str, verb: str = "", what: str = ""):
        super().__init__(f"{verb} {what}: {status or 'no response'} {reason}".strip())
        self.status = status
        self.reason = reason
        self.verb = verb
        self.what = what

    @property
    def conflict(self) -> bool:
        """The object changed under us: 409, or a failed JSON-patch ``test`` op on resourceVersion."""
        if self.status == 409:
            return True
        return self.status == 422 and "test" in self.reason.lower()


class Kube:
    def __init__(self, api_client, timeout: float = 10.0):
        self.api = api_client
        self.timeout = timeout

    # --- paths ---------------------------------------------------------------------------
    @staticmethod
    def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
        prefix, plural = RESOURCES[kind]
        p = prefix
        if namespace is not None:
            p += f"/namespaces/{quote(namespace, safe='')}"
        p += f"/{plural}"
        if name is not None:
            p += f"/{quote(name, safe='')}"
        return p

    # --- verbs ---------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", self.path(kind, namespace, name), verb="get", what=f"{kind} {namespace}/{name}")
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, field_selector: str | None = None,
             limit: int = 500) -> list[dict]:
        return list(self.each(kind, namespace, field_selector, limit))

    def each(self, kind: str, namespace: str | None = None, field_selector: str | None = None,
             limit: int = 100):
        """Items page by page, so a sweep never holds every ConfigMap's data at once."""
        cont = None
        while True:
            q = [("limit", str(limit))]
            if field_selector:
                q.append(("fieldSelector", field_selector))
            if cont:
                q.append(("continue", cont))
            doc = self._call("GET", self.path(kind, namespace), query=q, verb="list",
                             what=f"{kind} in {namespace or 'all namespaces'}")
            yield from doc.get("items") or []
            cont = (doc.get("metadata") or {}).get("continue")
            if not cont:
                return

    def create(self, kind: str, namespace: str, body: dict) -> dict:
        return self._call("POST", self.path(kind, namespace), body=body,
                          query=[("fieldManager", FIELD_MANAGER)], verb="create",
                          what=f"{kind} {namespace}/{(body.get('metadata') or {}).get('name', '')}")

    def delete(self, kind: str, namespace: str, name: str, options: dict) -> dict:
        return self._call("DELETE", self.path(kind, namespace, name), body=options, verb="delete",
                          what=f"{kind} {namespace}/{name}")

    def patch(self, kind: str, namespace: str, name: str, body, content_type: str) -> dict:
        return self._call("PATCH", self.path(kind, namespace, name), body=body, content_type=content_type,
                          query=[("fieldManager", FIELD_MANAGER)], verb="patch", what=f"{kind} {namespace}/{name}")

    # --- transport -----------------------------------------------------------------------
    def _call(self, method: str, path: str, *, query=None, body=None, content_type: str | None = None,
              verb: str = "", what: str = "") -> dict:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            m, url, hdrs, data, post = self.api.param_serialize(
                method=method, resource_path=path, query_params=query or [], header_params=headers,
                body=body, auth_settings=["BearerToken"])
            resp = self.api.call_api(m, url, header_params=hdrs, body=data, post_params=post,
                                     _request_timeout=self.timeout)
            resp.read()
            status, raw = resp.status, resp.data or b""
        except KubeError:
            raise
        except Exception as exc:  # urllib3 timeouts, refused connections, TLS failures
            from kubernetes.client.exceptions import ApiException
            if isinstance(exc, ApiException):
                status, raw = exc.status or 0, (exc.body or "").encode() if isinstance(exc.body, str) else (exc.body or b"")
            else:
                raise KubeError(None, f"{type(exc).__name__}", verb, what) from None
        if 200 <= status < 300:
            if not raw:
                return {}
            try:
                return json.loads(raw)
            except ValueError:
                raise KubeError(status, "response is not JSON", verb, what) from None
        raise KubeError(status, _status_message(raw), verb, what)


def _status_message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            return str(doc.get("message") or doc.get("reason") or "")[:300]
    except ValueError:
        pass
    return ""
