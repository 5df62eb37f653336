"""openfaas: function secrets, API credentials for the three functions that call
Kubernetes, cron-connector, and optionally `faas-cli up`."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

from . import admission, facts, falco, openfaas_ce, rotation, scrubber_rbac, secretstore, tools, yamlout
from .engine import BootstrapError, Check, Ctx
from .kubeapply import apply_manifest

NS = facts.FUNCTION_NAMESPACE
API_SERVER = "https://kubernetes.default.svc:443"
SA_TOKENS_MANIFEST = "/var/lib/edgeguard/manifests/serviceaccount-tokens.yaml"
# ServiceAccount -> OpenFaaS secret that carries its kubeconfig. CE ignores
# com.openfaas.serviceaccount, so the function gets the credential as a secret.
SERVICE_ACCOUNTS = {
    "configmap-secret-scrubber": "configmap-secret-scrubber-kubeconfig",
    "node-enroll": "node-enroll-kubeconfig",
    # The spool handover across redeploys and the per-node alert tokens; without it both are off.
    "alert-forwarder": "alert-forwarder-kubeconfig",
}
# In this order: node-tokens-alert-forwarder.yaml grants in the namespace node-enroll.yaml declares.
RBAC_FILES = tuple(f"deploy/rbac/{sa}.yaml" for sa in SERVICE_ACCOUNTS) + (
    "deploy/rbac/node-tokens-alert-forwarder.yaml",
)


def token_secret_name(sa: str) -> str:
    # Not "<sa>-token": that name is taken by the function's OpenFaaS bearer-token secret.
    return f"{sa}-sa-token"


def defined_in(rbac_text: str, sa: str) -> bool:
    """Whether a function's own RBAC file already declares the token Secret we would create.

    Two sources applying the same object would make every `kubectl diff` report a change.
    """
    name = re.escape(token_secret_name(sa))
    return (
        bool(re.search(rf"^\s*name:\s*[\"']?{name}[\"']?\s*$", rbac_text, re.M))
        and "kubernetes.io/service-account-token" in rbac_text
    )


def sa_token_secret(sa: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(sa),
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
            "annotations": {"kubernetes.io/service-account.name": sa},
        },
        # A non-expiring token: an edge site can be offline for months, and
        # deleting this Secret revokes it.
        "type": "kubernetes.io/service-account-token",
    }


def sa_token_manifest(skip: tuple = ()) -> str | None:
    docs = [yamlout.dump(sa_token_secret(sa)) for sa in SERVICE_ACCOUNTS if sa not in skip]
    if not docs:
        return None
    return "# ServiceAccount token Secrets (edgeguard-bootstrap openfaas)\n" + "---\n".join(docs)


def function_kubeconfig(sa: str, token: str, ca_b64: str, server: str = API_SERVER) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {"server": server, "certificate-authority-data": ca_b64}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "in-cluster", "user": sa, "namespace": NS}}],
        "current-context": sa,
        "preferences": {},
    }
    return yamlout.dump(doc, f"ServiceAccount {NS}/{sa} (edgeguard-bootstrap openfaas)")


def checks(ctx: Ctx, gateway: str, repo: Path) -> list[Check]:
    result = [
        facts.check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"),
        facts.check_tool(ctx, "faas-cli", "install it: arkade get faas-cli"),
    ]
    if ctx.which("kubectl"):
        result.append(facts.check_cluster(ctx))
    gw = facts.check_gateway(ctx, gateway)
    result.append(gw)
    if gw.status == "pass" and ctx.which("faas-cli"):
        proc = ctx.query(["faas-cli", "secret", "list", "--gateway", gateway], timeout=30)
        if proc.returncode == 0:
            result.append(Check("faas-cli login", "pass", "faas-cli can use the gateway's secret API"))
        else:
            result.append(
                Check(
                    "faas-cli login",
                    "fail",
                    "faas-cli secret list failed; log in first: kubectl get "
                    "secret -n openfaas basic-auth -o jsonpath='{.data.basic-auth-password}' | base64 -d "
                    f"| faas-cli login --username admin --password-stdin --gateway {gateway}",
                )
            )
    missing = [f for f in RBAC_FILES if not (repo / f).is_file()]
    if missing:
        result.append(Check("rbac manifests", "fail", f"missing in {repo}: {', '.join(missing)}"))
    else:
        result.append(Check("rbac manifests", "pass", ", ".join(RBAC_FILES)))
    return result


def remote_secrets(ctx: Ctx) -> dict[str, bytes]:
    proc = ctx.query(["kubectl", "get", "secrets", "-n", NS, "-o", "json"], timeout=30)
    if proc.returncode != 0:
        if ctx.dry_run:
            return {}
        raise BootstrapError(f"cannot list secrets in {NS}: {ctx.tail(proc.stderr, 200)}")
    out: dict[str, bytes] = {}
    for item in json.loads(proc.stdout or "{}").get("items", []):
        name = item.get("metadata", {}).get("name")
        data = item.get("data") or {}
        # faas-cli stores the value under a key equal to the secret's name.
        raw = data.get(name)
        if name in secretstore.ALL and raw is not None:
            value = base64.b64decode(raw)
            out[name] = value
            secretstore.register(ctx, name, value)
    return out


def ensure_secret(ctx: Ctx, name: str, remote: dict[str, bytes], gateway: str, desired: bytes | None = None) -> None:
    """Make the OpenFaaS secret and the node copy hold the same value.

    An existing OpenFaaS secret wins over the node copy (it is what the
    functions use), except for values bootstrap derives (kubeconfigs).
    """
    local = secretstore.local(ctx, name)
    if desired is not None:
        value, origin = desired, "derived" if name in secretstore.KUBECONFIGS else "rotated"
    elif name in remote:
        value, origin = remote[name], "kept from OpenFaaS"
    elif local is not None:
        value, origin = local, "node copy"
    else:
        value, origin = secretstore.generate(name), "generated"
    secretstore.store(ctx, name, value, why=f"node copy of {name} ({origin})")
    src = str(ctx.host(secretstore.path(name)))
    if name not in remote:
        ctx.run(
            ["faas-cli", "secret", "create", name, f"--from-file={src}", "--gateway", gateway],
            why=f"OpenFaaS secret {name}",
        )
        ctx.record({"kind": "faas-secret", "name": name})
    elif remote[name] != value:
        ctx.run(
            ["faas-cli", "secret", "update", name, f"--from-file={src}", "--gateway", gateway],
            why=f"OpenFaaS secret {name} gets the {origin} value",
        )
    else:
        ctx.unchanged(f"OpenFaaS secret {name} up to date")
    ctx.say(f"    {name}: stored in {secretstore.path(name)} and as OpenFaaS secret {NS}/{name}")


def read_sa_token(ctx: Ctx, sa: str, timeout: float) -> tuple[str, str] | None:
    """(token, base64 CA) once the token controller has filled the Secret."""
    deadline = time.monotonic() + timeout
    while True:
        proc = ctx.query(["kubectl", "get", "secret", token_secret_name(sa), "-n", NS, "-o", "json"], timeout=30)
        if proc.returncode == 0:
            data = json.loads(proc.stdout).get("data") or {}
            if data.get("token") and data.get("ca.crt"):
                token = base64.b64decode(data["token"]).decode()
                ctx.add_secret(token)
                return token, data["ca.crt"]
        if ctx.dry_run or time.monotonic() > deadline:
            return None
        time.sleep(1)


ROTATABLE = secretstore.TOKENS + secretstore.KEYS


def run(
    ctx: Ctx,
    *,
    gateway: str,
    repo: Path,
    deploy: bool = False,
    cron_connector: bool = False,
    api_server: str = API_SERVER,
    token_timeout: float = 60.0,
    rotate: tuple = (),
    rotation_timeout: float = 300.0,
    scrubber_namespaces: tuple = (),
    scrubber_immutable_namespaces: tuple = (),
) -> None:
    ctx.section("openfaas: function secrets, ServiceAccount credentials, cron-connector")
    unknown = [n for n in rotate if n not in ROTATABLE]
    if unknown:
        raise BootstrapError(f"--rotate takes {', '.join(ROTATABLE)}; not {', '.join(unknown)}")
    tools.ensure(ctx, ("faas-cli",))
    ctx.require(
        checks(ctx, gateway, repo) + scrubber_rbac.checks(ctx, repo, scrubber_namespaces, scrubber_immutable_namespaces)
    )
    remote = remote_secrets(ctx)
    for name in secretstore.TOKENS + secretstore.KEYS + tuple(secretstore.PLACEHOLDERS):
        # A rotated token flows on within the same run: k3s-audit and falco read the new node copy.
        ensure_secret(ctx, name, remote, gateway, desired=secretstore.generate(name) if name in rotate else None)
    if rotate:
        ctx.note(
            "rotated: "
            + ", ".join(rotate)
            + ". Functions read secrets as OpenFaaS updates them"
            + (
                "; run `edgeguard-bootstrap k3s-audit` (or `all`) so the webhook kubeconfig carries the new "
                "audit-ingest-token"
                if "audit-ingest-token" in rotate
                else ""
            )
        )
    if "audit-ingest-token" in rotate:
        # Before k3s-audit writes it into the webhook kubeconfig and restarts k3s: the API server gives up on
        # a batch audit-ingest refuses.
        rotation.wait_accepted(
            ctx,
            gateway,
            "audit-ingest",
            secretstore.require_token(ctx, "audit-ingest-token"),
            rotation_timeout,
            then="give the API server's audit webhook the new token",
            if_refused="The webhook kubeconfig was left on the previous token, which audit-ingest still accepts, "
            "so no batch is lost: re-run `edgeguard-bootstrap k3s-audit` once it accepts the new one",
        )
    if "alert-forwarder-token" in rotate:
        # Right after the secret, before anything slow: Falco holds the old token until it restarts.
        falco.rotate(ctx, gateway=gateway, timeout=rotation_timeout)

    for rel in RBAC_FILES:
        apply_manifest(ctx, str(repo / rel), f"RBAC for {Path(rel).stem}")
    admission.run(ctx, repo)
    scrubber_rbac.run(ctx, repo, scrubber_namespaces, scrubber_immutable_namespaces)
    skip = tuple(
        sa
        for sa in SERVICE_ACCOUNTS
        if (repo / f"deploy/rbac/{sa}.yaml").is_file()
        and defined_in((repo / f"deploy/rbac/{sa}.yaml").read_text("utf-8", "replace"), sa)
    )
    for sa in skip:
        ctx.unchanged(f"token Secret {NS}/{token_secret_name(sa)} comes with deploy/rbac/{sa}.yaml")
    manifest = sa_token_manifest(skip)
    if manifest is not None:
        ctx.write_file(SA_TOKENS_MANIFEST, manifest, why="token Secrets of the ServiceAccounts")
        apply_manifest(ctx, str(ctx.host(SA_TOKENS_MANIFEST)), "ServiceAccount token Secrets")
    for sa, secret_name in SERVICE_ACCOUNTS.items():
        found = read_sa_token(ctx, sa, token_timeout)
        if found is None:
            if ctx.dry_run:
                ctx.change(
                    f"build {secret_name} from Secret {NS}/{token_secret_name(sa)} (token + CA) "
                    f"once the token controller fills it; server {api_server}"
                )
                ctx.change(
                    f"run: faas-cli secret create {secret_name} "
                    f"--from-file={ctx.host(secretstore.path(secret_name))} --gateway {gateway}"
                )
                continue
            raise BootstrapError(
                f"Secret {NS}/{token_secret_name(sa)} has no token after {int(token_timeout)}s: "
                f"does ServiceAccount {NS}/{sa} exist (see {repo}/deploy/rbac/{sa}.yaml)?"
            )
        token, ca = found
        kubeconfig = function_kubeconfig(sa, token, ca, api_server).encode()
        ensure_secret(ctx, secret_name, remote, gateway, desired=kubeconfig)

    openfaas_ce.run(ctx)
    cron(ctx, install=cron_connector)
    if deploy:
        ctx.run(
            ["faas-cli", "up", "-f", str(repo / "stack.yml")],
            env={"OPENFAAS_URL": gateway},
            cwd=str(repo),
            why="build, push and deploy the four functions",
        )


def cron(ctx: Ctx, install: bool) -> None:
    proc = ctx.query(["kubectl", "get", "deployment", "cron-connector", "-n", "openfaas", "-o", "name"], timeout=30)
    if proc.returncode == 0 and proc.stdout.strip():
        ctx.unchanged("cron-connector installed (it calls functions annotated topic: cron-function)")
        return
    if install:
        ctx.run(
            ["arkade", "install", "cron-connector"],
            why="schedules functions annotated topic: cron-function (alert-forwarder only with cron_flush)",
        )
        ctx.record({"kind": "helm", "release": "cron-connector", "namespace": "openfaas"})
        return
    ctx.note(
        "cron-connector is not installed, and edgeguard does not need it: alert-forwarder retries its spool "
        "itself (a background tick), and stack.yml gives it no cron annotations because cron-connector's "
        'call carries no token. Only if you set alert-forwarder\'s cron_flush: "true" and add the '
        'annotations (docs/alert-forwarder.md, "cron-connector") install it: `arkade install '
        "cron-connector`, or re-run with --cron-connector."
    )
