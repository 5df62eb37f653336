"""alert-forwarder throughput and added latency, through ``handle()`` into a local HTTP receiver.

The handler is loaded from an assembled build context (as in the image) and
called from 4 threads (waitress's default). Each call posts one Falco alert, as
http_output does. The receiver runs in its own process so it does not share the
forwarder's GIL. Figures:

* alerts/s: alerts posted / time until the receiver has them all;
* ack p50/p99: how long ``handle()`` takes to answer (what Falco waits for);
* added p50/p99: from the call entering ``handle()`` to the receiver reading the
  request (time.perf_counter is CLOCK_MONOTONIC, shared across processes).

Run alone: ``.venv/bin/python -m bench alert_forwarder``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

TOKEN = "bench-token-0123456789"


def _receiver(port_q, done_q, expected):
    got = {}
    lock = threading.Lock()
    finished = threading.Event()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            t = time.perf_counter()
            key = self.headers.get("Idempotency-Key")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with lock:
                got.setdefault(key, t)
                if len(got) >= expected:
                    finished.set()

        def log_message(self, *a):
            pass

    class S(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    srv = S(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port_q.put(srv.server_address[1])
    finished.wait(120)
    done_q.put(got)


def _load_handler(tmp: Path, env: dict, secrets: dict):
    from local import buildctx, stackfile

    stack = stackfile.load()
    fn = stack.functions["alert-forwarder"]
    ctx = buildctx.assemble(fn, stack, tmp / "build")
    sdir = tmp / "secrets"
    sdir.mkdir()
    for k, v in secrets.items():
        (sdir / k).write_text(v)
    os.environ.update({**fn.environment, **env, "EDGEGUARD_SECRETS_DIR": str(sdir), "OPENFAAS_NAME": "alert-forwarder"})
    pkg = f"_bench_af_{os.getpid()}_{int(time.time() * 1000)}"
    spec = importlib.util.spec_from_file_location(
        pkg, ctx / "function" / "__init__.py", submodule_search_locations=[str(ctx / "function")]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[pkg] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{pkg}.handler")


def _alert(i: int) -> bytes:
    from edgeguard.falco.alert import dumps

    return dumps(
        {
            "hostname": "edge-1",
            "output": f"10:11:12.123456789: Warning A shell was spawned (pid={i})",
            "output_fields": {
                "evt.time": 1714558272123456789,
                "k8s.ns.name": "default",
                "k8s.pod.name": "nginx",
                "proc.pid": i,
                "proc.cmdline": "bash",
            },
            "priority": "Warning",
            "rule": "Terminal shell in container",
            "source": "syscall",
            "tags": ["container", "shell"],
            "time": "2024-05-01T10:11:12.123456789Z",
        }
    ).encode()


class _RequestsClient:
    """The measured alternative to httpclient.Client: requests.Session per worker thread, pooled HTTPAdapter,
    verify=True (or the private CA), cert for mTLS, no urllib3 retries, proxies from the environment ignored."""

    def __init__(self, hc, url, timeout, user_agent, ca_file=None, client_cert=None):
        self.hc, self.url, self.timeout, self.user_agent = hc, url, timeout, user_agent
        self.verify, self.cert = ca_file or True, client_cert
        self._local = threading.local()

    def request(self, method, body, headers):
        import requests
        from requests.adapters import HTTPAdapter

        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["User-Agent"] = self.user_agent
            s.trust_env = False
        try:
            r = s.request(
                method,
                self.url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                cert=self.cert,
                allow_redirects=False,
            )
        except requests.exceptions.Timeout as exc:
            raise self.hc.TransportError("timeout", type(exc).__name__) from None
        except requests.exceptions.RequestException as exc:
            raise self.hc.TransportError("connect", type(exc).__name__) from None
        return self.hc.Response(r.status_code, r.headers, r.content[: self.hc.MAX_RESPONSE_BYTES])


def _use_requests(mod) -> None:
    dest = importlib.import_module(mod.__package__ + ".destinations")
    hc = dest.httpclient

    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = _RequestsClient(hc, self.url(), self.timeout, dest.USER_AGENT, **self.tls_options())
        return self._client

    dest.Sender.client = client


def run(
    mode: str,
    n: int = 3000,
    threads: int = 4,
    concurrency: int = 4,
    rate: float | None = None,
    client: str = "httpclient",
) -> dict:
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    port_q, done_q = mp.Queue(), mp.Queue()
    proc = mp.Process(target=_receiver, args=(port_q, done_q, n), daemon=True)
    proc.start()
    port = port_q.get(timeout=10)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        routes = (
            f"destinations:\n  hook: {{type: webhook, timeout: 5s, concurrency: {concurrency}}}\n"
            "routes:\n  - {name: all, to: [hook]}\n"
        )
        mod = _load_handler(
            tmp,
            {"spool_dir": str(tmp / "spool"), "ack_mode": mode},
            {
                "alert-forwarder-token": TOKEN,
                "alert-forwarder-routes": routes,
                "alert-forwarder-destinations": json.dumps(
                    {"hook": {"url": f"http://127.0.0.1:{port}/", "insecure_http": True}}
                ),
            },
        )
        if client == "requests":
            _use_requests(mod)
        bodies = [_alert(i) for i in range(n)]
        ctx = SimpleNamespace(hostname="bench")
        start_at = [0.0] * n
        ack = [0.0] * n
        key_of = [""] * n
        headers = Headers([("Content-Type", "application/json")])
        query = ImmutableMultiDict([("token", TOKEN)])

        errors = []

        def worker(idx):
            try:
                send(idx)
            except Exception as exc:  # noqa: BLE001 - reported after join
                errors.append(exc)

        def send(idx):
            for i in range(idx, n, threads):
                if rate:
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                ev = SimpleNamespace(body=bodies[i], headers=headers, method="POST", query=query, path="/")
                t = time.perf_counter()
                resp = mod.handle(ev, ctx)
                ack[i] = time.perf_counter() - t
                start_at[i] = t
                if resp["statusCode"] != 202:
                    raise RuntimeError(resp)
                key_of[i] = json.loads(resp["body"])["alerts"][0]["idempotency_key"]

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t_ack = time.perf_counter() - t0
        if errors:
            mod.FORWARDER.close()
            proc.kill()
            raise RuntimeError(f"handler failed: {errors[0]}")
        got = done_q.get(timeout=120)
        t_end = max(got.values()) - t0
        mod.FORWARDER.close()
    proc.join(5)
    added = sorted((got[k] - s) * 1000 for k, s in zip(key_of, start_at) if k in got)
    acks = sorted(a * 1000 for a in ack)
    return {
        "mode": mode,
        "n": n,
        "delivered": len(got),
        "alerts_per_s": n / t_end,
        "ack_per_s": n / t_ack,
        "ack_p50": statistics.median(acks),
        "ack_p99": acks[int(len(acks) * 0.99) - 1],
        "added_p50": statistics.median(added),
        "added_p99": added[int(len(added) * 0.99) - 1],
    }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_http(n: int = 2000, threads: int = 4, batch: int = 1) -> dict:
    """The same, but over HTTP through the python3-http runtime (Flask + waitress, 4 threads) in its own process."""
    import socket
    import subprocess

    import requests

    from local import buildctx, stackfile

    port_q, done_q = mp.Queue(), mp.Queue()
    proc = mp.Process(target=_receiver, args=(port_q, done_q, n), daemon=True)
    proc.start()
    rport = port_q.get(timeout=10)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stack = stackfile.load()
        fn = stack.functions["alert-forwarder"]
        ctx = buildctx.assemble(fn, stack, tmp / "build")
        sdir = tmp / "secrets"
        sdir.mkdir()
        (sdir / "alert-forwarder-token").write_text(TOKEN)
        (sdir / "alert-forwarder-routes").write_text(
            "destinations:\n  hook: {type: webhook, concurrency: 4}\nroutes:\n  - {name: all, to: [hook]}\n"
        )
        (sdir / "alert-forwarder-destinations").write_text(
            json.dumps({"hook": {"url": f"http://127.0.0.1:{rport}/", "insecure_http": True}})
        )
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
        env.update(fn.environment)
        env.update({"EDGEGUARD_SECRETS_DIR": str(sdir), "spool_dir": str(tmp / "spool"), "OPENFAAS_NAME": fn.name})
        server = subprocess.Popen(
            [sys.executable, str(root / "local" / "runtime.py"), "--context", str(ctx), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("runtime did not start") from None
                    time.sleep(0.05)
            alerts = [_alert(i) for i in range(n)]
            # batch > 1: JSON arrays, as audit-ingest sends them.
            bodies = (
                alerts if batch == 1 else [b"[" + b",".join(alerts[i : i + batch]) + b"]" for i in range(0, n, batch)]
            )
            lat = [0.0] * len(bodies)
            errors = []

            def send(idx):
                s = requests.Session()
                try:
                    for i in range(idx, len(bodies), threads):
                        t = time.perf_counter()
                        r = s.post(
                            f"http://127.0.0.1:{port}/",
                            data=bodies[i],
                            params={"token": TOKEN},
                            headers={"Content-Type": "application/json"},
                            timeout=10,
                        )
                        lat[i] = (time.perf_counter() - t) * 1000
                        if r.status_code != 202:
                            raise RuntimeError(f"HTTP {r.status_code}")
                except Exception as exc:  # noqa: BLE001 - reported after join
                    errors.append(exc)

            cpu0 = _cpu_seconds(server.pid)
            t0 = time.perf_counter()
            ts = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if errors:
                raise RuntimeError(f"POST failed: {errors[0]}")
            got = done_q.get(timeout=120)
            t_end = max(got.values()) - t0
            cpu = _cpu_seconds(server.pid) - cpu0
        finally:
            server.terminate()
            server.wait(10)
            proc.join(5)
    lat.sort()
    return {
        "n": n,
        "delivered": len(got),
        "alerts_per_s": n / t_end,
        "per_cpu_s": n / cpu if cpu else 0.0,
        "rt_p50": statistics.median(lat),
        "rt_p99": lat[int(len(lat) * 0.99) - 1],
    }


def main() -> None:
    for mode in ("durable", "fast"):
        r = run(mode, n=3000, threads=4)
        print(
            f"alert-forwarder ack_mode={mode}, saturated (4 caller threads, {r['n']} alerts, one per POST): "
            f"{r['alerts_per_s']:.0f} alerts/s delivered ({r['delivered']}/{r['n']}); "
            f"ack p50 {r['ack_p50']:.2f} ms p99 {r['ack_p99']:.2f} ms; added p50 {r['added_p50']:.2f} ms "
            f"p99 {r['added_p99']:.2f} ms (includes queueing at saturation)",
            flush=True,
        )
        r = run(mode, n=1500, threads=1, rate=500)
        print(
            f"alert-forwarder ack_mode={mode}, one caller like Falco's output thread at 500 alerts/s "
            f"({r['n']} alerts): ack p50 {r['ack_p50']:.2f} ms p99 {r['ack_p99']:.2f} ms; "
            f"added latency (enters handler -> receiver has it) p50 {r['added_p50']:.2f} ms "
            f"p99 {r['added_p99']:.2f} ms",
            flush=True,
        )
    for batch in (1, 50):
        r = run_http(n=2000 if batch == 1 else 5000, batch=batch)
        what = "one alert per POST" if batch == 1 else f"JSON arrays of {batch} (audit-ingest style)"
        print(
            f"alert-forwarder over HTTP through the python3-http runtime (Flask + waitress, 4 threads), durable, "
            f"4 client threads, {what}: {r['alerts_per_s']:.0f} alerts/s delivered ({r['delivered']}/{r['n']}), "
            f"{r['per_cpu_s']:.0f} alerts per CPU-second of the function process; "
            f"client round trip p50 {r['rt_p50']:.2f} ms p99 {r['rt_p99']:.2f} ms",
            flush=True,
        )


def compare_clients(rounds: int = 3) -> None:
    """Webhook delivery on httpclient vs on requests.Session, durable mode (docs/alert-forwarder.md, HTTP client).

    Run: ``.venv/bin/python -c 'from bench.alert_forwarder import compare_clients; compare_clients()'``
    """
    for _ in range(rounds):
        for client in ("httpclient", "requests"):
            r = run("durable", n=3000, threads=4, client=client)
            q = run("durable", n=1500, threads=1, rate=500, client=client)
            print(
                f"{client:10s} saturated: {r['alerts_per_s']:.0f} alerts/s delivered ({r['delivered']}/{r['n']}), "
                f"added p50 {r['added_p50']:.2f} ms p99 {r['added_p99']:.2f} ms; one caller at 500/s: added p50 "
                f"{q['added_p50']:.2f} ms p99 {q['added_p99']:.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
