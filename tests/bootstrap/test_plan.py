"""One injectable executor for every host command; dry runs show the whole plan; k3s restarts once in `all`."""

from __future__ import annotations

import io
import re
import subprocess

import pytest
from inproc import InProcess

from edgeguard_bootstrap import cli


class Recording(InProcess):
    """InProcess that also records the HTTP GETs (the fake gateway still answers them)."""

    def __init__(self):
        super().__init__()
        self.argvs: list[list[str]] = []
        self.urls: list[str] = []

    def run(self, argv, **kw):
        self.argvs.append(list(argv))
        return super().run(argv, **kw)

    def http_get(self, url, headers=None, timeout=5):
        self.urls.append(url)
        return super().http_get(url, headers, timeout)


def test_every_host_command_of_all_goes_through_the_one_injected_executor(node, monkeypatch):
    def no_process(*a, **k):
        raise AssertionError(f"a process was started outside the executor: {a[:1]}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    executor = Recording()
    out = io.StringIO()
    argv = ["all", "--dry-run", "--root", str(node.root), "--gateway", node.gateway, "--repo", str(node.repo)]
    code = cli.main(argv, out=out, stdin=io.StringIO(""), env=node.env(), executor=executor)
    assert code == 0, out.getvalue()
    # Everything the node saw came from the executor (the fakes log every call they answer).
    assert node.calls() == executor.argvs and executor.calls == len(executor.argvs)
    assert {a[0] for a in executor.argvs} >= {"uname", "k3s", "kubectl", "faas-cli", "helm"}
    assert f"{node.gateway}/healthz" in executor.urls


def sections(out: str) -> list[str]:
    return [line[3:].split(":")[0] for line in out.splitlines() if line.startswith("== ")]


def test_all_dry_run_without_faas_cli_helm_kubectl_or_arkade_still_plans_every_step(node):
    for tool in ("faas-cli", "helm", "kubectl", "arkade"):
        (node.bin / tool).unlink()
    code, out = node.run("all", "--dry-run")
    assert code == 0, out
    assert sections(out) == [
        "preflight",
        "openfaas",
        "k3s-audit",
        "falco --mode helm",
        "offline",
        "k3s restart (once, for k3s-audit and offline)",
    ]
    assert (
        re.search(r"FAIL +not found on PATH; install it: arkade get faas-cli", out)
        or "FAIL faas-cli not found and arkade is not installed" in out
    )
    assert "FAIL helm not found and arkade is not installed: a real run stops here" in out
    for planned in (
        "run: faas-cli secret create audit-ingest-token",
        "run: kubectl apply -f",
        "run: helm upgrade --install falco falcosecurity/falco",
        "run: systemctl restart k3s",
        "+kube-apiserver-arg+:",
    ):
        assert planned in out, planned
    assert node.mutating_calls() == []
    assert "change(s) planned; nothing was changed (dry run)" in out


@pytest.mark.parametrize(
    "step, missing, planned",
    [
        ("openfaas", "faas-cli", "run: faas-cli secret create configmap-secret-scrubber-token"),
        ("falco", "helm", "run: helm upgrade --install falco falcosecurity/falco"),
    ],
)
def test_a_single_step_dry_run_goes_on_past_a_missing_tool(node, step, missing, planned):
    node.seed_tokens()
    (node.bin / missing).unlink()
    (node.bin / "arkade").unlink()
    code, out = node.run(step, "--dry-run")
    assert code == 0, out
    assert f"FAIL {missing} not found and arkade is not installed" in out and planned in out
    # A real run still stops there.
    code, out = node.run(step)
    assert code == 2 and f"{missing} not found and arkade is not installed" in out


def test_all_restarts_k3s_once_for_the_audit_settings_and_the_registry_mirror(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert node.world()["restarts"]["k3s"] == 1
    assert node.mutating_calls().count(["systemctl", "restart", "k3s"]) == 1
    # What each step needed after the restart still happened: the audit probe and the pinned images.
    assert "authenticated audit batches reach audit-ingest" in out
    assert re.search(r"all \d+ images are in the store and pinned", out)
    assert out.count("API server ready after the restart") == 1


def test_all_dry_run_plans_one_k3s_restart(node):
    code, out = node.run("all", "--dry-run")
    assert code == 0, out
    assert out.count("run: systemctl restart k3s") == 1


def test_a_refused_restart_in_all_is_pending_for_both_steps(node):
    code, out = node.run("all", "--check-timeout", "5")  # no --yes, no terminal: not restarted
    assert code == 0, out
    assert "k3s NOT restarted" in out and ["systemctl", "restart", "k3s"] not in node.mutating_calls()
    node.clear_calls()
    code, out = node.run("all", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert node.mutating_calls().count(["systemctl", "restart", "k3s"]) == 1
    assert "authenticated audit batches reach audit-ingest" in out


def check_rows(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        m = re.match(r"  (\S.*?)\s{2,}(PASS|WARN|FAIL|SKIP)\s", line + " ")
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_image_checks_of_the_preparing_machine_say_skip_not_fail(node):
    node.seed_tokens()
    node.update_world(k3s_version=None)  # the machine preparing the image has no k3s
    code, out = node.run("k3s-audit", "--image")
    assert code == 0, out
    rows = check_rows(out)
    assert rows["k3s"] == "SKIP" and rows["kubectl"] == "SKIP" and rows["gateway"] == "SKIP"
    assert rows["audit https front"] == "SKIP"
    assert rows["openssl"] == "PASS"  # bootstrap itself runs openssl here, --image or not
    code, out = node.run("falco", "--image", "--mode", "host", "--driver", "kmod")
    assert code == 0, out
    rows = check_rows(out)
    assert rows == {"arch": "SKIP", "os": "PASS", "falco driver": "SKIP", "apt-get": "SKIP", "systemctl": "SKIP"}
    assert "FAIL" not in out
