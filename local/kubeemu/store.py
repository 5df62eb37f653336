"""The object store and the per-type write semantics of the apiserver (what kmock's store lacks).

All state lives behind one re-entrant lock, so the HTTP loop thread, the test thread and the local gateway's
threads can all read and write. Every write bumps one global resourceVersion counter, as etcd's revision does.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import copy
import datetime
import json
import re
import secrets as _random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from . import errors, podspec, rollout, validation
from . import patch as patching
from .clock import now
from .errors import ApiError
from .resources import WORKLOADS, Registry, Resource
from .selectors import SelectorError, match_label_selector, parse_fields, parse_labels

Key = tuple[str | None, str]  # (namespace, name)
Listener = Callable[[Resource, str, dict], None]

JSON_PATCH_FAILED = "the server rejected our request due to an error in our request"
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_IMMUTABLE_MSG = "Forbidden: field is immutable when `immutable` is set"
# Types whose create strategy resets status (nodes and namespaces keep/derive theirs).
_KEEP_STATUS_ON_CREATE = ("nodes", "namespaces")
# Object types whose name is a DNS-1123 label rather than a subdomain.
_LABEL_NAMED = ("namespaces", "services")
EVENT_LOG_SIZE = 4096  # events kept for watch resumption (the apiserver's cache keeps 100 per type)
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
# Not a real CA: the emulator serves plain HTTP; the token controller still fills ca.crt as a real one does.
FAKE_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nkubeemu-has-no-tls\n-----END CERTIFICATE-----\n").decode()


def _empty(v: Any) -> Any:
    # etcd round-trips drop empty maps, so {} and absent compare equal, as the apiserver sees them.
    return v or None


class Store:
    def __init__(self, registry: Registry | None = None):
        self.registry = registry or Registry()
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[Key, dict]] = {}
        self._rv = 0
        self.log: deque[tuple[int, Resource, str, dict]] = deque(maxlen=EVENT_LOG_SIZE)
        self._listeners: list[Listener] = []
        self.hold_rollouts = False
        self._hold_only: set[Key] | None = None  # None: every workload is held while hold_rollouts
        self._held: set[tuple[str, str, Key]] = set()
        # Called with (token, namespace, serviceaccount) whenever the emulated token controller mints a token.
        self.on_token: Callable[[str, str, str], None] | None = None
        # Called with a Resource whenever a CustomResourceDefinition makes a new type servable.
        self.on_register: Callable[[Resource], None] | None = None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # -- plumbing ----------------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        with self.lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self.lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def oldest_log_rv(self) -> int:
        with self.lock:
            return self.log[0][0] if len(self.log) == self.log.maxlen else 0

    def _bucket(self, res: Resource) -> dict[Key, dict]:
        return self._objects.setdefault((res.group, res.plural), {})

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, res: Resource, kind: str, obj: dict) -> None:
        # Stored dicts are never mutated in place (every write stores a fresh dict, every read deep-copies),
        # so the event log and watchers can share them instead of holding one more copy per event.
        self.log.append((int(obj["metadata"]["resourceVersion"]), res, kind, obj))
        for fn in list(self._listeners):
            fn(res, kind, obj)

    def _key(self, res: Resource, namespace: str | None, name: str) -> Key:
        return (namespace if res.namespaced else None, name)

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        with self.lock:
            obj = self._bucket(res).get(self._key(res, namespace, name))
            if obj is None:
                raise errors.not_found(res, name)
            return copy.deepcopy(obj)

    def find(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        try:
            return self.get(res, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], str]:
        try:
            lmatch = parse_labels(label_selector)
            fmatch = parse_fields(field_selector, res)
        except SelectorError as e:
            raise ApiError(400, str(e)) from None
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in self._bucket(res).items()
                if (namespace is None or ns == namespace) and lmatch(o) and fmatch(o)
            ]
            rv = str(self._rv)
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return items, rv

    def matcher(
        self, res: Resource, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Callable[[dict], bool]:
        try:
            lmatch = parse_labels(label_selector)
            fmatch = parse_fields(field_selector, res)
        except SelectorError as e:
            raise ApiError(400, str(e)) from None
        return lambda o: (namespace is None or o["metadata"].get("namespace") == namespace) and lmatch(o) and fmatch(o)

    # -- validation shared by create/update ----------------------------------------------------------------

    def _check_body(self, res: Resource, body: Any) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, f"the body of a {res.kind} request must be a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != res.kind:
            raise ApiError(
                400,
                f'{kind} in version "{api_version}" cannot be handled as a {res.kind}: '
                f'the kind of the object does not match the resource "{res}"',
            )
        if api_version and api_version != res.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({res.api_version})",
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        return copy.deepcopy(body)

    def _validate(self, res: Resource, obj: dict, old: dict | None) -> None:
        name = obj["metadata"]["name"]
        causes: list[tuple[str, str, str]] = validation.validate_meta(obj["metadata"])
        if res.plural == "events" and res.group == "":
            causes += validation.validate_core_event(obj)
        if res.plural == "events" and res.group == "events.k8s.io" and old is None:
            causes += validation.validate_events_v1(obj)
        if res.group in ("", "apps", "batch"):
            causes += podspec.validate(res.plural, obj)
        if res.plural in ("configmaps", "secrets") and res.group == "":
            causes += self._validate_config_data(res, obj)
            if old is not None and old.get("immutable") is True:
                if obj.get("immutable") is not True:
                    causes.append(("immutable", "FieldValueForbidden", _IMMUTABLE_MSG))
                if _empty(obj.get("data")) != _empty(old.get("data")):
                    causes.append(("data", "FieldValueForbidden", _IMMUTABLE_MSG))
                if res.plural == "configmaps" and _empty(obj.get("binaryData")) != _empty(old.get("binaryData")):
                    causes.append(("binaryData", "FieldValueForbidden", _IMMUTABLE_MSG))
            if (
                res.plural == "secrets"
                and obj.get("type") == SA_TOKEN_TYPE
                and not (obj["metadata"].get("annotations") or {}).get(SA_NAME_ANNOTATION)
            ):
                causes.append((f"metadata.annotations[{SA_NAME_ANNOTATION}]", "FieldValueRequired", "Required value"))
            if res.plural == "secrets":
                causes += validation.secret_type_causes(obj)
            if res.plural == "secrets" and old is not None and obj.get("type") != old.get("type"):
                causes.append(("type", "FieldValueInvalid", f'Invalid value: "{obj.get("type")}": field is immutable'))
        if (
            old is not None
            and res.group == "rbac.authorization.k8s.io"
            and res.plural in ("rolebindings", "clusterrolebindings")
            and obj.get("roleRef") != old.get("roleRef")
        ):
            causes.append(
                ("roleRef", "FieldValueInvalid", f"Invalid value: {obj.get('roleRef')!r}: cannot change roleRef")
            )
        if causes:
            raise errors.invalid(res, name, causes)

    def _validate_config_data(self, res: Resource, obj: dict) -> builtins.list[tuple[str, str, str]]:
        causes = []
        fields = ("data", "binaryData") if res.plural == "configmaps" else ("data",)
        seen: set[str] = set()
        total = 0
        for fld in fields:
            data = obj.get(fld)
            if data is None:
                continue
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ApiError(400, f"{res.kind}.{fld}: values must be strings")
            for key, value in data.items():
                if not _CONFIG_KEY.match(key) or len(key) > 253 or key in (".", "..") or key.startswith(".."):
                    causes.append(
                        (
                            f"{fld}[{key}]",
                            "FieldValueInvalid",
                            f'Invalid value: "{key}": a valid config key must consist of alphanumeric '
                            f"characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                            f"'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                        )
                    )
                if key in seen:
                    causes.append(
                        (
                            f"{fld}[{key}]",
                            "FieldValueInvalid",
                            f'Invalid value: "{key}": duplicate of key present in data',
                        )
                    )
                seen.add(key)
                if fld == "binaryData" or res.plural == "secrets":
                    try:
                        total += len(base64.b64decode(value, validate=True))
                    except (binascii.Error, ValueError):
                        raise ApiError(
                            400,
                            f'{res.kind} in version "v1" cannot be handled as a {res.kind}: '
                            f"illegal base64 data in {fld}[{key}]",
                        ) from None
                else:
                    total += len(value.encode("utf-8"))
        if total > 1024 * 1024:
            causes.append(
                (
                    "data" if res.plural == "secrets" else "[]",
                    "FieldValueTooLong",
                    "Too long: must have at most 1048576 bytes",
                )
            )
        return causes

    def _validate_name(self, res: Resource, name: Any) -> None:
        if not isinstance(name, str) or not name:
            raise errors.invalid(
                res, "", [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
            )
        if res.group == "rbac.authorization.k8s.io" or res.plural == "certificatesigningrequests":
            ok = name not in (".", "..") and "/" not in name and "%" not in name
            why = "may not contain '/' or '%'"
        elif res.plural in _LABEL_NAMED:
            ok = len(name) <= 63 and bool(_DNS1123_LABEL.match(name))
            why = (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                "must start and end with an alphanumeric character"
            )
        else:
            ok = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.match(name))
            why = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character"
            )
        if not ok:
            raise errors.invalid(res, name, [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {why}')])

    def _normalise(self, res: Resource, obj: dict) -> None:
        """Type-specific defaulting/conversion done on every write."""
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        if res.group == "" and res.plural == "secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if string_data is not None:
                if not isinstance(string_data, dict) or not all(isinstance(v, str) for v in string_data.values()):
                    raise ApiError(400, "Secret.stringData: values must be strings")
                data = dict(obj.get("data") or {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(v.encode("utf-8")).decode("ascii")
                obj["data"] = data
        elif res.plural in ("deployments", "statefulsets", "replicasets") and isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("replicas", 1)
        elif res.plural == "namespaces" and res.group == "":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    # -- writes ------------------------------------------------------------------------------------------

    def seed(self, obj: dict, res: Resource | None = None) -> dict:
        """Store an object directly: metadata is stamped and defaults applied, but content is not validated
        (a test may need an object the API would refuse today); the given status is kept."""
        if res is None:
            api_version = obj.get("apiVersion", "v1")
            group = api_version.split("/")[0] if "/" in api_version else ""
            kind = obj.get("kind")
            if not kind:
                raise ValueError("seed() needs an object with kind (and apiVersion for non-core types)")
            matches = [r for r in self.registry.resources if r.kind == kind and r.group == group]
            if not matches:
                raise KeyError(f"unknown kind {api_version}/{kind}")
            res = matches[0]
        obj = copy.deepcopy(obj)
        # An object copied from get() carries server fields; seeding re-creates it, so they are dropped.
        (obj.get("metadata") or {}).pop("resourceVersion", None)
        with self.lock:
            ns = (obj.get("metadata") or {}).get("namespace") or ("default" if res.namespaced else None)
            if res.namespaced and ns and self.find(self.registry.lookup("namespaces"), None, ns) is None:
                self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            return self.create(res, ns, obj, keep_status=True, validate=False)

    def create(
        self,
        res: Resource,
        namespace: str | None,
        body: Any,
        dry_run: bool = False,
        keep_status: bool = False,
        validate: bool = True,
    ) -> dict:
        obj = self._check_body(res, body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if not namespace:
                raise ApiError(400, f"{res.kind} is namespaced: the request needs a namespace")
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created", reason="")
        with self.lock:
            if res.namespaced:
                ns_res = self.registry.lookup("namespaces")
                ns_obj = self._bucket(ns_res).get((None, namespace or ""))
                if ns_obj is None:
                    raise errors.not_found(ns_res, namespace or "")
                if ns_obj["metadata"].get("deletionTimestamp"):
                    raise errors.forbidden(
                        res,
                        meta.get("name"),
                        "",
                        "create",
                        namespace,
                        why=f'{res} "{meta.get("name")}" is forbidden: unable to create new '
                        f"content in namespace {namespace} because it is being terminated",
                    )
            if not meta.get("name") and meta.get("generateName"):
                while True:
                    name = meta["generateName"] + "".join(_random.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
                    if self._key(res, namespace, name) not in self._bucket(res):
                        break
                meta["name"] = name
            self._validate_name(res, meta.get("name"))
            key = self._key(res, namespace, meta["name"])
            if key in self._bucket(res):
                raise errors.already_exists(res, meta["name"])
            for f in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
                "generation",
            ):
                meta.pop(f, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if res.generation:
                meta["generation"] = 1
            if res.has_status and not keep_status and res.plural not in _KEEP_STATUS_ON_CREATE:
                obj.pop("status", None)
                if res.plural == "pods" and res.group == "":
                    obj["status"] = {"phase": "Pending"}
            if res.plural == "namespaces" and res.group == "":
                obj["status"] = {"phase": "Active"}
            self._normalise(res, obj)
            if validate:
                self._validate(res, obj, None)
            if dry_run:
                return obj
            meta["resourceVersion"] = self._next_rv()
            self._bucket(res)[key] = obj
            self._emit(res, "ADDED", obj)
            result = copy.deepcopy(obj)
            if not (keep_status and "status" in obj):  # a seeded status is the test's choice; keep it
                self._reconcile(res, key)
            if res.group == "" and res.plural == "secrets" and obj.get("type") == SA_TOKEN_TYPE:
                self._fill_sa_token(key)
            if res.plural == "customresourcedefinitions":
                self._establish_crd(res, key)
            return result

    def update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        new = self._check_body(res, body)
        meta = new.setdefault("metadata", {})
        if meta.get("name") != name:
            raise ApiError(
                400, f"the name of the object ({meta.get('name') or ''}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            old = self._current(res, namespace, name)
            return self._replace(res, old, new, subresource, dry_run)

    def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
            "application/apply-patch+yaml",
        ):
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        try:
            doc = json.loads(body or b"null") if ctype != "application/apply-patch+yaml" else None
        except ValueError as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None
        with self.lock:
            if ctype == "application/apply-patch+yaml":
                return self._apply(res, namespace, name, body, subresource, dry_run)
            old = self._current(res, namespace, name)
            try:
                if ctype == "application/merge-patch+json":
                    if not isinstance(doc, dict):
                        raise patching.PatchError("a merge patch must be a JSON object")
                    new = patching.merge_patch(old, doc)
                elif ctype == "application/strategic-merge-patch+json":
                    if not isinstance(doc, dict):
                        raise patching.PatchError("a strategic merge patch must be a JSON object")
                    new = patching.strategic_merge_patch(old, doc)
                else:
                    new = patching.json_patch(old, doc)
            except patching.PatchError as e:
                raise ApiError(400, str(e)) from None
            except patching.PatchApplyError:
                # kube-apiserver v1.24 says only this, with empty details, for every failed op, a failed
                # `test` included: a client cannot tell a lost race from a bad patch by the message.
                raise ApiError(422, JSON_PATCH_FAILED, "Invalid", {}) from None
            if not isinstance(new, dict):
                raise ApiError(422, "the patched object is not a JSON object", "Invalid")
            new_meta = new["metadata"] if isinstance(new.get("metadata"), dict) else {}
            if new_meta.get("name") != name or (res.namespaced and new_meta.get("namespace") != namespace):
                raise errors.invalid(
                    res, name, [("metadata.name", "FieldValueInvalid", "Invalid value: field is immutable")]
                )
            return self._replace(res, old, new, subresource, dry_run)

    def _apply(
        self, res: Resource, namespace: str | None, name: str, body: bytes, subresource: str | None, dry_run: bool
    ) -> dict:
        # Server-side apply, approximated: no field managers; the applied config is strategically merged.
        import yaml

        try:
            doc = yaml.safe_load(body or b"")
        except yaml.YAMLError as e:
            raise ApiError(400, f"the apply configuration is not valid YAML: {e}") from None
        doc = self._check_body(res, doc)
        if (doc.get("metadata") or {}).get("name") != name:
            raise ApiError(400, f"the name of the object does not match the name on the URL ({name})")
        old = self._bucket(res).get(self._key(res, namespace, name))
        if old is None:
            return self.create(res, namespace, doc, dry_run=dry_run)
        try:
            new = patching.strategic_merge_patch(old, doc)
        except patching.PatchError as e:
            raise ApiError(400, str(e)) from None
        return self._replace(res, copy.deepcopy(old), new, subresource, dry_run)

    def _current(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self._bucket(res).get(self._key(res, namespace, name))
        if obj is None:
            raise errors.not_found(res, name)
        return copy.deepcopy(obj)

    def _replace(self, res: Resource, old: dict, new: dict, subresource: str | None, dry_run: bool) -> dict:
        """Shared tail of PUT and PATCH: preconditions, system fields, validation, no-op detection, commit."""
        name = old["metadata"]["name"]
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res, name, errors.MODIFIED)
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise errors.conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in "
                f"object meta: {old['metadata']['uid']}",
            )
        if subresource in ("status", "approval"):
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            meta = new["metadata"]
        elif subresource not in (None, ""):
            raise ApiError(
                405,
                f"the server does not allow this method on the requested resource ({res}/{subresource})",
                "MethodNotAllowed",
            )
        elif res.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        for f in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ):
            if f in old["metadata"]:
                meta[f] = old["metadata"][f]
            else:
                meta.pop(f, None)
        meta.pop("managedFields", None)
        meta["name"] = name
        self._normalise(res, new)
        if old["metadata"].get("deletionTimestamp"):
            # Once deletion started, finalizers may only be removed, never added (apiserver rule).
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                found = ", ".join(f'"{f}"' for f in sorted(added))
                raise errors.invalid(
                    res,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is "
                            f"being deleted, found new finalizers []string{{{found}}}",
                        )
                    ],
                )
        self._validate(res, new, old)
        causes = podspec.validate_update(res.group, res.plural, new, old)
        if causes:
            raise errors.invalid(res, name, causes)
        spec_changed = res.generation and (new.get("spec") != old.get("spec"))
        if spec_changed:
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return new  # a no-op write neither bumps resourceVersion nor emits an event
        if dry_run:
            return new
        key = self._key(res, old["metadata"].get("namespace"), name)
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._bucket(res)[key]
            self._emit(res, "DELETED", new)
            self._collect_dependents(meta["uid"], orphan=False)
            return copy.deepcopy(new)
        self._bucket(res)[key] = new
        self._emit(res, "MODIFIED", new)
        result = copy.deepcopy(new)
        if spec_changed:
            self._reconcile(res, key)
        return result

    def delete(
        self, res: Resource, namespace: str | None, name: str, options: dict | None = None, dry_run: bool = False
    ) -> tuple[int, dict]:
        """Returns (HTTP status, body) as the apiserver would (the object while finalizers hold it)."""
        options = options or {}
        pre = options.get("preconditions") or {}
        with self.lock:
            old = self._current(res, namespace, name)
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise errors.conflict(
                    res,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{old['metadata']['resourceVersion']}",
                )
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise errors.conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID "
                    f"in object meta: {old['metadata']['uid']}",
                )
            is_ns = res.plural == "namespaces" and res.group == ""
            if is_ns and name in PROTECTED_NAMESPACES:
                raise errors.forbidden(
                    res,
                    name,
                    "",
                    "delete",
                    None,
                    why=f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                )
            if dry_run:
                return 200, old
            key = self._key(res, namespace, name)
            if old["metadata"].get("finalizers"):
                if not old["metadata"].get("deletionTimestamp"):
                    old["metadata"]["deletionTimestamp"] = now()
                    old["metadata"]["deletionGracePeriodSeconds"] = 0
                    if res.generation:
                        old["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
                    old["metadata"]["resourceVersion"] = self._next_rv()
                    self._bucket(res)[key] = old
                    self._emit(res, "MODIFIED", old)
                # The apiserver answers 202 here only when orphanDependents=false was asked for (compat).
                return (202 if options.get("orphanDependents") in (False, "false") else 200), copy.deepcopy(old)
            if is_ns:
                # The namespace controller empties it; here that happens at once.
                for inner in self.registry.resources:
                    bucket = self._objects.get((inner.group, inner.plural))
                    if not inner.namespaced or not bucket:
                        continue
                    for k in [k for k in bucket if k[0] == name]:
                        gone = copy.deepcopy(bucket.pop(k))
                        gone["metadata"]["resourceVersion"] = self._next_rv()
                        self._emit(inner, "DELETED", gone)
                old["metadata"]["deletionTimestamp"] = now()
                old["status"] = {"phase": "Terminating"}
            del self._bucket(res)[key]
            old["metadata"]["resourceVersion"] = self._next_rv()
            self._emit(res, "DELETED", old)
            self._collect_dependents(
                old["metadata"]["uid"],
                orphan=options.get("propagationPolicy") == "Orphan"
                or options.get("orphanDependents") in (True, "true"),
            )
            if (res.plural == "pods" and res.group == "") or is_ns:
                return 200, copy.deepcopy(old)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    k: v
                    for k, v in (
                        ("name", name),
                        ("group", res.group),
                        ("kind", res.plural),
                        ("uid", old["metadata"]["uid"]),
                    )
                    if v
                },
            }

    def _collect_dependents(self, owner_uid: str, orphan: bool) -> None:
        """The garbage collector, run at once: dependents of a deleted owner are deleted (or orphaned)."""
        for dep_res in list(self.registry.resources):
            bucket = self._objects.get((dep_res.group, dep_res.plural)) or {}
            for key, obj in list(bucket.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                if key not in bucket:
                    continue  # already removed by a cascade above
                rest = [r for r in refs if r.get("uid") != owner_uid]
                if orphan or rest:
                    # A dependent with another owner survives; it only loses the reference.
                    new = copy.deepcopy(obj)
                    if rest:
                        new["metadata"]["ownerReferences"] = rest
                    else:
                        new["metadata"].pop("ownerReferences", None)
                    new["metadata"]["resourceVersion"] = self._next_rv()
                    bucket[key] = new
                    self._emit(dep_res, "MODIFIED", new)
                else:
                    self.delete(dep_res, key[0], key[1])

    def delete_collection(
        self,
        res: Resource,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        options: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        with self.lock:
            items, rv = self.list(res, namespace, label_selector, field_selector)
            deleted = []
            for item in items:
                _, body = self.delete(
                    res, item["metadata"].get("namespace"), item["metadata"]["name"], options, dry_run
                )
                deleted.append(item if body.get("kind") == "Status" else body)
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": deleted,
            }

    def evict(self, namespace: str, name: str, body: Any) -> dict:
        pods = self.registry.lookup("pods")
        if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
            raise ApiError(400, "the body of an eviction must be a policy/v1 Eviction")
        ev_meta = body.get("metadata") or {}
        if ev_meta.get("name") and ev_meta["name"] != name:
            raise ApiError(400, "name in URL does not match name in Eviction object")
        with self.lock:
            pod = self._current(pods, namespace, name)
            pdbs, _ = self.list(self.registry.lookup("poddisruptionbudgets"), namespace)
            for pdb in pdbs:
                sel = (pdb.get("spec") or {}).get("selector") or {}
                if not match_label_selector(sel, (pod["metadata"].get("labels") or {})):
                    continue
                allowed = (pdb.get("status") or {}).get("disruptionsAllowed")
                if allowed is not None and allowed < 1:
                    raise ApiError(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        "TooManyRequests",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} "
                                    f"needs {allowed} healthy pods",
                                }
                            ]
                        },
                    )
            self.delete(pods, namespace, name, body.get("deleteOptions"))
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- the tiny workload controller -----------------------------------------------------------------------

    def set_hold(self, hold: bool, only: Key | None = None) -> None:
        with self.lock:
            if hold:
                if only is None:
                    self._hold_only = None
                elif not self.hold_rollouts or self._hold_only is not None:
                    self._hold_only = (self._hold_only or set()) | {only}
                self.hold_rollouts = True
                return
            self.hold_rollouts = False
            self._hold_only = None
            for group, plural, key in sorted(self._held, key=str):
                res = next(r for r in self.registry.resources if r.group == group and r.plural == plural)
                if key in self._bucket(res):
                    self._reconcile(res, key)
            self._held.clear()

    def _reconcile(self, res: Resource, key: Key) -> None:
        if res.group != "apps" or res.plural not in WORKLOADS:
            return
        obj = self._bucket(res).get(key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        held = self.hold_rollouts and (self._hold_only is None or key in self._hold_only)
        if held:
            self._held.add((res.group, res.plural, key))
        status = rollout.rollout_status(res, obj, self._node_count(), complete=not held)
        if status == obj.get("status"):
            return
        new = copy.deepcopy(obj)
        new["status"] = status
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._bucket(res)[key] = new
        self._emit(res, "MODIFIED", new)

    def register(self, res: Resource) -> None:
        with self.lock:
            self.registry.add(res)
        if self.on_register is not None:
            self.on_register(res)

    def _establish_crd(self, res: Resource, key: Key) -> None:
        """The apiextensions controller: serve the CRD's storage version and mark it Established."""
        crd = self._bucket(res).get(key)
        assert crd is not None, key  # called right after the CRD was stored
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
        storage = next((v for v in versions if v.get("storage")), versions[0] if versions else None)
        if not (spec.get("group") and names.get("plural") and names.get("kind") and storage):
            return
        subresources = tuple(k for k in ((storage.get("subresources") or {}).keys()) if k in ("status", "scale"))
        self.register(
            Resource(
                spec["group"],
                storage["name"],
                names["plural"],
                names["kind"],
                spec.get("scope", "Namespaced") == "Namespaced",
                tuple(names.get("shortNames") or ()),
                subresources,
                generation=True,
            )
        )
        new = copy.deepcopy(crd)
        ts = now()
        new["status"] = {
            "acceptedNames": names,
            "storedVersions": [storage["name"]],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": ts},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": ts},
            ],
        }
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._bucket(res)[key] = new
        self._emit(res, "MODIFIED", new)

    def _fill_sa_token(self, key: Key) -> None:
        """The token controller: give a service-account-token Secret its token, ca.crt and namespace."""
        secrets_res = self.registry.lookup("secrets")
        obj = self._bucket(secrets_res).get(key)
        assert obj is not None, key  # called right after the Secret was stored
        ns, _ = key
        assert ns is not None  # Secrets are namespaced
        sa_name = obj["metadata"]["annotations"][SA_NAME_ANNOTATION]
        sa = self._bucket(self.registry.lookup("serviceaccounts")).get((ns, sa_name))
        if sa is None or (obj.get("data") or {}).get("token"):
            return  # the real controller deletes such a Secret later; here it just stays empty
        token = self.mint_token(ns, sa_name)
        new = copy.deepcopy(obj)
        new["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = sa["metadata"]["uid"]
        new["data"] = {
            **(obj.get("data") or {}),
            "token": base64.b64encode(token.encode()).decode(),
            "ca.crt": FAKE_CA,
            "namespace": base64.b64encode(ns.encode()).decode(),
        }
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._bucket(secrets_res)[key] = new
        self._emit(secrets_res, "MODIFIED", new)

    def mint_token(self, namespace: str, sa_name: str) -> str:
        token = "eyJhbGciOiJub25lIn0." + _random.token_urlsafe(32)
        if self.on_token is not None:
            self.on_token(token, namespace, sa_name)
        return token

    def token_request(self, namespace: str, sa_name: str, body: Any) -> dict:
        """POST serviceaccounts/<name>/token (TokenRequest)."""
        with self.lock:
            self._current(self.registry.lookup("serviceaccounts"), namespace, sa_name)
            spec = dict((body or {}).get("spec") or {}) if isinstance(body, dict) else {}
            seconds = int(spec.get("expirationSeconds") or 3600)
            if seconds < 600:
                raise ApiError(
                    422,
                    "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
                    "Invalid",
                )
            spec["expirationSeconds"] = seconds
            spec.setdefault("audiences", ["https://kubernetes.default.svc.cluster.local", "k3s"])
            expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
            return {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": sa_name, "namespace": namespace, "creationTimestamp": now()},
                "spec": spec,
                "status": {
                    "token": self.mint_token(namespace, sa_name),
                    "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            }

    def _node_count(self) -> int:
        return len(self._bucket(self.registry.lookup("nodes")))

    def stall_rollout(self, res: Resource, namespace: str, name: str) -> None:
        """Mark a Deployment's rollout as failed (ProgressDeadlineExceeded), as the controller would."""
        with self.lock:
            key = self._key(res, namespace, name)
            obj = self._current(res, namespace, name)
            status = obj.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "Progressing"]
            conds.append(
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{name}-{rollout.template_hash(obj)}" has timed out progressing.',
                    "lastUpdateTime": now(),
                    "lastTransitionTime": now(),
                }
            )
            status["conditions"] = conds
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._bucket(res)[key] = obj
            self._emit(res, "MODIFIED", obj)
