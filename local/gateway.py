"""``make up``: every function of stack.yml behind a local stand-in for the OpenFaaS CE gateway.

Each function runs in its own process group (as a pod runs its image), with only the secrets stack.yml
lists for it and the environment stack.yml declares: under the real of-watchdog over a faas-cli
shrinkwrap context when those tools are found, else under local/runtime.py (local/launch.py,
local/components.py). The gateway's routes, proxy and access log are local/gatewayserver.py; the async
queue and its worker local/queueworker.py.

Logs (``<state>/logs/``) are written as the real components write theirs, because what they write is
what an operator with ``kubectl logs`` reads (local/leakcheck.py checks that no secret is there): one per
function (the watchdog's), ``gateway.log`` (a line per request, full URL and query string included) and
``queue-worker.log`` (each queued message, as JSON with every header).

Kubernetes: functions that list a ``*-kubeconfig`` secret get the cluster of ``$KUBECONFIG`` when it is
set, otherwise an in-memory API (local/kubeemu/). That admin kubeconfig goes to every such secret unless
``kubeconfigs`` names another for it (e.g. the ServiceAccount kubeconfigs ``edgeguard-bootstrap
openfaas`` makes, to run a function with its least-privilege credentials). ``alert-forwarder-kubeconfig``
is the exception: it is empty unless named (the spool handover and per-node tokens are then off), because
the admin credential is not that function's identity and the local API does not hold the handover Secret
deploy/rbac/alert-forwarder.yaml declares.
"""

from __future__ import annotations

import argparse
import os
import secrets as pysecrets
import signal
import socket
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from edgeguard import config

from . import launch, localca, realcluster, runs, stackfile, tlsfront
from .gatewayserver import BASIC_AUTH_USER, CE_ASYNC_LIMIT, Gateway, GatewayServer  # noqa: F401 - re-exported
from .queueworker import QueueWorker

if TYPE_CHECKING:  # imported when the in-memory API starts (aiohttp, kmock)
    from .kubeemu import KubeEmulator

ROOT = stackfile.ROOT
# A throwaway self-signed CA (its key was discarded) standing in for k3s's server CA on the in-memory API.
DEMO_CA = Path(__file__).resolve().parent / "demo-server-ca.crt"


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

    # Every stack started in this process (the test suite checks their logs for secrets after each test).
    started: weakref.WeakSet[LocalStack] = weakref.WeakSet()

    def __init__(
        self,
        port: int = 8080,
        state_dir: Path | None = None,
        *,
        env_overrides: dict | None = None,
        echo_logs: bool = False,
        kube: str = "auto",
        stack: stackfile.Stack | None = None,
        functions: list[str] | None = None,
        audit_webhook: bool = False,
        runtime: launch.Runtime | None = None,
        kubeconfigs: dict[str, str] | None = None,
        kind: str = "a local stack",
    ):
        self.port = port
        self.kind = kind
        self.state_dir = Path(state_dir) if state_dir else runs.default_state_dir(port)
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
        self.emulator: KubeEmulator | None = None
        self.cluster: realcluster.RealCluster | None = None  # with KUBE=real and no KUBECONFIG
        self.kubeconfig_text: str | None = None
        self.kube_description = "none"
        self._server: GatewayServer | None = None
        self.gateway: Gateway | None = None
        self.queue: QueueWorker | None = None
        self._stopping = threading.Event()
        self.tls_front: tlsfront.TLSFront | None = None
        self._ca: localca.LocalCA | None = None
        self.logs_dir = self.state_dir / "logs"
        self.access_log = self.logs_dir / "gateway.log"
        self.queue_log = self.logs_dir / "queue-worker.log"
        self._log_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        LocalStack.started.add(self)
        try:
            self._check_port()
            runs.claim(self.state_dir, self.port, self.kind)
            self._claimed = True
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
        if self.queue is not None:
            self.queue.stop()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if getattr(self, "_claimed", False):
            runs.release(self.state_dir)
            self._claimed = False

    def start_tls_front(self, site, port: int = 0):
        """What k3s's Traefik does for audit-ingest: TLS with bootstrap's certificate (a tlsfront.Site from
        its Ingress and Secret), proxying the Ingress's paths to this gateway (Service gateway:8080)."""

        self.tls_front = tlsfront.TLSFront(
            site, {("gateway", 8080): self.url}, port=port, log_path=self.state_dir / "logs" / "tlsfront.log"
        ).start()
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
                holder = next((r for r in runs.active() if r.port == self.port), None)
                by = f" by {holder.kind} (pid {holder.pid}, state in {holder.state_dir})" if holder else ""
                raise runs.RunConflict(
                    f"port {self.port} on 127.0.0.1 is in use{by}; choose another with PORT=<n>"
                ) from None

    # Mounted empty unless ``kubeconfigs`` names them: their function runs without the API then.
    EMPTY_UNLESS_NAMED = frozenset({"alert-forwarder-kubeconfig"})

    def _needs_kube(self) -> bool:
        return any(
            s.endswith("-kubeconfig") and (s not in self.EMPTY_UNLESS_NAMED or s in self.kubeconfigs)
            for fn in self._selected()
            for s in fn.secrets
        )

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
            self._start_real_cluster()
            return
        try:
            from .kubeemu import KubeEmulator
        except ImportError as exc:
            self.kube_description = f"unavailable (in-memory Kubernetes API not built yet: {exc})"
            return
        # https with a local CA, so kubectl (client-go) sends its token: requests are audited as the admin.
        self.emulator = KubeEmulator(tls=self.ca.issue("kubeemu") if self.ca is not None else None)
        self.emulator.start()
        for manifest in self._install_manifests():
            self.emulator.load_manifests(manifest)
        self.kubeconfig_text = yaml.safe_dump(self.emulator.kubeconfig_dict())
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.emulator.write_kubeconfig(self.state_dir / "kubeconfig")
        self.kube_description = f"in-memory Kubernetes API at {self.emulator.url}"
        if self.ca is None:
            self.kube_description += (
                " (plain http: openssl is missing, so kubectl sends no token and its "
                "requests are audited as system:anonymous)"
            )

    def _install_manifests(self) -> list[Path]:
        """As `bootstrap openfaas` would: the functions' ServiceAccounts, roles and namespaces (not the
        per-namespace templates, which need a namespace filled in)."""
        return [m for m in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")) if "__NAMESPACE__" not in m.read_text()]

    def _start_real_cluster(self) -> None:
        """KUBE=real without KUBECONFIG: the shared tools' control plane, its audit webhook through the TLS front."""

        if self.ca is None:
            raise RuntimeError("KUBE=real needs openssl (the local CA of the audit webhook's TLS front)")
        webhook = None
        if self.audit_webhook and any(fn.name == "audit-ingest" for fn in self._selected()):
            self.store.ensure("audit-ingest-token")
            url, ca_pem, server_name = self.audit_front()
            webhook = realcluster.webhook_kubeconfig(url, ca_pem, server_name, self.secret("audit-ingest-token"))
        self.cluster = realcluster.RealCluster(self.state_dir / "kube").start(webhook)
        self.cluster.apply(self._install_manifests())
        self.kubeconfig_text = self.cluster.kubeconfig.read_text()
        self._real_kubeconfig = self.cluster.kubeconfig
        self.kube_description = (
            f"real kube-apiserver v1.24 (the shared tools' kube/cluster), state in {self.cluster.dir}"
        )
        if webhook:
            self.kube_description += f", audit webhook -> {webhook['clusters'][0]['cluster']['server']} (TLS front)"

    @property
    def ca(self):
        """The run's local CA (local/localca.py), or None without openssl."""
        if self._ca is None and localca.available():
            self._ca = localca.LocalCA(self.state_dir / "tls")
        return self._ca

    def audit_front(self):
        """What k3s's Traefik does with bootstrap's Ingress for audit-ingest: TLS for its name, its one path, to
        the gateway. The API server's webhook (client-go) sends its token only to such an https URL."""
        from bootstrap.edgeguard_bootstrap.audit_tls import PATH, SERVER_NAME

        cert = self.ca.issue("audit-front", dns=(SERVER_NAME,), ips=())
        site = tlsfront.Site(
            "openfaas",
            (SERVER_NAME,),
            cert.cert.read_bytes(),
            cert.key.read_bytes(),
            (tlsfront.Route(PATH, "Exact", "gateway", 8080),),
        )
        front = self.start_tls_front(site)
        return f"https://127.0.0.1:{front.port}{PATH}", cert.ca_pem, SERVER_NAME

    def _start_audit(self) -> None:
        """Make the in-memory API post its audit events to audit-ingest, as k3s's audit webhook does: over https
        through the TLS front, the bearer token in the webhook's kubeconfig."""
        if not self.audit_webhook or self.emulator is None or "audit-ingest" not in self.functions:
            return
        token = self.secret("audit-ingest-token")
        if self.ca is None:
            self.emulator.enable_audit(webhook=f"{self.url}/function/audit-ingest", token=token, batch_max_wait=1.0)
            self.kube_description += ", audit webhook -> audit-ingest over http (no token sent: openssl is missing)"
            return
        url, ca_pem, server_name = self.audit_front()
        self.emulator.enable_audit(webhook=url, token=token, batch_max_wait=1.0, ca_pem=ca_pem, server_name=server_name)
        self.kube_description += f", audit webhook -> {url} (TLS front, SNI {server_name}) -> audit-ingest"

    @property
    def kubeconfig_path(self) -> Path | None:
        """An admin kubeconfig (for kubectl) of the in-memory API or the launched control plane."""
        if self.cluster is not None:
            return self.cluster.kubeconfig
        return self.state_dir / "kubeconfig" if self.emulator is not None else None

    def kube_api_client(self):
        if self.kubeconfig_text is None:
            return None
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config_dict(yaml.safe_load(self.kubeconfig_text))

    def _local_env(self) -> dict:
        """Host-side settings a pod gets from its platform: a private spool, a server CA for the emulator."""
        env = {"alert-forwarder": {"spool_dir": str(self.state_dir / "spool" / "alert-forwarder")}}
        if self.emulator is not None and self.emulator.tls is None:
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
            env.update(
                {
                    "gateway_url": self.url,
                    "EDGEGUARD_SECRETS_DIR": str(fn_secrets),
                    "OPENFAAS_NAME": fn.name,
                    "HOSTNAME": f"{fn.name}-local",
                    "PYTHONDONTWRITEBYTECODE": "1",
                }
            )
            env.update(local_env.get(fn.name, {}))
            env.update(self.env_overrides.get(fn.name, {}))
            log_path = self.state_dir / "logs" / f"{fn.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_bytes(b"")  # one run per file: what a later grep finds is this run's
            process = self.runtime.process(
                fn.name, contexts[fn.name], env, log_path, echo_logs=self.echo_logs, scratch=self.state_dir
            )
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
            if name in self.EMPTY_UNLESS_NAMED:
                self.store.ensure(name, self.kubeconfigs.get(name, ""))
            elif name.endswith("-kubeconfig"):
                text = self.kubeconfigs.get(name, self.kubeconfig_text)
                if text is None:
                    continue  # as in-cluster without credentials: the function reports it
                self.store.ensure(name, text)
            else:
                self.store.ensure(name)
            os.symlink(self.store.path(name), fn_secrets / name)
        return fn_secrets

    def _start_gateway(self) -> None:
        self.store.ensure("basic-auth-password")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.access_log, self.queue_log):
            path.write_bytes(b"")  # one run per file, as for the functions' logs
        self.queue = QueueWorker(self).start()
        self._server = GatewayServer(self, self.port).start()
        self.gateway = self._server.gateway

    def secret(self, name: str) -> str:
        return self.store.get(name)

    def leak_watch(self):
        """Checks the run's logs (gateway, queue-worker, watchdogs, TLS front) for its secrets' values."""
        from . import leakcheck

        if getattr(self, "_leak_watch", None) is None:
            self._leak_watch = leakcheck.LogWatch(self.logs_dir, [self.store.dir])
        return self._leak_watch

    # --- logs ------------------------------------------------------------------------------------
    def _write_log(self, path: Path, who: str, lines: list[str]) -> None:
        with self._log_lock:
            with open(path, "a", encoding="utf-8", errors="replace") as f:
                for line in lines:
                    f.write(line + "\n")
            if self.echo_logs:
                for line in lines:
                    sys.stderr.write(f"[{who}] {line}\n")

    def log_access(self, method: str, url: str, status: int, seconds: float) -> None:
        """The gateway's LoggingNotifier line (Go's log prefix, then method, r.URL.String(), status, duration)."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        self._write_log(
            self.access_log, "gateway", [f"{stamp} Forwarded [{method}] to {url} - [{status}] - {seconds:.4f}s"]
        )

    def log_queue(self, lines: list[str]) -> None:
        """The queue-worker's log (CE's sets no time prefix: log.SetFlags(0))."""
        self._write_log(self.queue_log, "queue-worker", lines)

    def log_gateway(self, text: str) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        self._write_log(self.access_log, "gateway", [f"{stamp} {line}" for line in text.rstrip().splitlines()])

    def drain_async(self, timeout: float = 30) -> bool:
        """Wait until every queued async call has been delivered (demo and tests)."""
        return self.queue.drain(timeout) if self.queue is not None else True


def parser_with_run_options(description: str) -> argparse.ArgumentParser:
    """--port, --state-dir and --kube, shared by make up and make demo (their make variables: PORT, STATE_DIR, KUBE)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--port",
        type=runs.port_arg,
        default=None,
        help="the gateway's port on 127.0.0.1 (make PORT=; default $PORT, else 8080)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="this run's folder for secrets, kubeconfig, spool and logs (make STATE_DIR=; default .local-state/<port>)",
    )
    parser.add_argument(
        "--kube",
        choices=["auto", "emulator", "real", "none"],
        default="auto",
        help="emulator: the in-memory API; real: $KUBECONFIG's cluster, else the control plane of "
        "../shared/tools/kube (make KUBE=); auto: $KUBECONFIG's if set, else the emulator",
    )
    return parser


def resolve_port(parser: argparse.ArgumentParser, args) -> tuple[int, bool]:
    """(port, explicit): --port, else $PORT (which make exports), else 8080."""
    if args.port is not None:
        return args.port, True
    port, error = runs.port_from_env()
    if error or port is None:
        parser.error(error or "no port")
    return port, bool(os.environ.get("PORT", "").strip())


def say_who_else_runs(port: int) -> None:
    for line in runs.others(port):
        print(f"note: {line}", flush=True)


def main(argv=None) -> int:
    parser = parser_with_run_options("Run edgeguard's functions behind a local OpenFaaS-style gateway (make up).")
    parser.add_argument(
        "--no-audit", action="store_true", help="do not send the in-memory API's audit events to audit-ingest"
    )
    parser.add_argument(
        "--scrubber-mode",
        choices=["report", "move"],
        default=None,
        help="configmap-secret-scrubber's scrub_mode (make SCRUBBER_MODE=; default: stack.yml's)",
    )
    args = parser.parse_args(argv)
    port, _ = resolve_port(parser, args)
    say_who_else_runs(port)
    overrides = {"configmap-secret-scrubber": {"scrub_mode": args.scrubber_mode}} if args.scrubber_mode else {}
    try:
        stack = LocalStack(
            port,
            state_dir=args.state_dir,
            echo_logs=True,
            kube=args.kube,
            audit_webhook=not args.no_audit,
            env_overrides=overrides,
            kind=runs.kind("local.gateway"),
        )
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
    if args.scrubber_mode:
        print(f"  configmap-secret-scrubber: scrub_mode={args.scrubber_mode}")
    print(f"  state: {stack.state_dir}")
    print(
        f"  logs (one file per function{', the watchdog log included' if stack.runtime.watchdog else ''}; "
        f"gateway.log, queue-worker.log): {stack.logs_dir}"
    )
    print(f"  secrets (one file each, like faas-cli secret create): {secrets_dir}")
    if stack.kubeconfig_path:
        print(
            f"  kubectl: export KUBECONFIG={stack.kubeconfig_path}   ({stack.kube_description.split(' at ')[0]}; "
            "its audit events go to audit-ingest; see README)"
        )
    print("  try:")
    print(f"    TOKEN=$(cat {secrets_dir}/audit-ingest-token)")
    print("    curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
    seed = "tests/data/seed/anonymous_create_namespace_foo.json"
    print(f"      --data @{seed} '{stack.url}/function/audit-ingest?dry_run=1'")
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
