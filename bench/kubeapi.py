"""What a function pays to call the Kubernetes API: edgeguard.kubeapi against the client's CoreV1Api (issue 12 §2).

``python -m bench kubeapi``: each way runs in a fresh interpreter, loads the kubeconfig the function's way
(edgeguard.kube, from a secret file) and makes node-enroll's two reads (list Nodes, list one node's Pods) on a
real kube-apiserver v1.24: KUBECONFIG with EDGEGUARD_REAL_CLUSTER=1, else the one ``kube/cluster`` starts from
the shared tools (tests/realkube.py). Prints ms from interpreter start to the answer and VmRSS after it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = r"""
import sys, time
t0 = time.perf_counter()
import os
sys.path.insert(0, sys.argv[2])
way = sys.argv[1]
if way == "baseline":  # what any https client needs: urllib3, PyYAML, ssl
    import ssl, urllib3, yaml
else:
    from edgeguard import kube
    if way == "corev1":
        import json
        from kubernetes import client
        core = client.CoreV1Api(kube.api_client("kc"))
        json.loads(core.list_node(_preload_content=False).data)
        json.loads(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=x", _preload_content=False).data)
    else:
        from edgeguard import kubeapi
        c = kubeapi.Client.for_secret("kc")
        c.list("Node")
        c.list("Pod", None, field_selector="spec.nodeName=x")
ms = (time.perf_counter() - t0) * 1000
rss = int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
print(f"{ms:.1f} {rss:.1f}")
"""


def measure(kubeconfig_text: str, runs: int = 5) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as secrets:
        Path(secrets, "kc").write_text(kubeconfig_text)
        env = dict(os.environ, EDGEGUARD_SECRETS_DIR=secrets)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        for way in ("baseline", "kubeapi", "corev1"):
            samples = []
            for _ in range(runs):
                p = subprocess.run(
                    [sys.executable, "-c", _PROBE, way, str(ROOT)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=True,
                )
                samples.append(tuple(float(x) for x in p.stdout.split()))
            out[way] = {
                "ms_min": min(s[0] for s in samples),
                "ms_median": statistics.median(s[0] for s in samples),
                "rss_mib": max(s[1] for s in samples),
            }
    return out


def main(runs: int = 5) -> None:
    from tests import realkube

    mine = realkube.users_cluster()
    launcher = None
    if mine is not None:
        text = mine.read_text()
    else:
        missing = realkube.missing_components()
        if missing:
            print(f"skipped: needs {' and '.join(missing)}")
            return
        launcher = realkube.Launcher(Path(tempfile.mkdtemp(prefix="bench-kubeapi-")))
        text = launcher.start().kubeconfig_text
    try:
        figures = measure(text, runs)
    finally:
        if launcher is not None:
            launcher.stop()
    print(f"{'way':10} {'first answer min':>17} {'median':>8} {'VmRSS':>9}   ({runs} fresh interpreters each)")
    for way, f in figures.items():
        print(f"{way:10} {f['ms_min']:14.0f} ms {f['ms_median']:5.0f} ms {f['rss_mib']:6.1f} MiB")
