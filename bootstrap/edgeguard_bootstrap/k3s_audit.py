"""k3s-audit: make the embedded kube-apiserver post its audit events to audit-ingest, authenticated.

The webhook goes over https (audit_tls explains why and how); its kubeconfig carries the CA, the TLS
server name and audit-ingest's token, and the delivery probe checks that an authenticated batch arrived.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as pysecrets
import time
from pathlib import Path

from . import audit_policy, audit_tls, facts, k3s_restart, kubeapply, secretstore, yamlout
from .audit_tls import Front
from .engine import BootstrapError, Check, Ctx

SERVER_DIR = "/var/lib/rancher/k3s/server"
POLICY = f"{SERVER_DIR}/edgeguard-audit-policy.yaml"
WEBHOOK = f"{SERVER_DIR}/edgeguard-audit-webhook.kubeconfig"
LOG_DIR = f"{SERVER_DIR}/logs"
PENDING = "k3s_restart_pending"  # a refused restart, remembered in the state file
LOG = f"{LOG_DIR}/audit.log"
DROPIN = f"/etc/rancher/k3s/config.yaml.d/{facts.AUDIT_DROPIN_NAME}"
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "audit-policy.yaml"

# Batch settings for a flaky edge (kube-apiserver defaults in brackets):
# - batch mode never blocks or fails API requests when audit-ingest is down;
# - small batches sent after at most 5s [400 events / 30s] keep each POST small
#   and alerts prompt on a Pi;
# - first retry after 5s [10s]; with the fixed factor 1.5 and 5 steps a batch is
#   retried for about a minute before the API server drops it;
# - truncation [off] drops request/response bodies of oversized events instead
#   of losing the whole batch;
# - the local audit log keeps a record on the node when the webhook drops a
#   batch, sized for an SD card.
WEBHOOK_ARGS = (
    "audit-webhook-mode=batch",
    "audit-webhook-batch-max-size=100",
    "audit-webhook-batch-max-wait=5s",
    "audit-webhook-batch-buffer-size=10000",
    "audit-webhook-initial-backoff=5s",
    "audit-webhook-truncate-enabled=true",
)
LOG_ARGS = (
    f"audit-log-path={LOG}",
    "audit-log-maxage=7",
    "audit-log-maxbackup=3",
    "audit-log-maxsize=50",
)


def dropin_text() -> str:
    args = [f"audit-policy-file={POLICY}", f"audit-webhook-config-file={WEBHOOK}", *WEBHOOK_ARGS, *LOG_ARGS]
    header = (
        "Written by edgeguard-bootstrap k3s-audit; undo with: edgeguard-bootstrap revert\n"
        "'+' appends to kube-apiserver-arg from config.yaml instead of replacing it."
    )
    return yamlout.dump({"kube-apiserver-arg+": args}, header)


CA_PLANNED = "<base64 of the CA certificate this run generates>"


def webhook_kubeconfig(
    url: str, token: str, ca_pem: bytes | None = None, server_name: str | None = None, ca_planned: bool = False
) -> str:
    """Data fields only (no file paths): the file is read from wherever it is copied."""
    cluster = {"server": url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    elif ca_planned:
        cluster["certificate-authority-data"] = CA_PLANNED
    if server_name:
        cluster["tls-server-name"] = server_name
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edgeguard-audit-ingest", "cluster": cluster}],
        "users": [{"name": "audit-ingest", "user": {"token": token}}],
        "contexts": [{"name": "edgeguard", "context": {"cluster": "edgeguard-audit-ingest", "user": "audit-ingest"}}],
        "current-context": "edgeguard",
        "preferences": {},
    }
    return yamlout.dump(doc, "kube-apiserver audit webhook -> OpenFaaS audit-ingest (edgeguard-bootstrap)")


def resolve_front(audit_url: str | None, audit_ca: str | None, server_name: str | None) -> Front:
    """Where the webhook posts; refuses what could never authenticate (bad input changes nothing)."""
    url = audit_url or audit_tls.DEFAULT_URL
    if not audit_tls.is_https(url):
        raise BootstrapError(audit_tls.http_refusal(url))
    if audit_ca:
        return Front(url, audit_tls.read_ca(audit_ca), server_name, managed=False)
    if server_name:
        raise BootstrapError(
            f"--audit-tls-server-name goes with --audit-ca (your own front); bootstrap's own "
            f"certificate is for {audit_tls.SERVER_NAME}"
        )
    return Front(url, None, audit_tls.SERVER_NAME, managed=True)


def checks(ctx: Ctx, gateway: str, probe: bool = True, managed: bool = True) -> list[Check]:
    result = [facts.check_k3s(ctx)]
    role = facts.k3s_role(ctx)
    if role == "agent":
        result.append(Check("k3s role", "fail", "this is an agent node; the audit webhook runs on k3s servers only"))
    elif role == "server":
        result.append(facts.check_k3s_args(ctx))
    result.append(facts.check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"))
    if managed:
        result.append(
            facts.check_tool(
                ctx, "openssl", "it makes the webhook's CA and certificate: apt-get install openssl", on_node=False
            )
        )
        result.append(audit_tls.check_traefik(ctx))
    gw = facts.check_gateway(ctx, gateway)
    if gw.status == "fail" and not probe:
        gw = Check(gw.name, "warn", gw.detail + "; only the skipped delivery probe needs it")
    result.append(gw)
    return result


def run(
    ctx: Ctx,
    *,
    gateway: str,
    audit_url: str | None = None,
    audit_ca: str | None = None,
    audit_server_name: str | None = None,
    check: str = "auto",
    check_timeout: float = 90.0,
    poll: float = 3.0,
) -> None:
    ctx.section("k3s-audit: kube-apiserver audit policy, webhook to audit-ingest over https, k3s drop-in")
    front = resolve_front(audit_url, audit_ca, audit_server_name)
    ctx.require(checks(ctx, gateway, probe=check != "never", managed=front.managed))
    for name in secretstore.ALL:
        # Known before any command runs, so a failing kubectl that echoes a value is masked too.
        secretstore.local(ctx, name)
    token = secretstore.require_token(ctx, "audit-ingest-token")
    ctx.note(f"the webhook authenticates with audit-ingest-token (stored in {secretstore.path('audit-ingest-token')})")
    if front.managed:
        front.ca_pem = audit_tls.ensure_material(ctx)
    trust = (f"CA {audit_tls.CA_CERT}" if front.managed else f"CA from {audit_ca}") + (
        f", TLS server name {front.server_name}" if front.server_name else ""
    )
    changed = False
    changed |= ctx.write_file(
        POLICY,
        audit_policy.edge_policy(),
        mode=0o600,
        why="Falco's recommended audit policy (falcosecurity/plugins k8saudit) after "
        "edgeguard's level: None rules for k3s's own noise",
    )
    changed |= ctx.write_file(
        WEBHOOK,
        webhook_kubeconfig(front.url, token, front.ca_pem, front.server_name, ca_planned=front.ca_pem is None),
        mode=0o600,
        why=f"webhook kubeconfig: {front.url} ({trust}) with audit-ingest's bearer token",
    )
    changed |= ctx.ensure_dir(LOG_DIR, 0o700, "local audit log (fallback record when the webhook drops a batch)")
    changed |= ctx.write_file(DROPIN, dropin_text(), mode=0o600, why="kube-apiserver-arg+ audit flags")
    if front.managed:
        for path in audit_tls.write_manifests(ctx):
            kubeapply.apply_manifest(ctx, str(ctx.host(path)), "audit-ingest's https front (Traefik)")
    if ctx.image:
        ctx.note(
            "image: k3s reads these files when it first starts; no restart and no audit probe now"
            + ("; apply the two manifests after OpenFaaS is installed" if front.managed else "")
        )
        return

    def after_restart(restarted: bool) -> None:
        if ctx.dry_run:
            if changed:
                ctx.note(
                    "after the restart, an audit probe (a short-lived ConfigMap) is checked to reach "
                    "audit-ingest as an authenticated batch"
                )
            return
        if check == "never" or (check == "auto" and not restarted):
            if not changed:
                ctx.note("nothing changed, so no audit probe (use --check to run it anyway)")
            return
        deployed = facts.deployed_functions(ctx)
        if deployed is not None and "audit-ingest" not in deployed:
            ctx.say(
                "  !! audit-ingest is not deployed, so the delivery probe is skipped: after `faas-cli up`, "
                "run `edgeguard-bootstrap k3s-audit --check`"
            )
            return
        verify_delivery(ctx, front, token, timeout=check_timeout, poll=poll)

    k3s_restart.restart_then(ctx, k3s_restart.Request(changed, PENDING, "the audit policy and webhook", after_restart))


def restart_k3s(ctx: Ctx, changed: bool) -> bool:
    """revert: restart now if anything audit-related changed (or a restart is still pending)."""
    if not changed and not ctx.state.get(PENDING, False):
        return False
    return k3s_restart.restart(ctx, [PENDING], "the audit settings")


wait_ready = k3s_restart.wait_ready

COUNTERS = ("authenticated_batches", "unauthenticated", "invalid_token")


def _get(ctx: Ctx, front: Front, token: str) -> tuple[int, bytes]:
    """audit-ingest's GET over the webhook's own transport (the same URL, CA and server name)."""
    headers = {"Authorization": f"Bearer {token}"}
    if audit_tls.is_https(front.url) and front.ca_pem is not None:
        return ctx.https_get(front.url, headers, front.ca_pem, front.server_name, timeout=10)
    return ctx.http_get(front.url, headers, timeout=10)


def _unreachable(front: Front, status: int, body: bytes) -> str:
    where = f"GET {front.url}" + (f" (TLS server name {front.server_name})" if front.server_name else "")
    if status == 401:
        return f"{where} answered 401; is audit-ingest-token the secret audit-ingest uses?"
    if status:
        why = f"answered {status}"
    else:
        why = "failed: " + body.decode("utf-8", "replace")[:200]
    hint = "is audit-ingest deployed?"
    if front.managed:
        hint = (
            f"does Traefik serve the Ingress {audit_tls.NAMESPACE}/{audit_tls.INGRESS_NAME} (`kubectl -n "
            f"{audit_tls.NAMESPACE} get ingress,secret {audit_tls.INGRESS_NAME}`), and is audit-ingest "
            "deployed? Without ServiceLB (--disable servicelb) pass --audit-url "
            f"https://<Traefik's address>{audit_tls.PATH}"
        )
    return f"{where} {why}; {hint}"


def event_counters(ctx: Ctx, front: Front, token: str, wait: float = 0.0) -> dict[str, float]:
    """audit-ingest's authentication counters; waits up to `wait` s for the front to answer (Traefik
    picks up a new Ingress within seconds)."""
    deadline = time.monotonic() + wait
    while True:
        status, body = _get(ctx, front, token)
        if status == 200 or status == 401 or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if status != 200:
        raise BootstrapError(_unreachable(front, status, body))
    try:
        counters = json.loads(body).get("counters")
    except (ValueError, AttributeError):
        counters = None
    if not isinstance(counters, dict) or not all(k in counters for k in COUNTERS):
        raise BootstrapError(
            f"GET {front.url}: audit-ingest reports no {'/'.join(COUNTERS)} counters, so "
            "it is older than this bootstrap: redeploy it (faas-cli up -f stack.yml), then run "
            "`edgeguard-bootstrap k3s-audit --check`"
        )
    return {k: counters[k] for k in COUNTERS}


def _webhook_server(ctx: Ctx) -> str | None:
    m = re.search(r'^\s*server:\s*"?([^\s"]+)', (ctx.read(WEBHOOK) or b"").decode("utf-8", "replace"), re.M)
    return m.group(1) if m else None


def no_credentials(ctx: Ctx, n: float) -> str:
    """Why batches came without a token, as far as the node can tell."""
    text = (
        f"audit-ingest answered 401 to {n:g} audit batch(es) that came without credentials (no "
        "Authorization header): client-go, the API server's webhook client, sends the kubeconfig's token "
        "only to an https:// server."
    )
    server = _webhook_server(ctx)
    if server and not audit_tls.is_https(server):
        return text + f" {WEBHOOK} points at the http URL {server}: re-run `edgeguard-bootstrap k3s-audit`."
    if ctx.state.get("k3s_restart_pending"):
        return text + (
            " k3s has not been restarted since bootstrap wrote the https webhook kubeconfig, so the "
            "API server still posts with its old one (edgeguard's old default was http://127.0.0.1:"
            "31112/function/audit-ingest): run `sudo systemctl restart k3s`, then `k3s-audit --check`."
        )
    return text + (
        f" {WEBHOOK} says {server or 'no server'}, so the running API server uses another webhook "
        "configuration: check --audit-webhook-config-file in `journalctl -u k3s`."
    )


def verify_delivery(ctx: Ctx, front: Front, token: str, *, timeout: float, poll: float) -> None:
    """Create and delete a ConfigMap and wait until audit-ingest counts a new *authenticated* batch."""
    ctx.say("  checking that an authenticated audit batch reaches audit-ingest ...")
    before = event_counters(ctx, front, token, wait=min(30.0, timeout))
    name = "edgeguard-audit-probe-" + pysecrets.token_hex(4)
    for argv in (
        ["kubectl", "create", "configmap", name, "-n", "default", "--from-literal=probe=edgeguard-bootstrap"],
        ["kubectl", "delete", "configmap", name, "-n", "default", "--wait=false"],
    ):
        ctx.say("  [probe] " + " ".join(argv))
        proc = ctx.query(argv, timeout=30)
        if proc.returncode != 0:
            raise BootstrapError(f"audit probe `{' '.join(argv)}` failed: {ctx.tail(proc.stderr, 300)}")
    deadline = time.monotonic() + timeout
    while True:
        after = event_counters(ctx, front, token)
        grown = {k: after[k] - before[k] for k in COUNTERS}
        if grown["authenticated_batches"] > 0:
            ctx.say(
                "  authenticated audit batches reach audit-ingest: authenticated_batches "
                f"{before['authenticated_batches']:g} -> {after['authenticated_batches']:g}"
            )
            return
        if grown["unauthenticated"] > 0:
            raise BootstrapError(no_credentials(ctx, grown["unauthenticated"]))
        if grown["invalid_token"] > 0:
            raise BootstrapError(
                f"audit-ingest answered 401 to {grown['invalid_token']:g} audit batch(es) whose "
                "token it does not accept: the token in the webhook kubeconfig is not the "
                "audit-ingest-token OpenFaaS holds (re-run `edgeguard-bootstrap openfaas`, then "
                "`k3s-audit`)"
            )
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll, left))
    log = ctx.read(LOG) or b""
    local = (
        "the local audit log has the probe, so auditing works but the webhook did not deliver"
        if name.encode() in log
        else "the local audit log does not have the probe either: is the audit policy loaded?"
    )
    raise BootstrapError(
        f"no authenticated audit batch reached audit-ingest within {int(timeout)}s; {local}. "
        "Check `journalctl -u k3s | grep -i audit` for webhook errors."
    )
