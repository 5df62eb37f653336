"""Move high-confidence credentials of one ConfigMap into a Secret: expand, migrate, contract.

Invariant (the reason for the order): at every moment every original value is
readable from the ConfigMap or from the Secret. Keys leave the ConfigMap only in
step 4, in one JSON patch whose ``test`` op pins the resourceVersion at which we
last verified that the Secret holds the same bytes. Nothing here deletes a
Secret or overwrites a Secret key with a different value, so a fault or a crash
between any two calls leaves a state from which a re-run continues.

Steps: 1 Secret created/merged and read back; 2 consumers found; 3 controller
templates rewired and rollouts awaited; 4 keys removed from the ConfigMap;
5 provenance annotations, a Kubernetes Event, and "rotate" in the answer.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from . import consumers as cons
from .detect import HIGH, Detector
from .edgeguard.kubeapi import JSON_PATCH, MERGE_PATCH, Client, KubeError
from .settings import Settings

# sent as fieldManager with every write, and the managed-by label of what it creates
FIELD_MANAGER = "configmap-secret-scrubber"
DOMAIN = "scrubber.edgeguard.io"
MANAGED_BY = "app.kubernetes.io/managed-by"
A_SOURCE_NS = f"{DOMAIN}/source-namespace"
A_SOURCE_NAME = f"{DOMAIN}/source-name"
A_SOURCE_UID = f"{DOMAIN}/source-uid"
A_SOURCE_RV = f"{DOMAIN}/source-resource-version"
A_MOVED_KEYS = f"{DOMAIN}/moved-keys"
A_MOVED_AT = f"{DOMAIN}/moved-at"
A_DETECTORS = f"{DOMAIN}/detector-rules"
A_FINGERPRINTS = f"{DOMAIN}/value-fingerprints"
A_TARGET = f"{DOMAIN}/target-secret"
A_REWIRED = f"{DOMAIN}/rewired-from"
A_ROTATE = f"{DOMAIN}/rotate"
A_REPLACES = f"{DOMAIN}/replaces"


class Died(BaseException):
    """Raised by tests to stop the workflow mid-way, like a killed process."""


@dataclass
class Rewire:
    """A controller to rewire: its pod spec as read and as it will be (computed once, in plan())."""

    consumer: cons.Consumer
    new_spec: dict


@dataclass
class Plan:
    """What a move of one ConfigMap does, decided once from one read of it and of its namespace's workloads."""

    keys: set  # the high-confidence keys that move
    secret_name: str
    rename_to: str | None  # an immutable ConfigMap is replaced by this one (allow_immutable)
    blockers: list = field(default_factory=list)
    rewires: list = field(default_factory=list)  # [Rewire]
    notes: list = field(default_factory=list)  # the consumers, for the answer


@dataclass
class Outcome:
    namespace: str
    name: str
    status: str = "clean"
    reasons: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    secret: str | None = None
    steps: list = field(default_factory=list)
    uid: str | None = None
    resource_version: str | None = None

    def public(self) -> dict:
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name, "status": self.status, "keys": self.keys}
        if self.uid:
            out["uid"] = self.uid
            out["resourceVersion"] = self.resource_version
        if self.reasons:
            out["reasons"] = self.reasons
        if self.consumers:
            out["consumers"] = self.consumers
        if self.secret:
            out["secret"] = self.secret
        if self.steps:
            out["steps"] = self.steps
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def value_bytes(cm: dict, key: str) -> bytes | None:
    """The exact bytes a pod sees for ``key`` (data is UTF-8 text, binaryData is base64)."""
    data = cm.get("data") or {}
    if key in data:
        return str(data[key]).encode("utf-8")
    b = cm.get("binaryData") or {}
    if key in b:
        return base64.b64decode(b[key])
    return None


def secret_bytes(secret: dict, key: str) -> bytes | None:
    d = secret.get("data") or {}
    if key in d:
        return base64.b64decode(d[key] or "")
    return None


def _esc(s: str) -> str:
    return s.replace("~", "~0").replace("/", "~1")


class Workloads:
    """Pod-spec owners of one namespace, listed once per run (re-listed for the final check)."""

    def __init__(self, kube: Client, namespace: str):
        self.kube, self.namespace = kube, namespace
        self._objs: dict | None = None

    def all(self, fresh: bool = False) -> dict:
        if self._objs is None or fresh:
            self._objs = {k: self.kube.list(k, self.namespace) for k in cons.CONTROLLERS}
        return self._objs


REWIRED_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")  # the pod templates step 3 patches


class Scrubber:
    """``deadline``: monotonic time after which no wait may continue (the run budget), or None."""

    def __init__(
        self,
        kube: Client,
        detector: Detector,
        settings: Settings,
        sleep=time.sleep,
        monotonic=time.monotonic,
        deadline: float | None = None,
    ):
        self.kube, self.detector, self.settings = kube, detector, settings
        self.sleep, self.monotonic = sleep, monotonic
        self.deadline = deadline
        self._workloads: dict[str, Workloads] = {}

    def workloads(self, namespace: str) -> Workloads:
        if namespace not in self._workloads:
            self._workloads[namespace] = Workloads(self.kube, namespace)
        return self._workloads[namespace]

    # ------------------------------------------------------------------------------------------
    def process(self, namespace: str, name: str, *, mode: str | None = None, report_only: str | None = None) -> Outcome:
        mode = mode or self.settings.mode
        out = Outcome(namespace, name)
        cm = self.kube.get("ConfigMap", namespace, name)
        if cm is None:
            out.status = "not_found"
            return out
        md = cm.get("metadata") or {}
        out.uid, out.resource_version = md.get("uid"), md.get("resourceVersion")
        verdicts = [v for v in self.detector.scan_configmap(cm) if v.tier]
        movable = [v for v in verdicts if v.tier == HIGH]
        out.keys = [dict(v.public(), action="report" if v.tier == HIGH else "report-only (suspect)") for v in verdicts]
        previously = [k for k in (md.get("annotations") or {}).get(A_MOVED_KEYS, "").split(",") if k]
        if previously:
            out.steps.append({"step": 0, "note": "keys moved by an earlier run", "keys": previously})
        if not movable:
            out.status = "suspect" if verdicts else "clean"
            if previously and mode == "move" and not report_only:
                self._finish_interrupted(cm, set(previously), out)
            return out
        keys = {v.key for v in movable}
        secret_name = self.settings.secret_name_template.format(configmap=name)
        out.secret = secret_name
        rename_to = None
        if cm.get("immutable") and self.settings.allow_immutable:
            rename_to = self.settings.replacement_name_template.format(configmap=name)
            out.steps.append({"step": 0, "note": f"immutable: will be replaced by ConfigMap {rename_to}"})
        plan = self.plan(cm, keys, secret_name, rename_to)
        out.consumers = plan.notes
        if report_only or mode != "move":
            if report_only:
                out.reasons.append(report_only)
            out.status = "would_block" if plan.blockers else "would_move"
            out.reasons.extend(plan.blockers)
            return out
        if plan.blockers:
            out.status = "blocked"
            out.reasons = plan.blockers
            self._mark(out, keys, "kept (blocked)")
            return out
        return self.move(cm, plan, movable, out)

    def move(self, cm: dict, plan: Plan, movable: list, out: Outcome) -> Outcome:
        """Steps 1-5 of a plan with no blockers (the order is the module's docstring)."""
        namespace, name = cm["metadata"]["namespace"], cm["metadata"]["name"]
        keys, secret_name, rename_to = plan.keys, plan.secret_name, plan.rename_to

        # 1. Secret with the exact bytes, read back and compared
        ok, why = self.ensure_secret(cm, keys, secret_name, movable)
        if not ok:
            out.status = "blocked"
            out.reasons.append(why)
            self._mark(out, keys, "kept (blocked)")
            return out
        out.steps.append({"step": 1, "done": f"Secret {secret_name} holds {len(keys)} key(s), verified"})
        if rename_to:
            ok, why = self.ensure_replacement(cm, keys, rename_to)
            if not ok:
                out.status = "blocked"
                out.reasons.append(why)
                self._mark(out, keys, "kept (blocked)")
                return out
            out.steps.append({"step": 1, "done": f"ConfigMap {rename_to} holds the other keys, verified"})

        # 2 + 3. rewire controllers, then wait for their rollouts
        rewired = []
        for r in plan.rewires:
            if self.rewire(r, plan):
                rewired.append(f"{r.consumer.kind}/{r.consumer.name}")
        out.steps.append({"step": 2, "done": f"{len(plan.rewires)} consumer(s) found"})
        out.steps.append({"step": 3, "done": "rewired", "objects": rewired})
        pending = self.wait_rollouts(namespace, [r.consumer for r in plan.rewires])
        if pending:
            out.status = "pending_rollout"
            out.reasons.extend(pending)
            self._mark(out, keys, "kept (waiting for rollout; re-run to finish)")
            return out

        # 4. contract, only if a fresh scan finds no reader left that needs the ConfigMap copy
        blockers = self.readers_left(cm, plan)
        if blockers:
            out.status = "pending_rollout"
            out.reasons.extend(blockers)
            self._mark(out, keys, "kept (readers still use the ConfigMap; re-run to finish)")
            return out
        if rename_to:
            self.emit_event(cm, keys, secret_name, rename_to)
            ok, why = self.delete_original(cm, keys, secret_name, rename_to)
        else:
            ok, why = self.remove_keys(namespace, name, keys, secret_name)
        if not ok:
            out.status = "conflict"
            out.reasons.append(why)
            self._mark(out, keys, "kept (ConfigMap changed; re-run)")
            return out
        out.steps.append({"step": 4, "done": f"removed {len(keys)} key(s) from the ConfigMap"})

        # 5. provenance + event; the credential was exposed, so it must be rotated
        self.finish(cm, keys, secret_name, out, rename_to)
        out.status = "moved"
        self._mark(out, keys, "moved", rotate=True)
        return out

    def _mark(self, out: Outcome, keys: set, action: str, rotate: bool = False) -> None:
        for k in out.keys:
            if k["key"] in keys:
                k["action"] = action
                if rotate:
                    k["rotate"] = True

    # --- planning ------------------------------------------------------------------------------
    def plan(self, cm: dict, keys: set, secret_name: str, rename_to: str | None = None) -> Plan:
        """Blockers, the controllers to rewire (with their new pod specs) and the consumers, from the workloads
        of the ConfigMap's namespace as listed once per run."""
        md = cm.get("metadata") or {}
        plan = Plan(keys, secret_name, rename_to)
        owner = cons.managed_by(cm)
        if owner:
            plan.blockers.append(f"ConfigMap is managed by {owner}; it would revert the change")
        if cm.get("immutable") and not rename_to:
            plan.blockers.append(
                "ConfigMap is immutable; its data cannot be changed in place "
                "(set allow_immutable=true to replace it by a new ConfigMap)"
            )
        for c, new, reason in self._consumers(cm, plan, self.workloads(md.get("namespace", "")).all(), False):
            note = c.public()
            if reason:
                note["action"] = "blocked"
                note["reason"] = reason
                plan.blockers.append(f"{c.kind} {c.name}: {reason}")
            elif c.kind in REWIRED_KINDS:
                if new is None:
                    note["action"] = "already reads the Secret"
                else:
                    note["action"] = "rewire"
                    plan.rewires.append(Rewire(c, new))
            plan.notes.append(note)
        return plan

    def readers_left(self, cm: dict, plan: Plan) -> list[str]:
        """Before step 4, on a fresh listing: who would still read the moved keys from the ConfigMap."""
        left = []
        objs = self.workloads(cm["metadata"]["namespace"]).all(fresh=True)
        for c, new, reason in self._consumers(cm, plan, objs, True):
            if reason:
                left.append(f"{c.kind} {c.name}: {reason}")
            elif c.kind in REWIRED_KINDS and new is not None:
                left.append(f"{c.kind} {c.name} still reads the keys from the ConfigMap")
        return left

    def _consumers(self, cm: dict, plan: Plan, objs: dict, after_rewire: bool):
        """(consumer, its rewired pod spec or None when it already reads the Secret, blocking reason or None)
        for every reader that matters; rewire() is computed once per consumer here."""
        name = cm["metadata"]["name"]
        # replacing: every reader of any key must move to the replacement or the Secret
        readers_of = set(cm.get("data") or {}) | set(cm.get("binaryData") or {}) if plan.rename_to else plan.keys
        for c in cons.find_consumers(objs, name, readers_of):
            spec = cons.pod_spec(c.obj, c.kind)
            new = cons.rewire(spec, name, plan.keys, plan.secret_name, plan.rename_to)
            safe = new == spec
            reason = self._consumer_blocker(c, safe, after_rewire)
            if reason == "skip":
                continue
            yield c, (None if safe else new), reason

    def _consumer_blocker(self, c, safe: bool, after_rewire: bool) -> str | None:
        """Why consumer ``c`` blocks the move, "skip" when it does not matter, None when it is fine.
        ``safe``: its pod spec already reads the moved keys from the Secret."""
        md = c.obj.get("metadata") or {}
        owners = [r for r in md.get("ownerReferences") or [] if r.get("controller")]
        if safe and c.kind in ("Pod", "ReplicaSet", "Job"):
            return "skip"  # already reads the moved keys from the Secret
        if c.kind == "Pod":
            if (c.obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return "skip"  # finished: never restarts, never reads the key again
            if owners and owners[0].get("kind") in ("ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
                # replaced by its controller's rollout; only the final check must wait for it
                return "pod of the old template still running" if after_rewire and not safe else "skip"
            if owners:
                return f"Pod owned by {owners[0].get('kind')} {owners[0].get('name')}, which cannot be rewired"
            return None if safe else "bare Pod (pod specs are immutable); recreate it from the Secret, then re-run"
        if c.kind == "ReplicaSet":
            if owners and owners[0].get("kind") == "Deployment":
                if int((c.obj.get("spec") or {}).get("replicas") or 0) == 0:
                    return "skip"  # rollback history only
                return "old ReplicaSet still has pods" if after_rewire and not safe else "skip"
            return None if safe else "ReplicaSet without a Deployment; its pods cannot be rolled"
        if c.kind == "Job":
            st = c.obj.get("status") or {}
            done = any(
                cd.get("type") in ("Complete", "Failed") and cd.get("status") == "True"
                for cd in st.get("conditions") or []
            )
            if done:
                return "skip"
            return None if safe else "running Job (its pod template is immutable); wait for it to finish, then re-run"
        owner = cons.managed_by(c.obj)
        if owner and not (owners and owners[0].get("kind") == "CronJob"):
            return f"managed by {owner}; it would revert the rewiring"
        if (
            c.kind in ("StatefulSet", "DaemonSet")
            and not safe
            and ((c.obj.get("spec") or {}).get("updateStrategy") or {}).get("type") == "OnDelete"
        ):
            return f"{c.kind} uses updateStrategy OnDelete; its pods would keep the old spec"
        if c.kind == "Deployment" and not safe and (c.obj.get("spec") or {}).get("paused"):
            return "Deployment is paused; its rollout would never progress"
        return None

    # --- step 1 ----------------------------------------------------------------------------
    def ensure_secret(self, cm: dict, keys: set, secret_name: str, verdicts) -> tuple[bool, str]:
        md = cm["metadata"]
        ns = md["namespace"]
        want: dict[str, bytes] = {}
        for k in sorted(keys):
            value = value_bytes(cm, k)
            if value is None:  # keys come from this same copy of the ConfigMap: a caller's mistake, not a race
                return False, f"ConfigMap {md['name']} has no key {k} to move"
            want[k] = value
        fps = ",".join(f"{v.key}={v.fingerprint}" for v in verdicts if v.key in keys)
        dets = ",".join(sorted({d for v in verdicts if v.key in keys for d in v.detectors}))
        for _ in range(self.settings.retries):
            sec = self.kube.get("Secret", ns, secret_name)
            if sec is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": secret_name,
                        "namespace": ns,
                        "labels": {MANAGED_BY: FIELD_MANAGER},
                        "annotations": {
                            A_SOURCE_NS: ns,
                            A_SOURCE_NAME: md["name"],
                            A_SOURCE_UID: md.get("uid", ""),
                            A_SOURCE_RV: md.get("resourceVersion", ""),
                            A_DETECTORS: dets,
                            A_FINGERPRINTS: fps,
                        },
                    },
                    # no ownerReference to the ConfigMap: deleting it must not garbage-collect the copy
                    "data": {k: base64.b64encode(v).decode() for k, v in want.items()},
                }
                try:
                    self.kube.create("Secret", ns, body)
                except KubeError as err:
                    if err.status == 409:
                        continue  # created concurrently (or by our own timed-out call): re-read
                    raise
            else:
                smd = sec.get("metadata") or {}
                sann = smd.get("annotations") or {}
                # same namespace/name is enough (a ConfigMap deleted and re-created gets a new uid):
                # merging never overwrites a different value, so it cannot lose data
                if (
                    (smd.get("labels") or {}).get(MANAGED_BY) != FIELD_MANAGER
                    or sann.get(A_SOURCE_NAME) != md["name"]
                    or sann.get(A_SOURCE_NS) != ns
                ):
                    return False, f"Secret {secret_name} exists and was not created by this function for this ConfigMap"
                missing = {}
                for k, v in want.items():
                    have = secret_bytes(sec, k)
                    if have is None:
                        missing[k] = base64.b64encode(v).decode()
                    elif have != v:
                        return False, (
                            f"Secret {secret_name} already holds a different value for key {k}; "
                            "resolve by hand (nothing was changed)"
                        )
                if missing:
                    prev_fps = sann.get(A_FINGERPRINTS, "")
                    patch = {
                        "metadata": {
                            "resourceVersion": smd.get("resourceVersion"),
                            "annotations": {
                                A_FINGERPRINTS: ",".join(filter(None, [prev_fps, fps])),
                                A_DETECTORS: dets,
                                A_SOURCE_UID: md.get("uid", ""),
                                A_SOURCE_RV: md.get("resourceVersion", ""),
                            },
                        },
                        "data": missing,
                    }
                    try:
                        self.kube.patch("Secret", ns, secret_name, patch, MERGE_PATCH)
                    except KubeError as err:
                        if err.conflict:
                            continue
                        raise
            # read back and compare byte for byte
            sec = self.kube.get("Secret", ns, secret_name)
            if sec is not None and all(secret_bytes(sec, k) == v for k, v in want.items()):
                return True, ""
        return False, f"Secret {secret_name} could not be written and verified after {self.settings.retries} attempts"

    # --- step 3 ----------------------------------------------------------------------------
    def rewire(self, r: Rewire, plan: Plan) -> bool:
        """Patch one controller's pod template to ``r.new_spec``; recomputed only after a lost race."""
        c = r.consumer
        new: dict | None = r.new_spec  # recomputed (None first) after a lost race
        cm_name = c.cm_name
        for _ in range(self.settings.retries):
            md = c.obj["metadata"]
            if new is None:
                spec = cons.pod_spec(c.obj, c.kind)
                new = cons.rewire(spec, cm_name, plan.keys, plan.secret_name, plan.rename_to)
                if new == spec:
                    return False
            path = "/" + "/".join(cons.pod_spec_path(c.kind))
            ann = dict(md.get("annotations") or {})
            ann[A_REWIRED] = f"{cm_name}->{plan.secret_name}" + (f",{plan.rename_to}" if plan.rename_to else "")
            ops = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": md["resourceVersion"]},
                {"op": "replace", "path": path, "value": new},
                {"op": "add", "path": "/metadata/annotations", "value": ann},
            ]
            try:
                self.kube.patch(c.kind, md["namespace"], md["name"], ops, JSON_PATCH)
                return True
            except KubeError as err:
                if not self._lost_race(err, c.kind, md["namespace"], md["name"], md["resourceVersion"]):
                    raise
                fresh = self.kube.get(c.kind, md["namespace"], md["name"])
                if fresh is None:
                    return False
                c.obj, new = fresh, None
        raise KubeError(409, "object kept changing; gave up rewiring", "patch", f"{c.kind} {c.name}")

    def _lost_race(self, err: KubeError, kind: str, ns: str, name: str, rv: str) -> bool:
        """True when a JSON patch failed because the object changed since we read it.

        A failed ``test`` op is 422 on current API servers, and some versions word the message
        generically ("the server rejected our request..."), so a 422 is settled by re-reading.
        """
        if err.conflict:
            return True
        if err.status != 422:
            return False
        cur = self.kube.get(kind, ns, name)
        return cur is None or (cur.get("metadata") or {}).get("resourceVersion") != rv

    def wait_rollouts(self, namespace: str, controllers: list) -> list[str]:
        deadline = self.monotonic() + self.settings.rollout_timeout
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        waiting = [c for c in controllers if c.kind in ("Deployment", "StatefulSet", "DaemonSet")]
        while True:
            pending = []
            for c in waiting:
                obj = self.kube.get(c.kind, namespace, c.name)
                if obj is None:
                    continue
                why = rollout_pending(obj, c.kind)
                if why:
                    pending.append(f"{c.kind} {c.name}: {why}")
            if not pending or self.monotonic() >= deadline:
                return pending
            self.sleep(self.settings.rollout_poll)

    # --- step 4 ----------------------------------------------------------------------------
    def remove_keys(self, namespace: str, name: str, keys: set, secret_name: str) -> tuple[bool, str]:
        for _ in range(self.settings.retries):
            cm = self.kube.get("ConfigMap", namespace, name)
            if cm is None:
                return False, "ConfigMap disappeared"
            sec = self.kube.get("Secret", namespace, secret_name)
            if sec is None:
                return False, f"Secret {secret_name} disappeared; keys kept in the ConfigMap"
            present = [k for k in sorted(keys) if value_bytes(cm, k) is not None]
            for k in present:
                if secret_bytes(sec, k) != value_bytes(cm, k):
                    return False, f"key {k} changed in the ConfigMap after it was copied; kept"
            if not present:
                return True, ""
            md = cm["metadata"]
            ann = dict(md.get("annotations") or {})
            moved = sorted(set(filter(None, ann.get(A_MOVED_KEYS, "").split(","))) | set(present))
            ann[A_MOVED_KEYS] = ",".join(moved)
            ann[A_TARGET] = secret_name
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": md["resourceVersion"]}]
            for k in present:
                section = "data" if k in (cm.get("data") or {}) else "binaryData"
                ops.append({"op": "remove", "path": f"/{section}/{_esc(k)}"})
            ops.append({"op": "add", "path": "/metadata/annotations", "value": ann})
            try:
                self.kube.patch("ConfigMap", namespace, name, ops, JSON_PATCH)
                return True, ""
            except KubeError as err:
                if not self._lost_race(err, "ConfigMap", namespace, name, md["resourceVersion"]):
                    raise
        return False, "ConfigMap kept changing; keys kept"

    def _finish_interrupted(self, cm: dict, moved: set, out: Outcome) -> None:
        """Step 5 of a run that died after step 4: the ConfigMap says the keys moved, the Secret does not."""
        target = ((cm.get("metadata") or {}).get("annotations") or {}).get(A_TARGET)
        if not target:
            return
        sec = self.kube.get("Secret", cm["metadata"]["namespace"], target)
        if sec is None or ((sec.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) != FIELD_MANAGER:
            return
        done = set(filter(None, ((sec["metadata"].get("annotations") or {}).get(A_MOVED_KEYS, "")).split(",")))
        if moved <= done:
            return
        out.secret = target
        self.finish(cm, moved - done, target, out)
        out.status = "moved"
        out.keys.extend(
            {"key": k, "action": "moved (finished an interrupted run)", "rotate": True} for k in sorted(moved - done)
        )

    # --- step 5 ----------------------------------------------------------------------------
    def finish(self, cm: dict, keys: set, secret_name: str, out: Outcome, rename_to: str | None = None) -> None:
        """Event first, Secret annotation last: the annotation is what tells a re-run that step 5 is done."""
        self.emit_event(cm, keys, secret_name, rename_to)
        self.annotate_secret(cm["metadata"]["namespace"], keys, secret_name)
        out.steps.append({"step": 5, "done": "annotated Secret and ConfigMap, emitted Event, rotation required"})

    def emit_event(self, cm: dict, keys: set, secret_name: str, rename_to: str | None = None) -> None:
        md = cm["metadata"]
        ns = md["namespace"]
        # deterministic name: a re-run after a crash finds it (409) instead of emitting a duplicate
        digest = hashlib.sha256(f"{md.get('uid')}/{','.join(sorted(keys))}".encode()).hexdigest()[:10]
        replaced = f"; ConfigMap {md['name']} is replaced by {rename_to}" if rename_to else ""
        event_name = f"{md['name']}.scrubber-{digest}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": md["name"],
                "namespace": ns,
                "uid": md.get("uid"),
            },
            "reason": "CredentialsMoved",
            "type": "Warning",
            "message": (
                f"configmap-secret-scrubber moved key(s) {', '.join(sorted(keys))} to Secret "
                f"{secret_name}{replaced}; rotate the credential(s): they were readable from the ConfigMap"
            ),
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }
        try:
            self.kube.create("Event", ns, event)
        except KubeError as err:
            # 409 normally means an earlier run created it; check rather than trust the status
            if err.status != 409 or self.kube.get("Event", ns, event_name) is None:
                raise

    def annotate_secret(self, ns: str, keys: set, secret_name: str) -> None:
        sec = self.kube.get("Secret", ns, secret_name) or {}
        annotations = (sec.get("metadata") or {}).get("annotations") or {}
        prev = set(filter(None, annotations.get(A_MOVED_KEYS, "").split(",")))
        patch = {
            "metadata": {
                "annotations": {A_MOVED_KEYS: ",".join(sorted(prev | keys)), A_MOVED_AT: _now(), A_ROTATE: "true"}
            }
        }
        self.kube.patch("Secret", ns, secret_name, patch, MERGE_PATCH)

    # --- immutable ConfigMaps (allow_immutable): replace instead of edit -------------------------
    def ensure_replacement(self, cm: dict, keys: set, new_name: str) -> tuple[bool, str]:
        """ConfigMap ``new_name``: the original minus ``keys``, immutable too, verified byte for byte."""
        md = cm["metadata"]
        ns = md["namespace"]
        data = {k: v for k, v in (cm.get("data") or {}).items() if k not in keys}
        binary = {k: v for k, v in (cm.get("binaryData") or {}).items() if k not in keys}
        for _ in range(self.settings.retries):
            cur = self.kube.get("ConfigMap", ns, new_name)
            if cur is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "immutable": True,
                    "metadata": {
                        "name": new_name,
                        "namespace": ns,
                        "labels": dict((md.get("labels") or {}), **{MANAGED_BY: FIELD_MANAGER}),
                        "annotations": {
                            A_REPLACES: f"{ns}/{md['name']}",
                            A_SOURCE_UID: md.get("uid", ""),
                            A_MOVED_KEYS: ",".join(sorted(keys)),
                            A_TARGET: self.settings.secret_name_template.format(configmap=md["name"]),
                        },
                    },
                }
                if data:
                    body["data"] = data
                if binary:
                    body["binaryData"] = binary
                try:
                    self.kube.create("ConfigMap", ns, body)
                except KubeError as err:
                    if err.status != 409:
                        raise
                continue  # read back below on the next pass
            cmd = cur.get("metadata") or {}
            if (cmd.get("annotations") or {}).get(A_SOURCE_UID) != md.get("uid"):
                return False, f"ConfigMap {new_name} exists and is not this function's replacement of {md['name']}"
            if (cur.get("data") or {}) != data or (cur.get("binaryData") or {}) != binary:
                return False, f"ConfigMap {new_name} does not hold the expected keys; resolve by hand"
            return True, ""
        return False, f"ConfigMap {new_name} could not be created and verified"

    def delete_original(self, cm: dict, keys: set, secret_name: str, new_name: str) -> tuple[bool, str]:
        """Delete the immutable original once its keys are readable from the replacement and the Secret."""
        md = cm["metadata"]
        ns, name = md["namespace"], md["name"]
        cur = self.kube.get("ConfigMap", ns, name)
        if cur is None:
            return True, ""
        rep = self.kube.get("ConfigMap", ns, new_name)
        sec = self.kube.get("Secret", ns, secret_name)
        if rep is None or sec is None:
            return False, "replacement ConfigMap or Secret disappeared; original kept"
        for k in set(cur.get("data") or {}) | set(cur.get("binaryData") or {}):
            have = secret_bytes(sec, k) if k in keys else value_bytes(rep, k)
            if have != value_bytes(cur, k):
                return False, f"key {k} is not identical in its new home; original kept"
        cmd = cur["metadata"]
        opts = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": cmd.get("uid"), "resourceVersion": cmd.get("resourceVersion")},
        }
        try:
            self.kube.delete("ConfigMap", ns, name, opts)
        except KubeError as err:
            if err.status == 404:
                return True, ""
            if err.conflict:
                return False, "ConfigMap changed before it could be deleted; re-run"
            raise
        return True, ""


def rollout_pending(obj: dict, kind: str) -> str | None:
    """Why the rollout is not finished yet, by the rules of `kubectl rollout status`, or None.

    "Updated" is not enough: a StatefulSet or DaemonSet replaces a pod before the new one is ready, and a
    Recreate Deployment stops every old pod first, so all replicas can be updated while none runs (the real
    controllers report exactly that when a node cannot pull the image). Readiness of the new pods is the signal.
    """
    md, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if int(st.get("observedGeneration") or 0) < int(md.get("generation") or 0):
        return "controller has not observed the new template yet"
    if kind == "DaemonSet":
        want = int(st.get("desiredNumberScheduled") or 0)
        if int(st.get("updatedNumberScheduled") or 0) < want:
            return f"{st.get('updatedNumberScheduled') or 0}/{want} pods updated"
        if int(st.get("numberAvailable") or 0) < want:
            return f"{st.get('numberAvailable') or 0}/{want} updated pods available"
        return None
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    updated = int(st.get("updatedReplicas") or 0)
    if updated < want:
        return f"{updated}/{want} replicas updated"
    if kind == "Deployment":
        if int(st.get("replicas") or updated) > updated:
            return "old replicas still running"
        if int(st.get("availableReplicas") or 0) < updated:
            return f"{st.get('availableReplicas') or 0}/{updated} updated replicas available"
        return None
    if kind == "StatefulSet":
        if int(st.get("readyReplicas") or 0) < want:
            return f"{st.get('readyReplicas') or 0}/{want} replicas ready"
        if st.get("updateRevision") and st.get("currentRevision") != st.get("updateRevision"):
            return "rolling update to the new revision not complete"
    return None
