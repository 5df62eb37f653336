"""The emulator answers as the real kube-apiserver v1.24 where our code relies on the answer.

The same requests go to the launched control plane (tests/realkube.py) and to a fresh KubeEmulator, and their
status, reason and (where our code reads it) message must agree. The emulator stays the tool for fault injection
at every call; this keeps what it answers without faults honest. Differences that do not matter to our code are
listed in KNOWN_DIFFERENCES with the reason.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from local.kubeemu import KubeEmulator
from tests.node_enroll import test_real_rbac as node_enroll_rbac
from tests.realkube import SCRUBBER_GRANTED, SCRUBBER_IMMUTABLE, SCRUBBER_NOT_GRANTED, api_status
from tests.scrubber import test_real_rbac as scrubber_rbac
from tests.scrubber.conftest import deployment

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
JSON, MERGE, SMP, JSONPATCH = (
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
)

KNOWN_DIFFERENCES = {
    # kube-apiserver answers 201 to an admin's TokenReview; the emulator serves no authentication.k8s.io
    # (nothing in edgeguard calls it; the real-cluster tests do, on the real server only).
    "tokenreview",
}


def cases(ns: str, rv: str | None):
    """(label, method, path, body, content type, compare the message too). ``rv``: the first ConfigMap's
    resourceVersion, filled in after it is created."""
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "env": [{"name": "X", "value": "1"}]}]},
            },
        },
    }
    cm = f"/api/v1/namespaces/{ns}/configmaps"
    return [
        ("configmap created", "POST", cm, {"metadata": {"name": "c"}, "data": {"a": "1"}}, JSON, False),
        ("create again: AlreadyExists", "POST", cm, {"metadata": {"name": "c"}, "data": {"a": "1"}}, JSON, True),
        # the scrubber's contraction: JSON patch guarded by a test of resourceVersion
        (
            "json patch, test passes",
            "PATCH",
            f"{cm}/c",
            [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "remove", "path": "/data/a"}],
            JSONPATCH,
            False,
        ),
        (
            "json patch, stale test: 422 with a generic message",
            "PATCH",
            f"{cm}/c",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/data/b", "value": "2"},
            ],
            JSONPATCH,
            True,
        ),
        (
            "json patch, remove a missing key",
            "PATCH",
            f"{cm}/c",
            [{"op": "remove", "path": "/data/zz"}],
            JSONPATCH,
            True,
        ),
        (
            "merge patch with a stale resourceVersion: Conflict",
            "PATCH",
            f"{cm}/c",
            {"metadata": {"resourceVersion": rv}, "data": {"b": "2"}},
            MERGE,
            False,
        ),
        (
            "delete with a wrong uid precondition: Conflict",
            "DELETE",
            f"{cm}/c",
            {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
            },
            JSON,
            False,
        ),
        (
            "create in a missing namespace",
            "POST",
            f"/api/v1/namespaces/nope-{ns}/configmaps",
            {"metadata": {"name": "c"}},
            JSON,
            True,
        ),
        (
            "immutable configmap",
            "POST",
            cm,
            {"metadata": {"name": "i"}, "data": {"a": "1"}, "immutable": True},
            JSON,
            False,
        ),
        ("immutable: data change refused", "PATCH", f"{cm}/i", {"data": {"a": "2"}}, MERGE, True),
        ("immutable: metadata may change", "PATCH", f"{cm}/i", {"metadata": {"annotations": {"x": "y"}}}, MERGE, False),
        ("label value with a colon", "POST", cm, {"metadata": {"name": "l", "labels": {"a": "sha256:x"}}}, JSON, False),
        (
            "secret",
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": "s"}, "stringData": {"k": "v"}},
            JSON,
            False,
        ),
        (
            "secret type is immutable",
            "PATCH",
            f"/api/v1/namespaces/{ns}/secrets/s",
            {"type": "kubernetes.io/basic-auth"},
            MERGE,
            False,
        ),
        (
            "event for another namespace",
            "POST",
            f"/api/v1/namespaces/{ns}/events",
            {
                "metadata": {"name": "e1"},
                "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "other"},
                "reason": "R",
                "message": "m",
                "type": "Normal",
            },
            JSON,
            True,
        ),
        (
            "event",
            "POST",
            f"/api/v1/namespaces/{ns}/events",
            {
                "metadata": {"name": "e2"},
                "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": ns},
                "reason": "R",
                "message": "m",
                "type": "Normal",
            },
            JSON,
            False,
        ),
        (
            "the same event again: AlreadyExists",
            "POST",
            f"/api/v1/namespaces/{ns}/events",
            {
                "metadata": {"name": "e2"},
                "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": ns},
                "reason": "R",
                "message": "m",
                "type": "Normal",
            },
            JSON,
            True,
        ),
        ("deployment", "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", dep, JSON, False),
        (
            "strategic merge leaves value beside valueFrom: Invalid",
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/d",
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                                }
                            ]
                        }
                    }
                }
            },
            SMP,
            False,
        ),
        (
            "strategic merge with value: null rewires",
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/d",
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "c",
                                    "env": [
                                        {
                                            "name": "X",
                                            "value": None,
                                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                                        }
                                    ],
                                }
                            ]
                        }
                    }
                }
            },
            SMP,
            False,
        ),
        ("unsupported field selector", "GET", f"{cm}?fieldSelector=data.a%3D1", None, JSON, False),
        (
            "field selector metadata.name",
            "GET",
            "/api/v1/configmaps?fieldSelector=metadata.name%3Dc",
            None,
            JSON,
            False,
        ),
        (
            "bootstrap token secret",
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            {
                "metadata": {"name": f"bootstrap-token-{ns[-6:]}"},
                "type": "bootstrap.kubernetes.io/token",
                "stringData": {
                    "token-id": ns[-6:],
                    "token-secret": "0123456789abcdef",
                    "usage-bootstrap-authentication": "true",
                    "expiration": "2099-01-01T00:00:00Z",
                },
            },
            JSON,
            False,
        ),
        ("delete it", "DELETE", f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{ns[-6:]}", None, JSON, False),
        (
            "service-account-token secret without its annotation",
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {"metadata": {"name": "t0"}, "type": "kubernetes.io/service-account-token"},
            JSON,
            False,
        ),
        (
            "SelfSubjectReview does not exist before 1.27",
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"kind": "SelfSubjectReview"},
            JSON,
            False,
        ),
        (
            "tokenreview",
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"kind": "TokenReview", "spec": {"token": "abcdef.0123456789abcdef"}},
            JSON,
            False,
        ),
    ]


def play(base: str, session: requests.Session, ns: str) -> dict:
    session.post(f"{base}/api/v1/namespaces", json={"metadata": {"name": ns}}).raise_for_status()
    out, rv = {}, None
    for i in range(len(cases(ns, None))):
        label, method, path, body, ctype, with_message = cases(ns, rv)[i]  # rv: known after the first one
        r = session.request(
            method, base + path, data=None if body is None else json.dumps(body), headers={"Content-Type": ctype}
        )
        doc = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        got = (r.status_code, doc.get("reason") if doc.get("kind") == "Status" else None)
        out[label] = got + ((doc.get("message"), doc.get("details")) if with_message else ())
        if label == "configmap created":
            rv = doc["metadata"]["resourceVersion"]
    session.delete(f"{base}/api/v1/namespaces/{ns}")
    return out


def session_for(kubeconfig: dict, ca_file: Path | None) -> tuple[str, requests.Session]:
    cluster, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster's CA
    s.headers["Authorization"] = f"Bearer {user['token']}"
    if ca_file is not None:
        s.verify = str(ca_file)
    return cluster["server"].rstrip("/"), s


def test_the_emulator_answers_these_requests_as_the_real_api_server(own_kube, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_bytes(own_kube.ca_pem)
    ns = f"agree-{uuid.uuid4().hex[:6]}"
    real = play(*session_for(yaml.safe_load(own_kube.kubeconfig_text), ca), ns)
    with KubeEmulator() as emu:
        emulated = play(*session_for(emu.kubeconfig_dict(), None), ns)
    differ = {
        k: {"real": real[k], "emulator": emulated[k]}
        for k in real
        if real[k] != emulated[k] and k not in KNOWN_DIFFERENCES
    }
    assert not differ, json.dumps(differ, indent=1)
    assert {k for k in KNOWN_DIFFERENCES if real[k] == emulated[k]} == set(), "a known difference is gone"


# --- RBAC: the functions' roles, as deploy/rbac/ and bootstrap's rendered templates grant them ---------------


def emulated_rbac() -> KubeEmulator:
    emu = KubeEmulator(rbac=True, strict_auth=True)
    emu.start()
    for manifest in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")):
        text = manifest.read_text()
        if "__NAMESPACE__" not in text:
            emu.load_manifests(text)
        elif "immutable" in manifest.name:
            emu.load_manifests(text.replace("__NAMESPACE__", SCRUBBER_IMMUTABLE))
        else:
            for ns in SCRUBBER_GRANTED:
                emu.load_manifests(text.replace("__NAMESPACE__", ns))
    return emu


def seed_probes(core, apps, probe: str, password: str, emulator: bool) -> list:
    """The objects the matrices aim at, so a 403 is never a 404 in disguise; returns what to delete."""
    made = []
    if emulator:
        core.create_namespace({"metadata": {"name": SCRUBBER_NOT_GRANTED}})  # the others come with the RBAC
    for ns in (SCRUBBER_GRANTED[1], SCRUBBER_NOT_GRANTED, "kube-system"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": probe}, "data": {"a": "b"}})
        core.create_namespaced_secret(ns, {"metadata": {"name": probe}, "stringData": {"a": "b"}})
        apps.create_namespaced_deployment(ns, deployment(probe, ns=ns, replicas=0))
        made += [("cm", ns, probe), ("secret", ns, probe), ("deploy", ns, probe)]
    for ns, name in (("edgeguard-enroll", probe), ("kube-system", password)):
        core.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": {"a": "b"}})
        made.append(("secret", ns, name))
    if emulator:  # what the real cluster has by itself (controllers, node_sim, OpenFaaS's provider in bootstrap)
        for name in ("node-enroll-kubeconfig", "configmap-secret-scrubber-kubeconfig"):
            core.create_namespaced_secret("openfaas-fn", {"metadata": {"name": name}, "stringData": {name: "x"}})
        core.create_namespaced_config_map(
            "kube-system", {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "x"}}
        )
        core.create_node({"metadata": {"name": "sim-node-1"}})
    return made


def statuses(kind: str, api_client, probe: str) -> dict:
    from kubernetes import client

    core, apps, rbac = (
        client.CoreV1Api(api_client),
        client.AppsV1Api(api_client),
        client.RbacAuthorizationV1Api(api_client),
    )
    if kind == "configmap-secret-scrubber":
        denied, allowed = scrubber_rbac.rbac_matrix(core, apps, rbac, probe)
    else:
        denied, allowed = node_enroll_rbac.rbac_matrix(core, rbac, probe, "sim-node-1")
    return {what: api_status(call, *args, **kw) for what, call, args, kw in denied + allowed}


def test_the_emulators_rbac_refuses_and_allows_what_the_real_api_server_does(bootstrapped):
    """tests/scrubber/test_rbac.py proves on the emulator that the flows need exactly the granted verbs; that
    holds only while the emulator's RBAC decides as the real one does, request by request."""
    from kubernetes import client

    probe = f"rbac-probe-{uuid.uuid4().hex[:6]}"
    password = f"edge-pi-{uuid.uuid4().hex[:4]}.node-password.k3s"
    real_admin = bootstrapped.cluster.api_client()
    made = seed_probes(client.CoreV1Api(real_admin), client.AppsV1Api(real_admin), probe, password, emulator=False)
    emu = emulated_rbac()
    try:
        e_admin = emu.api_client()
        seed_probes(client.CoreV1Api(e_admin), client.AppsV1Api(e_admin), probe, password, emulator=True)
        for sa in ("configmap-secret-scrubber", "node-enroll"):
            real = statuses(sa, bootstrapped.cluster.api_client(bootstrapped.kubeconfig(sa)), probe)
            emulated = statuses(sa, emu.api_client(user_token=emu.service_account_token("openfaas-fn", sa)), probe)
            assert emulated == real, {k: (real[k], emulated[k]) for k in real if real[k] != emulated[k]}
            assert 403 in real.values() and (set(real.values()) - {403})  # both kinds of answer were asked for
    finally:
        emu.stop()
        core, apps = client.CoreV1Api(real_admin), client.AppsV1Api(real_admin)
        for kind, ns, name in made:
            {
                "cm": core.delete_namespaced_config_map,
                "secret": core.delete_namespaced_secret,
                "deploy": apps.delete_namespaced_deployment,
            }[kind](name, ns)
