"""A local stand-in for the OpenFaaS CE gateway, serving every function of stack.yml.

Each function runs in its own process group (as a pod runs its image), with only
the secrets stack.yml lists for it and the environment stack.yml declares: under
the real of-watchdog over a faas-cli shrinkwrap context when those tools are
found, else under local/runtime.py (local/launch.py, local/components.py). The
gateway implements the routes and behaviours our functions depend on
(shared/reference/openfaas.md §5):

* ``/function/<name>[/<path>]``: synchronous proxy, any method. The real watchdog
  answers 504 itself at the function's ``exec_timeout``; in front of the
  stand-in runtime the gateway does it, with the watchdog's empty 504.
* ``/async-function/<name>[/<path>]``: POST only; 202 with ``X-Call-Id``; one
  worker (CE's queue-worker concurrency is 1), no retries, ``X-Callback-Url``
  honoured; bodies over 256,000 bytes are refused as CE refuses them.
* ``/healthz``; ``/system/functions`` and ``/system/function/<name>`` behind
  basic auth (user ``admin``).

Kubernetes: functions that list a ``*-kubeconfig`` secret get the cluster of
``$KUBECONFIG`` when it is set, otherwise an in-memory API (local/kubeemu.py).
That admin kubeconfig goes to every such secret unless ``kubeconfigs`` names
another for it (e.g. the ServiceAccount kubeconfigs ``edgeguard-bootstrap
openfaas`` makes, to run a function with its least-privilege credentials).
"""
from __future__ import annotations

import argparse
import base64
import hmac
import os
import queue
import secrets as pysecrets
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import requests
import yaml

from edgeguard import config

from . import launch, stackfile

ROOT = stackfile.ROOT
# A throwaway self-signed CA (its key was discarded) standing in for k3s's server CA on the in-memory API.
DEMO_CA = Path(__file__).resolve().parent / "demo-server-ca.crt"
CE_ASYNC_LIMIT = 256_000
# faas-provider's proxy client timeout under the CE chart (gateway.upstreamTimeout); the watchdog answers first.
GATEWAY_UPSTREAM_TIMEOUT = 60.0
BASIC_AUTH_USER = "admin"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
                "content-length", "proxy-authorization", "proxy-authenticate"}


free_port = launch.free_port


class SecretStore:
    """The local equivalent of ``faas-cli secret create``: one file per secret, 0600."""

    # Secrets whose empty value means "feature not configured" rather than "missing".
    OPTIONAL_EMPTY = {"audit-ingest-extra-rules", "alert-forwarder-destinations"}

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, name: str) -> Path:
        return self.dir / name

    def ensure(self, name: str, value: str | None = None) -> None:
        p = self.path(name)
        if value is not None:
            self._write(p, value)
        elif not p.exists():
            self._write(p, "" if name in self.OPTIONAL_EMPTY else pysecrets.token_urlsafe(32))

    def get(self, name: str) -> str:
        return self.path(name).read_text().strip()

    @staticmethod
    def _write(p: Path, value: str) -> None:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)


class Deployment:
    """A function as the gateway sees it: its stack.yml entry, its mounted secrets and its process."""

    def __init__(self, fn: stackfile.Function, process: launch.FunctionProcess, secrets_dir: Path):
        self.fn = fn
        self.process = process
        self.secrets_dir = secrets_dir
        self.exec_timeout = config.parse_duration(fn.environment.get("exec_timeout") or "30s", "exec_timeout")
        self.invocations = 0

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def proc(self):
        return self.process.proc

    @property
    def log_path(self) -> Path:
        return self.process.log_path


class LocalStack:
    """Everything ``make up`` runs: secrets, Kubernetes, function processes and the gateway."""

    def __init__(self, port: int = 8080, state_dir: Path | None = None, *, env_overrides: dict | None = None,
                 echo_logs: bool = False, kube: str = "auto", stack: stackfile.Stack | None = None,
                 functions: list[str] | None = None, audit_webhook: bool = False,
                 runtime: launch.Runtime | None = None, kubeconfigs: dict[str, str] | None = None):
        self.port = port
        self.state_dir = Path(state_dir or ROOT / ".local-state")
        self.env_overrides = env_overrides or {}
        self.echo_logs = echo_logs
        self.kube_mode = kube
        self.stack = stack or stackfile.load()
        self.only = functions
        self.audit_webhook = audit_webhook
        self.kubeconfigs = dict(kubeconfigs or {})  # secret name -> kubeconfig text, instead of the admin's
        self.store = SecretStore(self.state_dir / "secrets")
        self.runtime = runtime or launch.Runtime()
        self.functions: dict[str, Deployment] = {}
        self.emulator = None
        self.kubeconfig_text: str | None = None
        self.kube_description = "none"
        self._server = None
        self._async_q: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self.tls_front = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "LocalStack":
        try:
            self._check_port()
            self._start_kube()
            self._start_functions()
            self._start_gateway()
            self._start_audit()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.tls_front is not None:
            self.tls_front.stop()
            self.tls_front = None
        for dep in self.functions.values():
            dep.process.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def start_tls_front(self, site, port: int = 0):
        """What k3s's Traefik does for audit-ingest: TLS with bootstrap's certificate (a tlsfront.Site from
        its Ingress and Secret), proxying the Ingress's paths to this gateway (Service gateway:8080)."""
        from . import tlsfront
        self.tls_front = tlsfront.TLSFront(site, {("gateway", 8080): self.url}, port=port,
                                           log_path=self.state_dir / "logs" / "tlsfront.log").start()
        return self.tls_front

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _check_port(self) -> None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError:
                raise RuntimeError(f"port {self.port} on 127.0.0.1 is in use; choose another with PORT=<n>") from None

    def _needs_kube(self) -> bool:
        return any(s.endswith("-kubeconfig") for fn in self._selected() for s in fn.secrets)

    def _selected(self):
        return [fn for name, fn in self.stack.functions.items() if self.only is None or name in self.only]

    def _start_kube(self) -> None:
        wanted = self._needs_kube() or self.kube_mode == "emulator" or self.audit_webhook
        if not wanted or self.kube_mode == "none":
            return
        kubeconfig = os.environ.get("KUBECONFIG")
        if self.kube_mode in ("auto", "real") and kubeconfig and Path(kubeconfig).is_file():
            self.kubeconfig_text = Path(kubeconfig).read_text()
            self.kube_description = f"real cluster from KUBECONFIG={kubeconfig}"
            return
        if self.kube_mode == "real":
            raise RuntimeError("kube=real needs KUBECONFIG pointing at a kubeconfig file")
        try:
            from .kubeemu import KubeEmulator
        except ImportError as exc:
            self.kube_description = f"unavailable (in-memory Kubernetes API not built yet: {exc})"
            return
        self.emulator = KubeEmulator()
        self.emulator.start()
        # As `bootstrap openfaas` would: the functions' ServiceAccounts, roles and namespaces (not the
        # per-namespace templates, which need a namespace filled in).
        for manifest in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")):
            if "__NAMESPACE__" not in manifest.read_text():
                self.emulator.load_manifests(manifest)
        self.kubeconfig_text = yaml.safe_dump(self.emulator.kubeconfig_dict())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.emulator.write_kubeconfig(self.state_dir / "kubeconfig")
        self.kube_description = f"in-memory Kubernetes API at {self.emulator.url}"

    def _start_audit(self) -> None:
        """Make the in-memory API post its audit events to audit-ingest, as k3s's audit webhook does."""
        if not self.audit_webhook or self.emulator is None or "audit-ingest" not in self.functions:
            return
        self.emulator.enable_audit(webhook=f"{self.url}/function/audit-ingest",
                                   token=self.secret("audit-ingest-token"), batch_max_wait=1.0)
        self.kube_description += ", audit webhook -> audit-ingest"

    @property
    def kubeconfig_path(self) -> Path | None:
        """An admin kubeconfig for the in-memory API (for kubectl), written when it starts."""
        return self.state_dir / "kubeconfig" if self.emulator is not None else None

    def kube_api_client(self):
        if self.kubeconfig_text is None:
            return None
        from kubernetes import config as kconfig
        return kconfig.new_client_from_config_dict(yaml.safe_load(self.kubeconfig_text))

    def _local_env(self) -> dict:
        """Host-side settings a pod gets from its platform: a private spool, a server CA for the emulator."""
        env = {"alert-forwarder": {"spool_dir": str(self.state_dir / "spool" / "alert-forwarder")}}
        if self.emulator is not None:
            # The in-memory API is plain HTTP, so its kubeconfig carries no CA for node-enroll to hash.
            env["node-enroll"] = {"k3s_ca_file": str(DEMO_CA)}
        return env

    def _start_functions(self) -> None:
        local_env = self._local_env()
        selected = self._selected()
        contexts = self.runtime.build_contexts(self.stack, self.state_dir / "build", [fn.name for fn in selected])
        for fn in selected:
            fn_secrets = self._mount_secrets(fn)
            env = self.runtime.base_env(fn)
            env.update({
                "gateway_url": self.url, "EDGEGUARD_SECRETS_DIR": str(fn_secrets), "OPENFAAS_NAME": fn.name,
                "HOSTNAME": f"{fn.name}-local", "PYTHONDONTWRITEBYTECODE": "1",
            })
            env.update(local_env.get(fn.name, {}))
            env.update(self.env_overrides.get(fn.name, {}))
            log_path = self.state_dir / "logs" / f"{fn.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(b"")  # one run per file: what a later grep finds is this run's
            process = self.runtime.process(fn.name, contexts[fn.name], env, log_path,
                                           echo_logs=self.echo_logs, scratch=self.state_dir)
            self.functions[fn.name] = Deployment(fn, process, fn_secrets)
            process.start()
        deadline = time.monotonic() + 60
        for dep in self.functions.values():
            dep.process.wait_ready(deadline)

    def _mount_secrets(self, fn: stackfile.Function) -> Path:
        """/var/openfaas/secrets for one function: only the secrets stack.yml lists for it."""
        fn_secrets = self.state_dir / "mounted-secrets" / fn.name
        fn_secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in fn_secrets.iterdir():
            old.unlink()
        for name in fn.secrets:
            if name.endswith("-kubeconfig"):
                text = self.kubeconfigs.get(name, self.kubeconfig_text)
                if text is None:
                    continue  # as in-cluster without credentials: the function reports it
                self.store.ensure(name, text)
            else:
                self.store.ensure(name)
            os.symlink(self.store.path(name), fn_secrets / name)
        return fn_secrets

    def _start_gateway(self) -> None:
        from waitress.server import create_server

        self.store.ensure("basic-auth-password")
        self._server = create_server(self._app(), host="127.0.0.1", port=self.port, threads=8)
        threading.Thread(target=self._server.run, daemon=True).start()
        threading.Thread(target=self._async_worker, daemon=True).start()

    def secret(self, name: str) -> str:
        return self.store.get(name)

    # --- gateway ---------------------------------------------------------------------------------
    def _app(self):
        from flask import Flask, Response, jsonify, request

        app = Flask("edgeguard-local-gateway")
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

        def ce_headers(resp, call_id, started):
            resp.headers["X-Call-Id"] = call_id
            resp.headers["X-Start-Time"] = str(started)
            resp.headers["X-Served-By"] = "edgeguard-local-gateway (openfaas-ce routes)"
            return resp

        @app.get("/healthz")
        def healthz():
            return Response("OK", 200, mimetype="text/plain")

        @app.route("/function/<name>", defaults={"rest": ""}, methods=methods)
        @app.route("/function/<name>/<path:rest>", methods=methods)
        def sync(name, rest):
            call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
            started = time.time_ns()
            fp = self.functions.get(name.removesuffix(".openfaas-fn"))  # faas-cli invoke names the namespace
            if fp is None:
                return ce_headers(self._internal(404, f"error finding function {name}.openfaas-fn: not found"), call_id, started)
            status, headers, body = self._forward(fp, request.method, "/" + rest, request.query_string,
                                                  request.headers, request.get_data(), call_id)
            passed = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS | {"date", "server"}]
            return ce_headers(Response(body, status, headers=passed), call_id, started)

        @app.route("/async-function/<name>", defaults={"rest": ""}, methods=["POST"])
        @app.route("/async-function/<name>/<path:rest>", methods=["POST"])
        def async_(name, rest):
            call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
            started = time.time_ns()
            if name not in self.functions:
                return ce_headers(self._internal(404, f"function {name} not found"), call_id, started)
            body = request.get_data()
            if len(body) > CE_ASYNC_LIMIT:
                return ce_headers(self._internal(500, "Error queuing request: request body too large for OpenFaaS CE"),
                                  call_id, started)
            self._async_q.put((name, "/" + rest, request.query_string, list(request.headers.items()), body, call_id))
            return ce_headers(Response(b"", 202), call_id, started)

        def basic_auth_ok() -> bool:
            auth = request.authorization
            if auth is None or auth.type != "basic":
                return False
            want = self.secret("basic-auth-password")
            return (hmac.compare_digest((auth.username or "").encode(), BASIC_AUTH_USER.encode())
                    & hmac.compare_digest((auth.password or "").encode(), want.encode()))

        def unauthorized():
            return Response("Unauthorized\n", 401, {"WWW-Authenticate": 'Basic realm="Restricted"'})

        def describe(fp: Deployment) -> dict:
            return {"name": fp.fn.name, "image": fp.fn.image, "namespace": "openfaas-fn",
                    "invocationCount": fp.invocations, "replicas": 1,
                    "availableReplicas": 1 if fp.proc and fp.proc.poll() is None else 0,
                    "envProcess": "python index.py", "labels": fp.fn.labels, "annotations": fp.fn.annotations,
                    "secrets": fp.fn.secrets}

        @app.get("/system/functions")
        def list_functions():
            if not basic_auth_ok():
                return unauthorized()
            return jsonify([describe(fp) for fp in self.functions.values()])

        @app.get("/system/function/<name>")
        def get_function(name):
            if not basic_auth_ok():
                return unauthorized()
            fp = self.functions.get(name)
            if fp is None:
                return self._internal(404, f"function {name} not found")
            return jsonify(describe(fp))

        return app

    @staticmethod
    def _internal(status: int, text: str):
        from flask import Response
        return Response(text + "\n", status, {"X-OpenFaaS-Internal": "gateway", "Content-Type": "text/plain"})

    def _forward(self, fp: Deployment, method: str, path: str, qs: bytes, headers, body: bytes, call_id: str):
        fp.invocations += 1
        url = fp.url + path + (("?" + qs.decode("latin-1")) if qs else "")
        hdrs = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        hdrs["X-Call-Id"] = call_id
        hdrs.setdefault("X-Forwarded-For", "127.0.0.1")  # faas-provider sets it when absent (the watchdog drops it)
        timeout = GATEWAY_UPSTREAM_TIMEOUT if self.runtime.enforces_exec_timeout else fp.exec_timeout
        try:
            r = requests.request(method, url, headers=hdrs, data=body, timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            if self.runtime.enforces_exec_timeout:
                return 500, [("X-OpenFaaS-Internal", "proxy")], f"Can't reach service for: {fp.fn.name}.\n".encode()
            # Standing in for of-watchdog's exec_timeout: it answers 504 with an empty body.
            return 504, [("X-OpenFaaS-Internal", "of-watchdog")], b""
        except requests.ConnectionError:
            return 503, [("X-OpenFaaS-Internal", "gateway")], f"No endpoints available for: {fp.fn.name}.\n".encode()
        return r.status_code, list(r.raw.headers.items()), r.content

    def _async_worker(self) -> None:
        # requests is imported at module level: importing it here raced with the main thread's import.
        while not self._stopping.is_set():
            try:
                name, path, qs, headers, body, call_id = self._async_q.get(timeout=0.2)
            except queue.Empty:
                continue
            fp = self.functions.get(name)
            started = time.monotonic()
            hdrs = dict(headers)
            callback = hdrs.pop("X-Callback-Url", None)
            hdrs["User-Agent"] = "openfaas-ce/nats-queue-worker"
            # The CE queue-worker always POSTs to /function/<name> and never retries.
            status, resp_headers, resp_body = self._forward(fp, "POST", path, qs, hdrs, body, call_id)
            if callback:
                cb_headers = {k: v for k, v in resp_headers if k.lower() not in _HOP_HEADERS}
                cb_headers.update({"X-Call-Id": call_id, "X-Function-Status": str(status), "X-Function-Name": name,
                                   "X-Duration-Seconds": f"{time.monotonic() - started:.6f}"})
                try:
                    requests.post(callback, data=resp_body, headers=cb_headers, timeout=10)
                except requests.RequestException:
                    pass  # CE does not retry callbacks either
            self._async_q.task_done()

    def drain_async(self, timeout: float = 30) -> bool:
        """Wait until every queued async call has been delivered (demo and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._async_q.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False


def basic_auth_header(password: str) -> str:
    return "Basic " + base64.b64encode(f"{BASIC_AUTH_USER}:{password}".encode()).decode()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run edgeguard's functions behind a local OpenFaaS-style gateway.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--kube", choices=["auto", "emulator", "real", "none"], default="auto")
    parser.add_argument("--no-audit", action="store_true",
                        help="do not send the in-memory API's audit events to audit-ingest")
    args = parser.parse_args(argv)
    try:
        stack = LocalStack(args.port, echo_logs=True, kube=args.kube, audit_webhook=not args.no_audit)
        print(f"starting functions under {stack.runtime.name} ...", flush=True)
        stack.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    secrets_dir = stack.store.dir
    print(f"edgeguard local gateway on {stack.url} (Ctrl-C to stop)")
    print(f"  functions: {', '.join(stack.functions)}")
    print(f"  runtime: {stack.runtime.describe()}")
    print(f"  kubernetes: {stack.kube_description}")
    print(f"  logs (one file per function{', the watchdog log included' if stack.runtime.watchdog else ''}): "
          f"{stack.state_dir / 'logs'}")
    print(f"  secrets (one file each, like faas-cli secret create): {secrets_dir}")
    if stack.kubeconfig_path:
        print(f"  kubectl: export KUBECONFIG={stack.kubeconfig_path}   (the in-memory API; its audit events go to "
              "audit-ingest; `kubectl apply` needs --validate=false there; see README)")
    print("  try:")
    print(f"    TOKEN=$(cat {secrets_dir}/audit-ingest-token)")
    print(f"    curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
    print(f"      --data @tests/data/seed/anonymous_create_namespace_foo.json '{stack.url}/function/audit-ingest?dry_run=1'")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
