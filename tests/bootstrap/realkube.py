"""The real control plane (../shared/tools/kube/cluster) with its audit webhook pointed at a loopback receiver.

Used by the audit-policy test (what the real API server logs under the edge policy) and by
`make bench` (events per minute). The tool is test equipment: when it is missing, callers skip
with `MISSING`'s reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tools_dir() -> Path:
    return Path(os.environ.get("EDGEGUARD_TOOLS") or REPO.parent / "shared" / "tools")


def cluster_tool() -> Path:
    return tools_dir() / "kube" / "cluster"


def missing() -> str | None:
    """Why the real control plane cannot run here, or None."""
    if not cluster_tool().is_file():
        return f"real control plane not found: {cluster_tool()} (set EDGEGUARD_TOOLS to ../shared/tools)"
    if not (os.environ.get("ETCD") or shutil.which("etcd")):
        return "etcd not on PATH (apt-get install etcd-server), needed by ../shared/tools/kube/cluster"
    for tool in ("kubectl", "openssl"):
        if not shutil.which(tool):
            return f"{tool} not on PATH, needed by ../shared/tools/kube/cluster"
    return None


class AuditReceiver:
    """A loopback audit webhook: keeps one summary per event the API server sends."""

    def __init__(self):
        self.events: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                try:
                    items = json.loads(body).get("items") or []
                except ValueError:
                    items = []
                with receiver.lock:
                    receiver.events.extend(dict(summary(e), received=now) for e in items)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/audit"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)


def summary(event: dict) -> dict:
    ref = event.get("objectRef") or {}
    user = event.get("user") or {}
    return {
        "user": user.get("username", ""),
        "groups": user.get("groups") or [],
        "verb": event.get("verb", ""),
        "group": ref.get("apiGroup", ""),
        "resource": ref.get("resource", ""),
        "subresource": ref.get("subresource", ""),
        "namespace": ref.get("namespace", ""),
        "name": ref.get("name", ""),
        "uri": event.get("requestURI", ""),
        "stage": event.get("stage", ""),
        "level": event.get("level", ""),
    }


class Cluster:
    """`cluster start DIR --audit-webhook URL --audit-token T --audit-policy FILE`, stopped on exit."""

    def __init__(self, workdir: Path, webhook: str, policy: Path, token: str = "edgeguard-bench"):
        self.dir = workdir
        # node_sim.py needs the kubernetes client: this interpreter has it (requirements-dev.txt).
        self.args = [
            "--audit-webhook",
            webhook,
            "--audit-token",
            token,
            "--audit-policy",
            str(policy),
            "--python",
            sys.executable,
        ]
        self.kubeconfig = workdir / "admin.kubeconfig"

    def __enter__(self):
        # Other test runs on this machine may hold the tool's default port (16443).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.run(
            ["bash", str(cluster_tool()), "start", str(self.dir), *self.args, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        if proc.returncode != 0:
            subprocess.run(["bash", str(cluster_tool()), "stop", str(self.dir)], capture_output=True, timeout=60)
            raise RuntimeError(f"cluster start failed: {proc.stderr[-1500:] or proc.stdout[-1500:]}")
        return self

    def __exit__(self, *exc):
        subprocess.run(["bash", str(cluster_tool()), "stop", str(self.dir)], capture_output=True, timeout=60)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or self.kubeconfig), HOME=str(self.dir))
        proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout, env=env, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()[-500:]}")
        return proc

    def identity(self, name: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a client certificate signed by the cluster CA (CN=user, O=groups), as k3s
        issues its components' certificates."""
        pki = self.dir / "pki"
        safe = name.replace(":", "_")
        key, csr, crt = (self.dir / f"{safe}.{ext}" for ext in ("key", "csr", "crt"))
        subject = f"/CN={name}" + "".join(f"/O={g}" for g in groups)
        for argv in (
            ["openssl", "genrsa", "-out", str(key), "2048"],
            ["openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)],
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(pki / "ca.crt"),
                "-CAkey",
                str(pki / "ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                str(crt),
            ],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        server = json.loads(self.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [{"name": "c", "cluster": server["cluster"]}],
            "users": [{"name": "u", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }
        path = self.dir / f"{safe}.kubeconfig"
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return path
