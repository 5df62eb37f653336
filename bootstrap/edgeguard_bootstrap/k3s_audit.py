"""k3s-audit: make the embedded kube-apiserver post its audit events to audit-ingest."""
from __future__ import annotations

import json
import secrets as pysecrets
import time
from pathlib import Path

from . import audit_policy, facts, secretstore, yamlout
from .engine import BootstrapError, Check, Ctx

SERVER_DIR = "/var/lib/rancher/k3s/server"
POLICY = f"{SERVER_DIR}/edgeguard-audit-policy.yaml"
WEBHOOK = f"{SERVER_DIR}/edgeguard-audit-webhook.kubeconfig"
LOG_DIR = f"{SERVER_DIR}/logs"
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
    header = ("Written by edgeguard-bootstrap k3s-audit; undo with: edgeguard-bootstrap revert\n"
              "'+' appends to kube-apiserver-arg from config.yaml instead of replacing it.")
    return yamlout.dump({"kube-apiserver-arg+": args}, header)


def webhook_kubeconfig(url: str, token: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edgeguard-audit-ingest", "cluster": {"server": url}}],
        "users": [{"name": "audit-ingest", "user": {"token": token}}],
        "contexts": [{"name": "edgeguard", "context": {"cluster": "edgeguard-audit-ingest", "user": "audit-ingest"}}],
        "current-context": "edgeguard",
        "preferences": {},
    }
    return yamlout.dump(doc, "kube-apiserver audit webhook -> OpenFaaS audit-ingest (edgeguard-bootstrap)")


def checks(ctx: Ctx, gateway: str, probe: bool = True) -> list[Check]:
    result = [facts.check_k3s(ctx)]
    role = facts.k3s_role(ctx)
    if role == "agent":
        result.append(Check("k3s role", "fail", "this is an agent node; the audit webhook runs on k3s servers only"))
    elif role == "server":
        result.append(facts.check_k3s_args(ctx))
    result.append(facts.check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"))
    gw = facts.check_gateway(ctx, gateway)
    if gw.status == "fail" and not probe:
        gw = Check(gw.name, "warn", gw.detail + "; only the skipped delivery probe needs it")
    result.append(gw)
    return result


def run(ctx: Ctx, *, gateway: str, audit_url: str | None = None, check: str = "auto",
        check_timeout: float = 90.0, poll: float = 3.0) -> None:
    ctx.section("k3s-audit: kube-apiserver audit policy, webhook to audit-ingest, k3s drop-in")
    ctx.require(checks(ctx, gateway, probe=check != "never"))
    url = audit_url or gateway.rstrip("/") + "/function/audit-ingest"
    token = secretstore.require_token(ctx, "audit-ingest-token")
    ctx.note(f"the webhook authenticates with audit-ingest-token (stored in {secretstore.path('audit-ingest-token')})")
    changed = False
    changed |= ctx.write_file(POLICY, audit_policy.edge_policy(), mode=0o600,
                              why="Falco's recommended audit policy (falcosecurity/plugins k8saudit) after "
                                  "edgeguard's level: None rules for k3s's own noise")
    changed |= ctx.write_file(WEBHOOK, webhook_kubeconfig(url, token), mode=0o600,
                              why=f"webhook kubeconfig: {url} with audit-ingest's bearer token")
    changed |= ctx.ensure_dir(LOG_DIR, 0o700, "local audit log (fallback record when the webhook drops a batch)")
    changed |= ctx.write_file(DROPIN, dropin_text(), mode=0o600, why="kube-apiserver-arg+ audit flags")
    if ctx.image:
        ctx.note("image: k3s reads these files when it first starts; no restart and no audit probe now")
        return
    restarted = restart_k3s(ctx, changed)
    if ctx.dry_run:
        if changed:
            ctx.note("after the restart, an audit probe (a short-lived ConfigMap) is checked to reach audit-ingest")
        return
    if check == "never" or (check == "auto" and not restarted):
        if not changed:
            ctx.note("nothing changed, so no audit probe (use --check to run it anyway)")
        return
    if restarted:
        wait_ready(ctx)
    deployed = facts.deployed_functions(ctx)
    if deployed is not None and "audit-ingest" not in deployed:
        ctx.say("  !! audit-ingest is not deployed, so the delivery probe is skipped: after `faas-cli up`, run "
                "`edgeguard-bootstrap k3s-audit --check`")
        return
    verify_delivery(ctx, gateway, token, timeout=check_timeout, poll=poll)


def restart_k3s(ctx: Ctx, changed: bool) -> bool:
    pending = ctx.state.get("k3s_restart_pending", False)
    if not changed and not pending:
        return False
    question = "k3s must restart to load the audit settings (the API server is down for a few seconds). Restart now?"
    if ctx.dry_run:
        ctx.change("run: systemctl restart k3s  (only with --yes, or after a yes at the terminal prompt)")
        return False
    if not ctx.confirm(question):
        ctx.state["k3s_restart_pending"] = True
        ctx.save_state()
        ctx.say("  !! k3s NOT restarted: the audit settings take effect after `sudo systemctl restart k3s` "
                "(or re-run with --yes)")
        return False
    ctx.run(["systemctl", "restart", "k3s"], why="load the audit policy and webhook")
    ctx.state["k3s_restart_pending"] = False
    ctx.save_state()
    return True


def wait_ready(ctx: Ctx, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = ctx.query(["kubectl", "get", "--raw", "/readyz"], timeout=15)
        if proc.returncode == 0 and proc.stdout.strip() == "ok":
            ctx.say("  API server ready after the restart")
            return
        if time.monotonic() > deadline:
            raise BootstrapError("the API server did not become ready within "
                                 f"{int(timeout)}s after the restart: check `journalctl -u k3s`")
        time.sleep(2)


def _counters(obj, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_counters(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def event_counters(ctx: Ctx, gateway: str, token: str) -> dict[str, float]:
    url = gateway.rstrip("/") + "/function/audit-ingest"
    status, body = facts.http_get(url, {"Authorization": f"Bearer {token}"}, timeout=10)
    if status != 200:
        raise BootstrapError(f"GET {url} answered {status or 'nothing'}; is audit-ingest deployed and is "
                             "audit-ingest-token the secret it uses?")
    try:
        doc = json.loads(body)
    except ValueError:
        raise BootstrapError(f"GET {url} did not return JSON") from None
    # audit-ingest reports its counts since start; the ones about events or
    # batches received are the evidence that the webhook delivered something.
    return {k: v for k, v in _counters(doc).items()
            if any(w in k.lower() for w in ("event", "batch", "received", "request"))}


def verify_delivery(ctx: Ctx, gateway: str, token: str, *, timeout: float, poll: float) -> None:
    ctx.say("  checking that an audit event reaches audit-ingest ...")
    before = event_counters(ctx, gateway, token)
    if not before:
        raise BootstrapError("audit-ingest's GET response has no event counters to compare")
    name = "edgeguard-audit-probe-" + pysecrets.token_hex(4)
    for argv in (["kubectl", "create", "configmap", name, "-n", "default", "--from-literal=probe=edgeguard-bootstrap"],
                 ["kubectl", "delete", "configmap", name, "-n", "default", "--wait=false"]):
        ctx.say("  [probe] " + " ".join(argv))
        proc = ctx.query(argv, timeout=30)
        if proc.returncode != 0:
            raise BootstrapError(f"audit probe `{' '.join(argv)}` failed: {ctx.tail(proc.stderr, 300)}")
    deadline = time.monotonic() + timeout
    while True:
        after = event_counters(ctx, gateway, token)
        grown = {k: (before.get(k, 0), v) for k, v in after.items() if v > before.get(k, 0)}
        if grown:
            shown = ", ".join(f"{k} {a:g} -> {b:g}" for k, (a, b) in sorted(grown.items()))
            ctx.say(f"  audit events reach audit-ingest: {shown}")
            return
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll, left))
    log = ctx.read(LOG) or b""
    local = "the local audit log has the probe, so auditing works but the webhook did not deliver" \
        if name.encode() in log else "the local audit log does not have the probe either: is the audit policy loaded?"
    raise BootstrapError(f"no audit event reached audit-ingest within {int(timeout)}s; {local}. "
                         "Check `journalctl -u k3s | grep -i audit` for webhook errors.")
