"""The join script a node runs: install the k3s agent with its token, labels and taints, then Falco.

Everything interpolated is either validated upstream (node name, labels, taints,
token alphabet) or comes from configuration, and all of it is shell-quoted
anyway. The script uses only shell builtins plus curl, sh, id and systemctl (and,
in host mode, the bootstrap's Falco step), so its side effects are exactly the
commands tests can record.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

FALCO_MODES = ("helm", "host", "none")
# bootstrap/edgeguard-bootstrap must be on the node (baked into the image with the enrollment key).
# Its Falco step sends alerts as this node (Basic auth user = --node-name) with the per-node token
# the script pipes to its stdin (alerttokens.py), never with the fleet's alert-forwarder token.
DEFAULT_FALCO_HOST_COMMAND = (
    "edgeguard-bootstrap falco --mode host --gateway {gateway_url} --node-name {node_name} --alert-token-stdin --yes"
)


@dataclass(frozen=True)
class ScriptSettings:
    install_url: str = "https://get.k3s.io"
    k3s_version: str | None = None
    k3s_channel: str | None = None
    falco_mode: str = "helm"
    falco_host_command: str = DEFAULT_FALCO_HOST_COMMAND
    public_gateway_url: str | None = None
    extra_agent_args: tuple = field(default_factory=tuple)


def q(value: str) -> str:
    return shlex.quote(str(value))


def agent_exec(node_name: str, labels: dict, taints, extra_args=()) -> str:
    """INSTALL_K3S_EXEC; the installer word-splits it, so every part must be free of spaces and quotes."""
    parts = ["agent", "--node-name", node_name]
    for key in sorted(labels):
        parts += ["--node-label", f"{key}={labels[key]}"]
    for taint in taints:
        parts += ["--node-taint", taint]
    parts += list(extra_args)
    for p in parts:
        if not p or any(c.isspace() or c in "'\"\\$`" for c in p):
            raise ValueError(f"agent argument {p!r} cannot be passed through INSTALL_K3S_EXEC")
    return " ".join(parts)


def falco_host_argv(template: str, *, gateway_url: str, node_name: str) -> list:
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"falco_host_command is not a valid command line: {exc}") from None
    if not words:
        raise ValueError("falco_host_command is empty")
    try:
        return [w.format(gateway_url=gateway_url, node_name=node_name) for w in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"falco_host_command uses an unknown placeholder {exc}; only {{gateway_url}} and {{node_name}} exist"
        ) from None


def render(
    *,
    node_name: str,
    arch: str,
    server_url: str,
    token: str,
    labels: dict,
    taints,
    expires_at: str,
    settings: ScriptSettings,
    alert_token: str | None = None,
) -> str:
    exec_line = agent_exec(node_name, labels, taints, settings.extra_agent_args)
    install_env = [f"K3S_URL={q(server_url)}", 'K3S_TOKEN="$K3S_TOKEN"', 'INSTALL_K3S_EXEC="$INSTALL_K3S_EXEC"']
    if settings.k3s_version:
        install_env.append(f"INSTALL_K3S_VERSION={q(settings.k3s_version)}")
    elif settings.k3s_channel:
        install_env.append(f"INSTALL_K3S_CHANNEL={q(settings.k3s_channel)}")
    lines = [
        "#!/bin/sh",
        f"# edgeguard node-enroll join script for node {node_name} ({arch}).",
        f"# K3S_TOKEN below is a one-time k3s bootstrap token that expires at {expires_at}.",
        "# It can join agents only; it is not the server token. Run as root: sh join.sh",
        "set -eu",
        "umask 077",
        "",
        f"NODE_NAME={q(node_name)}",
        f"K3S_URL={q(server_url)}",
        f"K3S_TOKEN={q(token)}",
        f"INSTALL_K3S_EXEC={q(exec_line)}",
        "",
        'if [ "$(id -u)" != "0" ]; then',
        '  echo "edgeguard: run this script as root" >&2',
        "  exit 1",
        "fi",
        "",
        'echo "edgeguard: installing the k3s agent for $NODE_NAME (server $K3S_URL)"',
        # Fetch first, then run: piping curl straight into sh would hide a failed download under set -e.
        f"installer=$(curl -sfL {q(settings.install_url)})",
        'if [ -z "$installer" ]; then echo "edgeguard: empty k3s installer download" >&2; exit 1; fi',
        f"printf '%s\\n' \"$installer\" | {' '.join(install_env)} sh -s -",
        "systemctl is-active --quiet k3s-agent || "
        '{ echo "edgeguard: k3s-agent is not running; see journalctl -u k3s-agent" >&2; exit 1; }',
        'echo "edgeguard: k3s agent is running"',
        "",
    ]
    lines += _falco_lines(settings, node_name=node_name, taints=list(taints), alert_token=alert_token)
    lines += ['echo "edgeguard: $NODE_NAME enrolled"', ""]
    return "\n".join(lines)


def _falco_lines(settings: ScriptSettings, *, node_name: str, taints: list, alert_token: str | None) -> list:
    mode = settings.falco_mode
    if mode == "none":
        return ['echo "edgeguard: Falco setup skipped (falco_mode=none)"']
    if mode == "helm":
        lines = ['echo "edgeguard: Falco runs as the falcosecurity/falco DaemonSet and will schedule onto this node"']
        if taints:
            lines.append(f'echo "edgeguard: the Falco DaemonSet must tolerate this node\'s taints: {" ".join(taints)}"')
        return lines
    if not settings.public_gateway_url:
        raise ValueError("falco_mode=host needs public_gateway_url (the gateway as nodes reach it)")
    if not alert_token:
        raise ValueError("falco_mode=host needs the node's alert token")
    argv = falco_host_argv(settings.falco_host_command, gateway_url=settings.public_gateway_url, node_name=node_name)
    return [
        # This node's own alert token goes to the Falco step on its stdin, through the shell's printf: it is on no
        # command line (ps, /proc/<pid>/cmdline) and in no file this script writes.
        f"ALERT_TOKEN={q(alert_token)}",
        'echo "edgeguard: setting up Falco on the host (bootstrap falco --mode host)"',
        "printf '%s\\n' \"$ALERT_TOKEN\" | " + " ".join(q(a) for a in argv),
    ]
