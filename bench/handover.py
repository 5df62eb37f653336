"""What durability across redeploys costs: alert-forwarder's spool handover through a Secret on the real API server.

``python -m bench handover`` (part of ``make bench``): starts the real kube-apiserver v1.24 from the shared tools
(tests/realkube.py's launcher), applies deploy/rbac/alert-forwarder.yaml, and with the kubeconfig bootstrap would
make for that ServiceAccount writes and reads the handover Secret the way a terminating and a new pod do
(functions/alert-forwarder/handover.py, kubesecret.py): 100 to 10,000 typical Falco alerts, and 10,000 barely
compressible ones, which do not all fit. Figures: gzip'd size, encode, PUT, list + decode.
"""

from __future__ import annotations

import base64
import importlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _entries(spool, n: int, noise: bool = False) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from tests.alert_forwarder.conftest import falco_alert

    out = []
    for i in range(n):
        al = falco_alert(
            priority="Warning",
            **{"proc.cmdline": f"bash -c id {i}", "k8s.pod.name": f"nginx-{i % 50}", "container.id": f"{i:012x}"},
        )
        if noise:
            al["output"] = "10:11:12.1: Warning " + secrets.token_urlsafe(220)
        out.append(
            spool.Entry(
                id=spool.new_entry_id(time.time()),
                destination="action-centre",
                key=f"{i:032x}",
                payload=al,
                route="action-centre",
            ).to_dict()
        )
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests import realkube
    from tests.alert_forwarder.conftest import assemble_package

    missing = realkube.missing_components()
    if missing:
        print(f"bench handover skipped: needs {' and '.join(missing)}")
        return
    with tempfile.TemporaryDirectory(prefix="edgeguard-bench-handover-") as tmp:
        run = realkube.Launcher(Path(tmp) / "kube")
        cluster = run.start()
        try:
            # HOME in the temporary directory: kubectl writes its discovery cache under $HOME/.kube/cache (with
            # no HOME, under the current directory: the repo).
            env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp}
            cluster.ensure_namespace("openfaas-fn")
            cluster.ensure_namespace("edgeguard-enroll")
            for manifest in ("alert-forwarder.yaml", "node-tokens-alert-forwarder.yaml"):
                subprocess.run(
                    ["kubectl", "apply", "-f", str(ROOT / "deploy/rbac" / manifest)],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            token_secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": "alert-forwarder-sa-token",
                    "namespace": "openfaas-fn",
                    "annotations": {"kubernetes.io/service-account.name": "alert-forwarder"},
                },
            }
            subprocess.run(
                ["kubectl", "apply", "-f", "-"],
                input=json.dumps(token_secret),
                text=True,
                env=env,
                check=True,
                capture_output=True,
            )
            core = cluster.core()
            while not (core.read_namespaced_secret("alert-forwarder-sa-token", "openfaas-fn").data or {}).get("token"):
                time.sleep(0.2)
            token = base64.b64decode(
                core.read_namespaced_secret("alert-forwarder-sa-token", "openfaas-fn").data["token"]
            ).decode()
            sys.path.insert(0, str(ROOT / "bootstrap"))
            from edgeguard_bootstrap.openfaas import function_kubeconfig

            kubeconfig = function_kubeconfig(
                "alert-forwarder", token, base64.b64encode(cluster.ca_pem).decode(), cluster.host
            )
            root, pkg = assemble_package(Path(tmp) / "pkg")
            sys.path.insert(0, str(root))
            ks, ho, sp = (importlib.import_module(f"{pkg}.{m}") for m in ("kubesecret", "handover", "spool"))
            client = ks.SecretClient(ks.Kubeconfig(kubeconfig), "alert-forwarder-spool-handover")
            print(f"{'handover':<44} {'JSON':>8} {'in Secret':>10} {'kept':>6} {'encode':>8} {'PUT':>7} {'import':>8}")
            for n, noise in ((100, False), (1000, False), (5000, False), (10000, False), (10000, True)):
                es = _entries(sp, n, noise)
                t = time.perf_counter()
                data, left = ho.encode(es, [], "bench")
                enc = time.perf_counter() - t
                obj, _ = client.list()
                t = time.perf_counter()
                client.update(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": "Opaque",
                        "metadata": ho._keep_meta(obj),
                        "data": data,
                    }
                )
                put = time.perf_counter() - t
                t = time.perf_counter()
                obj, _ = client.list()
                got, _, meta = ho.decode(obj)
                imp = time.perf_counter() - t
                size = sum(len(base64.b64decode(v)) for v in data.values())
                what = f"{n} alerts" + (" with 300 random characters each" if noise else " (typical)")
                print(
                    f"{what:<44} {len(json.dumps(es)) / 1e6:>6.2f}MB {size / 1e3:>8.0f}kB {meta['entries']:>6} "
                    f"{enc * 1e3:>6.0f}ms {put * 1e3:>5.0f}ms {imp * 1e3:>6.0f}ms"
                )
        finally:
            run.stop()
