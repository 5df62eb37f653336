"""Audit events per minute on the real control plane: Falco's upstream policy against edgeguard's edge policy.

For each policy: `../shared/tools/kube/cluster start DIR --audit-webhook <loopback receiver> --audit-token T
--audit-policy FILE`, then an idle window and a demo-like workload window, counting the events the API
server's webhook delivers (batch mode, as k3s).

The test cluster is not k3s: its controller manager, scheduler and simulated kubelet (node_sim.py) all
authenticate as `admin`, the controllers do not leader-elect and node_sim writes no node Lease. So the
bench adds the background a single-node k3s server has, from k3s's own identities (client certificates
signed by the cluster CA, as k3s issues them): the node Lease renewed every 10 s by system:node:<name>,
leader-election renewals (GET + UPDATE every 2 s) by kube-controller-manager, kube-scheduler and k3s's
cloud controller manager, and the API server's identity Lease every 10 s. Counts are reported by source,
so the harness's own `admin` traffic (which on k3s would come from system identities) stays visible.

Run alone: `.venv/bin/python -m bench audit_policy` (EDGEGUARD_AUDIT_BENCH_SECONDS=<idle/workload window>,
default 120).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
WORKLOAD_USER = "edge-admin"
K3S_BACKGROUND = {  # lease name -> (user, groups, namespace, interval s, GET before UPDATE)
    "sim-node-0": ("system:node:sim-node-0", ("system:nodes",), "kube-node-lease", 10.0, False),
    "kube-controller-manager": ("system:kube-controller-manager", (), "kube-system", 2.0, True),
    "kube-scheduler": ("system:kube-scheduler", (), "kube-system", 2.0, True),
    "k3s-cloud-controller-manager": ("k3s-cloud-controller-manager", (), "kube-system", 2.0, True),
    "kube-apiserver-sim": ("system:apiserver", ("system:masters",), "kube-system", 10.0, True),
}
# RBAC the test cluster lacks for those identities (k3s grants them; kube-controller-manager and
# kube-scheduler already have theirs from the API server's bootstrap policy).
RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: edgeguard-bench-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node}
subjects: [{kind: Group, name: system:nodes, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: edgeguard-bench-ccm-leases}
rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: edgeguard-bench-ccm-leases}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edgeguard-bench-ccm-leases}
subjects: [{kind: User, name: k3s-cloud-controller-manager, apiGroup: rbac.authorization.k8s.io}]
"""


def _realkube():
    spec = importlib.util.spec_from_file_location("realkube", REPO / "tests/bootstrap/realkube.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _policies(workdir: Path) -> dict[str, Path]:
    sys.path.insert(0, str(REPO / "bootstrap"))
    from edgeguard_bootstrap import audit_policy

    edge = workdir / "edge-audit-policy.yaml"
    edge.write_bytes(audit_policy.edge_policy())
    return {"upstream (falcosecurity/plugins)": audit_policy.UPSTREAM, "edge (bootstrap writes)": edge}


class LeaseRenewer(threading.Thread):
    """GET (+) UPDATE of one Lease at the interval its k3s component uses."""

    def __init__(
        self,
        server: str,
        ca: str,
        cert: tuple[str, str],
        namespace: str,
        name: str,
        holder: str,
        interval: float,
        get_first: bool,
        stop: threading.Event,
    ):
        super().__init__(daemon=True)
        self.url = f"{server}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.session = requests.Session()
        # Not REQUESTS_CA_BUNDLE & co. from the environment: they would replace the cluster's CA.
        self.session.trust_env = False
        self.session.verify, self.session.cert = ca, cert
        self.holder, self.interval, self.get_first, self.stop = holder, interval, get_first, stop
        self.errors = 0

    def run(self):
        lease = self.session.get(self.url, timeout=10).json()
        while not self.stop.wait(self.interval):
            try:
                if self.get_first:
                    lease = self.session.get(self.url, timeout=10).json()
                lease["spec"]["renewTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
                resp = self.session.put(self.url, json=lease, timeout=10)
                if resp.status_code == 200:
                    lease = resp.json()
                else:
                    self.errors += 1
                    lease = self.session.get(self.url, timeout=10).json()
            except requests.RequestException:
                self.errors += 1


def start_background(cluster, stop: threading.Event) -> list[LeaseRenewer]:
    cluster.kubectl("apply", "-f", "-", input=RBAC)
    server = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]["cluster"][
        "server"
    ]
    renewers = []
    for name, (user, groups, ns, interval, get_first) in K3S_BACKGROUND.items():
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"holderIdentity": user, "leaseDurationSeconds": 40},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(lease))
        kubeconfig = json.loads(cluster.identity(user, groups).read_text())
        creds = kubeconfig["users"][0]["user"]
        renewers.append(
            LeaseRenewer(
                server,
                str(cluster.dir / "pki" / "ca.crt"),
                (creds["client-certificate"], creds["client-key"]),
                ns,
                name,
                user,
                interval,
                get_first,
                stop,
            )
        )
    for r in renewers:
        r.start()
    return renewers


def workload(cluster, kubeconfig: Path, seconds: float) -> int:
    """What the demo does to a cluster, as one operator identity: ConfigMaps with and without credentials
    created and deleted, a Deployment created, rolled out to a new image and deleted, `kubectl get` loops."""
    k = lambda *a, **kw: cluster.kubectl(*a, kubeconfig=kubeconfig, **kw)  # noqa: E731
    start, i, calls = time.monotonic(), 0, 0
    phase = 0
    while time.monotonic() - start < seconds:
        t = time.monotonic() - start
        if phase == 0:
            k("create", "deployment", "web", "--image=registry.example/web:1.0", "--replicas=2")
            phase, calls = 1, calls + 1
        elif phase == 1 and t > seconds / 3:
            k("set", "image", "deployment/web", "web=registry.example/web:1.1")
            k("rollout", "status", "deployment/web", "--timeout=60s", check=False)
            phase, calls = 2, calls + 2
        elif phase == 2 and t > 2 * seconds / 3:
            k("delete", "deployment", "web", "--wait=false")
            phase, calls = 3, calls + 1
        name = f"demo-{i}"
        k(
            "create",
            "configmap",
            name,
            "--from-literal=aws_access_key_id=AKIAIOSFODNN7EXAMPLE" if i % 2 else "--from-literal=greeting=hello",
        )
        k("get", "pods", "-A")
        k("get", "configmaps", "-n", "default")
        k("delete", "configmap", name, "--wait=false")
        calls += 4
        i += 1
        time.sleep(2)
    return calls


def source(e: dict) -> str:
    if e["user"] == WORKLOAD_USER:
        return "workload (edge-admin: the demo-like script)"
    if e["user"] == "admin":
        return "test harness as admin (node_sim, controller manager, scheduler)"
    if e["user"] in {u for u, *_ in K3S_BACKGROUND.values()} and e["resource"] == "leases":
        return "k3s background (simulated leases)"
    if e["user"] == "system:apiserver":
        return "API server's own reconcilers"
    return "other system identities"


def window(events: list[dict], t0: float, t1: float) -> list[dict]:
    return [e for e in events if t0 <= e["received"] < t1]


def measure(rk, name: str, policy: Path, seconds: float, workdir: Path) -> dict:
    with rk.AuditReceiver() as rx, rk.Cluster(workdir, rx.url, policy) as cluster:
        stop = threading.Event()
        renewers = start_background(cluster, stop)
        operator = cluster.identity(WORKLOAD_USER, ("system:masters",))
        time.sleep(20)  # let start-up traffic (discovery, first syncs) pass
        t0 = time.time()
        time.sleep(seconds)
        t1 = time.time()
        calls = workload(cluster, operator, seconds)
        t2 = time.time()
        time.sleep(4)  # the webhook batches for up to 1 s (the tool's --audit-webhook-batch-max-wait)
        stop.set()
        events = rx.snapshot()
        errors = sum(r.errors for r in renewers)
    result = {}
    for label, (a, b) in (("idle", (t0, t1)), ("workload", (t1, t2))):
        got = window(events, a, b)
        minutes = (b - a) / 60
        by_source = collections.Counter(source(e) for e in got)
        result[label] = {
            "per_min": len(got) / minutes,
            "minutes": minutes,
            "by_source": {k: v / minutes for k, v in by_source.items()},
            "workload_events": by_source.get(source({"user": WORKLOAD_USER}), 0),
        }
    result["kubectl_calls"] = calls
    result["renew_errors"] = errors
    return result


def main() -> None:
    rk = _realkube()
    why = rk.missing()
    if why:
        print(f"skipped: {why}")
        return
    seconds = float(os.environ.get("EDGEGUARD_AUDIT_BENCH_SECONDS", "120"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgeguard-audit-bench-") as d:
        for i, (name, policy) in enumerate(_policies(Path(d)).items()):
            results[name] = measure(rk, name, policy, seconds, Path(d) / f"cluster-{i}")
    print(
        f"audit events per minute delivered to the webhook ({seconds:.0f} s idle, then {seconds:.0f} s of "
        "demo-like workload; kube-apiserver v1.24, batch mode):"
    )
    names = list(results)
    for label in ("idle", "workload"):
        before, after = (results[n][label]["per_min"] for n in names)
        print(f"  {label:8s}: {before:7.1f} -> {after:7.1f} events/min ({100 * (1 - after / before):.0f}% fewer)")
        sources = sorted({s for n in names for s in results[n][label]["by_source"]})
        for s in sources:
            b, a = (results[n][label]["by_source"].get(s, 0.0) for n in names)
            print(f"      {s:66s} {b:7.1f} -> {a:7.1f}")
    for n in names:
        calls = results[n]["kubectl_calls"]
        per_call = results[n]["workload"]["workload_events"] / calls if calls else 0.0
        print(
            f"  [{n}] workload kubectl calls: {calls} ({per_call:.2f} workload events per call; the machine's "
            f"load sets how many calls fit in the window), lease renewal errors: {results[n]['renew_errors']}"
        )


if __name__ == "__main__":
    main()
