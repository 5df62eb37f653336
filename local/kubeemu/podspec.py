"""The slice of the apiserver's PodSpec validation that catches broken rewiring of env/envFrom/volumes.

A strategic merge of `{"name": "B", "valueFrom": ...}` onto `{"name": "B", "value": "x"}` keeps both fields, and
the real apiserver then answers 422; a volumeMount naming a volume that is not in the pod is a 422 too.
"""

from __future__ import annotations

from typing import Any

Cause = tuple[str, str, str]

_VALUE_FROM = ("configMapKeyRef", "secretKeyRef", "fieldRef", "resourceFieldRef", "fileKeyRef")
_VOLUME_SOURCES_IGNORED = ("name",)


def template_paths(plural: str) -> list[tuple[str, ...]]:
    if plural == "pods":
        return [("spec",)]
    if plural in ("deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "replicationcontrollers"):
        return [("spec", "template", "spec")]
    if plural == "cronjobs":
        return [("spec", "jobTemplate", "spec", "template", "spec")]
    return []


def validate(plural: str, obj: dict) -> list[Cause]:
    causes: list[Cause] = []
    for path in template_paths(plural):
        cur: Any = obj
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if cur is None:
            if plural != "pods" or "spec" in obj:
                causes.append((".".join(path), "FieldValueRequired", "Required value"))
            continue
        causes += _pod_spec(cur, ".".join(path))
    return causes


def _pod_spec(spec: Any, where: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [(where, "FieldValueInvalid", "Invalid value: must be an object")]
    causes: list[Cause] = []
    volumes = spec.get("volumes") or []
    names: set[str] = set()
    for i, vol in enumerate(volumes if isinstance(volumes, list) else []):
        f = f"{where}.volumes[{i}]"
        name = vol.get("name") if isinstance(vol, dict) else None
        if not name:
            causes.append((f"{f}.name", "FieldValueRequired", "Required value"))
            continue
        if name in names:
            causes.append((f"{f}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
        names.add(name)
        sources = [k for k in vol if k not in _VOLUME_SOURCES_IGNORED]
        if len(sources) != 1:
            causes.append(
                (
                    f,
                    "FieldValueForbidden" if sources else "FieldValueRequired",
                    "may not specify more than 1 volume type"
                    if sources
                    else "Required value: must specify a volume type",
                )
            )
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append((f"{where}.containers", "FieldValueRequired", "Required value"))
        containers = []
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or [] if kind == "initContainers" else containers):
            causes += _container(c, f"{where}.{kind}[{i}]", names, seen)
    return causes


def _container(c: Any, where: str, volumes: set[str], seen: set[str]) -> list[Cause]:
    if not isinstance(c, dict):
        return [(where, "FieldValueInvalid", "Invalid value: must be an object")]
    causes: list[Cause] = []
    name = c.get("name")
    if not name:
        causes.append((f"{where}.name", "FieldValueRequired", "Required value"))
    elif name in seen:
        causes.append((f"{where}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
    seen.add(name or "")
    if not c.get("image"):
        causes.append((f"{where}.image", "FieldValueRequired", "Required value"))
    for j, env in enumerate(c.get("env") or []):
        f = f"{where}.env[{j}]"
        if not isinstance(env, dict) or not env.get("name"):
            causes.append((f"{f}.name", "FieldValueRequired", "Required value"))
            continue
        vf = env.get("valueFrom")
        if vf is not None:
            if env.get("value"):
                causes.append(
                    (
                        f"{f}.valueFrom",
                        "FieldValueInvalid",
                        'Invalid value: "": may not be specified when `value` is not empty',
                    )
                )
            refs = [k for k in _VALUE_FROM if isinstance(vf, dict) and vf.get(k) is not None]
            if len(refs) != 1:
                causes.append(
                    (
                        f"{f}.valueFrom",
                        "FieldValueInvalid",
                        'Invalid value: "": may not have more than one field specified at a time'
                        if refs
                        else 'Invalid value: "": must specify one of: `fieldRef`, `resourceFieldRef`, '
                        "`configMapKeyRef` or `secretKeyRef`",
                    )
                )
            for ref in ("configMapKeyRef", "secretKeyRef"):
                r = vf.get(ref) if isinstance(vf, dict) else None
                if isinstance(r, dict) and not r.get("key"):
                    causes.append((f"{f}.valueFrom.{ref}.key", "FieldValueRequired", "Required value"))
    for j, ef in enumerate(c.get("envFrom") or []):
        refs = [k for k in ("configMapRef", "secretRef") if isinstance(ef, dict) and ef.get(k) is not None]
        if len(refs) != 1:
            causes.append(
                (
                    f"{where}.envFrom[{j}]",
                    "FieldValueInvalid",
                    'Invalid value: "": may not have more than one field specified at a time'
                    if refs
                    else 'Invalid value: "": must specify one of: `configMapRef` or `secretRef`',
                )
            )
    paths: set[str] = set()
    for j, vm in enumerate(c.get("volumeMounts") or []):
        f = f"{where}.volumeMounts[{j}]"
        if not isinstance(vm, dict):
            continue
        if vm.get("name") not in volumes:
            causes.append((f"{f}.name", "FieldValueNotFound", f'Not found: "{vm.get("name")}"'))
        mp = vm.get("mountPath")
        if not mp:
            causes.append((f"{f}.mountPath", "FieldValueRequired", "Required value"))
        elif mp in paths:
            causes.append((f"{f}.mountPath", "FieldValueInvalid", f'Invalid value: "{mp}": must be unique'))
        if mp:
            paths.add(mp)
    return causes


# Fields of a running Pod's spec that an update may change (ValidatePodUpdate); everything else is 422.
_POD_MUTABLE_MSG = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
    "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
    "was previously negative)"
)
_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
)


def _pod_spec_sans_mutable(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    out = {
        k: v
        for k, v in spec.items()
        if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
    }
    for kind in ("containers", "initContainers"):
        if isinstance(out.get(kind), list):
            out[kind] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in out[kind]]
    return out


def validate_update(group: str, plural: str, new: dict, old: dict) -> list[Cause]:
    """Immutable fields of existing objects: Pod specs, workload selectors, StatefulSet spec, Job templates."""
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    if group == "" and plural == "pods":
        if _pod_spec_sans_mutable(ns) != _pod_spec_sans_mutable(os_):
            return [("spec", "FieldValueForbidden", _POD_MUTABLE_MSG)]
        return []
    causes: list[Cause] = []
    if (group, plural) in (
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
    ):
        if ns.get("selector") != os_.get("selector") and not (plural == "jobs" and ns.get("selector") is None):
            causes.append(("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable"))
    if (group, plural) == ("apps", "statefulsets"):
        rest_new = {k: v for k, v in ns.items() if k not in _STS_MUTABLE}
        rest_old = {k: v for k, v in os_.items() if k not in _STS_MUTABLE}
        if rest_new != rest_old:
            causes.append(
                (
                    "spec",
                    "FieldValueForbidden",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                    "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden",
                )
            )
    if (group, plural) == ("batch", "jobs") and ns.get("template") != os_.get("template"):
        causes.append(("spec.template", "FieldValueInvalid", "Invalid value: field is immutable"))
    return causes
