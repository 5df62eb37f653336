"""Everything node-enroll does to the Kubernetes API, and nothing else, over edgeguard.kubeapi.

Verbs used (mirrored by deploy/rbac/node-enroll.yaml):
  secrets (edgeguard-enroll, our records): list, create, delete
  secrets (edgeguard-enroll/edgeguard-enroll-nonces, the replay window): patch
  secrets (edgeguard-enroll/edgeguard-node-alert-tokens, per-node alert-token hashes): patch
  secrets (kube-system): create, delete -- never get or list: those would return every
    Secret of the control plane. What we need to read back is in our records.
  nodes: list, get, patch (cordon), delete
  pods (all namespaces): list
  pods/eviction: create

Failures are kubeapi.KubeError (status None when no answer came). The connection comes from
edgeguard.kube.connection(), which does not import the kubernetes package for the kubeconfigs bootstrap writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from http import HTTPStatus

from . import alerttokens, tokens
from .edgeguard.kubeapi import MERGE_PATCH, Client, KubeError
from .settings import KUBECONFIG_SECRET

FIELD_MANAGER = "edgeguard-node-enroll"
NONCES_SECRET = "edgeguard-enroll-nonces"  # the replay window across restarts (replay.py)


@dataclass
class EvictionResult:
    evicted: list
    skipped: list
    failed: list


class Store:
    def __init__(self, client: Client | None = None):
        self.api = client or Client.for_secret(KUBECONFIG_SECRET, field_manager=FIELD_MANAGER)

    # ---- enrollment records (edgeguard-enroll) and bootstrap-token Secrets (kube-system)
    def list_enrollments(self) -> list:
        """Our records only: a Secret in edgeguard-enroll of any other type or name is not an enrollment, whatever
        its labels say, so it can never point a revocation at a kube-system Secret."""
        out = []
        for item in self.api.list("Secret", tokens.RECORD_NAMESPACE, label_selector=tokens.MANAGED_SELECTOR):
            e = tokens.enrollment_from_secret(item) if tokens.is_record(item) else None
            if e is not None:
                out.append(e)
        return out

    def create_record(self, body: dict) -> bool:
        """True if created, False if a record of that token id exists already."""
        return self._create(tokens.RECORD_NAMESPACE, body)

    def publish(self, e: tokens.Enrollment) -> bool:
        """Create kube-system/bootstrap-token-<id> from the record: True if created, False if it exists.

        Without ``get`` in kube-system an existing Secret cannot be inspected; callers
        must not infer anything from it beyond "a token with this id exists".
        """
        if e.record is None:  # an Enrollment read back without its record cannot be published
            raise ValueError(f"enrollment {e.token_id} has no record to publish")
        return self._create(tokens.NAMESPACE, tokens.bootstrap_from_record(e.record))

    def revoke(self, e: tokens.Enrollment) -> bool:
        """Delete the kube-system token, then our record; True if either still existed.

        In this order a crash in between leaves the record, so the next revoke, rotate or
        consume finds it and finishes; the reverse could orphan a live token we can no longer see.
        """
        gone_token = self._delete_token(e)
        gone_record = self._delete(tokens.RECORD_NAMESPACE, e.record_name)
        return gone_token or gone_record

    def _delete_token(self, e: tokens.Enrollment) -> bool:
        """Delete kube-system/bootstrap-token-<id>, and nothing else, only while our record of it exists.

        RBAC lets this identity delete any Secret in kube-system (deploy/rbac/node-enroll.yaml), so the name is
        checked here, and the record is read again first: what we created is what our record says, and the
        kube-system Secret itself may not be read. No record, no delete (its token is left to expire)."""
        name = e.secret_name
        if not (
            tokens.TOKEN_SECRET_NAME_RE.fullmatch(name)
            and e.record is not None
            and tokens.is_record(e.record)
            and e.record_name == tokens.RECORD_PREFIX + e.token_id
        ):
            raise KubeError(
                None,
                f"refused to delete {name!r}: not a token node-enroll recorded",
                "delete",
                f"Secret {tokens.NAMESPACE}/{name}",
            )
        current = self.api.list("Secret", tokens.RECORD_NAMESPACE, field_selector=f"metadata.name={e.record_name}")
        if not current or not tokens.is_record(current[0]):
            return False
        again = tokens.enrollment_from_secret(current[0])
        if again is None or again.token_id != e.token_id:
            return False
        return self._delete(tokens.NAMESPACE, name)

    def revoke_record_only(self, e: tokens.Enrollment) -> None:
        """Drop a record whose token id turned out to belong to a Secret that is not ours."""
        self._delete(tokens.RECORD_NAMESPACE, e.record_name)

    def _create(self, namespace: str, body: dict) -> bool:
        try:
            self.api.create("Secret", namespace, body)
            return True
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise

    def _delete(self, namespace: str, name: str) -> bool:
        try:
            self.api.delete("Secret", namespace, name)
            return True
        except KubeError as exc:
            if exc.not_found:
                return False
            raise

    # ---- the replay window (replay.PersistedWindow): Secret edgeguard-enroll/edgeguard-enroll-nonces
    def read_nonces(self) -> dict[str, float]:
        """{nonce: forget-after} as stored; listed by name (list is what this Role has, never get)."""
        found = self.api.list("Secret", tokens.RECORD_NAMESPACE, field_selector=f"metadata.name={NONCES_SECRET}")
        out = {}
        for key, value in ((found[0].get("data") or {}) if found else {}).items():
            try:
                out[key] = float(base64.b64decode(value, validate=True).decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                continue  # not ours to interpret; never trusted as a forget-after time
        return out

    def write_nonces(self, add: dict[str, float], drop: list[str]) -> None:
        """One merge patch: the API server applies it atomically, and distinct nonces from concurrent writers
        do not conflict, so no resourceVersion is needed. The Secret is created when it is missing."""
        data: dict[str, str | None] = {n: base64.b64encode(str(int(u)).encode()).decode() for n, u in add.items()}
        data.update({n: None for n in drop if n not in add})
        for _ in range(3):
            try:
                self.api.patch("Secret", tokens.RECORD_NAMESPACE, NONCES_SECRET, {"data": data}, MERGE_PATCH)
                return
            except KubeError as exc:
                if not exc.not_found:
                    raise
            try:
                self.api.create(
                    "Secret",
                    tokens.RECORD_NAMESPACE,
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": "Opaque",
                        "metadata": {"name": NONCES_SECRET, "labels": {"app.kubernetes.io/part-of": "edgeguard"}},
                        "data": {k: v for k, v in data.items() if v is not None},
                    },
                )
                return
            except KubeError as exc:
                if exc.status != 409:  # created meanwhile: patch it
                    raise
        raise KubeError(409, "the replay window Secret kept changing", "patch", f"Secret {NONCES_SECRET}")

    # ---- per-node alert-token hashes (alerttokens.py): Secret edgeguard-enroll/edgeguard-node-alert-tokens
    def alert_token_nodes(self) -> set[str]:
        current = self._alert_tokens()
        return set((current or {}).get("data") or {})

    def set_alert_token(self, node: str, digest: str) -> None:
        """Store ``node``'s token hash, replacing an older one: created when missing, else patched with the
        resourceVersion just read, so a concurrent writer's change is never lost (409 -> read again)."""
        value = base64.b64encode(digest.encode("ascii")).decode("ascii")
        self._update_alert_tokens(lambda data: {node: value})

    def remove_alert_token(self, node: str) -> bool:
        """Delete ``node``'s key; True if it was there."""
        return self._update_alert_tokens(lambda data: {node: None} if node in data else None)

    def _alert_tokens(self) -> dict | None:
        found = self.api.list("Secret", tokens.RECORD_NAMESPACE, field_selector=f"metadata.name={alerttokens.SECRET}")
        return found[0] if found else None

    def _update_alert_tokens(self, change) -> bool:
        for _ in range(5):
            current = self._alert_tokens()
            data = (current or {}).get("data") or {}
            patch = change(data)
            if patch is None:
                return False
            try:
                if current is None:
                    if all(v is None for v in patch.values()):
                        return False
                    self.api.create(
                        "Secret",
                        tokens.RECORD_NAMESPACE,
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "Opaque",
                            "metadata": {
                                "name": alerttokens.SECRET,
                                "labels": {"app.kubernetes.io/part-of": "edgeguard"},
                            },
                            "data": {k: v for k, v in patch.items() if v is not None},
                        },
                    )
                else:
                    rv = current["metadata"]["resourceVersion"]
                    self.api.patch(
                        "Secret",
                        tokens.RECORD_NAMESPACE,
                        alerttokens.SECRET,
                        {"metadata": {"resourceVersion": rv}, "data": patch},
                        MERGE_PATCH,
                    )
                return True
            except KubeError as exc:
                if exc.status != 409:  # changed (or created) since we read it: read again
                    raise
        raise KubeError(409, "the alert-token Secret kept changing", "patch", f"Secret {alerttokens.SECRET}")

    # ---- nodes and pods
    def list_nodes(self) -> list:
        return self.api.list("Node")

    def get_node(self, name: str) -> dict | None:
        return self.api.get("Node", None, name)

    def cordon(self, name: str) -> None:
        self.api.patch("Node", None, name, {"spec": {"unschedulable": True}}, MERGE_PATCH)

    def delete_node(self, name: str) -> None:
        self.api.delete("Node", None, name)

    def pods(self, *, label_selector: str | None = None, node: str | None = None) -> list:
        return self.api.list(
            "Pod", None, label_selector=label_selector, field_selector=f"spec.nodeName={node}" if node else None
        )

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
            try:
                self.api.evict(meta["namespace"], meta["name"])  # every listed pod has both
                result.evicted.append(ref)
            except KubeError as exc:
                if exc.not_found:
                    result.evicted.append(ref)  # gone already: the goal is met
                elif exc.status in (401, 403):
                    raise  # our credentials, not this pod: stop and say so
                else:
                    result.failed.append({"pod": ref, "status": exc.status, "reason": _phrase(exc.status)})
        return result


def _phrase(status: int | None) -> str:
    """The HTTP reason phrase ("Too Many Requests" for a PodDisruptionBudget's 429), as drains report it."""
    try:
        return HTTPStatus(status).phrase if status else "no answer"
    except ValueError:
        return "error"
