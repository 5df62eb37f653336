"""preflight: each check's verdict and the exact commands it runs."""

from __future__ import annotations

import io
import re

import pytest

from edgeguard_bootstrap import facts
from edgeguard_bootstrap.engine import Ctx


def ctx_for(node):
    return Ctx(str(node.root), out=io.StringIO(), env=node.env())


def test_preflight_on_a_good_node_passes_and_runs_only_read_only_commands(node):
    code, out = node.run("preflight")
    assert code == 0, out
    for name in (
        "arch",
        "os",
        "falco driver",
        "cgroups",
        "k3s",
        "k3s args",
        "kubectl",
        "helm",
        "faas-cli",
        "cluster",
        "gateway",
        "functions",
        "audit https front",
        "memory",
        "openfaas values",
        "node-enroll policy",
        "offline ready",
    ):
        assert f"  {name} " in out
    assert "FAIL" not in out
    assert node.calls() == [
        ["uname", "-m"],
        ["uname", "-r"],
        ["k3s", "--version"],
        ["systemctl", "is-active", "k3s"],
        ["kubectl", "get", "--raw", "/readyz"],
        ["kubectl", "get", "deployments", "-n", "openfaas-fn", "-o", "json"],
        ["kubectl", "get", "ingressclass", "traefik", "-o", "name"],
        # the edge checks (memory, openfaas values, node-enroll policy, offline ready): read-only too
        ["kubectl", "get", "nodes", "-o", "json"],
        ["kubectl", "get", "pods", "-A", "-o", "json"],
        ["helm", "list", "-n", "openfaas", "-o", "json"],
        ["kubectl", "get", "--raw", "/apis/admissionregistration.k8s.io/v1"],
        ["kubectl", "get", "deployments,daemonsets,statefulsets", "-n", "openfaas", "-o", "json"],
        ["kubectl", "get", "deployments,daemonsets,statefulsets", "-n", "openfaas-fn", "-o", "json"],
        ["kubectl", "get", "deployments,daemonsets,statefulsets", "-n", "falco", "-o", "json"],
        ["k3s", "ctr", "-n", "k8s.io", "images", "list"],
        ["k3s", "--version"],
        ["helm", "list", "-n", "falco", "-o", "json"],
        ["systemctl", "is-enabled", "falcoctl-artifact-follow.service"],
    ]
    assert "no changes" in out


def test_preflight_names_a_k3s_without_traefik_and_what_to_pass_instead(node):
    node.update_world(ingress_classes=[])
    code, out = node.run("preflight")
    assert code == 0, out  # a warning: k3s-audit --audit-ca needs no Traefik; k3s-audit refuses without either
    line = next(line for line in out.splitlines() if "audit https front" in line)
    assert "WARN" in line and "--disable traefik" in line
    assert "--audit-url https://<host>[:port]/function/audit-ingest --audit-ca <CA PEM file>" in out


@pytest.mark.parametrize(
    "release,btf,driver",
    [
        ("6.8.0-1012-raspi", True, "modern_ebpf"),
        ("6.6.51+rpt-rpi-v8", False, "kmod"),  # Raspberry Pi OS: no BTF
        ("5.4.0-150-generic", True, "kmod"),  # too old for modern_ebpf even with BTF
        ("5.8.0-1-generic", True, "modern_ebpf"),  # the boundary
    ],
)
def test_driver_follows_kernel_version_and_btf(node, release, btf, driver):
    w = node.world()
    w["uname"]["-r"] = release
    node.set_world(w)
    if not btf:
        node.path("/sys/kernel/btf/vmlinux").unlink()
    assert facts.driver_choice(ctx_for(node))[0] == driver


def test_driver_override_wins(node):
    assert facts.driver_choice(ctx_for(node), "kmod") == ("kmod", "--driver kmod given")


def test_kmod_without_headers_or_dkms_warns_with_what_to_install(node):
    node.path("/sys/kernel/btf/vmlinux").unlink()
    check = facts.check_driver(ctx_for(node))
    assert check.status == "warn" and "linux-headers-6.8.0-1012-raspi" in check.detail and "dkms" in check.detail
    node.path("/lib/modules/6.8.0-1012-raspi/build").mkdir(parents=True)
    check = facts.check_driver(ctx_for(node))
    assert check.status == "warn" and "headers" not in check.detail.split("not installed yet")[1]
    (node.bin / "dkms").write_text("#!/bin/sh\n")
    (node.bin / "dkms").chmod(0o755)
    assert facts.check_driver(ctx_for(node)).status == "pass"


def test_missing_memory_cgroup_on_a_pi_names_firmware_cmdline_and_the_words(node):
    node.files(
        {
            "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io pids\n",
            "/boot/firmware/cmdline.txt": "console=serial0,115200 root=PARTUUID=1 rootwait\n",
            "/boot/cmdline.txt": "old location\n",
        }
    )
    check = facts.check_cgroups(ctx_for(node))
    assert check.status == "fail"
    assert "missing memory" in check.detail
    assert "/boot/firmware/cmdline.txt" in check.detail
    assert "cgroup_memory=1 cgroup_enable=memory" in check.detail
    code, out = node.run("preflight")
    assert code == 1 and "cgroups" in out and "FAIL" in out


def test_older_pi_os_uses_boot_cmdline_txt(node):
    node.files({"/sys/fs/cgroup/cgroup.controllers": "cpu cpuset\n", "/boot/cmdline.txt": "root=x\n"})
    check = facts.check_cgroups(ctx_for(node))
    assert "append to the single line of /boot/cmdline.txt" in check.detail


def test_cgroup_v1_reads_proc_cgroups(node):
    node.path("/sys/fs/cgroup/cgroup.controllers").unlink()
    node.files({"/proc/cgroups": "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t1\t1\t1\nmemory\t0\t1\t0\n"})
    check = facts.check_cgroups(ctx_for(node))
    assert check.status == "fail" and "cgroup v1" in check.detail and "memory" in check.detail
    node.files({"/proc/cgroups": "cpuset\t1\t1\t1\nmemory\t2\t1\t1\n"})
    assert facts.check_cgroups(ctx_for(node)).status == "pass"


@pytest.mark.parametrize(
    "version,ok",
    [
        ("v1.26.2+k3s1", True),
        ("v1.26.1+k3s1", False),
        ("v1.25.7+k3s1", True),
        ("v1.25.6+k3s1", False),
        ("v1.24.11+k3s1", True),
        ("v1.23.17+k3s1", True),
        ("v1.23.16+k3s2", False),
        ("v1.22.17+k3s1", False),
        ("v1.27.1+k3s1", True),
        ("v1.33.1+k3s1", True),
    ],
)
def test_bootstrap_token_version_gate(version, ok):
    assert facts.has_bootstrap_tokens(facts.parse_k3s_version(f"k3s version {version} (abc)")) is ok


def test_old_k3s_fails_the_k3s_check(node):
    node.update_world(k3s_version="k3s version v1.25.6+k3s1 (abc)")
    check = facts.check_k3s(ctx_for(node))
    assert check.status == "fail" and "bootstrap tokens" in check.detail


def test_k3s_missing_or_stopped_fails(node):
    node.update_world(k3s_version=None)
    assert facts.check_k3s(ctx_for(node)).status == "fail"
    node.update_world(k3s_version="k3s version v1.30.4+k3s1 (x)", active={})
    assert "neither k3s nor k3s-agent is active" in facts.check_k3s(ctx_for(node)).detail


def test_agent_node_is_recognised(node):
    node.update_world(active={"k3s-agent": True})
    ctx = ctx_for(node)
    assert facts.k3s_role(ctx) == "agent"
    assert node.calls()[-2:] == [["systemctl", "is-active", "k3s"], ["systemctl", "is-active", "k3s-agent"]]


def test_cli_kube_apiserver_args_in_the_unit_are_a_conflict(node):
    node.files(
        {
            "/etc/systemd/system/k3s.service": (
                "[Service]\nExecStart=/usr/local/bin/k3s server --kube-apiserver-arg=audit-log-path=/x\n"
            )
        }
    )
    check = facts.check_k3s_args(ctx_for(node))
    assert check.status == "fail" and "CLI flags replace" in check.detail


def test_a_later_dropin_without_plus_is_a_conflict_but_an_earlier_one_is_not(node):
    node.files({"/etc/rancher/k3s/config.yaml.d/10-site.yaml": "kube-apiserver-arg:\n  - a=b\n"})
    assert facts.check_k3s_args(ctx_for(node)).status == "pass"
    node.files({"/etc/rancher/k3s/config.yaml.d/90-site.yaml": "kube-apiserver-arg+:\n  - a=b\n"})
    assert facts.check_k3s_args(ctx_for(node)).status == "pass"
    node.files({"/etc/rancher/k3s/config.yaml.d/99-site.yaml": "kube-apiserver-arg:\n  - a=b\n"})
    check = facts.check_k3s_args(ctx_for(node))
    assert check.status == "fail" and "99-site.yaml" in check.detail


def test_moved_config_file_is_a_conflict(node):
    node.files({"/etc/systemd/system/k3s.service.env": "K3S_CONFIG_FILE=/opt/k3s.yaml\n"})
    assert facts.check_k3s_args(ctx_for(node)).status == "fail"


def test_unsupported_arch_fails(node):
    w = node.world()
    w["uname"]["-m"] = "armv7l"
    node.set_world(w)
    assert facts.check_arch(ctx_for(node)).status == "fail"


def test_raspberry_pi_os_is_recognised(node):
    node.files(
        {
            "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
            "/etc/rpi-issue": "Raspberry Pi reference 2024-07-04\n",
        }
    )
    check = facts.check_os(ctx_for(node))
    assert check.status == "pass" and "Raspberry Pi OS" in check.detail


def test_unreachable_gateway_and_missing_functions(node):
    node.update_world(deployments=["audit-ingest"])
    ctx = ctx_for(node)
    assert facts.check_gateway(ctx, "http://127.0.0.1:9").status == "fail"
    functions = facts.check_functions(ctx)
    assert functions.status == "warn"
    assert "alert-forwarder, configmap-secret-scrubber, node-enroll" in functions.detail


def test_function_names_match_stack_yml():
    from pathlib import Path

    import yaml

    stack = yaml.safe_load((Path(__file__).resolve().parents[2] / "stack.yml").read_text())
    assert set(stack["functions"]) == set(facts.FUNCTIONS)


def test_preflight_exit_status_is_non_zero_on_any_fail(node):
    node.update_world(api_ready=False)
    code, out = node.run("preflight")
    assert code == 1
    assert "cluster" in out and "FAIL" in out


def test_preflight_fails_a_stack_yml_whose_function_environment_sets_the_watchdogs_mode(node):
    stack = node.repo / "stack.yml"
    stack.write_text(stack.read_text().replace("      scrub_mode: report\n", "      mode: report\n"))
    code, out = node.run("preflight")
    assert code == 1
    assert "  stack.yml " in out and "configmap-secret-scrubber: environment sets mode" in out
    assert "unknown watchdog mode" in out and "scrub_mode" in out


def test_preflight_passes_the_shipped_stack_yml(node):
    code, out = node.run("preflight")
    assert code == 0, out
    assert re.search(r"  stack\.yml .*no function environment sets a variable", out), out
