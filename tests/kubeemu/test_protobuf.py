"""Protobuf request bodies (kubectl generators) decoded for the simple core types."""

from __future__ import annotations

import pytest

# Bodies captured from kubectl v1.32 `create configmap|secret|namespace` (generators send protobuf).
KUBECTL_CONFIGMAP = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12<\n\x13\n\x03cfg\x12\x00\x1a\x00"\x00*\x002\x008\x00B'
    b'\x00\x12\x1d\n\x11aws_access_key_id\x12\x08AKIA1234\x12\x06\n\x01b\x12\x012\x1a\x00"\x00'
)
KUBECTL_SECRET = (
    b'k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12)\n\x13\n\x03sec\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'
    b'\x12\x10\n\x08password\x12\x04p@ss\x1a\x00\x1a\x00"\x00'
)


def test_protobuf_bodies_of_kubectl_generators_decode_to_json():
    from local.kubeemu.protobuf import ProtobufError, decode

    assert decode(KUBECTL_CONFIGMAP) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {"aws_access_key_id": "AKIA1234", "b": "2"},
    }
    assert decode(KUBECTL_SECRET) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sec"},
        "data": {"password": "cEBzcw=="},
    }
    for bad in (b"not protobuf", KUBECTL_CONFIGMAP[:30], KUBECTL_CONFIGMAP.replace(b"ConfigMap", b"Configmap")):
        with pytest.raises(ProtobufError):
            decode(bad)
