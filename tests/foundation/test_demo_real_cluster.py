"""Demo scenarios 2 and 4 on a real kube-apiserver v1.24, the functions holding only their least privilege.

`python -m local.demo --kube real` with KUBECONFIG = the launched control plane's admin kubeconfig (which the
demo itself uses to create the ConfigMap and the Deployment and to show the result), and each function's
kubeconfig secret = the ServiceAccount kubeconfig `edgeguard-bootstrap openfaas` made (tests/realkube.py,
`bootstrapped`): the scrubber moves the key in `default` only because bootstrap was given
--scrubber-namespaces default, and node-enroll mints, lists and revokes with its own Roles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from local import gateway
from tests.realkube import FUNCTION_SA as ALL_SA

# The two functions whose scenarios this demo plays on the real API server.
FUNCTION_SA = {fn: ALL_SA[fn] for fn in ("configmap-secret-scrubber", "node-enroll")}

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(bootstrapped, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo-real")
    args = []
    for fn, secret in FUNCTION_SA.items():
        path = tmp_path / secret
        path.write_text(bootstrapped.kubeconfig(fn))
        args += ["--kubeconfig-secret", f"{secret}={path}"]
    env = dict(os.environ, KUBECONFIG=str(bootstrapped.cluster.kubeconfig))
    state = tmp_path / "state"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "local.demo",
            "--port",
            str(gateway.free_port()),
            "--kube",
            "real",
            "--state-dir",
            str(state),
            "--only",
            "configmap_secret_scrubber",
            "--only",
            "node_enroll",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(proc.stdout)
    proc.state_dir = state
    return proc


def test_demo_scrubber_and_node_enroll_scenarios_pass_on_the_real_api_server_with_sa_credentials(bootstrapped, demo):
    out, proc = demo.stdout, demo
    assert "Summary" in out, out + proc.stderr
    assert f"real cluster from KUBECONFIG={bootstrapped.cluster.kubeconfig}" in out
    assert "configmap-secret-scrubber-kubeconfig, node-enroll-kubeconfig: the kubeconfig files given" in out
    outcomes = re.findall(r"^\s+(\d)\. (ok|not built yet|FAILED\S*)\s", out.split("Summary", 1)[1], re.M)
    assert outcomes == [("2", "ok"), ("4", "ok")], out
    assert "Traceback" not in out + proc.stderr
    for fn, secret in FUNCTION_SA.items():  # what the functions were given to mount
        assert (demo.state_dir / "secrets" / secret).read_text() == bootstrapped.kubeconfig(fn)
    # the rollout ran on the simulated node: the Deployment reading the key is available from the Secret
    deployment = bootstrapped.cluster.apps().read_namespaced_deployment("aws-cli", "default")
    refs = [e.value_from.secret_key_ref for e in deployment.spec.template.spec.containers[0].env]
    assert [(r.name, r.key) for r in refs if r] == [("aws-creds-credentials", "aws_access_key_id")]
    assert (deployment.status.updated_replicas, deployment.status.available_replicas) == (1, 1), deployment.status


def test_demo_on_the_real_api_server_writes_no_secret_value_to_any_platform_log(demo):
    assert "LEAK" not in demo.stdout, demo.stdout.split("Summary", 1)[-1]
    assert demo.returncode == 0
