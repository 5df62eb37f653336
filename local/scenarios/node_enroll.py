"""node-enroll demo: a new edge node signs its enrollment, gets a K10 bootstrap token and a join script,
and shows up in GET /nodes; replayed and forged requests are refused; the token is revoked at the end."""

from __future__ import annotations

import importlib.util
import re
import secrets
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "functions" / "node-enroll" / "client" / "edgeguard-enroll.py"
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "node-enroll.yaml"
TOKEN_RE = re.compile(r"^K10[0-9a-f]{64}::[a-z0-9]{6}\.[a-z0-9]{16}$")
NODE = "edge-pi-07"


def _client():
    # The same stdlib client a node runs; it carries its own copy of the signing scheme.
    spec = importlib.util.spec_from_file_location("edgeguard_enroll_client", CLIENT)
    assert spec is not None and spec.loader is not None, CLIENT
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _masked_script_lines(script: str, token: str, mask) -> str:
    keep = (
        "K3S_URL=",
        "K3S_TOKEN=",
        "INSTALL_K3S_EXEC=",
        "curl ",
        "sh -s",
        "systemctl",
        "Falco",
        "edgeguard-bootstrap",
    )
    lines = [ln for ln in script.splitlines() if any(k in ln for k in keep) and not ln.startswith("#")]
    return "\n".join(lines).replace(token, mask(token))


def _apply_records_namespace(ctx) -> None:
    """What `kubectl apply -f deploy/rbac/node-enroll.yaml` does at install time for the records namespace."""
    import yaml
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException

    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc and doc["kind"] == "Namespace":
            try:
                k8s.CoreV1Api(ctx.kube).create_namespace(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise


def run(ctx) -> None:
    client = _client()
    if ctx.kube is not None:
        _apply_records_namespace(ctx)
    key = ctx.token("node-enroll-key")
    machine_id = secrets.token_hex(16)
    labels = {"node.edgeguard.io/site": "demo-site"}

    def signed(*, key=key, rotate=False):
        return client.build_request(
            key=key, hostname=NODE, arch="aarch64", machine_id=machine_id, labels=labels, rotate=rotate
        )

    ctx.say(
        f"A fresh Raspberry Pi '{NODE}' (aarch64) signs POST /enroll with the fleet key "
        "(HMAC-SHA256 over timestamp, nonce and body hash)."
    )
    body, headers = signed()
    r = ctx.call("node-enroll", "/enroll", body=body, headers=headers)
    if r.status_code != 201:
        ctx.fail(f"enrollment answered {r.status_code}: {r.text[:300]}")
        return
    doc = r.json()
    token = doc.get("token", "")
    shown = dict(doc, token=client.mask(token))
    ctx.show("POST /function/node-enroll/enroll (token masked)", shown)
    if TOKEN_RE.match(token):
        ctx.ok(f"node got a secure join token K10<ca-hash>::{doc['token_id']}.<secret>, expires {doc['expires_at']}")
    else:
        ctx.fail("the answer did not carry a K10<hash>::<id>.<secret> token")

    if ctx.kube is not None:
        from kubernetes import client as k8s

        sec = k8s.CoreV1Api(ctx.kube).read_namespaced_secret(f"bootstrap-token-{doc['token_id']}", "kube-system")
        keys = sorted((sec.data or {}).keys())
        ctx.show(f"kube-system/bootstrap-token-{doc['token_id']}", {"type": sec.type, "data keys": keys})
        if sec.type == "bootstrap.kubernetes.io/token" and {"token-id", "token-secret", "expiration"} <= set(keys):
            ctx.ok("the bootstrap-token Secret exists in kube-system with the layout k3s expects")
        else:
            ctx.fail("the bootstrap-token Secret is missing or malformed")

    replay = ctx.call("node-enroll", "/enroll", body=body, headers=headers)
    forged_body, forged_headers = signed(key="not-the-fleet-key")
    forged = ctx.call("node-enroll", "/enroll", body=forged_body, headers=forged_headers)
    ctx.show("replayed request", {"status": replay.status_code, "error": replay.json().get("error")})
    ctx.show("request signed with a wrong key", {"status": forged.status_code, "error": forged.json().get("error")})
    if replay.status_code == 401 and forged.status_code == 401:
        ctx.ok("a replayed request and a forged one are both refused (401)")
    else:
        ctx.fail(f"replay answered {replay.status_code}, forgery answered {forged.status_code}; both must be 401")

    body, headers = signed()
    headers["Accept"] = "text/x-shellscript"
    s = ctx.call("node-enroll", "/enroll", body=body, headers=headers)
    script = s.text
    if s.status_code in (200, 201) and s.headers.get("Content-Type", "").startswith("text/x-shellscript"):
        ctx.show("join script, key lines (token masked)", _masked_script_lines(script, token, client.mask))
        if f"K3S_TOKEN={token}" in script or f"K3S_TOKEN='{token}'" in script:
            ctx.ok("re-enrolling within the TTL returns the same token, as a join script (k3s agent, then Falco)")
        else:
            ctx.fail("the join script does not carry the node's outstanding token")
    else:
        ctx.fail(f"asking for a join script answered {s.status_code}: {script[:200]}")

    n = ctx.call("node-enroll", "/nodes", method="GET", token_secret="node-enroll-admin-token")
    listing = n.json() if n.headers.get("Content-Type", "").startswith("application/json") else {}
    mine = [i for i in listing.get("nodes", []) if i.get("name") == NODE]
    if n.status_code == 200 and mine:
        ctx.show("GET /function/node-enroll/nodes", mine[0])
        ctx.ok(
            f"{NODE} is listed: joined={mine[0]['joined']} (no k3s agent ran in this demo), "
            f"token {mine[0]['token']['id']} expires {mine[0]['token']['expires_at']}"
        )
    else:
        ctx.fail(f"GET /nodes answered {n.status_code} without {NODE}")

    d = ctx.call("node-enroll", f"/nodes/{NODE}", method="DELETE", token_secret="node-enroll-admin-token")
    if d.status_code == 200 and d.json().get("revoked") == [doc["token_id"]]:
        ctx.ok(f"DELETE /nodes/{NODE} revoked token {doc['token_id']}")
    else:
        ctx.fail(f"DELETE /nodes/{NODE} answered {d.status_code}: {d.text[:200]}")
