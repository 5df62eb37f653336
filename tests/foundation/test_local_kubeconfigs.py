"""The local stack gives each `*-kubeconfig` secret the admin kubeconfig, or the one named for it
(LocalStack(kubeconfigs=...), `python -m local.demo --kubeconfig-secret NAME=FILE`): how the functions run
with the ServiceAccount kubeconfigs bootstrap makes (tests/foundation/test_demo_real_cluster.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from local import gateway, stackfile

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
OWN = "apiVersion: v1\nkind: Config\n# a least-privilege kubeconfig\nclusters: []\nusers: []\n"


def test_a_named_kubeconfig_replaces_the_admin_one_for_that_secret_only(tmp_path):
    doc = {"version": "1.0", "provider": {"name": "openfaas"}, "functions": {}}
    for name in ("least", "admin"):
        shutil.copytree(DATA / "contract_fn", tmp_path / "functions" / name)
        doc["functions"][name] = {
            "lang": "python3-http",
            "handler": f"./functions/{name}",
            "image": f"x/{name}:1",
            "secrets": [f"{name}-kubeconfig"],
        }
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(doc))
    with gateway.LocalStack(
        port=gateway.free_port(),
        state_dir=tmp_path / "state",
        kube="emulator",
        stack=stackfile.load(tmp_path / "stack.yml"),
        kubeconfigs={"least-kubeconfig": OWN},
    ) as stack:
        mounted = {n: (fp.secrets_dir / f"{n}-kubeconfig").read_text() for n, fp in stack.functions.items()}
        assert mounted["least"] == OWN
        assert mounted["admin"] == stack.kubeconfig_text and "kubeemu-admin-token" in mounted["admin"]


def test_demo_refuses_a_malformed_kubeconfig_secret_option():
    for bad, why in (
        ("node-enroll-kubeconfig", "expected <name>-kubeconfig=FILE"),
        ("node-enroll-token=/dev/null", "expected <name>-kubeconfig=FILE"),
        ("node-enroll-kubeconfig=/nonexistent/kc", "No such file or directory"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "local.demo", "--kubeconfig-secret", bad],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_alert_forwarders_kubeconfig_is_empty_unless_named_so_its_handover_is_off_and_no_kube_starts(tmp_path):
    """The admin kubeconfig is not alert-forwarder's identity, and the handover Secret it updates is declared by
    deploy/rbac/alert-forwarder.yaml, which the local API does not hold: an empty secret turns the handover and
    the per-node tokens off (functions/alert-forwarder/handler.py), as on a cluster without bootstrap's."""
    doc = {"version": "1.0", "provider": {"name": "openfaas"}, "functions": {}}
    shutil.copytree(DATA / "contract_fn", tmp_path / "functions" / "fwd")
    doc["functions"]["fwd"] = {
        "lang": "python3-http",
        "handler": "./functions/fwd",
        "image": "x/fwd:1",
        "secrets": ["alert-forwarder-kubeconfig"],
    }
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(doc))
    stack_file = stackfile.load(tmp_path / "stack.yml")
    with gateway.LocalStack(port=gateway.free_port(), state_dir=tmp_path / "a", stack=stack_file) as stack:
        assert (stack.functions["fwd"].secrets_dir / "alert-forwarder-kubeconfig").read_text() == ""
        assert stack.emulator is None and stack.kubeconfig_path is None
    with gateway.LocalStack(
        port=gateway.free_port(),
        state_dir=tmp_path / "b",
        stack=stack_file,
        kubeconfigs={"alert-forwarder-kubeconfig": OWN},
    ) as stack:
        assert (stack.functions["fwd"].secrets_dir / "alert-forwarder-kubeconfig").read_text() == OWN
