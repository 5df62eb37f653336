"""Shared helpers for node-enroll tests: test constants, signed requests, sibling-module access."""

from __future__ import annotations

import base64
import hashlib
import importlib
import itertools
import time
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parent / "data"
CA_PEM = (DATA / "server-ca.crt").read_bytes()
CA_HASH = hashlib.sha256(CA_PEM).hexdigest()
KEY = "fleet-key-0123456789abcdef0123456789"
ADMIN = "admin-token-abcdef0123456789abcdef"
SERVER = "https://10.0.0.1:6443"
_nonces = itertools.count()

BASE_ENV = {
    "k3s_server_url": SERVER,
    "k3s_ca_hash": "",
    "k3s_ca_file": str(DATA / "server-ca.crt"),
    "allowlist": "",
    "falco_mode": "helm",
}


RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "node-enroll.yaml"


def seed_records_namespace(emu) -> None:
    """The Namespace node-enroll keeps its records in, exactly as the RBAC manifest declares it."""
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc and doc["kind"] == "Namespace":
            emu.seed(doc)


def seed_enrollment(emu, fn, **kw) -> None:
    """An enrollment as node-enroll leaves it: its record plus the kube-system bootstrap token."""
    tokens = sub(fn, "tokens")
    body = tokens.build_secret(**kw)
    emu.seed(tokens.build_record(body))
    emu.seed(body)


def records_of(emu):
    return [s for s in emu.list("secrets", "edgeguard-enroll") if s["metadata"]["name"].startswith("enroll-")]


def sub(handler, name: str):
    """A sibling module of the loaded handler (same package, same module state)."""
    return importlib.import_module(f"{handler.__package__}.{name}")


def kubeconfig_with_ca(server: str = "https://127.0.0.1:6443", ca: bytes = CA_PEM) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [
                {
                    "name": "k",
                    "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca).decode()},
                }
            ],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "sa-token-not-used-here"}}],
        }
    )


def signed(body, *, key: str = KEY, timestamp: int | None = None, nonce: str | None = None, extra: dict | None = None):
    """Headers for a request signed the documented way (independent re-implementation of the scheme)."""
    import hmac
    import json

    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or f"nonce-{next(_nonces):06d}-{time.time_ns()}"
    canonical = (
        b"edgeguard-enroll-v1\n"
        + ts.encode()
        + b"\n"
        + nonce.encode()
        + b"\n"
        + hashlib.sha256(body).hexdigest().encode()
    )
    headers = {
        "Content-Type": "application/json",
        "X-Enroll-Timestamp": ts,
        "X-Enroll-Nonce": nonce,
        "X-Enroll-Signature": "v1=" + hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest(),
    }
    headers.update(extra or {})
    return body, headers


def enroll_doc(hostname="pi-north-01", machine_id="0123456789abcdef0123456789abcdef", arch="aarch64", **extra):
    return {"hostname": hostname, "arch": arch, "machine_id": machine_id, **extra}


def call(fn, make_event, method="POST", path="/enroll", body=b"", headers=None, query=None):
    """Invoke the handler like the template does; returns (status, headers, parsed body)."""
    import json

    resp = fn.handle(make_event(method=method, path=path, body=body, headers=headers or {}, query=query or {}), None)
    ctype = resp.get("headers", {}).get("Content-Type", "")
    body = resp.get("body", "")
    parsed = json.loads(body) if ctype.startswith("application/json") else body
    return resp.get("statusCode", 200), resp.get("headers", {}), parsed


def enroll(fn, make_event, doc=None, *, query=None, headers=None, **sign_kw):
    body, h = signed(doc if doc is not None else enroll_doc(), **sign_kw)
    h.update(headers or {})
    return call(fn, make_event, body=body, headers=h, query=query)


def admin(extra=None):
    return {"Authorization": f"Bearer {ADMIN}", **(extra or {})}
