"""Decode the Kubernetes protobuf bodies kubectl's generators send, for a few simple core types.

`kubectl create configmap|secret|namespace|serviceaccount` POST `application/vnd.kubernetes.protobuf`
(the "k8s\\x00" magic, a runtime.Unknown envelope, then the typed message). Field numbers are those of
k8s.io/api/core/v1/generated.proto and apimachinery's meta/v1 generated.proto. Other kinds answer 415.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited, skipping fixed-width."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        val: int | bytes
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated field")
            val, i = buf[i : i + n], i + n
        elif wire == 1:
            val, i = buf[i : i + 8], i + 8
        elif wire == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((num, val))
    return out


def _map(entries: list[bytes], binary: bool) -> dict[str, str]:
    result = {}
    for entry in entries:
        kv = dict(_fields(entry))
        key = kv.get(1, b"").decode("utf-8")
        value = kv.get(2, b"")
        result[key] = base64.b64encode(value).decode() if binary else value.decode("utf-8")
    return result


def _object_meta(buf: bytes) -> dict:
    meta: dict[str, Any] = {}
    labels, annotations, finalizers = [], [], []
    for num, val in _fields(buf):
        if num in (1, 2, 3, 5, 6) and isinstance(val, bytes) and val:
            meta[{1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}[num]] = val.decode()
        elif num == 11:
            labels.append(val)
        elif num == 12:
            annotations.append(val)
        elif num == 14:
            finalizers.append(val.decode())
    if labels:
        meta["labels"] = _map(labels, binary=False)
    if annotations:
        meta["annotations"] = _map(annotations, binary=False)
    if finalizers:
        meta["finalizers"] = finalizers
    return meta


def _configmap(fields: list[tuple[int, Any]]) -> dict:
    obj: dict[str, Any] = {}
    data = [v for n, v in fields if n == 2]
    binary = [v for n, v in fields if n == 3]
    if data:
        obj["data"] = _map(data, binary=False)
    if binary:
        obj["binaryData"] = _map(binary, binary=True)
    for n, v in fields:
        if n == 4:
            obj["immutable"] = bool(v)
    return obj


def _secret(fields: list[tuple[int, Any]]) -> dict:
    obj: dict[str, Any] = {}
    data = [v for n, v in fields if n == 2]
    string_data = [v for n, v in fields if n == 4]
    if data:
        obj["data"] = _map(data, binary=True)
    if string_data:
        obj["stringData"] = _map(string_data, binary=False)
    for n, v in fields:
        if n == 3 and v:
            obj["type"] = v.decode()
        elif n == 5:
            obj["immutable"] = bool(v)
    return obj


_KINDS = {
    ("v1", "ConfigMap"): _configmap,
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): lambda f: {},
    ("v1", "ServiceAccount"): lambda f: {},
}
SUPPORTED = sorted(kind for _, kind in _KINDS)


def decode(body: bytes) -> dict:
    """The JSON form of a protobuf-encoded object, or ProtobufError (unsupported kind or malformed)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    envelope = dict(_fields(body[len(MAGIC) :]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    api_version = type_meta.get(1, b"").decode()
    kind = type_meta.get(2, b"").decode()
    convert = _KINDS.get((api_version, kind))
    if convert is None:
        raise ProtobufError(
            f"protobuf bodies of {api_version}/{kind} are not decoded by the emulator "
            f"(supported: {', '.join(SUPPORTED)}); send JSON, e.g. kubectl create -f"
        )
    fields = _fields(envelope.get(2, b""))
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    for num, val in fields:
        if num == 1:
            obj["metadata"] = _object_meta(val)
    obj.update(convert(fields))
    return obj
