"""Per-type validation rules of the apiserver that are pure functions of the object (no store access)."""

from __future__ import annotations

import re

Cause = tuple[str, str, str]

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain "
    "prefix and '/' (e.g. 'example.com/MyName')"
)
ANNOTATIONS_MAX = 256 * 1024


def _qualified(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_NAME.match(name))


def validate_meta(meta: dict) -> list[Cause]:
    causes: list[Cause] = []
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            return [("metadata.labels", "FieldValueInvalid", "Invalid value: label values must be strings")]
        for k, v in labels.items():
            if not _qualified(k):
                causes.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{k}": {_QUALIFIED_MSG}'))
            if len(v) > 63 or not _LABEL_VALUE.match(v):
                causes.append(
                    (
                        "metadata.labels",
                        "FieldValueInvalid",
                        f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                        f"alphanumeric characters, '-', '_' or '.', and must start and end with an "
                        f"alphanumeric character, and be at most 63 characters",
                    )
                )
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            return causes + [
                ("metadata.annotations", "FieldValueInvalid", "Invalid value: annotation values must be strings")
            ]
        for k in annotations:
            if not _qualified(k.lower()):
                causes.append(("metadata.annotations", "FieldValueInvalid", f'Invalid value: "{k}": {_QUALIFIED_MSG}'))
        if sum(len(k) + len(v) for k, v in annotations.items()) > ANNOTATIONS_MAX:
            causes.append(
                ("metadata.annotations", "FieldValueTooLong", f"Too long: must have at most {ANNOTATIONS_MAX} bytes")
            )
    return causes


def validate_core_event(obj: dict) -> list[Cause]:
    """core/v1 Event: the involved object's namespace must be the event's (legacy event validation)."""
    ns = obj["metadata"].get("namespace") or ""
    inv_ns = (obj.get("involvedObject") or {}).get("namespace") or ""
    if inv_ns == "" and ns not in ("", "default"):
        return [("involvedObject.namespace", "FieldValueInvalid", 'Invalid value: "": does not match event.namespace')]
    if inv_ns and inv_ns != ns:
        return [
            (
                "involvedObject.namespace",
                "FieldValueInvalid",
                f'Invalid value: "{inv_ns}": does not match event.namespace',
            )
        ]
    return []


def validate_events_v1(obj: dict) -> list[Cause]:
    """events.k8s.io/v1 Event: fields the new API requires on create."""
    causes = []
    for f in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
        if not obj.get(f):
            causes.append((f, "FieldValueRequired", "Required value"))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(
            (
                "type",
                "FieldValueNotSupported",
                f'Unsupported value: "{obj.get("type") or ""}": supported values: "Normal", "Warning"',
            )
        )
    return causes


# Keys the apiserver requires per built-in Secret type (ValidateSecret); other types are free-form.
_SECRET_TYPE_KEYS = {
    "kubernetes.io/tls": (("tls.crt", "tls.key"), all),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",), all),
    "kubernetes.io/dockercfg": ((".dockercfg",), all),
    "kubernetes.io/basic-auth": (("username", "password"), any),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",), all),
}


def secret_type_causes(obj: dict) -> list[tuple[str, str, str]]:
    rule = _SECRET_TYPE_KEYS.get(obj.get("type") or "")
    if rule is None:
        return []
    keys, quantifier = rule
    data = obj.get("data") or {}
    if quantifier(k in data for k in keys):
        return []
    missing = [k for k in keys if k not in data]
    return [(f"data[{missing[0]}]", "FieldValueRequired", "Required value")]
