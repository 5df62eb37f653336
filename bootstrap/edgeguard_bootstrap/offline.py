"""offline: every image the bundle needs starts from the node itself when the uplink is down.

Why this shape (sources in docs/bootstrap.md, "Restart offline"):
- OpenFaaS CE deploys functions with imagePullPolicy Always. With Always the kubelet asks the
  runtime to pull on every start, and containerd resolves the tag at a registry even when the image
  is already on the node; an image pre-loaded into containerd alone does not help.
- k3s's embedded registry mirror (Spegel, `embedded-registry: true`) serves a mirrored registry's
  images from the nodes' containerd stores, this node's own included, and containerd tries it
  before the upstream registry. So an Always pull of an image the node holds resolves offline.
  Mirroring is enabled per registry in /etc/rancher/k3s/registries.yaml.
- Images listed in a text file in /var/lib/rancher/k3s/agent/images/ are pulled by k3s and pinned,
  so the kubelet's image garbage collection never removes them.
- Everything else (OpenFaaS's core components with openfaasImagePullPolicy=IfNotPresent, Falco's
  IfNotPresent images) only has to be in the store.

Only the node bootstrap runs on (a k3s server) gets registries.yaml: a node takes part in the
embedded mirror only if its registries.yaml lists the registry, and every node that takes part can
serve images to the others, so an agent is not made a peer of the server by this step.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from . import facts, k3s_restart, yamlout
from .engine import BootstrapError, Check, Ctx

REGISTRIES = "/etc/rancher/k3s/registries.yaml"
CONFIG = "/etc/rancher/k3s/config.yaml"
CONFIG_DIR = "/etc/rancher/k3s/config.yaml.d"
DROPIN = f"{CONFIG_DIR}/61-edgeguard-offline.yaml"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"
PREIMPORT = f"{IMAGES_DIR}/edgeguard-images.txt"
NAMESPACES = ("openfaas", "openfaas-fn", "falco")
PINNED = "io.cri-containerd.pinned=pinned"
PENDING = "k3s_restart_pending_offline"

# k3s releases (per minor line) from which k3s pulls and pins the images of a .txt file in
# agent/images while running; 1.33 and later always can (docs/import-images.md).
_PREIMPORT_MIN = {29: (13, 1), 30: (9, 1), 31: (5, 1), 32: (0, 1)}
# The first release seen answering this node's own Always pull from its own store through the
# embedded mirror (k3s-io/k3s#12799 reports v1.32.5+k3s1 doing so and v1.31.4+k3s1 not).
SELF_SERVE_SEEN = (1, 32, 5, 1)


def normalize(ref: str) -> str:
    """An image reference as containerd names it: docker.io/library/ for bare names, :latest for no tag."""
    ref = ref.strip()
    first, _, rest = ref.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        ref = "docker.io/" + (ref if rest else "library/" + ref)
    name = ref.split("@", 1)[0]
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in ref:
        ref += ":latest"
    return ref


def registry(ref: str) -> str:
    return normalize(ref).split("/", 1)[0]


def _pull_policy(container: dict) -> str:
    policy = container.get("imagePullPolicy")
    if policy:
        return policy
    image = normalize(container.get("image", ""))
    return "Always" if image.endswith(":latest") else "IfNotPresent"


def workload_images(ctx: Ctx) -> tuple[dict[str, dict], list[str]]:
    """image -> {policy, where} for every container of the bundle's namespaces; and namespaces not readable."""
    images: dict[str, dict] = {}
    unreadable = []
    for ns in NAMESPACES:
        proc = ctx.query(["kubectl", "get", "deployments,daemonsets,statefulsets", "-n", ns, "-o", "json"], timeout=30)
        if proc.returncode != 0:
            unreadable.append(ns)
            continue
        try:
            items = json.loads(proc.stdout or "{}").get("items", [])
        except ValueError:
            unreadable.append(ns)
            continue
        for item in items:
            spec = ((item.get("spec") or {}).get("template") or {}).get("spec") or {}
            where = f"{ns}/{item.get('kind', '?').lower()}/{item.get('metadata', {}).get('name', '?')}"
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if not c.get("image"):
                    continue
                ref = normalize(c["image"])
                entry = images.setdefault(ref, {"policy": _pull_policy(c), "where": where})
                if _pull_policy(c) == "Always":
                    entry["policy"] = "Always"
    return images, unreadable


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def stack_images(repo: Path, env: dict) -> list[str]:
    """The functions' images as `faas-cli` would expand stack.yml (${VAR} and ${VAR:-default})."""
    path = repo / "stack.yml"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8", "replace").splitlines():
        m = re.match(r"^\s{4}image:\s*(\S+)\s*$", line)
        if m:
            value = _ENV.sub(lambda v: env.get(v.group(1)) or (v.group(2) or ""), m.group(1).strip("'\""))
            out.append(normalize(value))
    return out


def bundle_images(ctx: Ctx, repo: Path) -> tuple[dict[str, dict], list[str]]:
    images, unreadable = workload_images(ctx)
    for ref in stack_images(repo, ctx.env):
        # OpenFaaS CE deploys every function with imagePullPolicy Always (faas-netes; other policies are Pro).
        images.setdefault(ref, {"policy": "Always", "where": "stack.yml"})["policy"] = "Always"
    return images, unreadable


def local_store(ctx: Ctx) -> dict[str, bool] | None:
    """ref -> pinned, from `k3s ctr -n k8s.io images list` (None when it cannot be read)."""
    proc = ctx.query(["k3s", "ctr", "-n", "k8s.io", "images", "list"], timeout=60)
    if proc.returncode != 0:
        return None
    store = {}
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split()
        if cols:
            store[cols[0]] = PINNED in cols[-1]
    return store


def mirrored(ctx: Ctx) -> set[str] | None:
    """Registries listed under `mirrors:` in registries.yaml (None: no file). A plain reading of the
    block style k3s documents; "*" stands for every registry."""
    text = ctx.read(REGISTRIES)
    if text is None:
        return None
    found, inside = set(), False
    for line in text.decode("utf-8", "replace").splitlines():
        if re.match(r"^mirrors\s*:", line):
            inside = True
            continue
        if inside and re.match(r"^\S", line):
            inside = False
        # A key is quoted, or plain up to the first ':' followed by a space or the line's end, so
        # "registry.local:5000:" is the registry registry.local:5000.
        m = re.match(r"""^( +)(?:"([^"]+)"|'([^']+)'|([^\s"'#][^\s]*?))\s*:(?:\s|$)""", line) if inside else None
        if m and len(m.group(1)) <= 2:
            found.add(m.group(2) or m.group(3) or m.group(4))
    return found


def embedded_registry_on(ctx: Ctx) -> bool:
    files = (
        [CONFIG] + sorted(str(Path(CONFIG_DIR) / p.name) for p in ctx.host(CONFIG_DIR).glob("*.yaml"))
        if ctx.host(CONFIG_DIR).is_dir()
        else [CONFIG]
    )
    on = False
    for f in files:  # later files win, as k3s merges them
        text = (ctx.read(f) or b"").decode("utf-8", "replace")
        m = re.search(r"^embedded-registry\s*:\s*(\S+)", text, re.M)
        if m:
            on = m.group(1).strip("'\"").lower() == "true"
    return on


def k3s_version(ctx: Ctx):
    if "k3s_version" not in ctx.memo:
        proc = ctx.query(["k3s", "--version"])
        ctx.memo["k3s_version"] = facts.parse_k3s_version(proc.stdout) if proc.returncode == 0 else None
    return ctx.memo["k3s_version"]


def preimport_supported(version) -> bool:
    major, minor, patch, k3s = version
    if (major, minor) >= (1, 33):
        return True
    gate = _PREIMPORT_MIN.get(minor) if major == 1 else None
    return gate is not None and (patch, k3s) >= gate


def falcoctl_problem(ctx: Ctx) -> str | None:
    """What makes Falco fetch rules or plugins at start, or None."""
    from . import falco

    listed = ctx.query(["helm", "list", "-n", falco.NAMESPACE, "-o", "json"])
    names = set()
    if listed.returncode == 0:
        try:
            names = {r.get("name") for r in json.loads(listed.stdout or "[]")}
        except ValueError:
            names = set()
    if falco.RELEASE in names:
        got = ctx.query(["helm", "get", "values", falco.RELEASE, "-n", falco.NAMESPACE, "-o", "json"])
        try:
            values = json.loads(got.stdout or "{}") if got.returncode == 0 else {}
        except ValueError:
            values = {}
        artifact = ((values or {}).get("falcoctl") or {}).get("artifact") or {}
        on = [step for step in ("install", "follow") if (artifact.get(step) or {}).get("enabled", True) is not False]
        if on:
            return (
                f"Falco's falcoctl {' and '.join(on)} enabled (helm release {falco.RELEASE}): it downloads rules "
                "and plugins from falcosecurity.github.io and ghcr.io at start (edgeguard-bootstrap falco "
                "turns it off)"
            )
        return None
    if ctx.query(["systemctl", "is-enabled", falco.FALCOCTL_UNIT]).stdout.strip() == "enabled":
        return (
            f"{falco.FALCOCTL_UNIT} enabled: it fetches rules from the internet "
            "(edgeguard-bootstrap falco --mode host turns it off)"
        )
    return None


def check(ctx: Ctx, repo: Path) -> Check:
    """preflight's "offline ready": what a restart with the uplink down would still fetch from the internet."""
    images, unreadable = bundle_images(ctx, repo)
    store = local_store(ctx)
    mirrors = mirrored(ctx) or set()
    embedded = embedded_registry_on(ctx)
    version = k3s_version(ctx)
    needs: list[str] = []
    for ref, info in sorted(images.items()):
        reg = registry(ref)
        if store is not None and ref not in store:
            needs.append(f"{ref}: not in this node's image store ({info['where']}); pulled from {reg}")
        elif store is not None and not store[ref]:
            needs.append(f"{ref}: in the store but not pinned, so image garbage collection may remove it")
        if info["policy"] == "Always" and not (embedded and (reg in mirrors or "*" in mirrors)):
            needs.append(
                f"{ref}: imagePullPolicy Always ({info['where']}) resolves the tag at {reg} on every "
                f"start: {reg} is not mirrored through k3s's embedded registry"
            )
    problem = falcoctl_problem(ctx)
    if problem:
        needs.append(problem)
    notes = []
    if store is None:
        notes.append("cannot read the image store (`k3s ctr -n k8s.io images list`, needs root)")
    if unreadable:
        notes.append(f"cannot list workloads in {', '.join(unreadable)}")
    if version and any(i["policy"] == "Always" for i in images.values()) and version < SELF_SERVE_SEEN:
        notes.append(
            "k3s v{}.{}.{}+k3s{} is older than v1.32.5+k3s1, the first release seen serving a node's "
            "own Always pulls from its store through the embedded mirror (k3s-io/k3s#12799)".format(*version)
        )
    if needs:
        return Check(
            "offline ready",
            "warn",
            "would need the internet:\n" + "\n".join(needs + notes) + "\nfix: edgeguard-bootstrap offline",
        )
    if notes:
        return Check("offline ready", "warn", "\n".join(notes))
    return Check(
        "offline ready",
        "pass",
        f"{len(images)} images in the store and pinned; Always pulls served by "
        "the embedded mirror; Falco fetches nothing",
    )


def registries_text(registries: list[str]) -> str:
    header = (
        "Written by edgeguard-bootstrap offline: these registries are mirrored through k3s's embedded\n"
        "registry (embedded-registry: true), so an Always pull of an image this node holds resolves\n"
        "from its own store when the uplink is down. An empty entry = no extra endpoint; the\n"
        "registry itself stays the fallback."
    )
    return yamlout.dump({"mirrors": {r: {} for r in registries}}, header)


def checks(ctx: Ctx) -> list[Check]:
    result = [facts.check_k3s(ctx)]
    role = facts.k3s_role(ctx)
    if role == "agent":
        result.append(Check("k3s role", "fail", "embedded-registry is a k3s server setting; run this on the server"))
    version = k3s_version(ctx)
    if version and not preimport_supported(version):
        result.append(
            Check(
                "k3s images",
                "fail",
                "k3s v{}.{}.{}+k3s{} does not pull and pin the images of a list "
                "in agent/images (v1.29.13+k3s1, v1.30.9+k3s1, v1.31.5+k3s1, "
                "v1.32.0+k3s1 or newer)".format(*version),
            )
        )
    result.append(facts.check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"))
    return result


def run(ctx: Ctx, *, repo: Path, timeout: float = 600.0, poll: float = 10.0) -> None:
    ctx.section("offline: the bundle's images resolvable on this node with the uplink down")
    ctx.require(checks(ctx))
    images, unreadable = bundle_images(ctx, repo)
    if unreadable:
        ctx.note(f"cannot list workloads in {', '.join(unreadable)}; only stack.yml's images for those")
    if not images:
        raise BootstrapError("no images found (no workloads in openfaas, openfaas-fn, falco and no stack.yml)")
    always = sorted({registry(r) for r, i in images.items() if i["policy"] == "Always"})
    changed = False
    existing = mirrored(ctx)
    ours = REGISTRIES in ctx.state.get("files", {})
    if existing is None or ours:
        wanted = sorted(set(always) | (existing or set() if ours else set()))
        changed |= ctx.write_file(
            REGISTRIES,
            registries_text(wanted),
            mode=0o600,
            why=f"mirror {', '.join(wanted)} through the embedded registry",
        )
    else:
        missing = [r for r in always if r not in existing and "*" not in existing]
        if missing:
            lines = "\n".join(f"    {r}:" for r in missing)
            ctx.say(
                f"  !! {REGISTRIES} is not bootstrap's (it may hold credentials); add under `mirrors:`\n{lines}\n"
                "     then restart k3s, so Always pulls of these registries resolve offline"
            )
        else:
            ctx.unchanged(f"{REGISTRIES} mirrors {', '.join(always)}")
    if embedded_registry_on(ctx) and ctx.read(DROPIN) is None:
        ctx.unchanged("embedded-registry already enabled in k3s's configuration")
    else:
        changed |= ctx.write_file(
            DROPIN,
            yamlout.dump(
                {"embedded-registry": True},
                "Written by edgeguard-bootstrap offline; undo with: edgeguard-bootstrap revert",
            ),
            mode=0o600,
            why="k3s's embedded registry mirror (Spegel)",
        )
    listing = "".join(f"{ref}\n" for ref in sorted(images))
    ctx.write_file(
        PREIMPORT,
        "# edgeguard-bootstrap offline: k3s pulls and pins these images\n" + listing,
        why="k3s pulls these images and pins them against image garbage collection",
    )
    if ctx.image:
        return

    def after_restart(restarted: bool) -> None:
        if ctx.dry_run:
            return
        if ctx.state.get(PENDING):
            ctx.note(
                "k3s pulls and pins the images after its restart; `edgeguard-bootstrap preflight` shows the result"
            )
            return
        wait_pinned(ctx, sorted(images), timeout=timeout, poll=poll)

    # k3s reads registries.yaml and embedded-registry only at start (docs/installation/private-registry.md).
    k3s_restart.restart_then(
        ctx, k3s_restart.Request(changed, PENDING, "registries.yaml and the embedded registry mirror", after_restart)
    )


def wait_pinned(ctx: Ctx, refs: list[str], *, timeout: float, poll: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        store = local_store(ctx)
        if store is None:
            ctx.say("  !! cannot read the image store (`k3s ctr -n k8s.io images list`); check later with preflight")
            return
        waiting = [r for r in refs if not store.get(r)]
        if not waiting:
            ctx.say(f"  all {len(refs)} images are in the store and pinned")
            return
        if time.monotonic() > deadline:
            ctx.say(
                f"  !! {len(waiting)} of {len(refs)} images not pulled and pinned yet after {int(timeout)}s "
                f"(k3s pulls them one by one): {', '.join(waiting)}; `edgeguard-bootstrap preflight` shows "
                "what is still missing"
            )
            return
        time.sleep(poll)
