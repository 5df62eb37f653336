"""falco: install Falco (Helm chart or host package) posting JSON alerts to alert-forwarder."""
from __future__ import annotations

import json
import urllib.parse

from . import facts, secretstore, tools, yamlout
from .engine import BootstrapError, Check, Ctx, sha256

CHART_REPO = ("falcosecurity", "https://falcosecurity.github.io/charts")
CHART = "falcosecurity/falco"
CHART_VERSION = "9.1.0"  # the values keys below are checked against this chart's values.yaml
RELEASE = "falco"
NAMESPACE = "falco"
VALUES = "/var/lib/edgeguard/falco-values.yaml"
IN_CLUSTER_GATEWAY = "http://gateway.openfaas.svc.cluster.local:8080"

KEY_URL = "https://falco.org/repo/falcosecurity-packages.asc"
KEY_FINGERPRINT = "478B2FBBC75F4237B731DA4365106822B35B1B1F"  # rotated Dec 2025
KEY_DOWNLOAD = "/var/lib/edgeguard/falcosecurity-packages.asc"
KEYRING = "/usr/share/keyrings/falco-archive-keyring.gpg"
APT_SOURCE = "/etc/apt/sources.list.d/falcosecurity.list"
APT_LINE = f"deb [signed-by={KEYRING}] https://download.falco.org/packages/deb stable main\n"
DROPIN = "/etc/falco/config.d/60-edgeguard.yaml"
UNITS = {"modern_ebpf": "falco-modern-bpf.service", "kmod": "falco-kmod.service"}

# Falco 0.38+ merges each config.d file into falco.yaml one top-level key at a time
# (userspace/engine/yaml_helper.h, include_config_file, strategy "append"): a sequence is
# appended, anything else (a scalar or a whole map) replaces the key. So a drop-in that sets
# one field of a map drops the map's other fields, and a missing `actions` means an empty
# list, which Falco treats as "ignore". Every map below is restated whole, from Falco
# 0.44.1's defaults as the falcosecurity/falco 9.1.0 chart documents them (checked against
# tests/data/k3s/falco-chart-values.yaml).
#
# On a busy Pi 4 the ring buffer overflows now and then. Falco's default (rate 0.03333: a
# notice every 30 s) turns each overflow into an internal alert that would reach
# alert-forwarder as noise; one every 100 s is enough to notice.
SYSCALL_EVENT_DROPS = {"threshold": 0.1, "actions": ["log", "alert"], "rate": 0.01, "max_burst": 1,
                       "simulate_drops": False}
HTTP_OUTPUT_DEFAULTS = {
    "enabled": False, "url": "", "user_agent": "falcosecurity/falco", "insecure": False, "ca_cert": "",
    "ca_bundle": "", "ca_path": "/etc/falco/certs/", "mtls": False,
    "client_cert": "/etc/falco/certs/client/client.crt", "client_key": "/etc/falco/certs/client/client.key",
    "echo": False, "compress_uploads": False, "keep_alive": False, "max_consecutive_timeouts": 5,
}

# Offline start: rules (/etc/falco/falco_rules.yaml) and the container plugin
# (/usr/share/falco/plugins/libcontainer.so) ship in the Falco image and package, so falcoctl
# neither installs nor follows anything (it would download from falcosecurity.github.io and
# ghcr.io at every start). With falcoctl off the image's own /etc/falco/config.d becomes
# visible, and its falco.container_plugin.yaml loads the container plugin a second time next to
# the chart's falco.yaml: Falco 0.44.1 then exits with "found another plugin with name container"
# (falcosecurity/charts#1057; fixed in chart 9.2.0 by always mounting an emptyDir there,
# falcosecurity/falco#3984). The chart already mounts one for kmod (its driver loader's); for
# modern_ebpf these values add it.
FALCOCTL_OFF = {"artifact": {"install": {"enabled": False}, "follow": {"enabled": False}}}
EMPTY_CONFIG_D = {
    "volumes": [{"name": "edgeguard-empty-config-d", "emptyDir": {}}],
    "volumeMounts": [{"name": "edgeguard-empty-config-d", "mountPath": "/etc/falco/config.d"}],
}
FALCOCTL_UNIT = "falcoctl-artifact-follow.service"

# The chart requests 512Mi, which with OpenFaaS CE's defaults does not schedule on a 2 GB Pi
# (docs/bootstrap.md, "Memory on a 2 GB Pi"). 256Mi is not a measured figure; the limit stays at
# the chart's 1Gi so a rules reload is not OOM-killed, and system-node-critical keeps the node's
# detector the last pod the kubelet evicts under memory pressure.
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}
PRIORITY_CLASS = "system-node-critical"


def alert_url(gateway: str, token: str) -> str:
    """http_output's URL, the token in its user part: Falco cannot set headers, and libcurl sends the user
    part as Basic auth. Never in the query: of-watchdog logs every request line, query included."""
    parts = urllib.parse.urlsplit(gateway.rstrip("/"))
    netloc = f"falco:{urllib.parse.quote(token, safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + "/function/alert-forwarder", "", ""))


def falco_settings(url: str) -> dict:
    """The falco.yaml settings both modes share (validated against Falco's schema in tests)."""
    return {
        "json_output": True,
        "json_include_output_property": True,
        "json_include_tags_property": True,
        "http_output": dict(HTTP_OUTPUT_DEFAULTS, enabled=True, url=url),
        "syscall_event_drops": dict(SYSCALL_EVENT_DROPS),
    }


def helm_values(driver: str, url: str) -> dict:
    values = {
        "driver": {"kind": driver},
        "resources": RESOURCES,
        "podPriorityClassName": PRIORITY_CLASS,
        "falcoctl": FALCOCTL_OFF,
        # Restate the chart's control-plane tolerations (setting the list
        # replaces it) and add k3s's optional CriticalAddonsOnly server taint,
        # so the single-node server of an edge site is watched too.
        "tolerations": [
            {"effect": "NoSchedule", "key": "node-role.kubernetes.io/master"},
            {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ],
        "falco": falco_settings(url),
    }
    if driver == "modern_ebpf":
        values["mounts"] = EMPTY_CONFIG_D
    return values


def dropin(url: str) -> str:
    return yamlout.dump(falco_settings(url), "Written by edgeguard-bootstrap falco --mode host. Falco merges it into\n"
                                             "falco.yaml key by key: each map here replaces falco.yaml's, so\n"
                                             "every map is written whole.")


def checks(ctx: Ctx, mode: str, driver: str | None) -> list[Check]:
    result = [facts.check_arch(ctx), facts.check_os(ctx), facts.check_driver(ctx, driver)]
    if mode == "helm":
        result.append(facts.check_tool(ctx, "helm", "install it: arkade get helm"))
        result.append(facts.check_tool(ctx, "kubectl", "k3s installs it as a link to k3s"))
        if ctx.which("kubectl"):
            result.append(facts.check_cluster(ctx))
    else:
        result.append(facts.check_tool(ctx, "apt-get", "host mode supports Debian/Ubuntu/Raspberry Pi OS"))
        result.append(facts.check_tool(ctx, "systemctl", "host mode needs systemd"))
    return result


def run(ctx: Ctx, *, mode: str, gateway: str, falco_gateway: str | None = None, driver: str | None = None,
        deb: str | None = None, headers_package: str | None = None) -> None:
    ctx.section(f"falco --mode {mode}: Falco with JSON alerts to alert-forwarder")
    if mode == "helm" and not ctx.image:
        tools.ensure(ctx, ("helm",))
    ctx.require(checks(ctx, mode, driver))
    if ctx.image and not driver:
        raise BootstrapError("--image needs --driver modern_ebpf|kmod: the image's kernel is not this machine's")
    kind, why = facts.driver_choice(ctx, driver)
    ctx.say(f"  driver: {kind} ({why})")
    token = secretstore.require_token(ctx, "alert-forwarder-token")
    ctx.note(f"http_output carries alert-forwarder-token in its URL's user part, sent as Basic auth (stored in "
             f"{secretstore.path('alert-forwarder-token')})")
    if mode == "helm":
        run_helm(ctx, kind, alert_url(falco_gateway or IN_CLUSTER_GATEWAY, token))
    else:
        run_host(ctx, kind, alert_url(falco_gateway or gateway, token), deb, headers_package)


def run_helm(ctx: Ctx, driver: str, url: str) -> None:
    values = helm_values(driver, url)
    ctx.write_file(VALUES, yamlout.dump(values, f"Helm values for {CHART} {CHART_VERSION} (edgeguard-bootstrap)"),
                   mode=0o600, why="Falco chart values (holds the alert-forwarder token)")
    repos = ctx.query(["helm", "repo", "list", "-o", "json"])
    names = set()
    if repos.returncode == 0:
        try:
            names = {r.get("name") for r in json.loads(repos.stdout or "[]")}
        except ValueError:
            names = set()
    if CHART_REPO[0] in names:
        ctx.unchanged(f"helm repo {CHART_REPO[0]} present")
    else:
        ctx.run(["helm", "repo", "add", *CHART_REPO], why="Falco's chart repository")
    if release_matches(ctx, values):
        ctx.unchanged(f"helm release {RELEASE} ({CHART}-{CHART_VERSION}) deployed with these values")
        return
    ctx.run(["helm", "repo", "update", CHART_REPO[0]])
    ctx.run(["helm", "upgrade", "--install", RELEASE, CHART, "--namespace", NAMESPACE, "--create-namespace",
             "--version", CHART_VERSION, "--values", str(ctx.host(VALUES)), "--wait", "--timeout", "10m"],
            why="install or update Falco")
    ctx.record({"kind": "helm", "release": RELEASE, "namespace": NAMESPACE})


def release_matches(ctx: Ctx, values: dict) -> bool:
    listed = ctx.query(["helm", "list", "-n", NAMESPACE, "-o", "json"])
    if listed.returncode != 0:
        return False
    try:
        releases = {r.get("name"): r for r in json.loads(listed.stdout or "[]")}
    except ValueError:
        return False
    rel = releases.get(RELEASE)
    if not rel or rel.get("chart") != f"falco-{CHART_VERSION}" or rel.get("status") != "deployed":
        return False
    got = ctx.query(["helm", "get", "values", RELEASE, "-n", NAMESPACE, "-o", "json"])
    if got.returncode != 0:
        return False
    try:
        return json.loads(got.stdout) == json.loads(json.dumps(values))
    except ValueError:
        return False


def run_host(ctx: Ctx, driver: str, url: str, deb: str | None, headers_package: str | None) -> None:
    installed = ctx.query(["dpkg-query", "-W", "-f=${Status}", "falco"])
    is_installed = installed.returncode == 0 and "install ok installed" in installed.stdout
    if driver == "kmod" and ctx.image and not headers_package:
        # The image's kernel release is only known on the node itself.
        ctx.deferred.append('DEBIAN_FRONTEND=noninteractive apt-get install -y dkms make "linux-headers-$(uname -r)"')
    elif driver == "kmod":
        release = facts.uname(ctx, "-r")
        headers = headers_package or f"linux-headers-{release}"
        if ctx.host(f"/lib/modules/{release}/build").exists() and ctx.which("dkms"):
            ctx.unchanged(f"kernel headers for {release} and dkms present")
        else:
            ctx.run(["apt-get", "install", "-y", "dkms", "make", headers],
                    env={"DEBIAN_FRONTEND": "noninteractive"}, why="kmod is built by DKMS against the headers")
    if is_installed:
        ctx.unchanged("falco package installed")
    else:
        # FALCOCTL_ENABLED=no: the package's rules and plugins are used as shipped; nothing is
        # fetched from the internet at start (falco-website setup/packages.md).
        env = {"DEBIAN_FRONTEND": "noninteractive", "FALCO_FRONTEND": "noninteractive",
               "FALCO_DRIVER_CHOICE": driver, "FALCOCTL_ENABLED": "no"}
        if deb:
            ctx.run(["apt-get", "install", "-y", deb if "/" in deb else "./" + deb], env=env,
                    why="install the given Falco package")
        else:
            add_apt_repo(ctx)
            ctx.run(["apt-get", "update"])
            ctx.run(["apt-get", "install", "-y", "falco"], env=env, why="Falco from download.falco.org")
        ctx.record({"kind": "apt", "package": "falco"})
    dropin_changed = ctx.write_file(DROPIN, dropin(url), mode=0o600,
                                    why="json_output, http_output to alert-forwarder, syscall_event_drops")
    if ctx.query(["systemctl", "is-enabled", FALCOCTL_UNIT]).stdout.strip() == "enabled":
        ctx.run(["systemctl", "disable", "--now", FALCOCTL_UNIT],
                why="falcoctl would fetch rules from the internet; the package's rules are used offline")
    unit = UNITS[driver]
    other = UNITS["kmod" if driver == "modern_ebpf" else "modern_ebpf"]
    if ctx.query(["systemctl", "is-enabled", other]).stdout.strip() == "enabled":
        ctx.run(["systemctl", "disable", "--now", other], why=f"{driver} is the driver for this kernel")
    enabled = ctx.query(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"
    active = ctx.query(["systemctl", "is-active", unit]).stdout.strip() == "active"
    if not enabled or not active:
        ctx.run(["systemctl", "enable", "--now", unit], why=f"Falco with the {driver} driver")
    elif dropin_changed:
        ctx.run(["systemctl", "restart", unit], why="load the new drop-in")
    else:
        ctx.unchanged(f"{unit} enabled and active")
    ctx.record({"kind": "systemd", "unit": unit})


def add_apt_repo(ctx: Ctx) -> None:
    if ctx.read(KEYRING) is None:
        for d in (KEY_DOWNLOAD.rsplit("/", 1)[0], KEYRING.rsplit("/", 1)[0]):
            if not ctx.host(d).is_dir():
                ctx.ensure_dir(d, 0o755)
        ctx.run(["curl", "-fsSL", "-o", str(ctx.host(KEY_DOWNLOAD)), KEY_URL], why="Falco's package signing key")
        if ctx.image:
            ctx.deferred.append(f"gpg --show-keys --with-colons {KEY_DOWNLOAD}   "
                                f"# continue only if the fingerprint is {KEY_FINGERPRINT}")
        elif not ctx.dry_run:
            shown = ctx.query(["gpg", "--show-keys", "--with-colons", str(ctx.host(KEY_DOWNLOAD))])
            fprs = [line.split(":")[9] for line in shown.stdout.splitlines() if line.startswith("fpr:")]
            if KEY_FINGERPRINT not in fprs:
                raise BootstrapError(f"the key at {KEY_URL} does not have the fingerprint {KEY_FINGERPRINT}; "
                                     "refusing to trust it")
            ctx.say(f"  key fingerprint {KEY_FINGERPRINT} verified")
        else:
            ctx.note(f"the key's fingerprint must be {KEY_FINGERPRINT}, or bootstrap stops")
        ctx.run(["gpg", "--dearmor", "--yes", "-o", str(ctx.host(KEYRING)), str(ctx.host(KEY_DOWNLOAD))])
        if not ctx.dry_run and not ctx.image:
            ctx.host(KEY_DOWNLOAD).unlink()
        written = ctx.read(KEYRING)
        if written is not None:
            ctx.state["files"][KEYRING] = {"created": True, "backup": None, "sha256": sha256(written), "mode": 0o644}
            ctx.save_state()
    else:
        ctx.unchanged(f"{KEYRING} present")
    ctx.write_file(APT_SOURCE, APT_LINE, why="Falco's apt repository")
