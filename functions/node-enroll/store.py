"""Everything node-enroll does to the Kubernetes API, and nothing else.

Verbs used (mirrored by deploy/rbac/node-enroll.yaml):
  secrets (edgeguard-enroll, our records): list, create, delete
  secrets (kube-system): create, delete -- never get or list: those would return every
    Secret of the control plane. What we need to read back is in our records.
  nodes: list, get, patch (cordon), delete
  pods (all namespaces): list
  pods/eviction: create
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .edgeguard import kube
from . import tokens
from .settings import KUBECONFIG_SECRET


class KubeFailure(Exception):
    """The API refused or failed; ``status`` is the API's HTTP status (0 = no answer)."""

    def __init__(self, action: str, status: int, reason: str):
        super().__init__(f"{action}: {status} {reason}")
        self.action = action
        self.status = status
        self.reason = reason


@dataclass
class EvictionResult:
    evicted: list
    skipped: list
    failed: list


class Store:
    def __init__(self, api_client=None):
        from kubernetes import client  # lazy: ~45 MB, only for requests that reach the cluster

        self._client_mod = client
        self.api_client = api_client or kube.api_client(KUBECONFIG_SECRET)
        self.core = client.CoreV1Api(self.api_client)

    def _call(self, action: str, fn, *args, **kwargs):
        from kubernetes.client.rest import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise KubeFailure(action, exc.status or 0, exc.reason or "error") from None
        except Exception as exc:  # urllib3 connection errors and the like
            raise KubeFailure(action, 0, type(exc).__name__) from None

    def _read(self, action: str, fn, *args, **kwargs) -> dict:
        # Raw JSON instead of the client's models: they reject objects that lack
        # fields the models call required (e.g. a partial nodeInfo), and we only
        # need a few keys.
        resp = self._call(action, fn, *args, _preload_content=False, **kwargs)
        try:
            return json.loads(resp.data)
        except ValueError:
            raise KubeFailure(action, 0, "invalid JSON from the API server") from None

    # ---- enrollment records (edgeguard-enroll) and bootstrap-token Secrets (kube-system)
    def list_enrollments(self) -> list:
        resp = self._read("list enrollment records", self.core.list_namespaced_secret, tokens.RECORD_NAMESPACE,
                          label_selector=tokens.MANAGED_SELECTOR)
        out = []
        for item in resp.get("items") or []:
            e = tokens.enrollment_from_secret(item)
            if e is not None:
                out.append(e)
        return out

    def create_record(self, body: dict) -> bool:
        """True if created, False if a record of that token id exists already."""
        return self._create("create enrollment record", tokens.RECORD_NAMESPACE, body)

    def publish(self, e: tokens.Enrollment) -> bool:
        """Create kube-system/bootstrap-token-<id> from the record: True if created, False if it exists.

        Without ``get`` in kube-system an existing Secret cannot be inspected; callers
        must not infer anything from it beyond "a token with this id exists".
        """
        return self._create("create bootstrap token", tokens.NAMESPACE, tokens.bootstrap_from_record(e.record))

    def revoke(self, e: tokens.Enrollment) -> bool:
        """Delete the kube-system token, then our record; True if either still existed.

        In this order a crash in between leaves the record, so the next revoke, rotate or
        consume finds it and finishes; the reverse could orphan a live token we can no longer see.
        """
        gone_token = self._delete("delete bootstrap token", tokens.NAMESPACE, e.secret_name)
        gone_record = self._delete("delete enrollment record", tokens.RECORD_NAMESPACE, e.record_name)
        return gone_token or gone_record

    def revoke_record_only(self, e: tokens.Enrollment) -> None:
        """Drop a record whose token id turned out to belong to a Secret that is not ours."""
        self._delete("delete enrollment record", tokens.RECORD_NAMESPACE, e.record_name)

    def _create(self, action: str, namespace: str, body: dict) -> bool:
        try:
            self._call(action, self.core.create_namespaced_secret, namespace, body, _preload_content=False)
            return True
        except KubeFailure as exc:
            if exc.status == 409:
                return False
            raise

    def _delete(self, action: str, namespace: str, name: str) -> bool:
        try:
            self._call(action, self.core.delete_namespaced_secret, name, namespace, _preload_content=False)
            return True
        except KubeFailure as exc:
            if exc.status == 404:
                return False
            raise

    # ---- nodes and pods
    def list_nodes(self) -> list:
        return self._read("list nodes", self.core.list_node).get("items") or []

    def get_node(self, name: str) -> dict | None:
        try:
            return self._read("get node", self.core.read_node, name)
        except KubeFailure as exc:
            if exc.status == 404:
                return None
            raise

    def cordon(self, name: str) -> None:
        self._call("cordon node", self.core.patch_node, name, {"spec": {"unschedulable": True}},
                   _preload_content=False)

    def delete_node(self, name: str) -> None:
        self._call("delete node", self.core.delete_node, name, _preload_content=False)

    def pods(self, *, label_selector: str | None = None, node: str | None = None) -> list:
        kwargs = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if node:
            kwargs["field_selector"] = f"spec.nodeName={node}"
        return self._read("list pods", self.core.list_pod_for_all_namespaces, **kwargs).get("items") or []

    def evict_pods(self, node: str) -> EvictionResult:
        """Evict what ``kubectl drain --ignore-daemonsets`` would: not DaemonSet pods, not mirror pods."""
        result = EvictionResult([], [], [])
        for pod in self.pods(node=node):
            meta = pod.get("metadata") or {}
            ref = f"{meta.get('namespace')}/{meta.get('name')}"
            phase = (pod.get("status") or {}).get("phase")
            owners = meta.get("ownerReferences") or []
            if any(o.get("kind") == "DaemonSet" for o in owners):
                result.skipped.append({"pod": ref, "why": "DaemonSet pod"})
                continue
            if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                result.skipped.append({"pod": ref, "why": "mirror (static) pod"})
                continue
            if phase in ("Succeeded", "Failed"):
                result.skipped.append({"pod": ref, "why": f"already {phase}"})
                continue
            body = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")}}
            try:
                self._call("evict pod", self.core.create_namespaced_pod_eviction,
                           meta.get("name"), meta.get("namespace"), body, _preload_content=False)
                result.evicted.append(ref)
            except KubeFailure as exc:
                if exc.status == 404:
                    result.evicted.append(ref)  # gone already: the goal is met
                elif exc.status in (401, 403):
                    raise  # our credentials, not this pod: stop and say so
                else:
                    result.failed.append({"pod": ref, "status": exc.status, "reason": exc.reason})
        return result
