"""falco: install Falco (Helm chart or host package) posting JSON alerts to alert-forwarder."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse

from . import facts, rotation, secretstore, tools, yamlout
from .engine import BootstrapError, Check, Ctx, sha256
from .kubeapply import apply_manifest

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

# The token never sits in a Falco config file: Falco (0.35+, falcosecurity/falco#2562, yaml_helper
# get_scalar) expands ${VAR} inside every falco.yaml and config.d value from its own environment, so
# http_output.url names the variable, and the value comes from a Secret (helm: the chart's extra.env
# with secretKeyRef) or a root-only environment file (host: the unit's EnvironmentFile). A ConfigMap,
# a world-readable drop-in, the chart's values and the audit log of the falco/falco ConfigMap then hold
# no credential. The value is percent-encoded: it lands in the URL's user part as it is.
TOKEN_ENV = "EDGEGUARD_ALERT_TOKEN"
TOKEN_SECRET = "edgeguard-alert-token"
TOKEN_SECRET_MANIFEST = "/var/lib/edgeguard/manifests/falco-alert-token.yaml"
ENV_FILE = "/etc/falco/edgeguard-alert-token.env"
FLEET_USER = "falco"  # alert-forwarder does not check the user name for the fleet token
# Kubernetes node names (DNS-1123 subdomain): also what alert-forwarder looks up as the Secret's data key.
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NODE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")  # node-enroll's: 32 random bytes, base64url


def unit_dropin(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/60-edgeguard.conf"


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
SYSCALL_EVENT_DROPS = {
    "threshold": 0.1,
    "actions": ["log", "alert"],
    "rate": 0.01,
    "max_burst": 1,
    "simulate_drops": False,
}
HTTP_OUTPUT_DEFAULTS = {
    "enabled": False,
    "url": "",
    "user_agent": "falcosecurity/falco",
    "insecure": False,
    "ca_cert": "",
    "ca_bundle": "",
    "ca_path": "/etc/falco/certs/",
    "mtls": False,
    "client_cert": "/etc/falco/certs/client/client.crt",
    "client_key": "/etc/falco/certs/client/client.key",
    "echo": False,
    "compress_uploads": False,
    "keep_alive": False,
    "max_consecutive_timeouts": 5,
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


def alert_url(gateway: str, token: str, user: str = FLEET_USER) -> str:
    """http_output's URL, the token in its user part: Falco cannot set headers, and libcurl sends the user
    part as Basic auth. Never in the query: of-watchdog logs every request line, query included."""
    return _url(gateway, user, urllib.parse.quote(token, safe=""))


def env_url(gateway: str, user: str = FLEET_USER) -> str:
    """The URL Falco's config files hold: the password is ${EDGEGUARD_ALERT_TOKEN}, expanded by Falco."""
    return _url(gateway, user, "${" + TOKEN_ENV + "}")


def _url(gateway: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(gateway.rstrip("/"))
    netloc = f"{urllib.parse.quote(user, safe='')}:{password}@{parts.netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + "/function/alert-forwarder", "", ""))


def env_value(token: str) -> str:
    return urllib.parse.quote(token, safe="")


def env_file(token: str) -> str:
    return (
        f"# Written by edgeguard-bootstrap falco (root only): Falco expands ${{{TOKEN_ENV}}} in\n"
        f"# http_output.url. Percent-encoded, as it goes into the URL's user part.\n"
        f"{TOKEN_ENV}={env_value(token)}\n"
    )


def unit_dropin_text() -> str:
    return (
        "# Written by edgeguard-bootstrap falco --mode host: the alert token for http_output.url\n"
        f"[Service]\nEnvironmentFile={ENV_FILE}\n"
    )


def token_secret_manifest(token: str) -> str:
    return yamlout.dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": TOKEN_SECRET,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
            },
            "type": "Opaque",
            "data": {"token": base64.b64encode(env_value(token).encode()).decode()},
        },
        "alert-forwarder's token for Falco's http_output (edgeguard-bootstrap falco)",
    )


def register_token(ctx: Ctx, token: str) -> None:
    """Every form the token takes in a file or a command's output is masked."""
    ctx.add_secret(token)
    ctx.add_secret(env_value(token))
    ctx.add_secret(base64.b64encode(env_value(token).encode()).decode())


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
        "extra": {"env": [{"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}}]},
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
    return yamlout.dump(
        falco_settings(url),
        "Written by edgeguard-bootstrap falco --mode host. Falco merges it into\n"
        "falco.yaml key by key: each map here replaces falco.yaml's, so\n"
        "every map is written whole.",
    )


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


def parse_identity(mode: str, node_name: str | None, token_stdin: bool, stdin) -> tuple[str, str | None]:
    """(Basic auth user, per-node token or None) from --node-name / --alert-token-stdin, checked before
    anything runs: node-enroll's join script pipes the node's own token (issue 12 §7)."""
    if mode != "host" and (node_name or token_stdin):
        raise BootstrapError(
            "--node-name and --alert-token-stdin are for --mode host (the helm DaemonSet uses the fleet token)"
        )
    if token_stdin and not node_name:
        raise BootstrapError(
            "--alert-token-stdin needs --node-name: alert-forwarder checks a node token against that node's name"
        )
    if node_name is not None and not NODE_NAME.match(node_name):
        raise BootstrapError(
            f"--node-name {node_name!r} is not a Kubernetes node name (lower-case letters, digits, '-' and '.')"
        )
    if not token_stdin:
        return node_name or FLEET_USER, None
    token = (stdin.readline() or "").strip()
    if not NODE_TOKEN.match(token):
        raise BootstrapError(
            "--alert-token-stdin: expected one line holding the node's alert token "
            "(32 to 128 base64url characters, as node-enroll mints them)"
        )
    return node_name, token


def run(
    ctx: Ctx,
    *,
    mode: str,
    gateway: str,
    falco_gateway: str | None = None,
    driver: str | None = None,
    deb: str | None = None,
    headers_package: str | None = None,
    node_name: str | None = None,
    token_stdin: bool = False,
) -> None:
    user, node_token = parse_identity(mode, node_name, token_stdin, ctx.stdin)
    if node_token:
        register_token(ctx, node_token)
    ctx.section(f"falco --mode {mode}: Falco with JSON alerts to alert-forwarder")
    if mode == "helm" and not ctx.image:
        tools.ensure(ctx, ("helm",))
    ctx.require(checks(ctx, mode, driver))
    if ctx.image and not driver:
        raise BootstrapError("--image needs --driver modern_ebpf|kmod: the image's kernel is not this machine's")
    kind, why = facts.driver_choice(ctx, driver)
    ctx.say(f"  driver: {kind} ({why})")
    if node_token:
        token = node_token
        ctx.note(f"http_output sends Basic auth as node {user} with the node's own token (from stdin)")
    elif mode == "host" and ctx.state.get("falco_node") and ctx.read(ENV_FILE) is not None:
        # Enrolled with a node token earlier: keep it (this node has no fleet token to fall back on).
        user = ctx.state["falco_node"]
        token = None
        ctx.note(f"keeping node {user}'s own alert token in {ENV_FILE}")
    else:
        token = secretstore.require_token(ctx, "alert-forwarder-token")
        register_token(ctx, token)
        ctx.note(
            f"http_output sends alert-forwarder-token as Basic auth; Falco reads it from ${{{TOKEN_ENV}}} "
            f"({'Secret ' + NAMESPACE + '/' + TOKEN_SECRET if mode == 'helm' else ENV_FILE}, root only), "
            "so no Falco config file holds it"
        )
    if mode == "helm":
        run_helm(ctx, kind, env_url(falco_gateway or IN_CLUSTER_GATEWAY), token)
    else:
        run_host(ctx, kind, env_url(falco_gateway or gateway, user), deb, headers_package, token)
        if not ctx.dry_run and not ctx.image:
            ctx.state["falco_node"] = user if user != FLEET_USER else None
            ctx.save_state()


def ensure_namespace(ctx: Ctx) -> None:
    if ctx.query(["kubectl", "get", "namespace", NAMESPACE, "-o", "name"], timeout=30).returncode == 0:
        return
    # Before the chart: Falco's pods need the token Secret at start. Left in place by revert, as helm's
    # --create-namespace leaves it.
    ctx.run(["kubectl", "create", "namespace", NAMESPACE], why="Falco's namespace, for the token Secret")


def apply_token_secret(ctx: Ctx, token: str) -> bool:
    """The Secret the chart's extra.env reads; True when it changed (Falco reads env only at start)."""
    ensure_namespace(ctx)
    ctx.write_file(
        TOKEN_SECRET_MANIFEST,
        token_secret_manifest(token),
        secret=True,
        why=f"Secret {NAMESPACE}/{TOKEN_SECRET}: the token Falco expands into http_output.url",
    )
    return apply_manifest(ctx, str(ctx.host(TOKEN_SECRET_MANIFEST)), "alert-forwarder's token for Falco")


def run_helm(ctx: Ctx, driver: str, url: str, token: str) -> None:
    values = helm_values(driver, url)
    secret_changed = apply_token_secret(ctx, token)
    ctx.write_file(
        VALUES,
        yamlout.dump(values, f"Helm values for {CHART} {CHART_VERSION} (edgeguard-bootstrap)"),
        mode=0o600,
        why="Falco chart values (no token: http_output.url names ${" + TOKEN_ENV + "})",
    )
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
        if secret_changed:
            restart_daemonset(ctx, "read the new token (env is read at start)")
        return
    ctx.run(["helm", "repo", "update", CHART_REPO[0]])
    ctx.run(
        [
            "helm",
            "upgrade",
            "--install",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--version",
            CHART_VERSION,
            "--values",
            str(ctx.host(VALUES)),
            "--wait",
            "--timeout",
            "10m",
        ],
        why="install or update Falco",
    )
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


def restart_daemonset(ctx: Ctx, why: str) -> None:
    ctx.run(["kubectl", "rollout", "restart", f"daemonset/{RELEASE}", "-n", NAMESPACE], why=why)
    ctx.run(
        ["kubectl", "rollout", "status", f"daemonset/{RELEASE}", "-n", NAMESPACE, "--timeout", "5m"],
        why="wait until every Falco pod runs with it",
    )


def write_host_token(ctx: Ctx, unit: str, token: str | None) -> bool:
    changed = False
    if token is not None:
        changed |= ctx.write_file(
            ENV_FILE, env_file(token), secret=True, why=f"${{{TOKEN_ENV}}} for http_output.url (root only)"
        )
    changed |= ctx.write_file(unit_dropin(unit), unit_dropin_text(), why=f"{unit} reads {ENV_FILE}")
    return changed


def run_host(
    ctx: Ctx, driver: str, url: str, deb: str | None, headers_package: str | None, token: str | None = None
) -> None:
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
            ctx.run(
                ["apt-get", "install", "-y", "dkms", "make", headers],
                env={"DEBIAN_FRONTEND": "noninteractive"},
                why="kmod is built by DKMS against the headers",
            )
    if is_installed:
        ctx.unchanged("falco package installed")
    else:
        # FALCOCTL_ENABLED=no: the package's rules and plugins are used as shipped; nothing is
        # fetched from the internet at start (falco-website setup/packages.md).
        env = {
            "DEBIAN_FRONTEND": "noninteractive",
            "FALCO_FRONTEND": "noninteractive",
            "FALCO_DRIVER_CHOICE": driver,
            "FALCOCTL_ENABLED": "no",
        }
        if deb:
            ctx.run(
                ["apt-get", "install", "-y", deb if "/" in deb else "./" + deb],
                env=env,
                why="install the given Falco package",
            )
        else:
            add_apt_repo(ctx)
            ctx.run(["apt-get", "update"])
            ctx.run(["apt-get", "install", "-y", "falco"], env=env, why="Falco from download.falco.org")
        ctx.record({"kind": "apt", "package": "falco"})
    unit = UNITS[driver]
    dropin_changed = ctx.write_file(
        DROPIN,
        dropin(url),
        mode=0o644,
        why=f"json_output, http_output to alert-forwarder (no token: it names ${{{TOKEN_ENV}}}), syscall_event_drops",
    )
    token_changed = write_host_token(ctx, unit, token)
    if token_changed and not ctx.image:  # an image's systemd reads the unit drop-in at first boot
        ctx.run(["systemctl", "daemon-reload"], why=f"load {unit_dropin(unit)}")
    dropin_changed |= token_changed
    if ctx.query(["systemctl", "is-enabled", FALCOCTL_UNIT]).stdout.strip() == "enabled":
        ctx.run(
            ["systemctl", "disable", "--now", FALCOCTL_UNIT],
            why="falcoctl would fetch rules from the internet; the package's rules are used offline",
        )
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
            ctx.deferred.append(
                f"gpg --show-keys --with-colons {KEY_DOWNLOAD}   "
                f"# continue only if the fingerprint is {KEY_FINGERPRINT}"
            )
        elif not ctx.dry_run:
            shown = ctx.query(["gpg", "--show-keys", "--with-colons", str(ctx.host(KEY_DOWNLOAD))])
            fprs = [line.split(":")[9] for line in shown.stdout.splitlines() if line.startswith("fpr:")]
            if KEY_FINGERPRINT not in fprs:
                raise BootstrapError(
                    f"the key at {KEY_URL} does not have the fingerprint {KEY_FINGERPRINT}; refusing to trust it"
                )
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


# ---- rotation -------------------------------------------------------------
# Falco's http_output ignores HTTP status codes, so an alert sent with a token alert-forwarder does not
# (yet, or any more) accept is lost without a trace. alert-forwarder accepts the previous value for
# token_grace_seconds (600 s by default) from the moment its mounted secret changes, and the kubelet
# updates that mount up to a minute or so after `faas-cli secret update`. So: the secret first, then wait
# until alert-forwarder accepts the new value, and only then give it to Falco; the old one keeps working
# until Falco restarts.
GRACE_SECONDS = rotation.GRACE_SECONDS


def installed(ctx: Ctx) -> str | None:
    """ "helm", or the systemd unit, of a Falco this bootstrap installed; None if it did not."""
    for action in reversed(ctx.state.get("actions", [])):
        if action == {"kind": "helm", "release": RELEASE, "namespace": NAMESPACE}:
            return "helm"
        if action.get("kind") == "systemd" and action.get("unit") in UNITS.values():
            return action["unit"]
    return None


def rotate(ctx: Ctx, *, gateway: str, timeout: float) -> None:
    """After `--rotate alert-forwarder-token` updated the OpenFaaS secret: wait, give Falco the new token,
    verify Falco runs with it."""
    ctx.section("falco: the rotated alert-forwarder-token, without dropping an alert")
    token = secretstore.require_token(ctx, "alert-forwarder-token")
    register_token(ctx, token)
    rotation.wait_accepted(
        ctx,
        gateway,
        "alert-forwarder",
        token,
        timeout,
        then="update Falco",
        if_refused="Falco was left on the previous token, which alert-forwarder still accepts, so no alert is "
        "lost: re-run `edgeguard-bootstrap falco` once it accepts the new one",
    )
    accepted = time.monotonic()
    where = installed(ctx)
    if where is None:
        ctx.note(
            f"bootstrap did not install Falco here: give your Falco the new token within "
            f"token_grace_seconds ({GRACE_SECONDS} s) of alert-forwarder's accepting it"
        )
        return
    if where == "helm":
        if apply_token_secret(ctx, token):
            restart_daemonset(ctx, "Falco reads the new token at start")
    elif ctx.state.get("falco_node"):
        ctx.note(
            f"this node's Falco sends node {ctx.state['falco_node']}'s own token, not the fleet token: "
            "nothing to change"
        )
        return
    else:
        if write_host_token(ctx, where, token):
            ctx.run(["systemctl", "restart", where], why="Falco reads the new token at start")
        if not ctx.dry_run:
            active = ctx.query(["systemctl", "is-active", where]).stdout.strip()
            if active != "active":
                raise BootstrapError(
                    f"{where} is {active or 'not active'} after the restart: check `journalctl -u {where}`"
                )
            ctx.say(f"  {where} active with the new token")
    if not ctx.dry_run and time.monotonic() - accepted > GRACE_SECONDS:
        ctx.say(
            f"  !! Falco took over {GRACE_SECONDS} s to restart: alerts sent with the old token after the "
            "grace were refused"
        )
