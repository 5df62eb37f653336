"""Fixtures for the bootstrap tests: a fake node root, a fake PATH, a loopback gateway."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "bootstrap"))
sys.path.insert(0, str(HERE))  # realkube, auditmatch

from inproc import InProcess  # noqa: E402

from edgeguard_bootstrap import audit_tls, cli  # noqa: E402
from local import tlsfront  # noqa: E402

SITE = [p for p in sys.path if p.endswith("site-packages")]
TOOLS = (
    "uname",
    "k3s",
    "systemctl",
    "kubectl",
    "helm",
    "faas-cli",
    "dpkg-query",
    "apt-get",
    "curl",
    "gpg",
    "arkade",
    "openssl",
)
REAL_OPENSSL = shutil.which("openssl")

SCRUBBER_TEMPLATES = (
    "deploy/rbac/configmap-secret-scrubber-namespace.yaml",
    "deploy/rbac/configmap-secret-scrubber-immutable.yaml",
    "deploy/admission/node-enroll.yaml",
    # As it is: a Role in edgeguard-enroll, which only the node-enroll file declares, so the fake
    # refuses it when it is applied first.
    "deploy/rbac/node-tokens-alert-forwarder.yaml",
)

RBAC = {
    "configmap-secret-scrubber": ["configmaps", "secrets"],
    "node-enroll": ["secrets"],
    "alert-forwarder": ["secrets"],
}
# Like deploy/rbac/node-enroll.yaml: it declares node-enroll's namespace.
OWN_NAMESPACE = {"node-enroll": "edgeguard-enroll"}


def rbac_manifest(sa: str, resources: list[str]) -> str:
    # Stand-ins with the shape the function helpers' deploy/rbac files have.
    ns = OWN_NAMESPACE.get(sa)
    return (
        (f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n" if ns else "")
        + f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: openfaas-fn\n---\n"
        f"apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {sa}\n  namespace: default\n"
        f'rules:\n- apiGroups: [""]\n  resources: {json.dumps(resources)}\n  verbs: [get, list]\n'
    )


class Node:
    """A fake node: --root dir, fake PATH executables, world state, call log, gateway."""

    def __init__(self, tmp: Path, gateway_url: str):
        self.tmp = tmp
        # k3s-audit and all post to this https front (the role k3s's Traefik plays on port 443); None = the
        # command's own default URL.
        self.audit_url: str | None = None
        self.root = tmp / "root"
        self.root.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.repo = tmp / "repo"
        (self.repo / "deploy" / "rbac").mkdir(parents=True)
        for sa, res in RBAC.items():
            (self.repo / "deploy" / "rbac" / f"{sa}.yaml").write_text(rbac_manifest(sa, res))
        (self.repo / "stack.yml").write_text((REPO / "stack.yml").read_text())
        for template in SCRUBBER_TEMPLATES:
            # The scrubber's per-namespace templates as they are: bootstrap renders them, it does not write them.
            (self.repo / template).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / template).write_text((REPO / template).read_text())
        self.world_path = tmp / "world.json"
        self.log_path = tmp / "calls.jsonl"
        self.log_path.write_text("")
        self.gateway = gateway_url
        for tool in TOOLS:
            exe = self.bin / tool
            # -S keeps each fake's start-up short (the suite spawns a few thousand); site-packages
            # go on the path by hand for the two handlers that import yaml.
            exe.write_text(
                f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
                f"sys.path.extend({SITE!r})\nimport fakecmd\nfakecmd.main()\n"
            )
            exe.chmod(0o755)
        world = self.default_world()
        # Where k3s finds the image list bootstrap writes (the fake k3s "pulls" it at restart).
        world["preimport_file"] = str(self.root / "var/lib/rancher/k3s/agent/images/edgeguard-images.txt")
        world["falco_env_file"] = str(self.root / "etc/falco/edgeguard-alert-token.env")  # what Falco's unit reads
        self.set_world(world)
        self.files(
            {
                "/etc/os-release": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
                "/sys/kernel/btf/vmlinux": "BTF",
                "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
            }
        )

    @staticmethod
    def default_world() -> dict:
        return {
            "uname": {"-r": "6.8.0-1012-raspi", "-m": "aarch64"},
            "k3s_version": "k3s version v1.32.5+k3s1 (8e8f2a47)\ngo version go1.23.8",
            "active": {"k3s": True},
            "deployments": ["audit-ingest", "alert-forwarder", "configmap-secret-scrubber", "node-enroll"],
            "secrets": {},
            "audit_on_restart": True,
            "namespaces": ["default", "kube-system", "kube-public", "kube-node-lease", "openfaas", "openfaas-fn"],
            "cluster_objects": [],
            "ingress_classes": ["traefik"],
        }

    def seed_tokens(self) -> None:
        """What `openfaas` leaves behind that k3s-audit and falco read: node copies + OpenFaaS secrets."""
        import secrets as pysecrets

        store = self.root / "var/lib/edgeguard/secrets"
        store.mkdir(parents=True, mode=0o700)
        world = self.world()
        for name in ("audit-ingest-token", "alert-forwarder-token"):
            value = pysecrets.token_urlsafe(32).encode()
            (store / name).write_bytes(value)
            (store / name).chmod(0o600)
            world["secrets"][name] = base64.b64encode(value).decode()
        self.set_world(world)

    def files(self, mapping: dict[str, str]) -> None:
        for path, text in mapping.items():
            p = self.root / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)

    def world(self) -> dict:
        return json.loads(self.world_path.read_text())

    def set_world(self, world: dict) -> None:
        self.world_path.write_text(json.dumps(world))

    def update_world(self, **changes) -> None:
        w = self.world()
        w.update(changes)
        self.set_world(w)

    def env(self) -> dict:
        env = {
            "PATH": str(self.bin),
            "FAKE_WORLD": str(self.world_path),
            "FAKE_LOG": str(self.log_path),
            "HOME": str(self.tmp),
        }
        if REAL_OPENSSL:
            env["FAKE_REAL_OPENSSL"] = REAL_OPENSSL
        return env

    def applied_site(self):
        """What Traefik would serve: bootstrap's Ingress and TLS Secret, once `kubectl apply` has run on them."""
        applied = self.world().get("applied", {})
        ingress, secret = self.path(audit_tls.INGRESS_MANIFEST), self.path(audit_tls.SECRET_MANIFEST)
        if str(ingress) not in applied or str(secret) not in applied:
            return None
        return tlsfront.Site.from_manifests(secret, ingress)

    def run(self, *args: str, stdin=None) -> tuple[int, str]:
        out = io.StringIO()
        argv = list(args) + ["--root", str(self.root), "--gateway", self.gateway, "--repo", str(self.repo)]
        if self.audit_url and args and args[0] in ("k3s-audit", "all") and "--audit-url" not in args:
            argv += ["--audit-url", self.audit_url]
        # In-process: the fakes answer without a process per command (issue 14 §6).
        code = cli.main(argv, out=out, stdin=stdin or io.StringIO(""), env=self.env(), executor=InProcess())
        return code, out.getvalue()

    def calls(self) -> list[list[str]]:
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines() if line]

    def call_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def clear_calls(self) -> None:
        self.log_path.write_text("")

    def mutating_calls(self) -> list[list[str]]:
        readonly = {
            ("uname",),
            ("k3s", "--version"),
            ("systemctl", "is-active"),
            ("systemctl", "is-enabled"),
            ("kubectl", "get"),
            ("kubectl", "diff"),
            ("helm", "repo", "list"),
            ("helm", "list"),
            ("helm", "get"),
            ("faas-cli", "secret", "list"),
            ("dpkg-query",),
            ("gpg", "--show-keys"),
            ("openssl", "verify"),
            ("openssl", "x509", "-checkend"),
            ("k3s", "ctr", "-n", "k8s.io", "images", "list"),
        }
        return [c for c in self.calls() if not any(tuple(c[: len(r)]) == r for r in readonly)]

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def secret(self, name: str) -> bytes:
        return base64.b64decode(self.world()["secrets"][name])


class _Gateway(BaseHTTPRequestHandler):
    node: Node | None = None

    def log_message(self, *a):  # keep test output clean
        pass

    def do_GET(self):
        node = type(self).node
        if self.path == "/healthz":
            self._send(200, b"OK")
            return
        if self.path == "/function/alert-forwarder":
            self._forwarder(node)
            return
        if self.path == "/function/audit-ingest":
            world = node.world()
            if "ingest" in world:  # a test that models the mounted secret's lag (see _accepts)
                accepted = self._accepts(node, "ingest", "audit-ingest-token")
                world = node.world()
            else:
                accepted = {base64.b64decode(world["secrets"].get("audit-ingest-token", "")).decode()} - {""}
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[len("Bearer ") :] in accepted):
                self._send(401, b'{"error": "unauthorized"}')
                return
            # audit-ingest's GET: "requests" grows with every call, this GET included, so only
            # authenticated_batches proves a delivery.
            world["requests"] = world.get("requests", 0) + 1
            node.set_world(world)
            counters = {
                k: world.get(k, 0) for k in ("requests", "authenticated_batches", "unauthenticated", "invalid_token")
            }
            counters["events"] = world.get("audit_events", 0)
            body = {"status": "ok", "ruleset": {"rules_loaded": 48}, "counters": counters}
            if world.get("legacy_counters"):  # an audit-ingest from before the authentication counters
                body["counters"] = {"requests": counters["requests"], "events": counters["events"]}
            self._send(200, json.dumps(body).encode())
            return
        self._send(404, b"not found")

    def _forwarder(self, node):
        accepted = self._accepts(node, "fwd", "alert-forwarder-token")
        auth = self.headers.get("Authorization", "")
        ok = auth.startswith("Bearer ") and auth[len("Bearer ") :] in accepted
        self._send(200 if ok else 401, b'{"status": "ok"}' if ok else b'{"error": "unauthorized"}')

    @staticmethod
    def _accepts(node, key: str, secret: str) -> set[str]:
        """The tokens a function takes as far as rotation goes: it sees a secret update only after `lag` more
        requests (the kubelet syncs mounted secrets late), then takes the previous value during its grace."""
        world = node.world()
        fn = world.setdefault(key, {})
        actual = world["secrets"].get(secret)
        if not fn.get("seen"):
            fn["seen"] = actual
        elif fn["seen"] != actual:
            if fn.get("lag", 0) > 0:
                fn["lag"] -= 1
            else:
                fn["previous"], fn["seen"] = fn["seen"], actual
        node.set_world(world)
        return {base64.b64decode(v).decode() for v in (fn.get("seen"), fn.get("previous")) if v}

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory):
    """The real control plane (../shared/tools/kube/cluster, kube-apiserver v1.24) with the edge audit policy
    and its webhook pointed at a loopback receiver; one per test session, skipped where the tool is absent."""
    import realkube

    from edgeguard_bootstrap import audit_policy

    why = realkube.missing()
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("real-cluster")
    policy = d / "edge-audit-policy.yaml"
    policy.write_bytes(audit_policy.edge_policy())
    with realkube.AuditReceiver() as rx, realkube.Cluster(d / "cluster", rx.url, policy) as cluster:
        yield cluster, rx


@pytest.fixture
def node(tmp_path):
    handler = type("Gateway", (_Gateway,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll: shutdown() waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    n = Node(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    handler.node = n
    front = tlsfront.TLSFront(
        n.applied_site, {("gateway", 8080): n.gateway}, log_path=tmp_path / "tlsfront.log"
    ).start()
    n.front = front
    n.audit_url = f"{front.url}{audit_tls.PATH}"
    try:
        yield n
    finally:
        front.stop()
        server.shutdown()
        server.server_close()


PROTECTED = ("/etc", "/var", "/usr", "/boot", "/lib", "/opt", "/sys", "/proc")


def _protected(path) -> bool:
    p = os.path.abspath(os.fspath(path))
    return any(p == d or p.startswith(d + "/") for d in PROTECTED) and not p.startswith("/var/tmp")


@pytest.fixture(autouse=True)
def _no_real_system_paths(monkeypatch):
    """Belt and braces: writing, creating, replacing or removing anything in the machine's system
    directories fails the test (bootstrap must only touch --root)."""
    import builtins

    real_os_open, real_open = os.open, builtins.open

    def guarded_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _protected(path):
            raise AssertionError(f"test tried to write {path}")
        return real_os_open(path, flags, *a, **k)

    def guarded_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and _protected(file):
            raise AssertionError(f"test tried to write {file}")
        return real_open(file, mode, *a, **k)

    def guard(name):
        real = getattr(os, name)

        def wrapper(*args, **kwargs):
            for arg in args[:2]:
                if isinstance(arg, (str, os.PathLike)) and _protected(arg):
                    raise AssertionError(f"test tried os.{name} on {arg}")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, wrapper)

    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(builtins, "open", guarded_open)
    for name in ("mkdir", "replace", "rename", "unlink", "rmdir", "chmod"):
        guard(name)
