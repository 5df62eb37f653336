"""The three PATCH flavours the apiserver accepts, applied to plain JSON documents.

Strategic merge patch is the subset edgeguard's workflows (and kubectl) actually send; the merge keys are the
real `patchMergeKey` tags of the core/apps Go types, looked up by field name (and parent field where the same
name means different things, e.g. container `ports` vs service `ports`).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """The patch document is malformed (-> 400 BadRequest)."""


class PatchApplyError(Exception):
    """The patch is well-formed but cannot be applied, e.g. a failed `test` op (-> 422 Invalid)."""


# RFC 7386 ---------------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Strategic merge patch ------------------------------------------------------------------------------------

# field name -> merge key, for lists whose Go type carries `patchStrategy:"merge"`.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "addresses": "type",  # NodeStatus.addresses
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with `patchStrategy:"merge"`: union instead of replace.
_PRIMITIVE_MERGE = {"finalizers", "podCIDRs"}


def _merge_key(path: tuple[str, ...], name: str) -> str | None:
    if name == "ports":
        # Container ports merge on containerPort; Service ports on port; anything else is atomic.
        parent = path[-1] if path else ""
        if parent in ("containers", "initContainers", "ephemeralContainers"):
            return "containerPort"
        if parent == "spec" and "template" not in path:
            return "port"
        return None
    return _MERGE_KEYS.get(name)


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    """Apply a strategic merge patch.

    Supported: map merge with null deletion, `$patch: replace|delete` on maps, merge-by-key lists (table above)
    with `$patch: delete` items and `$patch: replace` list markers, primitive merge lists (finalizers),
    `$deleteFromPrimitiveList/<field>`, `$retainKeys` (clears the fields it does not list).
    `$setElementOrder/<field>` is accepted and ignored (existing items keep their order, new ones are appended).
    Every other list is replaced, as the apiserver does for atomic lists.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r}")
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    if retain is not None and (not isinstance(retain, list) or not all(isinstance(k, str) for k in retain)):
        raise PatchError("$retainKeys must be a list of strings")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field_name = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            if isinstance(result.get(field_name), list):
                result[field_name] = [x for x in result[field_name] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        if isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, path + (key,))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, path, key)
        else:
            result[key] = copy.deepcopy(value)
    if retain is not None:
        # Union types (volume sources, deployment strategy): fields not retained are cleared.
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list, path: tuple[str, ...], name: str) -> list:
    if key_name := _merge_key(path, name):
        return _merge_keyed_list(current if isinstance(current, list) else [], patch, path + (name,), key_name)
    if name in _PRIMITIVE_MERGE:
        out = list(current) if isinstance(current, list) else []
        out.extend(x for x in patch if x not in out)
        return out
    return copy.deepcopy(patch)


def _merge_keyed_list(current: list, patch: list, path: tuple[str, ...], key: str) -> list:
    # A `{"$patch": "replace"}` element means: the rest of the patch list is the whole new list.
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {path[-1]!r} is merged by {key!r}: items must be objects")
        if key not in item:
            raise PatchError(f"list {path[-1]!r} item lacks its merge key {key!r}")
        idx = next((i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is None:
            result.append(strategic_merge_patch({}, item, path))
        else:
            result[idx] = strategic_merge_patch(result[idx], item, path)
    return result


# RFC 6902 -------------------------------------------------------------------------------------------------


def _pointer(ptr: str) -> list[str]:
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise PatchApplyError(f"invalid JSON pointer {ptr!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]


def _walk(doc: Any, tokens: list[str], ptr: str) -> Any:
    for tok in tokens:
        if isinstance(doc, dict):
            if tok not in doc:
                raise PatchApplyError(f"path {ptr!r} does not exist")
            doc = doc[tok]
        elif isinstance(doc, list):
            doc = doc[_index(doc, tok, ptr, allow_end=False)]
        else:
            raise PatchApplyError(f"path {ptr!r} does not exist")
    return doc


def _index(lst: list, tok: str, ptr: str, allow_end: bool) -> int:
    if tok == "-" and allow_end:
        return len(lst)
    if not tok.isdigit() or (len(tok) > 1 and tok.startswith("0")):
        raise PatchApplyError(f"invalid array index {tok!r} in {ptr!r}")
    i = int(tok)
    if i > len(lst) or (i == len(lst) and not allow_end):
        raise PatchApplyError(f"array index {i} out of bounds in {ptr!r}")
    return i


def _add(doc: Any, ptr: str, value: Any) -> Any:
    tokens = _pointer(ptr)
    if not tokens:
        return copy.deepcopy(value)
    parent = _walk(doc, tokens[:-1], ptr)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, ptr, allow_end=True), copy.deepcopy(value))
    else:
        raise PatchApplyError(f"path {ptr!r} does not exist")
    return doc


def _remove(doc: Any, ptr: str) -> Any:
    tokens = _pointer(ptr)
    if not tokens:
        raise PatchApplyError("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1], ptr)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchApplyError(f"unable to remove nonexistent key: {last}: missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, ptr, allow_end=False))
    raise PatchApplyError(f"path {ptr!r} does not exist")


def json_patch(doc: Any, ops: Any) -> Any:
    # As the apiserver: a body that does not decode as a list of operations is 400; every failure while
    # applying the operations (unknown op, missing value, bad path, failed test) is 422.
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError("a JSON patch must be a list of operation objects")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, ptr = op.get("op"), op.get("path")
        if not isinstance(kind, str) or not isinstance(ptr, str):
            raise PatchApplyError(f"invalid JSON patch operation {op!r}: needs string 'op' and 'path'")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchApplyError(f"operation {kind!r} lacks a value")
        if kind == "add":
            doc = _add(doc, ptr, op["value"])
        elif kind == "remove":
            _remove(doc, ptr)
        elif kind == "replace":
            tokens = _pointer(ptr)
            if tokens:
                _walk(doc, tokens, ptr)  # must exist
                _remove(doc, ptr)
            doc = _add(doc, ptr, op["value"])
        elif kind == "test":
            actual = _walk(doc, _pointer(ptr), ptr)
            if actual != op["value"]:
                raise PatchApplyError(f"testing value {ptr} failed: test failed")
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise PatchApplyError(f"operation {kind!r} lacks 'from'")
            value = copy.deepcopy(_walk(doc, _pointer(src), src))
            if kind == "move":
                _remove(doc, src)
            doc = _add(doc, ptr, value)
        else:
            raise PatchApplyError(f"Unexpected kind: {kind}")
    return doc
