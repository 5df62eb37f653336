"""A real Kubernetes control plane for the tests marked ``cluster`` (a pytest plugin; see tests/conftest.py).

``real_kube`` (session) is the cluster those tests talk to, one of:
  * yours: ``KUBECONFIG=... EDGEGUARD_REAL_CLUSTER=1`` (nothing is started; tests that change cluster-wide
    objects, such as RBAC or Nodes, ask for ``own_kube`` and skip there);
  * the throw-away one ``kube/cluster start DIR`` launches from the real-components folder
    (``EDGEGUARD_TOOLS``, default ``../shared/tools`` beside the repository): etcd, kube-apiserver,
    kube-controller-manager and kube-scheduler v1.24 and a simulated node, on a free loopback port. Started
    once, on first use, and stopped at the end of the session however it ends.
Without either, the test skips with a reason starting "needs real component:" naming what is missing.

``bootstrapped`` (session) runs ``edgeguard-bootstrap openfaas`` against the launched API server: real
``kubectl`` applies deploy/rbac/ and reads the ServiceAccount tokens the real token controller fills. There is
no OpenFaaS gateway here, so ``faas-cli`` is the bootstrap suite's recording fake (tests/bootstrap/fakecmd.py):
what ``faas-cli secret create`` would store is read back from it, and those are the kubeconfigs the functions
then run with. What the gateway's provider would then do with each secret (an Opaque Secret in openfaas-fn)
the fake's wrapper does on the real API server.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SKIP = "needs real component:"
START_TIMEOUT = 180

# What `edgeguard-bootstrap openfaas --scrubber-namespaces` is given, and a namespace it is not.
SCRUBBER_GRANTED = ("default", "edgeguard-granted")
SCRUBBER_IMMUTABLE = "default"  # --scrubber-immutable-namespaces: may also replace immutable ConfigMaps there
SCRUBBER_NOT_GRANTED = "edgeguard-not-granted"
OPENFAAS_NAMESPACES = ("openfaas", "openfaas-fn")  # what `arkade install openfaas-ce` creates
FUNCTION_SA = {
    "configmap-secret-scrubber": "configmap-secret-scrubber-kubeconfig",
    "node-enroll": "node-enroll-kubeconfig",
    "alert-forwarder": "alert-forwarder-kubeconfig",
}


def tools_dir() -> Path:
    return Path(os.environ.get("EDGEGUARD_TOOLS") or ROOT.parent / "shared" / "tools").resolve()


def launcher() -> Path:
    return tools_dir() / "kube" / "cluster"


def etcd_binary() -> str | None:
    etcd = os.environ.get("ETCD") or shutil.which("etcd")
    return etcd if etcd and os.access(etcd, os.X_OK) else None


def missing_components() -> list[str]:
    """What the launcher needs and this machine lacks, worded for a skip reason."""
    missing = []
    if not os.access(launcher(), os.X_OK):
        missing.append(f"kube/cluster ({tools_dir()}; set EDGEGUARD_TOOLS)")
    if etcd_binary() is None:
        missing.append("etcd (apt-get install etcd-server, or ETCD=/path/to/etcd)")
    # the launcher itself calls these (kubectl and curl to wait for readiness, openssl for its CA)
    missing += [f"{tool} (on PATH)" for tool in ("kubectl", "curl", "openssl") if shutil.which(tool) is None]
    return missing


def users_cluster() -> Path | None:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and os.environ.get("EDGEGUARD_REAL_CLUSTER") == "1":
        return Path(kubeconfig)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealCluster:
    """A real API server and its admin kubeconfig. ``launched``: ours to change freely (throw-away)."""

    def __init__(self, kubeconfig: Path, *, launched: bool, directory: Path | None = None):
        self.kubeconfig = Path(kubeconfig)
        self.launched = launched
        self.directory = directory
        self.started_in: float | None = None
        doc = yaml.safe_load(self.kubeconfig.read_text())
        context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
        self.host = cluster["server"].rstrip("/")
        self.ca_pem: bytes | None = None
        if cluster.get("certificate-authority-data"):
            self.ca_pem = base64.b64decode(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            self.ca_pem = Path(cluster["certificate-authority"]).read_bytes()

    @property
    def kubeconfig_text(self) -> str:
        return self.kubeconfig.read_text()

    def api_client(self, kubeconfig_text: str | None = None):
        """A kubernetes ApiClient: the admin's, or the one a kubeconfig text describes (e.g. a function's)."""
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config_dict(yaml.safe_load(kubeconfig_text or self.kubeconfig_text))

    def core(self, kubeconfig_text: str | None = None):
        from kubernetes import client

        return client.CoreV1Api(self.api_client(kubeconfig_text))

    def apps(self, kubeconfig_text: str | None = None):
        from kubernetes import client

        return client.AppsV1Api(self.api_client(kubeconfig_text))

    def ensure_namespace(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core().create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def token_review(self, token: str) -> dict:
        """TokenReview (authentication.k8s.io/v1, every version) as the admin: who the API server says
        ``token`` is. SelfSubjectReview would need 1.27."""
        from kubernetes import client

        review = client.AuthenticationV1Api(self.api_client()).create_token_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
            _preload_content=False,
        )
        return json.loads(review.data)["status"]


def api_status(call, *args, **kwargs) -> int:
    """The HTTP status the API server answers ``call`` (a kubernetes client method) with."""
    from kubernetes.client.rest import ApiException

    try:
        return call(*args, _preload_content=False, **kwargs).status
    except ApiException as exc:
        return exc.status


# What the API server must answer alert-forwarder's identity (deploy/rbac/alert-forwarder.yaml and
# node-tokens-alert-forwarder.yaml): list and watch of its two Secrets by name, nothing else.
ALERT_FORWARDER_RIGHTS = {
    "list the handover Secret by name": 200,
    "watch the handover Secret by name": 200,
    "list the node tokens Secret by name": 200,
    "get the handover Secret": 403,  # no get: Falco's "K8s Secret Get Successfully" fires on every get
    "list every Secret in openfaas-fn": 403,
    "list its own token Secret by name": 403,
    "list every Secret in kube-system": 403,
    "delete the handover Secret": 403,
    "create a Secret": 403,
    "list ConfigMaps in openfaas-fn": 403,
}


def alert_forwarder_rights(api) -> dict[str, int]:
    """The status the API server answers each call of ALERT_FORWARDER_RIGHTS with, for the ApiClient ``api``."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    by_name = {
        "handover": "metadata.name=alert-forwarder-spool-handover",
        "nodes": "metadata.name=edgeguard-node-alert-tokens",
    }
    return {
        "list the handover Secret by name": api_status(
            core.list_namespaced_secret, "openfaas-fn", field_selector=by_name["handover"]
        ),
        "watch the handover Secret by name": api_status(
            core.list_namespaced_secret,
            "openfaas-fn",
            watch=True,
            timeout_seconds=1,
            field_selector=by_name["handover"],
        ),
        "list the node tokens Secret by name": api_status(
            core.list_namespaced_secret, "edgeguard-enroll", field_selector=by_name["nodes"]
        ),
        "get the handover Secret": api_status(
            core.read_namespaced_secret, "alert-forwarder-spool-handover", "openfaas-fn"
        ),
        "list every Secret in openfaas-fn": api_status(core.list_namespaced_secret, "openfaas-fn"),
        "list its own token Secret by name": api_status(
            core.list_namespaced_secret, "openfaas-fn", field_selector="metadata.name=alert-forwarder-sa-token"
        ),
        "list every Secret in kube-system": api_status(core.list_namespaced_secret, "kube-system"),
        "delete the handover Secret": api_status(
            core.delete_namespaced_secret, "alert-forwarder-spool-handover", "openfaas-fn"
        ),
        "create a Secret": api_status(
            core.create_namespaced_secret, "openfaas-fn", {"metadata": {"name": "x"}, "type": "Opaque"}
        ),
        "list ConfigMaps in openfaas-fn": api_status(core.list_namespaced_config_map, "openfaas-fn"),
    }


def wait_authenticated(cluster: RealCluster, token: str, want: bool, timeout: float = 30) -> tuple[bool, float]:
    """(whether ``token`` authenticates, seconds it took to get there) once the answer is ``want`` or the time
    is up. A revoked token is not refused at once: kube-apiserver keeps a successful token authentication
    for a while (about 10 s measured on v1.24), and the bootstrap-token authenticator reads Secrets through an
    informer."""
    started = time.monotonic()
    while True:
        got = bool(cluster.token_review(token).get("authenticated"))
        if got == want or time.monotonic() - started > timeout:
            return got, time.monotonic() - started
        time.sleep(0.2)


class Launcher:
    """``kube/cluster start DIR`` and, whatever happens, ``kube/cluster stop DIR``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = _free_port()
        self._stopped = False
        self._old_sigterm = None

    def env(self) -> dict:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        if etcd_binary():
            env["ETCD"] = etcd_binary()
        return env

    def start(self) -> RealCluster:
        # node_sim.py imports the kubernetes client: give it this interpreter (the venv's).
        argv = [str(launcher()), "start", str(self.directory), "--port", str(self.port), "--python", sys.executable]
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # A CI timeout's SIGTERM then unwinds pytest, whose teardown stops the cluster.
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise RuntimeError(
                f"kube/cluster start did not finish in {START_TIMEOUT}s; logs: {self.directory}/logs"
            ) from exc
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"kube/cluster start failed ({proc.returncode}): {proc.stderr[-1500:]}")
        cluster = RealCluster(self.directory / "admin.kubeconfig", launched=True, directory=self.directory)
        cluster.started_in = time.monotonic() - started
        return cluster

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # `cluster stop` stops one process after another and gives each 5 s; kube-scheduler and
        # kube-controller-manager take all of it. Ending all of them together, by the pids the launcher
        # recorded, costs one grace period; `cluster stop` then only tidies up.
        pids = {}
        for pid_file in self.directory.glob("*.pid"):
            try:
                pids[pid_file] = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            alive = {f: p for f, p in pids.items() if _running(p)}
            for pid in alive.values():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while any(_running(p) for p in alive.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
        for pid_file, pid in pids.items():
            if not _running(pid):
                pid_file.unlink(missing_ok=True)
        subprocess.run([str(launcher()), "stop", str(self.directory)], env=self.env(), capture_output=True, timeout=60)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)


def _running(pid: int) -> bool:
    """Alive and not a zombie (the launcher's children are re-parented; whoever reaps them may be slow)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_SUMMARY: list[str] = []


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory) -> RealCluster:
    """The real API server of the ``cluster`` tests (yours, or the launcher's); see the module docstring."""
    mine = users_cluster()
    if mine is not None:
        if not mine.is_file():
            pytest.fail(f"EDGEGUARD_REAL_CLUSTER=1 but KUBECONFIG={mine} is not a file")
        yield RealCluster(mine, launched=False)
        return
    missing = missing_components()
    if missing:
        pytest.skip(f"{SKIP} {' and '.join(missing)} (or use your own: KUBECONFIG=... EDGEGUARD_REAL_CLUSTER=1)")
    run = Launcher(tmp_path_factory.mktemp("real-kube"))
    try:
        cluster = run.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    _SUMMARY.append(
        f"real kube-apiserver v1.24 (kube/cluster) on {cluster.host}: started in "
        f"{cluster.started_in:.1f}s, logs in {cluster.directory}/logs"
    )
    try:
        yield cluster
    finally:
        run.stop()


@pytest.fixture(scope="session")
def own_kube(real_kube) -> RealCluster:
    """The launched, throw-away cluster only: for tests that change cluster-wide objects (RBAC, Nodes)."""
    if not real_kube.launched:
        pytest.skip(
            f"{SKIP} kube/cluster (this test changes cluster-wide RBAC/Nodes, so it never runs on the "
            "cluster of KUBECONFIG; unset EDGEGUARD_REAL_CLUSTER to use the launcher)"
        )
    return real_kube


def pytest_terminal_summary(terminalreporter):
    for line in _SUMMARY:
        terminalreporter.write_line(line)


# --- edgeguard-bootstrap openfaas against the real API server --------------------------------------------------


class _Healthz(BaseHTTPRequestHandler):
    """bootstrap checks <gateway>/healthz before it starts; nothing else of the gateway is reached (faas-cli,
    which would use it, is the recording fake)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        code = 200 if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK" if code == 200 else b"no")

    def log_message(self, *args):
        pass


# The recording fake, plus what the gateway's provider (faas-netes) does with a secret it is given: an Opaque
# Secret in openfaas-fn whose one key is the secret's name, labelled managed-by=openfaas
# (faas-netes pkg/k8s/secrets.go). That part goes to the real API server, so a second bootstrap run reads it back from
# there as on a real install.
_FAAS_CLI = """
import json, subprocess
import fakecmd
try:
    fakecmd.main()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
args = sys.argv[1:]
if code == 0 and args[:2] in (["secret", "create"], ["secret", "update"]):
    name, path = args[2], args[3].split("=", 1)[1]
    made = subprocess.run(["kubectl", "create", "secret", "generic", name, "-n", "openfaas-fn",
                           f"--from-file={name}={path}", "--dry-run=client", "-o", "json"],
                          capture_output=True, text=True, check=True)
    doc = json.loads(made.stdout)
    doc["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "openfaas"}
    stored = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True)
    if stored.returncode != 0:
        sys.stderr.write("provider: " + stored.stderr[-300:])
        code = 1
sys.exit(code)
"""


class Bootstrapped:
    """What `edgeguard-bootstrap openfaas` did against the real API server, and a way to run it again."""

    def __init__(self, cluster: RealCluster, workdir: Path, gateway: str):
        self.cluster = cluster
        self.workdir = workdir
        self.root = workdir / "root"
        self.bin = workdir / "bin"
        self.world_path = workdir / "faas-cli-world.json"
        self.log_path = workdir / "faas-cli-calls.jsonl"
        self.gateway = gateway
        self.root.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)
        self.world_path.write_text(json.dumps({"secrets": {}}))
        self.log_path.write_text("")
        fakes = ROOT / "tests" / "bootstrap"
        site = [p for p in sys.path if p.endswith("site-packages")]
        exe = self.bin / "faas-cli"
        exe.write_text(
            f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(fakes)!r})\n"
            f"sys.path.extend({site!r})\n{_FAAS_CLI}"
        )
        exe.chmod(0o755)
        # the real ones; kubectl diff runs `diff` (diffutils: essential on Debian, Ubuntu, Raspberry Pi OS)
        for tool in ("kubectl", "diff"):
            (self.bin / tool).symlink_to(shutil.which(tool))
        self.first_output = ""
        self.first_code = None

    def argv(self) -> list[str]:
        return [
            "openfaas",
            "--root",
            str(self.root),
            "--gateway",
            self.gateway,
            "--repo",
            str(ROOT),
            "--api-server",
            self.cluster.host,
            "--scrubber-namespaces",
            ",".join(SCRUBBER_GRANTED),
            "--scrubber-immutable-namespaces",
            SCRUBBER_IMMUTABLE,
            "--token-timeout",
            "60",
        ]

    def run(self) -> tuple[int, str]:
        import io

        if str(ROOT / "bootstrap") not in sys.path:
            sys.path.insert(0, str(ROOT / "bootstrap"))
        from edgeguard_bootstrap import cli

        env = {
            "PATH": str(self.bin),
            "HOME": str(self.workdir),
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "FAKE_WORLD": str(self.world_path),
            "FAKE_LOG": str(self.log_path),
        }
        out = io.StringIO()
        code = cli.main(self.argv(), out=out, stdin=io.StringIO(""), env=env)
        return code, out.getvalue()

    def stored(self) -> dict[str, bytes]:
        """Every value `faas-cli secret create/update` was handed, by secret name."""
        world = json.loads(self.world_path.read_text())
        return {k: base64.b64decode(v) for k, v in world.get("secrets", {}).items()}

    def kubeconfig(self, function: str) -> str:
        """The kubeconfig bootstrap made for ``function``'s ServiceAccount, as OpenFaaS would mount it."""
        return self.stored()[FUNCTION_SA[function]].decode()

    def faas_calls(self) -> list[list[str]]:
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines() if line]


@pytest.fixture(scope="session")
def bootstrapped(own_kube, tmp_path_factory) -> Bootstrapped:
    """`edgeguard-bootstrap openfaas --scrubber-namespaces default,edgeguard-granted
    --scrubber-immutable-namespaces default` run once on the real
    API server, after the namespaces an OpenFaaS CE install and the operator would have made."""
    for ns in OPENFAAS_NAMESPACES + SCRUBBER_GRANTED[1:] + (SCRUBBER_NOT_GRANTED,):
        own_kube.ensure_namespace(ns)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        b = Bootstrapped(
            own_kube, tmp_path_factory.mktemp("bootstrap-real"), f"http://127.0.0.1:{server.server_address[1]}"
        )
        started = time.monotonic()
        b.first_code, b.first_output = b.run()
        _SUMMARY.append(
            f"edgeguard-bootstrap openfaas against it: exit {b.first_code} in {time.monotonic() - started:.1f}s"
        )
        if b.first_code != 0:
            pytest.fail(f"edgeguard-bootstrap openfaas failed on the real API server:\n{b.first_output[-3000:]}")
        b.server = server
        yield b
    finally:
        server.shutdown()
        server.server_close()
