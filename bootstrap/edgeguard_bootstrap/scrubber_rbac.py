"""configmap-secret-scrubber's write access, granted one namespace at a time.

deploy/rbac/configmap-secret-scrubber.yaml only lets the scrubber read (cluster-wide). What it may change
comes from two templates rendered per namespace: the write Role (-namespace.yaml) and the opt-in for
replacing immutable ConfigMaps (-immutable.yaml). Without them the scrubber can report, not move.
"""

from __future__ import annotations

import re

from .engine import BootstrapError, Check, Ctx
from .kubeapply import apply_manifest

WRITE_TEMPLATE = "deploy/rbac/configmap-secret-scrubber-namespace.yaml"
IMMUTABLE_TEMPLATE = "deploy/rbac/configmap-secret-scrubber-immutable.yaml"
PLACEHOLDER = "__NAMESPACE__"
MANIFEST_DIR = "/var/lib/edgeguard/manifests"
# The system namespaces, and OpenFaaS's own: openfaas-fn holds every function's secrets, so write access
# there would hand the scrubber the other functions' credentials.
REFUSED = ("kube-system", "kube-public", "kube-node-lease", "openfaas", "openfaas-fn")
# Earlier versions granted the immutable opt-in cluster-wide under this name (ClusterRole + binding).
LEGACY = "edgeguard:configmap-secret-scrubber-immutable"
LEGACY_KINDS = "clusterrolebinding,clusterrole"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KINDS = {"write": WRITE_TEMPLATE, "immutable": IMMUTABLE_TEMPLATE}


def parse(values: list[str] | None, option: str) -> tuple[str, ...]:
    """`--option a,b --option c` -> ("a", "b", "c"); refuses names that are invalid or never allowed."""
    names: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    for name in names:
        if name in REFUSED:
            raise BootstrapError(
                f"{option}: refusing {name}: the scrubber must never change {', '.join(REFUSED)} "
                "(system namespaces, and openfaas-fn holds every function's secrets)"
            )
        if len(name) > 63 or not _DNS_LABEL.match(name):
            raise BootstrapError(f"{option}: {name!r} is not a namespace name (lowercase letters, digits, '-')")
    return tuple(names)


def parse_options(write: list[str] | None, immutable: list[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ns = parse(write, "--scrubber-namespaces")
    imm = parse(immutable, "--scrubber-immutable-namespaces")
    missing = [n for n in imm if n not in ns]
    if missing:
        raise BootstrapError(
            f"--scrubber-immutable-namespaces {','.join(missing)}: give "
            f"{'them' if len(missing) > 1 else 'it'} in --scrubber-namespaces too (replacing an "
            "immutable ConfigMap also patches workloads and writes the Secret)"
        )
    return ns, imm


def manifest_path(kind: str, ns: str) -> str:
    return f"{MANIFEST_DIR}/configmap-secret-scrubber-{kind}-{ns}.yaml"


def render(template: str, ns: str, source: str) -> str:
    if PLACEHOLDER not in template:
        raise BootstrapError(f"{source} has no {PLACEHOLDER} placeholder; is it still a per-namespace template?")
    return f"# {source} for namespace {ns} (edgeguard-bootstrap openfaas)\n" + template.replace(PLACEHOLDER, ns)


def checks(ctx: Ctx, repo, namespaces: tuple, immutable: tuple) -> list[Check]:
    result = []
    needed = ([WRITE_TEMPLATE] if namespaces else []) + ([IMMUTABLE_TEMPLATE] if immutable else [])
    missing = [f for f in needed if not (repo / f).is_file()]
    if missing:
        result.append(Check("scrubber templates", "fail", f"missing in {repo}: {', '.join(missing)}"))
    for ns in namespaces:
        proc = ctx.query(["kubectl", "get", "namespace", ns, "-o", "name"], timeout=30)
        if proc.returncode == 0:
            result.append(Check(f"namespace {ns}", "pass", "exists; the scrubber may change ConfigMaps there"))
        else:
            result.append(Check(f"namespace {ns}", "fail", f"kubectl get namespace {ns}: {ctx.tail(proc.stderr, 160)}"))
    return result


def remove_legacy(ctx: Ctx) -> None:
    proc = ctx.query(["kubectl", "get", LEGACY_KINDS, LEGACY, "-o", "name", "--ignore-not-found"], timeout=30)
    if proc.returncode != 0:
        if ctx.dry_run:
            ctx.note(f"cannot tell whether the old cluster-wide {LEGACY} exists: {ctx.tail(proc.stderr, 160)}")
            return
        raise BootstrapError(f"kubectl get {LEGACY_KINDS} {LEGACY} failed: {ctx.tail(proc.stderr, 300)}")
    if not proc.stdout.strip():
        return
    # Not recorded for revert: putting back create/delete on ConfigMaps in every namespace is no undo anyone wants.
    ctx.run(
        ["kubectl", "delete", LEGACY_KINDS, LEGACY, "--ignore-not-found"],
        why="the old cluster-wide immutable opt-in (create/delete ConfigMaps everywhere); now per namespace",
    )


def run(ctx: Ctx, repo, namespaces: tuple, immutable: tuple) -> None:
    remove_legacy(ctx)
    if not namespaces:
        ctx.note(
            "no --scrubber-namespaces: configmap-secret-scrubber can only REPORT credentials in ConfigMaps, "
            "not move them (the API refuses its writes everywhere). To let it change namespace NS: "
            f"--scrubber-namespaces NS (never {', '.join(REFUSED)})"
        )
    for kind, names in (("write", namespaces), ("immutable", immutable)):
        template = KINDS[kind]
        for ns in names:
            text = render((repo / template).read_text("utf-8"), ns, template)
            path = manifest_path(kind, ns)
            ctx.write_file(path, text, why=f"{template} rendered for namespace {ns}")
            apply_manifest(ctx, str(ctx.host(path)), f"configmap-secret-scrubber {kind} access in {ns}")
    wanted = {manifest_path(k, ns) for k, names in (("write", namespaces), ("immutable", immutable)) for ns in names}
    prefix = f"{MANIFEST_DIR}/configmap-secret-scrubber-"
    for path in sorted(ctx.state.get("files", {})):
        if path.startswith(prefix) and path not in wanted:
            ctx.note(
                f"{path} (applied by an earlier run) is not in this run's namespaces and stays in force; "
                f"withdraw it with: kubectl delete -f {path}  (or `edgeguard-bootstrap revert`)"
            )
