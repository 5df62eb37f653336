"""falco: Helm values against the chart and Falco's schema; host package, drop-in and units."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import jsonschema
import pytest
import yaml

from edgeguard_bootstrap import falco

DATA = Path(__file__).resolve().parents[1] / "data"
CHART_VALUES = yaml.safe_load((DATA / "k3s" / "falco-chart-values.yaml").read_text())
SCHEMA = json.loads((DATA / "falco-config-schema.json").read_text())


def with_tokens(node):
    """The node copies of the tokens that `openfaas` writes (tested in test_openfaas.py)."""
    node.seed_tokens()


def key_paths(obj, prefix=()):
    """Every mapping key path; lists are leaves (the chart defines their items' shape)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from key_paths(v, prefix + (k,))


def chart_has(path):
    node = CHART_VALUES
    for k in path:
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return True


@pytest.mark.parametrize("driver", ["modern_ebpf", "kmod"])
def test_helm_values_use_only_keys_in_the_chart_values_yaml(driver):
    values = falco.helm_values(driver, "http://falco:t@gw/function/alert-forwarder")
    missing = [".".join(p) for p in key_paths(values) if not chart_has(p)]
    assert missing == []
    assert values["driver"]["kind"] in ("modern_ebpf", "kmod")


def test_falco_section_of_values_and_host_dropin_validate_against_falcos_schema():
    url = falco.alert_url("http://127.0.0.1:31112", "abc_DEF-123")
    jsonschema.validate(falco.falco_settings(url), SCHEMA)
    jsonschema.validate(yaml.safe_load(falco.dropin(url)), SCHEMA)
    jsonschema.validate(falco.helm_values("kmod", url)["falco"], SCHEMA)


def test_schema_check_would_catch_a_wrong_key():
    bad = dict(falco.falco_settings("http://x/"), http_output={"enabled": True, "uri": "http://x/"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_alert_url_carries_the_token_in_its_user_part_never_in_the_query():
    url = falco.alert_url("http://gw:8080/", "to+k/en@:x")
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/function/alert-forwarder" and parts.query == ""  # of-watchdog logs request lines
    assert (parts.username, urllib.parse.unquote(parts.password), parts.hostname, parts.port) == (
        "falco",
        "to+k/en@:x",
        "gw",
        8080,
    )


def test_helm_mode_writes_values_and_runs_exact_helm_commands(node):
    with_tokens(node)
    code, out = node.run("falco")
    assert code == 0, out
    values_path = node.path(falco.VALUES)
    assert values_path.stat().st_mode & 0o777 == 0o600
    token = node.secret("alert-forwarder-token").decode()
    values = yaml.safe_load(values_path.read_text())
    assert values["driver"]["kind"] == "modern_ebpf"
    assert values["falco"]["http_output"]["url"] == (
        "http://falco:${EDGEGUARD_ALERT_TOKEN}@gateway.openfaas.svc.cluster.local:8080/function/alert-forwarder"
    )
    assert values["extra"]["env"] == [
        {
            "name": "EDGEGUARD_ALERT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "edgeguard-alert-token", "key": "token"}},
        }
    ]
    assert node.world()["falco_secret_token"] == token
    assert values["falco"]["json_output"] is True
    tolerated = {(t.get("key"), t.get("effect")) for t in values["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated
    assert token not in out
    assert node.mutating_calls() == [
        ["kubectl", "create", "namespace", "falco"],
        ["kubectl", "apply", "-f", str(node.path(falco.TOKEN_SECRET_MANIFEST))],
        ["helm", "repo", "add", "falcosecurity", "https://falcosecurity.github.io/charts"],
        ["helm", "repo", "update", "falcosecurity"],
        [
            "helm",
            "upgrade",
            "--install",
            "falco",
            "falcosecurity/falco",
            "--namespace",
            "falco",
            "--create-namespace",
            "--version",
            "9.1.0",
            "--values",
            str(values_path),
            "--wait",
            "--timeout",
            "10m",
        ],
    ]
    node.clear_calls()
    code, out = node.run("falco")
    assert code == 0 and "no changes" in out
    assert node.mutating_calls() == []
    assert ["helm", "get", "values", "falco", "-n", "falco", "-o", "json"] in node.calls()


def test_helm_mode_picks_kmod_without_btf_and_upgrades_when_values_change(node):
    with_tokens(node)
    node.run("falco")
    node.path("/sys/kernel/btf/vmlinux").unlink()
    node.clear_calls()
    code, out = node.run("falco")
    assert code == 0, out
    assert "driver: kmod" in out
    assert yaml.safe_load(node.path(falco.VALUES).read_text())["driver"]["kind"] == "kmod"
    assert "-  kind: modern_ebpf" in out and "+  kind: kmod" in out
    assert [c[:3] for c in node.mutating_calls()] == [["helm", "repo", "update"], ["helm", "upgrade", "--install"]]


def test_helm_mode_stops_without_helm_or_arkade(node):
    with_tokens(node)
    (node.bin / "helm").unlink()
    (node.bin / "arkade").unlink()
    code, out = node.run("falco")
    assert code == 2 and "helm not found and arkade is not installed" in out
    assert "curl -sSL https://get.arkade.dev | sudo sh" in out
    assert not node.path(falco.VALUES).exists() and node.mutating_calls() == []


def test_host_mode_from_the_apt_repository_with_modern_ebpf(node):
    with_tokens(node)
    code, out = node.run("falco", "--mode", "host")
    assert code == 0, out
    records = [r for r in node.call_records() if r["argv"] in node.mutating_calls()]
    argvs = [r["argv"] for r in records]
    asc = str(node.path(falco.KEY_DOWNLOAD))
    assert argvs == [
        ["curl", "-fsSL", "-o", asc, "https://falco.org/repo/falcosecurity-packages.asc"],
        ["gpg", "--dearmor", "--yes", "-o", str(node.path(falco.KEYRING)), asc],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "falco"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "falco-modern-bpf.service"],
    ]
    install = records[3]
    assert install["env"] == {
        "DEBIAN_FRONTEND": "noninteractive",
        "FALCO_FRONTEND": "noninteractive",
        "FALCO_DRIVER_CHOICE": "modern_ebpf",
        "FALCOCTL_ENABLED": "no",
    }
    assert ["gpg", "--show-keys", "--with-colons", asc] in node.calls()
    assert node.path(falco.APT_SOURCE).read_text() == (
        "deb [signed-by=/usr/share/keyrings/falco-archive-keyring.gpg] "
        "https://download.falco.org/packages/deb stable main\n"
    )
    dropin = node.path(falco.DROPIN)
    doc = yaml.safe_load(dropin.read_text())
    jsonschema.validate(doc, SCHEMA)
    token = node.secret("alert-forwarder-token").decode()
    assert doc["http_output"]["url"] == (
        node.gateway.replace("://", "://falco:${EDGEGUARD_ALERT_TOKEN}@") + "/function/alert-forwarder"
    )
    assert token not in dropin.read_text()
    env_file = node.path(falco.ENV_FILE)
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert env_file.read_text().splitlines()[-1] == f"EDGEGUARD_ALERT_TOKEN={token}"
    assert (
        node.path(falco.unit_dropin("falco-modern-bpf.service"))
        .read_text()
        .endswith(f"[Service]\nEnvironmentFile={falco.ENV_FILE}\n")
    )
    assert token not in out
    node.clear_calls()
    code, out = node.run("falco", "--mode", "host")
    assert code == 0 and "no changes" in out and node.mutating_calls() == []


def test_host_mode_refuses_a_key_with_the_wrong_fingerprint(node):
    with_tokens(node)
    node.update_world(key_fpr="0" * 40)
    code, out = node.run("falco", "--mode", "host")
    assert code == 2 and "refusing to trust it" in out
    assert ["apt-get", "update"] not in node.calls()
    assert not node.path(falco.KEYRING).exists()


def test_host_mode_kmod_installs_headers_and_uses_the_kmod_unit(node):
    with_tokens(node)
    node.path("/sys/kernel/btf/vmlinux").unlink()
    node.update_world(
        enabled={"falco-modern-bpf.service": True}, active={"k3s": True, "falco-modern-bpf.service": True}
    )
    code, out = node.run("falco", "--mode", "host", "--deb", "/srv/falco_0.44.1_arm64.deb")
    assert code == 0, out
    records = {tuple(r["argv"]): r for r in node.call_records()}
    assert node.mutating_calls() == [
        ["apt-get", "install", "-y", "dkms", "make", "linux-headers-6.8.0-1012-raspi"],
        ["apt-get", "install", "-y", "/srv/falco_0.44.1_arm64.deb"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "disable", "--now", "falco-modern-bpf.service"],
        ["systemctl", "enable", "--now", "falco-kmod.service"],
    ]
    assert records[("apt-get", "install", "-y", "/srv/falco_0.44.1_arm64.deb")]["env"]["FALCO_DRIVER_CHOICE"] == "kmod"


def test_host_mode_restarts_the_unit_when_only_the_dropin_changes(node):
    with_tokens(node)
    node.run("falco", "--mode", "host")
    node.clear_calls()
    code, out = node.run("falco", "--mode", "host", "--falco-gateway", "http://10.1.1.1:31112")
    assert code == 0, out
    assert node.mutating_calls() == [["systemctl", "restart", "falco-modern-bpf.service"]]


def test_dry_run_plans_the_host_install_without_touching_anything(node):
    with_tokens(node)
    code, out = node.run("falco", "--mode", "host", "--dry-run")
    assert code == 0
    assert "would verify" not in out  # the plan names the fingerprint it requires
    assert falco.KEY_FINGERPRINT in out
    assert "run: apt-get update" in out
    assert "FALCO_DRIVER_CHOICE=modern_ebpf FALCOCTL_ENABLED=no apt-get install -y falco" in out
    assert node.mutating_calls() == []
    assert not node.path(falco.DROPIN).exists()


def test_missing_helm_is_installed_with_arkade(node):
    with_tokens(node)
    (node.bin / "helm").unlink()
    code, out = node.run("falco")
    assert code == 0, out
    assert node.mutating_calls()[0] == ["arkade", "get", "helm"]
    installed = node.path("/usr/local/bin/helm")
    assert installed.stat().st_mode & 0o777 == 0o755
    assert [
        "helm",
        "upgrade",
        "--install",
        "falco",
        "falcosecurity/falco",
        "--namespace",
        "falco",
        "--create-namespace",
        "--version",
        "9.1.0",
        "--values",
        str(node.path(falco.VALUES)),
        "--wait",
        "--timeout",
        "10m",
    ] in node.mutating_calls()
    node.clear_calls()
    code, out = node.run("falco")
    assert "no changes" in out and node.mutating_calls() == []


def test_helm_gets_k3s_admin_kubeconfig_when_none_is_set(node):
    with_tokens(node)
    node.files({"/etc/rancher/k3s/k3s.yaml": "apiVersion: v1\nkind: Config\n"})
    code, out = node.run("falco")
    assert code == 0, out
    assert "using KUBECONFIG=/etc/rancher/k3s/k3s.yaml" in out
    upgrade = [r for r in node.call_records() if r["argv"][:2] == ["helm", "upgrade"]][0]
    assert upgrade["env"]["KUBECONFIG"] == str(node.path("/etc/rancher/k3s/k3s.yaml"))


def falco_config_merge(base: dict, dropin: dict) -> dict:
    """What Falco does with one config.d file under the default `append` strategy
    (userspace/engine/yaml_helper.h, include_config_file): for each top-level key, a sequence is
    appended to the existing one; anything else, a whole map included, replaces the key."""
    merged = dict(base)
    for key, value in dropin.items():
        if isinstance(value, list):
            merged[key] = list(base.get(key) or []) + value
        else:
            merged[key] = value
    return merged


BASE_FALCO_YAML = CHART_VALUES["falco"]  # falco.yaml's settings for Falco 0.44.1, as the 9.1.0 chart renders them


def test_config_merge_model_replaces_maps_and_appends_lists():
    base = {"m": {"a": 1, "b": 2}, "l": [1], "s": "x"}
    assert falco_config_merge(base, {"m": {"a": 3}, "l": [2], "s": "y"}) == {"m": {"a": 3}, "l": [1, 2], "s": "y"}


def test_host_dropin_merged_like_falco_keeps_drop_actions_and_every_http_output_setting():
    url = falco.alert_url("http://127.0.0.1:31112", "tok")
    merged = falco_config_merge(BASE_FALCO_YAML, yaml.safe_load(falco.dropin(url)))
    drops = merged["syscall_event_drops"]
    # An absent or empty `actions` means "ignore": drops would be silently unreported.
    assert drops["actions"] == ["log", "alert"]
    assert drops == dict(BASE_FALCO_YAML["syscall_event_drops"], rate=0.01)
    assert merged["http_output"] == dict(BASE_FALCO_YAML["http_output"], enabled=True, url=url)
    assert merged["json_output"] is True
    # Lists in the packaged file survive (append), e.g. config_files and load_plugins.
    assert merged["config_files"] == BASE_FALCO_YAML["config_files"]


def test_the_restated_maps_are_falcos_own_defaults_key_for_key():
    assert set(falco.SYSCALL_EVENT_DROPS) == set(BASE_FALCO_YAML["syscall_event_drops"])
    assert {k: v for k, v in falco.SYSCALL_EVENT_DROPS.items() if k != "rate"} == {
        k: v for k, v in BASE_FALCO_YAML["syscall_event_drops"].items() if k != "rate"
    }
    assert falco.HTTP_OUTPUT_DEFAULTS == BASE_FALCO_YAML["http_output"]


def test_helm_values_start_falco_offline_with_its_own_rules_and_fitting_resources():
    for driver in ("modern_ebpf", "kmod"):
        values = falco.helm_values(driver, "http://gw/function/alert-forwarder?token=t")
        assert values["falcoctl"]["artifact"]["install"]["enabled"] is False
        assert values["falcoctl"]["artifact"]["follow"]["enabled"] is False
        assert values["resources"]["requests"]["memory"] == "256Mi"
        assert values["podPriorityClassName"] == "system-node-critical"
    # modern_ebpf: no driver loader, so the chart mounts nothing over /etc/falco/config.d; the image's
    # falco.container_plugin.yaml would load the container plugin twice (falcosecurity/charts#1057).
    mounts = falco.helm_values("modern_ebpf", "u")["mounts"]
    assert mounts["volumeMounts"] == [{"name": "edgeguard-empty-config-d", "mountPath": "/etc/falco/config.d"}]
    assert mounts["volumes"] == [{"name": "edgeguard-empty-config-d", "emptyDir": {}}]
    # kmod: the chart's driver loader already mounts an emptyDir there; a second mount at the same path
    # would make the DaemonSet invalid.
    assert "mounts" not in falco.helm_values("kmod", "u")


def test_host_mode_turns_an_enabled_falcoctl_follow_unit_off(node):
    with_tokens(node)
    node.update_world(enabled={falco.FALCOCTL_UNIT: True}, active={"k3s": True, falco.FALCOCTL_UNIT: True})
    code, out = node.run("falco", "--mode", "host")
    assert code == 0, out
    assert ["systemctl", "disable", "--now", falco.FALCOCTL_UNIT] in node.mutating_calls()
    node.clear_calls()
    code, out = node.run("falco", "--mode", "host")
    assert "no changes" in out and node.mutating_calls() == []


def test_the_real_api_server_admits_system_node_critical_outside_kube_system(real_cluster):
    # Critical priority classes may be used in any namespace from Kubernetes 1.17 on; here the real
    # v1.24 API server admits a pod like the Falco DaemonSet's in the falco namespace (server-side dry run).
    cluster, _ = real_cluster
    cluster.kubectl("create", "namespace", "falco-priority-test")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "falco-probe", "namespace": "falco-priority-test"},
        "spec": {
            "priorityClassName": falco.PRIORITY_CLASS,
            "containers": [{"name": "falco", "image": "docker.io/falcosecurity/falco:0.44.1"}],
        },
    }
    proc = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod))
    assert json.loads(proc.stdout)["spec"]["priority"] == 2000001000
