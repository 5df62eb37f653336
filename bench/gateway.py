"""Overhead of the local gateway + runtime on a trivial function (context for the per-function figures)."""

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests
import yaml

from local import gateway, stackfile

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def main(n: int = 500) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(DATA / "contract_fn", tmp / "functions" / "probe")
        (tmp / "stack.yml").write_text(
            yaml.safe_dump(
                {
                    "version": "1.0",
                    "provider": {"name": "openfaas"},
                    "functions": {
                        "probe": {"lang": "python3-http", "handler": "./functions/probe", "image": "x/probe:1"}
                    },
                }
            )
        )
        with gateway.LocalStack(
            gateway.free_port(), state_dir=tmp / "state", kube="none", stack=stackfile.load(tmp / "stack.yml")
        ) as ls:
            s = requests.Session()
            for _ in range(20):
                s.post(ls.url + "/function/probe/none")
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                s.post(ls.url + "/function/probe/none")
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(
                f"local gateway round trip, empty function: p50 {statistics.median(lat):.2f} ms, "
                f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms over {n} calls"
            )


def _sink(port_q) -> None:
    """A stand-in for gateway + alert-forwarder in its own process: 202 and an X-Call-Id, HTTP/1.1 keep-alive."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(202)
            self.send_header("X-Call-Id", "call")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    port_q.put(srv.server_address[1])
    srv.serve_forever()


def _calls(call, n: int, threads: int) -> tuple[float, float, float, float]:
    """(calls/s, p50 ms, p99 ms, CPU ms per call of this process) for n calls spread over threads."""
    import threading

    lat = [0.0] * n

    def run(k):
        for i in range(k, n, threads):
            t = time.perf_counter()
            call()
            lat[i] = (time.perf_counter() - t) * 1000

    cpu0, t0 = time.process_time(), time.perf_counter()
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lat.sort()
    return n / wall, statistics.median(lat), lat[int(n * 0.99) - 1], cpu * 1000 / n


def compare_clients(rounds: int = 3) -> None:
    """audit-ingest's hand-off (POST of a JSON array of alerts to /async-function/alert-forwarder) on three stacks:
    requests.post per call (what edgeguard.gateway.invoke did), a requests.Session per thread, and
    edgeguard.gateway on httpclient (kept-alive http.client). The webhook/chat path is bench.alert_forwarder's
    compare_clients.

    Run: ``.venv/bin/python -c 'from bench.gateway import compare_clients; compare_clients()'``
    """
    import multiprocessing as mp
    import os
    import threading

    from edgeguard import gateway

    port_q = mp.Queue()
    proc = mp.Process(target=_sink, args=(port_q,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port_q.get(timeout=10)}"
    os.environ["gateway_url"] = url
    target = url + "/async-function/alert-forwarder"
    alert = (
        '{"hostname":"edge-1","output":"10:11:12.123456789: Warning anonymous request allowed","output_fields":'
        '{"ka.user.name":"system:anonymous","ka.verb":"create"},"priority":"Warning","rule":"Anonymous Request '
        'Allowed","source":"k8s_audit","tags":["k8s"],"time":"2024-05-01T10:11:12.123456789Z"}'
    )
    # One alert, and 800 (a part just under audit-ingest's forward_max_bytes of 250,000).
    bodies = {"1 alert": f"[{alert}]".encode(), "800 alerts": ("[" + ",".join([alert] * 800) + "]").encode()}
    hdrs = {"Content-Type": "application/json", "Authorization": "Bearer bench-token"}
    local = threading.local()

    def session():
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        return s

    try:
        for _ in range(rounds):
            for what, body in bodies.items():
                n = 1500 if what == "1 alert" else 200
                stacks = {
                    "requests.post": lambda body=body: requests.post(target, data=body, headers=hdrs, timeout=10),
                    "requests.Session": lambda body=body: session().post(target, data=body, headers=hdrs, timeout=10),
                    "gateway (httpclient)": lambda body=body: gateway.invoke("alert-forwarder", body, headers=hdrs),
                }
                for name, call in stacks.items():
                    for threads in (1, 4):
                        per_s, p50, p99, cpu = _calls(call, n, threads)
                        print(
                            f"hand-off of {what} ({len(body):,} B), {threads} thread(s), {name:20s}: "
                            f"{per_s:7.0f} calls/s, p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, "
                            f"{cpu:.3f} ms CPU per call",
                            flush=True,
                        )
    finally:
        proc.kill()
