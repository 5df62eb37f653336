"""``make up KUBE=real``: the real control plane of the shared tools (``kube/cluster``) instead of the in-memory API.

``kube/cluster start DIR`` runs etcd, kube-apiserver v1.24, the controllers, the scheduler and a simulated
node on loopback, and writes ``DIR/admin.kubeconfig``. Its audit webhook gets a kubeconfig of ours, as
bootstrap writes one for k3s: https to the TLS front with the front's CA and ``tls-server-name``, and
audit-ingest's token, which the API server's client-go sends only over https.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import components
from .launch import free_port

START_TIMEOUT = 180


def launcher() -> Path | None:
    tools = components.locate().tools
    cluster = tools / "kube" / "cluster" if tools else None
    return cluster if cluster is not None and cluster.is_file() else None


def missing() -> list[str]:
    out = []
    if launcher() is None:
        out.append("kube/cluster of the shared tools (EDGEGUARD_TOOLS / make TOOLS=)")
    if not (os.environ.get("ETCD") or shutil.which("etcd")):
        out.append("etcd (apt-get install etcd-server, or ETCD=/path/to/etcd)")
    return out


def webhook_kubeconfig(url: str, ca_pem: bytes, server_name: str, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "audit-ingest",
                "cluster": {
                    "server": url,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                    "tls-server-name": server_name,
                },
            }
        ],
        "users": [{"name": "kube-apiserver", "user": {"token": token}}],
        "contexts": [{"name": "audit", "context": {"cluster": "audit-ingest", "user": "kube-apiserver"}}],
        "current-context": "audit",
    }


class RealCluster:
    """One launched control plane in ``directory`` (its data, logs and kubeconfigs)."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.started = False

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def start(self, audit_webhook_config: dict | None = None) -> RealCluster:
        why = missing()
        if why:
            raise RuntimeError("KUBE=real without KUBECONFIG needs " + " and ".join(why))
        self.dir.mkdir(parents=True, exist_ok=True)
        # A free port, not the launcher's fixed 16443: a second control plane (another make up, make test) may
        # be running on this host, and runs must not collide.
        argv = [str(launcher()), "start", str(self.dir), "--port", str(free_port()), "--python", sys.executable]
        if audit_webhook_config is not None:
            cfg = self.dir.parent / "audit-webhook.kubeconfig"
            fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(audit_webhook_config, f)
            argv += ["--audit-webhook-config", str(cfg)]
        self.started = True
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(
                f"kube/cluster start failed ({proc.returncode}): {proc.stderr[-1500:]}; logs in {self.dir}/logs"
            )
        return self

    def apply(self, manifests: list[Path], namespaces: tuple = ("openfaas", "openfaas-fn")) -> None:
        """What installing OpenFaaS (its namespaces) and `kubectl apply -f` of deploy/rbac do (objects that exist
        are kept)."""
        from kubernetes import client as k8s
        from kubernetes import config, utils
        from kubernetes.client.rest import ApiException
        from kubernetes.utils import FailToCreateError

        client = config.new_client_from_config(str(self.kubeconfig))
        try:
            for ns in namespaces:
                try:
                    k8s.CoreV1Api(client).create_namespace({"metadata": {"name": ns}})
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            for manifest in manifests:
                try:
                    utils.create_from_yaml(client, str(manifest))
                except FailToCreateError as exc:
                    if any(e.status != 409 for e in exc.api_exceptions):
                        raise
        finally:
            client.close()

    def stop(self) -> None:
        if self.started and launcher() is not None:
            subprocess.run([str(launcher()), "stop", str(self.dir)], capture_output=True, timeout=90)
            self.started = False
