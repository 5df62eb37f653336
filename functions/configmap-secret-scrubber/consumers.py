"""Who reads which keys of a ConfigMap, and how to make them read the Secret instead.

Pod specs reach ConfigMap keys four ways: ``env[].valueFrom.configMapKeyRef``,
``envFrom[].configMapRef`` (all keys), ``volumes[].configMap`` (all keys, or the
listed ``items``) and ``volumes[].projected.sources[].configMap``. Rewiring keeps
every consumer's view identical: env refs become ``secretKeyRef``; an envFrom
gets a ``secretRef`` right after it (later sources win, so the values are the
same before and after the keys leave the ConfigMap); a volume becomes (or gains)
a projected ``secret`` source at the same paths, so mounts and ``subPath`` keep
working. Nothing is removed from the spec except configMap items of moved keys.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

CONTROLLERS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job", "ReplicaSet", "Pod")

# labels/annotations by which a deployment tool announces it owns (and will revert) an object
_MANAGED_LABELS = {
    "app.kubernetes.io/managed-by": None,  # checked by value below
    "helm.sh/chart": "Helm",
    "argocd.argoproj.io/instance": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux",
    "helm.toolkit.fluxcd.io/name": "Flux",
}
_MANAGED_ANNOTATIONS = {
    "meta.helm.sh/release-name": "Helm",
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/checksum": "Flux",
}
_MANAGER_TOOLS = {
    "helm": "Helm",
    "argocd": "Argo CD",
    "argocd-controller": "Argo CD",
    "argocd-application-controller": "Argo CD",
    "kustomize-controller": "Flux",
    "helm-controller": "Flux",
}
# managed-by values we do not treat as an owner: plain manual tools and ourselves
_HARMLESS_MANAGED_BY = {"kubectl", "configmap-secret-scrubber", "kustomize"}


def managed_by(obj: dict) -> str | None:
    """Name of the tool or operator that owns ``obj`` and would revert our edit, else None."""
    md = obj.get("metadata") or {}
    labels = md.get("labels") or {}
    ann = md.get("annotations") or {}
    mb = labels.get("app.kubernetes.io/managed-by")
    if mb and mb.lower() not in _HARMLESS_MANAGED_BY:
        return "Helm" if mb.lower() == "helm" else f"managed-by={mb}"
    for k, tool in _MANAGED_LABELS.items():
        if tool and k in labels:
            return tool
    for k, tool in _MANAGED_ANNOTATIONS.items():
        if k in ann:
            return tool
    for ref in md.get("ownerReferences") or []:
        if ref.get("controller", True):
            return f"owner {ref.get('kind')}/{ref.get('name')}"
    for mf in md.get("managedFields") or []:
        tool = _MANAGER_TOOLS.get(str(mf.get("manager", "")).lower())
        if tool:
            return tool
    return None


def pod_spec_path(kind: str) -> list[str]:
    if kind == "Pod":
        return ["spec"]
    if kind == "CronJob":
        return ["spec", "jobTemplate", "spec", "template", "spec"]
    return ["spec", "template", "spec"]


def pod_spec(obj: dict, kind: str) -> dict:
    cur = obj
    for p in pod_spec_path(kind):
        cur = (cur or {}).get(p) or {}
    return cur


@dataclass
class Reference:
    via: str  # env | envFrom | volume | projected
    container: str  # container name, or volume name for volumes
    keys: list  # moved keys it reads ("*" = all keys of the ConfigMap)

    def public(self) -> dict:
        return {"via": self.via, "where": self.container, "keys": self.keys}


@dataclass
class Consumer:
    kind: str
    namespace: str
    name: str
    obj: dict
    refs: list = field(default_factory=list)
    cm_name: str = ""

    def public(self) -> dict:
        return {"kind": self.kind, "name": self.name, "refs": [r.public() for r in self.refs]}


def _containers(spec: dict):
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(group) or []:
            yield group, c


def references(spec: dict, cm_name: str, keys: set) -> list[Reference]:
    """References in one pod spec that read any of ``keys`` of ConfigMap ``cm_name``."""
    refs: list[Reference] = []
    for _, c in _containers(spec):
        for e in c.get("env") or []:
            r = ((e.get("valueFrom") or {}).get("configMapKeyRef")) or {}
            if r.get("name") == cm_name and r.get("key") in keys:
                refs.append(Reference("env", c.get("name", ""), [r["key"]]))
        for ef in c.get("envFrom") or []:
            r = ef.get("configMapRef") or {}
            if r.get("name") == cm_name:
                refs.append(Reference("envFrom", c.get("name", ""), sorted(keys)))
    for v in spec.get("volumes") or []:
        cm = v.get("configMap")
        if cm and cm.get("name") == cm_name:
            hit = _volume_keys(cm, keys)
            if hit:
                refs.append(Reference("volume", v.get("name", ""), hit))
        for src in (v.get("projected") or {}).get("sources") or []:
            cm = src.get("configMap")
            if cm and cm.get("name") == cm_name:
                hit = _volume_keys(cm, keys)
                if hit:
                    refs.append(Reference("projected", v.get("name", ""), hit))
    return refs


def _volume_keys(cm_src: dict, keys: set) -> list:
    items = cm_src.get("items")
    if not items:
        return sorted(keys)
    return sorted({i.get("key") for i in items if i.get("key") in keys})


def rewire(spec: dict, cm_name: str, keys: set, secret_name: str, rename_to: str | None = None) -> dict:
    """A copy of ``spec`` reading ``keys`` from Secret ``secret_name``; idempotent.

    With ``rename_to`` (an immutable ConfigMap being replaced), every remaining reference to
    ``cm_name`` then points at the replacement ConfigMap, which holds the other keys.
    """
    spec = copy.deepcopy(spec)
    for _, c in _containers(spec):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            r = vf.get("configMapKeyRef")
            if r and r.get("name") == cm_name and r.get("key") in keys:
                new = {"name": secret_name, "key": r["key"]}
                if "optional" in r:
                    new["optional"] = r["optional"]
                e["valueFrom"] = {"secretKeyRef": new}
        if c.get("envFrom"):
            out = []
            src = c["envFrom"]
            for i, ef in enumerate(src):
                out.append(ef)
                r = ef.get("configMapRef")
                if r and r.get("name") == cm_name:
                    want = {"secretRef": {"name": secret_name}}
                    if "optional" in r:
                        want["secretRef"]["optional"] = r["optional"]
                    if ef.get("prefix"):
                        want["prefix"] = ef["prefix"]
                    nxt = src[i + 1] if i + 1 < len(src) else None
                    if nxt != want:
                        out.append(want)
            c["envFrom"] = out
    for v in spec.get("volumes") or []:
        cm = v.get("configMap")
        if cm and cm.get("name") == cm_name and _volume_keys(cm, keys):
            sources = _split_source(cm, keys, secret_name)
            proj = {"sources": sources}
            if "defaultMode" in cm:
                proj["defaultMode"] = cm["defaultMode"]
            del v["configMap"]
            v["projected"] = proj
            continue
        p = v.get("projected")
        if p:
            out = []
            srcs = p.get("sources") or []
            for s in srcs:
                cm = s.get("configMap")
                if cm and cm.get("name") == cm_name and _volume_keys(cm, keys):
                    out.extend(_split_source(cm, keys, secret_name))
                else:
                    # skip a secret source we inserted on an earlier run: _split_source re-adds it
                    if out and _is_our_secret_source(s, secret_name) and _is_our_secret_source(out[-1], secret_name):
                        continue
                    out.append(s)
            p["sources"] = out
    if rename_to:
        _rename(spec, cm_name, rename_to)
    return spec


def _rename(spec: dict, old: str, new: str) -> None:
    for _, c in _containers(spec):
        for e in c.get("env") or []:
            r = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if r and r.get("name") == old:
                r["name"] = new
        for ef in c.get("envFrom") or []:
            r = ef.get("configMapRef")
            if r and r.get("name") == old:
                r["name"] = new
    for v in spec.get("volumes") or []:
        if (v.get("configMap") or {}).get("name") == old:
            v["configMap"]["name"] = new
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get("configMap") or {}).get("name") == old:
                src["configMap"]["name"] = new


def _is_our_secret_source(src: dict, secret_name: str) -> bool:
    return (src.get("secret") or {}).get("name") == secret_name


def _split_source(cm: dict, keys: set, secret_name: str) -> list[dict]:
    """configMap volume source -> [configMap source without moved items, secret source at same paths]."""
    items = cm.get("items")
    out = []
    sec: dict[str, Any] = {"name": secret_name}
    if items:
        kept = [i for i in items if i.get("key") not in keys]
        moved = [copy.deepcopy(i) for i in items if i.get("key") in keys]
        if kept:
            new_cm = {k: v for k, v in cm.items() if k != "items"}
            new_cm["items"] = kept
            out.append({"configMap": new_cm})
        sec["items"] = moved
    else:
        # no items: all keys are files named after the key. Keep the configMap source for the other
        # keys and add only the moved ones from the Secret (same paths; later sources win).
        out.append({"configMap": dict(cm)})
        sec["items"] = [{"key": k, "path": k} for k in sorted(keys)]
    # optional: while the Secret is verified before rewiring, a pod must not fail to start if a
    # human deletes it later; same semantics as the ConfigMap source had.
    if "optional" in cm:
        sec["optional"] = cm["optional"]
    out.append({"secret": sec})
    return out


def find_consumers(objects: dict[str, list[dict]], cm_name: str, keys: set) -> list[Consumer]:
    """Every object in ``objects`` (kind -> list) whose pod spec reads any of ``keys``."""
    out = []
    for kind in CONTROLLERS:
        for obj in objects.get(kind) or []:
            refs = references(pod_spec(obj, kind), cm_name, keys)
            if refs:
                md = obj.get("metadata") or {}
                out.append(Consumer(kind, md.get("namespace", ""), md.get("name", ""), obj, refs, cm_name))
    return out
