"""What the node is: arch, OS, kernel/driver, cgroups, k3s, tools, gateway.

Files are read under --root; host commands (uname, k3s, systemctl, kubectl)
go through the Ctx so tests can replace them with recording fakes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import runtime_env
from .audit_tls import check_traefik
from .engine import Check, Ctx

FUNCTIONS = ("audit-ingest", "alert-forwarder", "configmap-secret-scrubber", "node-enroll")
FUNCTION_NAMESPACE = "openfaas-fn"
AUDIT_DROPIN_NAME = "60-edgeguard-audit.yaml"

# Bootstrap tokens (used by node-enroll) exist from these k3s releases on,
# per minor line; 1.27 and later always have them.
_BOOTSTRAP_TOKEN_MIN = {23: (17, 1), 24: (11, 1), 25: (7, 1), 26: (2, 1)}


def uname(ctx: Ctx, flag: str) -> str:
    if flag in ctx.memo.get("uname", {}):
        return ctx.memo["uname"][flag]
    proc = ctx.query(["uname", flag])
    value = proc.stdout.strip() if proc.returncode == 0 else ""
    ctx.memo.setdefault("uname", {})[flag] = value
    return value


def os_release(ctx: Ctx) -> dict:
    raw = ctx.read("/etc/os-release") or ctx.read("/usr/lib/os-release") or b""
    info = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip().strip('"').strip("'")
    return info


def is_raspberry_pi_os(ctx: Ctx) -> bool:
    return ctx.read("/etc/rpi-issue") is not None or os_release(ctx).get("ID") == "raspbian"


def kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def driver_choice(ctx: Ctx, override: str | None = None) -> tuple[str, str]:
    """(driver, reason): modern_ebpf needs kernel >= 5.8 and BTF, else kmod."""
    if override:
        return override, f"--driver {override} given"
    release = uname(ctx, "-r")
    version = kernel_version(release)
    btf = ctx.host("/sys/kernel/btf/vmlinux").exists()
    if version and version >= (5, 8) and btf:
        return "modern_ebpf", f"kernel {release} >= 5.8 with BTF (/sys/kernel/btf/vmlinux)"
    why = []
    if not version or version < (5, 8):
        why.append(f"kernel {release or 'unknown'} is older than 5.8")
    if not btf:
        why.append("no BTF at /sys/kernel/btf/vmlinux (Raspberry Pi OS kernels ship without it)")
    return "kmod", "; ".join(why)


def cmdline_file(ctx: Ctx) -> str | None:
    for path in ("/boot/firmware/cmdline.txt", "/boot/cmdline.txt"):
        if ctx.host(path).exists():
            return path
    return None


def check_cgroups(ctx: Ctx) -> Check:
    controllers = ctx.read("/sys/fs/cgroup/cgroup.controllers")
    if controllers is not None:
        have = set(controllers.decode().split())
        missing = [c for c in ("cpu", "cpuset", "memory") if c not in have]
        kind = "cgroup v2"
    else:
        table = (ctx.read("/proc/cgroups") or b"").decode()
        enabled = {}
        for line in table.splitlines():
            parts = line.split()
            if len(parts) >= 4 and not line.startswith("#"):
                enabled[parts[0]] = parts[3] == "1"
        if not enabled:
            return Check("cgroups", "warn", "cannot read /sys/fs/cgroup/cgroup.controllers or /proc/cgroups")
        missing = [c for c in ("cpuset", "memory") if not enabled.get(c)]
        kind = "cgroup v1"
    if not missing:
        return Check("cgroups", "pass", f"{kind}: cpu, cpuset and memory controllers available")
    words = "cgroup_memory=1 cgroup_enable=memory"
    if "cpuset" in missing:
        words = "cgroup_enable=cpuset " + words
    target = cmdline_file(ctx)
    if target:
        fix = (
            f"append to the single line of {target}:\n  {words}\n"
            "then reboot and check: grep memory /sys/fs/cgroup/cgroup.controllers"
        )
    else:
        fix = f"add to GRUB_CMDLINE_LINUX in /etc/default/grub: {words}\nthen run update-grub and reboot"
    return Check("cgroups", "fail", f"{kind}: missing {', '.join(missing)} controller\n{fix}")


def parse_k3s_version(text: str) -> tuple[int, int, int, int] | None:
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None  # type: ignore[return-value]


def has_bootstrap_tokens(version: tuple[int, int, int, int]) -> bool:
    major, minor, patch, k3s = version
    if (major, minor) >= (1, 27):
        return True
    gate = _BOOTSTRAP_TOKEN_MIN.get(minor) if major == 1 else None
    return gate is not None and (patch, k3s) >= gate


def k3s_role(ctx: Ctx) -> str | None:
    """'server', 'agent' or None from systemd (k3s's installer names the units so)."""
    if "k3s_role" not in ctx.memo:
        role = None
        for unit, name in (("k3s", "server"), ("k3s-agent", "agent")):
            if ctx.query(["systemctl", "is-active", unit]).stdout.strip() == "active":
                role = name
                break
        ctx.memo["k3s_role"] = role
    return ctx.memo["k3s_role"]


def check_k3s(ctx: Ctx) -> Check:
    if skipped := ctx.skip_in_image("k3s"):
        return skipped
    proc = ctx.query(["k3s", "--version"])
    if proc.returncode != 0:
        return Check("k3s", "fail", "k3s is not installed (curl -sfL https://get.k3s.io | sh -)")
    version = parse_k3s_version(proc.stdout)
    if not version:
        return Check("k3s", "fail", f"cannot read the k3s version from: {proc.stdout.strip()[:80]}")
    shown = "v{}.{}.{}+k3s{}".format(*version)
    role = k3s_role(ctx)
    if role is None:
        return Check("k3s", "fail", f"k3s {shown} installed but neither k3s nor k3s-agent is active")
    if not has_bootstrap_tokens(version):
        return Check(
            "k3s",
            "fail",
            f"k3s {shown} ({role}) has no bootstrap tokens; node-enroll needs "
            "v1.26.2+k3s1 / v1.25.7+k3s1 / v1.24.11+k3s1 / v1.23.17+k3s1 or newer",
        )
    return Check("k3s", "pass", f"k3s {shown} running as {role}; bootstrap tokens supported")


def check_k3s_args(ctx: Ctx) -> Check:
    """Our drop-in only works if nothing later replaces kube-apiserver-arg."""
    problems = []
    for unit in ("/etc/systemd/system/k3s.service", "/lib/systemd/system/k3s.service"):
        text = (ctx.read(unit) or b"").decode("utf-8", "replace")
        if "kube-apiserver-arg" in text:
            problems.append(
                f"{unit} passes --kube-apiserver-arg on the command line; CLI flags replace the "
                "config files' list, so move those args into /etc/rancher/k3s/config.yaml"
            )
    env = (ctx.read("/etc/systemd/system/k3s.service.env") or b"").decode("utf-8", "replace")
    if re.search(r"^\s*K3S_CONFIG_FILE=", env, re.M):
        problems.append("K3S_CONFIG_FILE is set in k3s.service.env: the drop-in directory moves with it")
    dropins = ctx.host("/etc/rancher/k3s/config.yaml.d")
    if dropins.is_dir():
        for f in sorted(dropins.glob("*.yaml")):
            text = f.read_text("utf-8", "replace")
            if f.name > AUDIT_DROPIN_NAME and re.search(r"^kube-apiserver-arg\s*:", text, re.M):
                problems.append(
                    f"{f.name} sorts after {AUDIT_DROPIN_NAME} and sets kube-apiserver-arg without '+', "
                    "which drops our audit args; change it to kube-apiserver-arg+:"
                )
    if problems:
        return Check("k3s args", "fail", "\n".join(problems))
    return Check("k3s args", "pass", "no CLI flag or later drop-in overrides kube-apiserver-arg")


def check_arch(ctx: Ctx) -> Check:
    if skipped := ctx.skip_in_image("arch"):
        return skipped
    arch = uname(ctx, "-m")
    if arch in ("aarch64", "arm64", "x86_64", "amd64"):
        return Check("arch", "pass", arch)
    return Check("arch", "fail", f"{arch or 'unknown'}: Falco and the function images exist for arm64 and amd64 only")


def check_os(ctx: Ctx) -> Check:
    info = os_release(ctx)
    name = info.get("PRETTY_NAME") or info.get("ID") or "unknown"
    if is_raspberry_pi_os(ctx):
        return Check("os", "pass", f"{name} (Raspberry Pi OS)")
    if info.get("ID") == "ubuntu" and info.get("VERSION_ID") in ("22.04", "24.04"):
        return Check("os", "pass", name)
    if info.get("ID") == "debian":
        return Check("os", "pass", name)
    return Check("os", "warn", f"{name}: not a tested OS (Ubuntu 22.04/24.04, Raspberry Pi OS)")


def check_driver(ctx: Ctx, override: str | None = None) -> Check:
    if skipped := ctx.skip_in_image("falco driver"):
        return skipped
    driver, why = driver_choice(ctx, override)
    if driver == "modern_ebpf":
        return Check("falco driver", "pass", f"modern_ebpf: {why}")
    release = uname(ctx, "-r")
    missing = []
    if not ctx.host(f"/lib/modules/{release}/build").exists():
        missing.append(f"kernel headers (linux-headers-{release})")
    if not ctx.which("dkms"):
        missing.append("dkms")
    if not missing:
        return Check("falco driver", "pass", f"kmod: {why}; kernel headers and dkms present")
    return Check(
        "falco driver",
        "warn",
        f"kmod: {why}; not installed yet: {', '.join(missing)} (falco --mode host installs them)",
    )


def check_tool(ctx: Ctx, name: str, hint: str, status_if_missing: str = "fail", on_node: bool = True) -> Check:
    """on_node=False: a tool bootstrap itself runs on the machine it runs on (openssl), checked with --image too."""
    if on_node and (skipped := ctx.skip_in_image(name)):
        return skipped
    path = ctx.which(name)
    if path:
        return Check(name, "pass", path)
    return Check(name, status_if_missing, f"not found on PATH; {hint}")


def check_cluster(ctx: Ctx) -> Check:
    if skipped := ctx.skip_in_image("cluster"):
        return skipped
    proc = ctx.query(["kubectl", "get", "--raw", "/readyz"], timeout=30)
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return Check("cluster", "pass", "kubectl reaches the API server (/readyz ok)")
    return Check(
        "cluster",
        "fail",
        "kubectl cannot reach the API server: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][:160],
    )


def check_gateway(ctx: Ctx, gateway: str) -> Check:
    if skipped := ctx.skip_in_image("gateway"):
        return skipped
    status, body = ctx.http_get(gateway.rstrip("/") + "/healthz")
    if status == 200:
        return Check("gateway", "pass", f"{gateway}/healthz answers 200")
    why = f"HTTP {status}" if status else body.decode("utf-8", "replace")
    return Check("gateway", "fail", f"{gateway}/healthz: {why} (is OpenFaaS installed? arkade install openfaas-ce)")


def deployed_functions(ctx: Ctx) -> set[str] | None:
    proc = ctx.query(["kubectl", "get", "deployments", "-n", FUNCTION_NAMESPACE, "-o", "json"], timeout=30)
    if proc.returncode != 0:
        return None
    try:
        items = json.loads(proc.stdout).get("items", [])
    except ValueError:
        return None
    return {i.get("metadata", {}).get("name") for i in items}


def check_functions(ctx: Ctx) -> Check:
    names = deployed_functions(ctx)
    if names is None:
        return Check("functions", "warn", f"cannot list deployments in {FUNCTION_NAMESPACE}")
    missing = [f for f in FUNCTIONS if f not in names]
    if missing:
        return Check(
            "functions",
            "warn",
            f"not deployed yet: {', '.join(missing)} "
            "(edgeguard-bootstrap openfaas --deploy, or faas-cli up -f stack.yml)",
        )
    return Check("functions", "pass", "all four functions deployed")


def check_stack_environment(repo: Path | None) -> Check:
    """The stack.yml that `openfaas --deploy` hands to faas-cli sets none of the runtime's own variables."""
    stack = Path(repo) / "stack.yml" if repo else None
    if stack is None or not stack.is_file():
        return Check("stack.yml", "warn", f"no stack.yml in {repo} (--repo): its environment was not checked")
    found = {
        fn: runtime_env.collisions(keys)
        for fn, keys in runtime_env.stack_environment_keys(stack.read_text("utf-8", "replace")).items()
    }
    bad = {fn: keys for fn, keys in found.items() if keys}
    if not bad:
        return Check("stack.yml", "pass", "no function environment sets a variable of-watchdog or the template owns")
    lines = [
        f"{fn}: environment sets {', '.join(keys)}, which of-watchdog or the python3-http template owns"
        for fn, keys in sorted(bad.items())
    ]
    if any("mode" in keys for keys in bad.values()):
        lines.append(
            'the watchdog panics "unknown watchdog mode" and the function never starts: '
            "the scrubber's setting is now scrub_mode: rename mode: to scrub_mode: (README, breaking changes)"
        )
    return Check("stack.yml", "fail", "\n".join(lines))


def preflight_checks(ctx: Ctx, gateway: str, driver: str | None = None, repo: Path | None = None) -> list[Check]:
    checks = [check_arch(ctx), check_os(ctx), check_driver(ctx, driver), check_cgroups(ctx), check_k3s(ctx)]
    if k3s_role(ctx) == "server":
        checks.append(check_k3s_args(ctx))
    checks += [
        check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"),
        check_tool(ctx, "helm", "needed for falco --mode helm: arkade get helm", "warn"),
        check_tool(ctx, "faas-cli", "needed for the openfaas step: arkade get faas-cli"),
    ]
    cluster = check_cluster(ctx) if ctx.which("kubectl") else Check("cluster", "fail", "no kubectl")
    checks.append(cluster)
    checks.append(check_gateway(ctx, gateway))
    if cluster.status == "pass":
        checks.append(check_functions(ctx))
        # A warning here: k3s-audit with --audit-ca does not need Traefik, and k3s-audit itself refuses without.
        checks.append(check_traefik(ctx, "warn"))
    if repo is not None:
        checks.append(check_stack_environment(repo))
    return checks
