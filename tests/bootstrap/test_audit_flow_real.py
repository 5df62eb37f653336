"""The seed's flow end to end on a real kube-apiserver (v1.24, ../shared/tools/kube/cluster).

The API server runs with exactly the audit policy and webhook kubeconfig that `edgeguard-bootstrap k3s-audit`
writes, pointed at the local gateway through local/tlsfront.py (the role k3s's Traefik plays), which serves the
Ingress and TLS Secret bootstrap applied to that same API server. Then the seed's
`kubectl create configmap aws-creds --from-literal aws_access_key_id=AKES20LNOA` travels audit-ingest
(authenticated) -> alert-forwarder -> configmap-secret-scrubber, which moves the key into a Secret and rewires a
Deployment that rolls out on the simulated node.

The negative: with the webhook URL bootstrap used to write (http://…:31112/function/audit-ingest) the real API
server posts every batch without an Authorization header, and bootstrap's probe says so and why.

Simulated here, and only here: the node (node_sim.py), Traefik (tlsfront.py) and OpenFaaS's Deployments of the
functions (the functions themselves run in the local stack). k3s, systemctl and uname are bootstrap's recording
fakes; kubectl and openssl are the real ones.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from edgeguard_bootstrap import audit_tls, k3s_audit
from edgeguard_bootstrap.engine import BootstrapError, Ctx
from local import gateway as localgw
from local import tlsfront

pytestmark = [pytest.mark.cluster, pytest.mark.own_control_plane]

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = ["audit-ingest", "alert-forwarder", "configmap-secret-scrubber"]
TOKENS = (
    "audit-ingest-token",
    "alert-forwarder-token",
    "configmap-secret-scrubber-token",
    "configmap-secret-scrubber-fingerprint-key",
    "basic-auth-password",
)
SEED_VALUE = "AKES20LNOA"


def tools_dir() -> Path:
    return Path(os.environ.get("EDGEGUARD_TOOLS") or REPO.parent / "shared" / "tools")


def launcher() -> Path:
    tool = tools_dir() / "kube" / "cluster"
    if not tool.is_file():
        pytest.skip(
            f"needs real component: kube/cluster (the real kube-apiserver v1.24 launcher), not found at "
            f"{tool}; set EDGEGUARD_TOOLS to the shared tools folder"
        )
    if not (os.environ.get("ETCD") or shutil.which("etcd")):
        pytest.skip("needs real component: etcd for kube/cluster (apt-get install etcd-server, or ETCD=/path)")
    for name in ("kubectl", "openssl"):
        if not shutil.which(name):
            pytest.skip(f"needs real component: {name} on PATH")
    return tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A real control plane in `directory`; `restart` keeps etcd's data, as a k3s restart keeps the cluster."""

    def __init__(self, tool: Path, directory: Path):
        self.tool, self.dir, self.port = tool, directory, free_port()
        self.kubeconfig = directory / "admin.kubeconfig"

    def start(self, *audit: str) -> None:
        proc = subprocess.run(
            [str(self.tool), "start", str(self.dir), "--port", str(self.port), "--python", sys.executable, *audit],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                for p in sorted((self.dir / "logs").glob("*.log"))
            )
            raise AssertionError(f"cluster did not start: {proc.stdout}{proc.stderr}\n{logs}")

    def stop(self) -> None:
        subprocess.run([str(self.tool), "stop", str(self.dir)], capture_output=True, timeout=120)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, KUBECONFIG=str(self.kubeconfig)),
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.dir / "logs").glob("*.log")))


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(launcher(), tmp_path / "cluster")
    yield c
    c.stop()


@pytest.fixture
def stack(tmp_path, cluster, monkeypatch):
    """The three functions of the seed's flow behind the local gateway, on the real API server (admin)."""
    started = []

    def start(functions=FUNCTIONS):
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        s = localgw.LocalStack(
            localgw.free_port(),
            tmp_path / "stack",
            kube="real",
            functions=functions,
            env_overrides={"configmap-secret-scrubber": {"scrub_mode": "move"}},
        )
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def real_kubectl_on(node, cluster) -> None:
    """bootstrap's fakes for k3s/systemctl/uname, but the real kubectl against the real API server."""
    real = node.tmp / "realbin"
    real.mkdir(exist_ok=True)
    for tool in ("kubectl", "diff"):  # kubectl diff runs diff(1)
        if not (real / tool).exists():
            (real / tool).symlink_to(shutil.which(tool))
    fake_env = node.env

    def env():
        return dict(fake_env(), PATH=f"{real}{os.pathsep}{node.bin}", KUBECONFIG=str(cluster.kubeconfig))

    node.env = env


def as_openfaas_would(cluster) -> None:
    """What k3s and OpenFaaS CE leave in a cluster that bootstrap relies on: their namespaces, k3s's Traefik
    IngressClass (its controller is tlsfront.py here), and a Deployment per function (faas-netes makes one)."""
    cluster.kubectl("create", "namespace", "openfaas")
    cluster.kubectl("create", "namespace", "openfaas-fn")
    docs = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "traefik"},
            "spec": {"controller": "traefik.io/ingress-controller"},
        }
    ]
    for fn in FUNCTIONS:
        container = {"name": fn, "image": f"ghcr.io/example/{fn}:0.1"}
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": fn, "namespace": "openfaas-fn"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"faas_function": fn}},
                    "template": {"metadata": {"labels": {"faas_function": fn}}, "spec": {"containers": [container]}},
                },
            }
        )
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def node_copy(node, name: str, value: str) -> None:
    """The node copy `edgeguard-bootstrap openfaas` keeps of an OpenFaaS secret (same value)."""
    store = node.path("/var/lib/edgeguard/secrets")
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    (store / name).write_text(value)
    (store / name).chmod(0o600)


def consumer() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "aws-cli", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "aws-cli"}},
            "template": {
                "metadata": {"labels": {"app": "aws-cli"}},
                "spec": {
                    "containers": [
                        {
                            "name": "aws",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", 'test -n "$AWS_ACCESS_KEY_ID" && sleep 3600'],
                            "env": [
                                {
                                    "name": "AWS_ACCESS_KEY_ID",
                                    "valueFrom": {"configMapKeyRef": {"name": "aws-creds", "key": "aws_access_key_id"}},
                                }
                            ],
                        }
                    ]
                },
            },
        },
    }


def ingest_counters(front: audit_tls.Front, token: str) -> dict:
    """audit-ingest's GET over the webhook's own transport."""
    headers = {"Authorization": f"Bearer {token}"}
    if front.ca_pem:
        status, body = audit_tls.https_get(front.url, headers, front.ca_pem, front.server_name)
    else:
        r = requests.get(front.url, headers=headers, timeout=10)
        status, body = r.status_code, r.content
    assert status == 200, body
    return json.loads(body)["counters"]


def wait_for(what: str, check, timeout: float = 120.0, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def assert_no_secret_in_logs(stack, cluster, extra: tuple = ()) -> None:
    values = {n: stack.secret(n) for n in TOKENS if stack.store.path(n).exists()}
    values.update({f"extra{i}": v for i, v in enumerate(extra)})
    logs = {p.name: p.read_text(errors="replace") for p in sorted((stack.state_dir / "logs").glob("*.log"))}
    logs["kube-apiserver and co"] = cluster.logs()
    assert logs, "no logs to check"
    for where, text in logs.items():
        for name, value in values.items():
            assert value and value not in text, f"{name} appears in {where}"


def test_seed_flow_over_bootstraps_https_webhook_on_the_real_api_server(node, cluster, stack):
    cluster.start()  # k3s before k3s-audit: no audit flags yet
    as_openfaas_would(cluster)
    s = stack()
    token = s.secret("audit-ingest-token")
    node_copy(node, "audit-ingest-token", token)
    real_kubectl_on(node, cluster)
    node.gateway = s.url
    tls_port = free_port()
    url = f"https://127.0.0.1:{tls_port}{audit_tls.PATH}"

    code, out = node.run("k3s-audit", "--yes", "--skip-check", "--audit-url", url)
    assert code == 0, out
    assert ["systemctl", "restart", "k3s"] in node.calls()  # the fake records it; the restart is done below
    # bootstrap applied its Secret and Ingress to the real API server; tlsfront serves what it holds there.
    ingress = cluster.get("ingress", audit_tls.INGRESS_NAME, "-n", audit_tls.NAMESPACE)
    secret = cluster.get("secret", audit_tls.SECRET_NAME, "-n", audit_tls.NAMESPACE)
    assert base64.b64decode(secret["data"]["tls.key"]) == node.path(audit_tls.KEY).read_bytes()
    front = s.start_tls_front(tlsfront.Site.from_objects(ingress, {audit_tls.SECRET_NAME: secret}), port=tls_port)

    # The "k3s restart": the API server comes back with exactly bootstrap's policy and webhook kubeconfig.
    webhook, policy = node.path(k3s_audit.WEBHOOK), node.path(k3s_audit.POLICY)
    cluster.stop()
    cluster.start("--audit-webhook-config", str(webhook), "--audit-policy", str(policy))
    assert (cluster.dir / "audit-webhook.kubeconfig").read_bytes() == webhook.read_bytes()

    # bootstrap's own delivery probe, on the real API server: an authenticated batch must arrive.
    node.clear_calls()
    code, out = node.run("k3s-audit", "--check", "--check-timeout", "60", "--audit-url", url)
    assert code == 0, out
    assert "authenticated audit batches reach audit-ingest: authenticated_batches" in out
    assert "already applied" in out and "] change" not in out
    assert "[probe] kubectl create configmap edgeguard-audit-probe-" in out  # the real kubectl, real API server

    # The seed: a Deployment reads the key, then the ConfigMap is created with kubectl.
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(consumer()))
    cluster.kubectl("create", "configmap", "aws-creds", "--from-literal", f"aws_access_key_id={SEED_VALUE}")

    def moved():
        cm = cluster.get("configmap", "aws-creds")
        return "aws_access_key_id" not in (cm.get("data") or {}) and cm

    cm = wait_for("the scrubber to move the key out of the ConfigMap", moved)
    target = cm["metadata"]["annotations"].get("scrubber.edgeguard.io/target-secret", "aws-creds-credentials")
    sec = cluster.get("secret", target)
    assert base64.b64decode(sec["data"]["aws_access_key_id"]).decode() == SEED_VALUE
    dep = cluster.get("deployment", "aws-cli")
    [env] = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env["valueFrom"] == {"secretKeyRef": {"name": target, "key": "aws_access_key_id"}}

    def rolled_out():
        st = cluster.get("deployment", "aws-cli")["status"]
        return (
            st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and st.get("updatedReplicas") == 1
            and st.get("readyReplicas") == 1
            and st.get("replicas") == 1
        )

    wait_for("the rewired Deployment to roll out on the simulated node", rolled_out)

    # Every batch was authenticated; none came without a token or with a wrong one.
    counters = ingest_counters(
        audit_tls.Front(url, node.path(audit_tls.CA_CERT).read_bytes(), audit_tls.SERVER_NAME, True), token
    )
    assert counters["authenticated_batches"] > 0 and counters["events"] > 0
    assert counters["unauthenticated"] == 0 and counters["invalid_token"] == 0
    assert front.without_authorization == 0 and front.with_authorization > 0
    assert set(front.sni_seen) == {audit_tls.SERVER_NAME} and front.refused_handshakes == 0
    cluster.stop()  # before the stack, so no batch arrives while the gateway shuts down
    assert_no_secret_in_logs(s, cluster, extra=(SEED_VALUE,))


def test_the_old_http_webhook_url_sends_no_token_and_bootstraps_probe_names_the_cause(node, cluster, stack, tmp_path):
    cluster.start()
    s = stack(["audit-ingest"])
    token = s.secret("audit-ingest-token")
    http_url = f"{s.url}{audit_tls.PATH}"  # the gateway's plain-HTTP route, as the old default used it
    old = tmp_path / "old-webhook.kubeconfig"
    old.write_text(k3s_audit.webhook_kubeconfig(http_url, token))
    assert yaml.safe_load(old.read_text())["users"][0]["user"]["token"] == token  # the token is in the file
    cluster.stop()
    cluster.start("--audit-webhook-config", str(old), "--audit-policy", str(k3s_audit.TEMPLATE))

    cluster.kubectl("create", "configmap", "probe-by-hand", "--from-literal", "k=v")
    front = audit_tls.Front(http_url, None, None, managed=False)
    counters = wait_for(
        "the API server's batches to reach audit-ingest",
        lambda: (c := ingest_counters(front, token))["unauthenticated"] > 0 and c,
    )
    assert counters["authenticated_batches"] == 0 and counters["invalid_token"] == 0 and counters["events"] == 0
    # The API server's own account, once its retries of a batch are used up.
    wait_for(
        "the API server to give up on a batch",
        lambda: "the server has asked for the client to provide credentials" in cluster.logs(),
        timeout=90,
        every=2,
    )

    # bootstrap's probe on that node (the old kubeconfig in place) fails and says why.
    node.files({k3s_audit.WEBHOOK: old.read_text()})
    real_kubectl_on(node, cluster)
    ctx = Ctx(str(node.root), env=node.env(), out=io.StringIO())
    with pytest.raises(BootstrapError) as err:
        k3s_audit.verify_delivery(ctx, front, token, timeout=30, poll=1)
    msg = str(err.value)
    assert "came without credentials" in msg and "only to an https:// server" in msg
    assert f"points at the http URL {http_url}" in msg
    assert token not in msg and token not in ctx.out.getvalue()
    cluster.stop()  # before the stack, so no batch arrives while the gateway shuts down
    assert_no_secret_in_logs(s, cluster)
