"""audit-ingest figures: engine events/s, 400-event EventList through the handler, engine vs JSON decode, RSS.

Run alone with ``.venv/bin/python -m bench audit_ingest``. The event mix is every
audit event of Falco's regression traces and the samples (webhook, log-backend
and EventList shapes), cycled to 10,000 events with unique auditIDs. Targets
(issue 3): >= 20,000 events/s, 400-event batch <= 50 ms median, engine <= 3x
JSON decode, RSS after loading the rules <= 60 MB.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "falco"
N_EVENTS = 10_000
BATCH = 400


def corpus() -> list[dict]:
    """Every audit event item in the regression traces and samples (webhook items have no kind)."""
    from edgeguard.falco.source import Batch, split_payload

    batch = Batch()
    files = sorted((DATA / "regression" / "events").glob("*.json")) + sorted((DATA / "samples").glob("*.json*"))
    for f in files:
        text = f.read_text()
        try:
            payloads = [json.loads(text)]
        except json.JSONDecodeError:
            payloads = [json.loads(line) for line in text.splitlines() if line.strip()]
        for p in payloads:
            split_payload(p, batch=batch)
    return [e.obj for e in batch.events]


def mix(n: int, tag: str = "") -> list[dict]:
    base = corpus()
    out = []
    for i in range(n):
        e = dict(base[i % len(base)])
        e["auditID"] = f"bench{tag}-{i:07d}"
        out.append(e)
    return out


def bench_engine() -> None:
    from edgeguard.falco import loader
    from edgeguard.falco.engine import DEFAULT_RULES, Engine
    from edgeguard.falco.source import batch_gc_paused, decode_payload, split_payload

    engine = Engine(loader.load([DEFAULT_RULES]))
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": mix(N_EVENTS)})
    raw = body.encode()
    best_decode = best_engine = best_scan = float("inf")
    alerts = 0
    text = raw.decode()
    for _ in range(5):
        # As in the handler: the cyclic GC is paused for the batch (for the plain decode too, to compare fairly).
        with batch_gc_paused():
            t0 = time.perf_counter()
            json.loads(raw)
            t1 = time.perf_counter()
            obj, fits = decode_payload(text)
            t2 = time.perf_counter()
            batch = split_payload(obj, raw_size=len(raw), fits=fits)
            alerts = 0
            for evt in batch.events:
                alerts += len(engine.evaluate(evt))
            t3 = time.perf_counter()
        del obj, batch
        best_decode = min(best_decode, t1 - t0)
        best_scan = min(best_scan, t2 - t1)
        best_engine = min(best_engine, t3 - t2)
    n = N_EVENTS
    print(f"engine, default ruleset ({len(engine.rules)} rules), {n} events ({len(corpus())} distinct shapes), "
          f"{alerts} alerts: {n / best_engine:,.0f} events/s on one core (best of 5; target >= 20,000)")
    print(f"engine time {best_engine * 1000:.1f} ms vs json.loads of the same {len(raw) / 1e6:.1f} MB batch "
          f"{best_decode * 1000:.1f} ms: ratio {best_engine / best_decode:.2f}x (target <= 3x); the handler's "
          f"decoder (json + per-item sizes) took {best_scan * 1000:.1f} ms")


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def _load_handler(tmp: Path, gateway_url: str):
    sys.path.insert(0, str(ROOT))
    from local import buildctx, stackfile

    stack = stackfile.load()
    ctx = buildctx.assemble(stack.functions["audit-ingest"], stack, tmp / "build")
    secrets = tmp / "secrets"
    secrets.mkdir()
    (secrets / "audit-ingest-token").write_text("bench-token")
    (secrets / "alert-forwarder-token").write_text("fwd-token")
    os.environ.update(stack.functions["audit-ingest"].environment)
    os.environ.update(EDGEGUARD_SECRETS_DIR=str(secrets), gateway_url=gateway_url)
    spec = importlib.util.spec_from_file_location("_bench_ai", ctx / "function" / "__init__.py",
                                                  submodule_search_locations=[str(ctx / "function")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_bench_ai"] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module("_bench_ai.handler")


def bench_handler(iterations: int = 60) -> None:
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            handler = _load_handler(Path(tmp), f"http://127.0.0.1:{sink.server_address[1]}")
            lat, alerts = [], 0
            devnull = open(os.devnull, "w")
            real_stderr = sys.stderr
            for i in range(iterations + 5):
                items = mix(BATCH, tag=f"h{i}")  # fresh auditIDs: no batch is a "retry"
                body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                                   "items": items}).encode()
                evt = SimpleNamespace(body=body, method="POST", path="/", query=ImmutableMultiDict(),
                                      headers=Headers([("Content-Type", "application/json"),
                                                       ("Authorization", "Bearer bench-token")]))
                sys.stderr = devnull
                try:
                    t = time.perf_counter()
                    res = handler.handle(evt, None)
                    dt = (time.perf_counter() - t) * 1000
                finally:
                    sys.stderr = real_stderr
                if res["statusCode"] != 200:
                    raise RuntimeError(f"handler answered {res['statusCode']}: {res['body'][:200]}")
                if i >= 5:  # warm-up
                    lat.append(dt)
                    alerts += json.loads(res["body"])["alert_count"]
            lat.sort()
            print(f"HTTP handler, {BATCH}-event EventList ({len(body) / 1e6:.2f} MB, decode + auth + rules + "
                  f"hand-off to a loopback alert-forwarder stand-in): median {statistics.median(lat):.1f} ms, "
                  f"p99 {lat[max(0, int(len(lat) * 0.99) - 1)]:.1f} ms over {len(lat)} batches, "
                  f"{alerts / len(lat):.0f} alerts/batch (target median <= 50 ms)")
    finally:
        sink.shutdown()
        sink.server_close()


_RSS_PROBE = """
import sys
sys.path.insert(0, {root!r})
from edgeguard.falco import loader
from edgeguard.falco.engine import DEFAULT_RULES, Engine
import requests, yaml  # the function's runtime dependencies are loaded too
engine = Engine(loader.load([DEFAULT_RULES, {local!r}]))
for line in open('/proc/self/status'):
    if line.startswith(('VmRSS', 'VmHWM')):
        print(line.split(':')[0], int(line.split()[1]) // 1024)
"""


def bench_rss() -> None:
    local = str(ROOT / "functions" / "audit-ingest" / "rules.d" / "50-edgeguard-local.yaml")
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE.format(root=str(ROOT), local=local)],
                         capture_output=True, text=True, check=True).stdout.split()
    vals = dict(zip(out[::2], out[1::2]))
    print(f"RSS after loading the rules (fresh python, rules + requests + yaml imported): {vals['VmRSS']} MB "
          f"(peak {vals['VmHWM']} MB; target <= 60 MB)")


def main() -> None:
    bench_engine()
    bench_handler()
    bench_rss()


if __name__ == "__main__":
    main()
