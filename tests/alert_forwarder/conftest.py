"""Fixtures for alert-forwarder tests: the function package as faas-cli lays it out, and real HTTP receivers.

Receivers are real servers on 127.0.0.1 with scripted behaviour (slow, failing, 429 with Retry-After,
down/up), so retries, timeouts and spooling are exercised over real sockets.
"""

from __future__ import annotations

import importlib
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from local import buildctx, stackfile


def assemble_package(tmp: Path) -> tuple[Path, str]:
    """The function's build context as faas-cli lays it out; its ``function/`` folder renamed to a unique package
    name, so each test imports a fresh copy of its modules (their state included). Returns (root, package)."""
    stack = stackfile.load()
    ctx = buildctx.assemble(stack.functions["alert-forwarder"], stack, tmp)
    pkg = f"af_{uuid.uuid4().hex[:10]}"
    (ctx / "function").rename(ctx / pkg)
    return ctx, pkg


class Package:
    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        sys.path.insert(0, str(root))

    def module(self, mod: str):
        return importlib.import_module(f"{self.name}.{mod}")

    def __getattr__(self, mod):
        return self.module(mod)


@pytest.fixture
def pkg(tmp_path):
    root, name = assemble_package(tmp_path / "pkgs")
    p = Package(root, name)
    yield p
    sys.path.remove(str(root))
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


TOKEN = "af-test-token-0123456789"


@pytest.fixture
def load_handler(tmp_path, load_function):
    """Start a fresh copy of the function (import = start-up) with a private spool and the test token."""
    loaded = []

    def load(env: dict | None = None, secrets: dict | None = None):
        full_env = {"spool_dir": str(tmp_path / f"spool-{len(loaded)}")}
        full_env.update(env or {})
        mod = load_function(
            "alert-forwarder", env=full_env, secrets={"alert-forwarder-token": TOKEN + "\n", **(secrets or {})}
        )
        loaded.append(mod)
        return mod

    yield load
    for mod in loaded:
        fwd = getattr(mod, "FORWARDER", None)
        if fwd is not None:
            fwd.close(timeout=2)


def event(method="POST", path="/", body=b"", headers=None, query=None):
    from tests.conftest import make_event

    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return make_event(method, path, body, headers, query)


def auth_headers(extra=None):
    h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    h.update(extra or {})
    return h


CTX = types.SimpleNamespace(hostname="alert-forwarder-test")


def call(mod, method="GET", path="/", body=b"", headers=None, query=None) -> dict:
    """The template's call of ``handle(event, context)``; with the test token unless ``headers`` are given."""
    return mod.handle(event(method, path, body, auth_headers() if headers is None else headers, query), CTX)


def falco_alert(rule="Terminal shell in container", priority="Notice", source="syscall", **fields):
    """A syscall alert shaped exactly like Falco 0.41 json_output (sorted keys, ns time)."""
    of = {
        "container.id": "3ad7b26ded6d",
        "container.name": "nginx",
        "evt.time": 1714558272123456789,
        "k8s.ns.name": "default",
        "k8s.pod.name": "nginx-7c5ddbdf54-x2x9z",
        "proc.cmdline": "bash",
        "proc.name": "bash",
        "user.name": "root",
    }
    of.update(fields)
    return {
        "hostname": "edge-node-1",
        "output": f"10:11:12.123456789: {priority} A shell was spawned in a container with an attached "
        f"terminal (user=root user_loginuid=-1 {of['container.name']} (id={of['container.id']}) "
        f"shell=bash parent=runc cmdline={of['proc.cmdline']} terminal=34816 container_id="
        f"{of['container.id']} image=nginx)",
        "output_fields": of,
        "priority": priority,
        "rule": rule,
        "source": source,
        "tags": ["T1059", "container", "maturity_stable", "mitre_execution", "shell"],
        "time": "2024-05-01T10:11:12.123456789Z",
    }


# ----------------------------------------------------------------------------- receivers


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    gate: threading.Event | None = None  # hold the answer until the test sets it (ordering, not timing)


class Receiver:
    """A scripted HTTP(S) server. ``script`` is a list of Reply used in order, then ``default``."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, port: int = 0):
        self.requests: list[Received] = []  # answered requests, recorded just before the answer
        self.arrived = 0  # requests read, including ones still held by a gate
        self.script: list[Reply] = []
        self.default = Reply()
        self.tls = tls
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.port = port
        self.server = None
        self.start()

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def next_reply(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def start(self):
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with recv._lock:
                    recv._conns.add(self.connection)

            def finish(self):
                with recv._lock:
                    recv._conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                reply = recv.next_reply()
                with recv._lock:
                    recv.arrived += 1
                if reply.gate is not None:
                    reply.gate.wait(30)
                if reply.delay:
                    time.sleep(reply.delay)
                with recv._lock:
                    recv.requests.append(
                        Received(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass

            do_POST = do_PUT = do_PATCH = do_GET = _handle

            def log_message(self, *a):
                pass

        class S(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self.server = S(("127.0.0.1", self.port), H)
        if self.tls:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        """Go down hard: refuse new connections and cut the kept-alive ones."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"receiver got {len(self.requests)} requests, expected {n}")


@pytest.fixture
def receiver():
    servers = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        servers.append(r)
        return r

    yield make
    for r in servers:
        try:
            r.stop()
        except Exception:
            pass


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=10.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A throwaway CA (local.localca), a server certificate for 127.0.0.1 and a client certificate, in one folder
    as ca.crt, srv.crt/srv.key and cli.crt/cli.key."""
    from local import localca
    from tests.edgeguard_core.certs import client_cert

    if not localca.available():
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("certs")
    localca.LocalCA(d).issue("srv", dns=(), ips=("127.0.0.1",))
    client_cert(d, "cli", d)
    return d


@pytest.fixture
def h():
    """Helper functions for test modules (importlib import mode keeps conftest out of `import`)."""
    return types.SimpleNamespace(
        call=call,
        event=event,
        auth_headers=auth_headers,
        falco_alert=falco_alert,
        Reply=Reply,
        wait_until=wait_until,
        free_port=free_port,
        TOKEN=TOKEN,
        CTX=CTX,
        Receiver=Receiver,
    )


# ----------------------------------------------------------------------------- the real API server


class ForwarderKube:
    """deploy/rbac/alert-forwarder.yaml applied on the real kube-apiserver, and the kubeconfig bootstrap would make
    from its ServiceAccount token (bootstrap/edgeguard_bootstrap/openfaas.py function_kubeconfig)."""

    NODE_TOKENS = ("edgeguard-enroll", "edgeguard-node-alert-tokens")
    HANDOVER = ("openfaas-fn", "alert-forwarder-spool-handover")

    def __init__(self, cluster):
        self.cluster = cluster
        self.core = cluster.core()

    def secret(self, namespace: str, name: str):
        from kubernetes.client.rest import ApiException

        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def set_node_tokens(self, hashes: dict[str, str] | None) -> None:
        """node-enroll's side of the format: data key = node name, value = sha256:<hex>; None deletes the Secret."""
        import base64

        from kubernetes.client.rest import ApiException

        ns, name = self.NODE_TOKENS
        if hashes is None:
            try:
                self.core.delete_namespaced_secret(name, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            return
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in hashes.items()},
        }
        if self.secret(ns, name) is None:
            self.core.create_namespaced_secret(ns, body)
        else:
            self.core.replace_namespaced_secret(name, ns, body)

    def clear_handover(self) -> None:
        ns, name = self.HANDOVER
        s = self.secret(ns, name)
        s.data = None
        self.core.replace_namespaced_secret(name, ns, s)


@pytest.fixture(scope="session")
def forwarder_kube(real_kube, tmp_path_factory):
    import base64

    root = Path(__file__).resolve().parents[2]
    for ns in ("openfaas-fn", "edgeguard-enroll"):  # the second is node-enroll's (deploy/rbac/node-enroll.yaml)
        real_kube.ensure_namespace(ns)
    # kubectl keeps a discovery cache under $HOME/.kube/cache; with no HOME that is the current directory (the repo)
    env = {
        "KUBECONFIG": str(real_kube.kubeconfig),
        "PATH": __import__("os").environ["PATH"],
        "HOME": str(tmp_path_factory.mktemp("kubectl-home")),
    }
    for manifest in ("alert-forwarder.yaml", "node-tokens-alert-forwarder.yaml"):
        subprocess.run(
            ["kubectl", "apply", "-f", str(root / "deploy/rbac" / manifest)],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
    sys.path.insert(0, str(root / "bootstrap"))
    from edgeguard_bootstrap.openfaas import function_kubeconfig, sa_token_secret

    # The very object `edgeguard-bootstrap openfaas` applies: a session that also runs it on this API server
    # then sees no difference.
    token_secret = sa_token_secret("alert-forwarder")
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=json.dumps(token_secret),
        text=True,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    fk = ForwarderKube(real_kube)
    deadline = time.monotonic() + 30
    while True:
        s = fk.secret("openfaas-fn", "alert-forwarder-sa-token")
        if s is not None and s.data and s.data.get("token"):
            break
        if time.monotonic() > deadline:
            raise AssertionError("the token controller did not fill alert-forwarder-sa-token")
        time.sleep(0.2)
    fk.token = base64.b64decode(s.data["token"]).decode()
    fk.kubeconfig = function_kubeconfig(
        "alert-forwarder", fk.token, base64.b64encode(real_kube.ca_pem).decode(), real_kube.host
    )
    return fk
