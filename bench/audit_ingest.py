"""audit-ingest figures: the engine and the CLI on 20,000 events, a 400-event batch through the handler, RSS.

Run alone with ``.venv/bin/python -m bench audit_ingest``. The event mix is every
audit event of Falco's regression traces and the samples (webhook, log-backend
and EventList shapes), cycled to 20,000 events with unique auditIDs, one JSON
line each. Targets (issues 3 and 13), all measured in CPU time on one core,
best of 5:
- engine on pre-decoded events (events built, rules matched, Falco alert JSON
  written): >= 20,000 events/s and <= 1.0x plain json.loads of the same lines
  (``[json.loads(line) for line in lines]``, as any Python reader would);
- ``edgeguard-rules replay`` of the lines (read, decode, evaluate, write):
  >= 20,000 events/s and <= 1.5x plain json.loads of the same lines;
- replay's peak RSS independent of the input's length;
- 400-event batch through the handler <= 50 ms median; RSS after loading the
  rules <= 60 MB.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
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
N_EVENTS = 20_000
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


def _lines(n: int) -> list[bytes]:
    """The mix as the API server's log backend writes it: one ``Event`` per line."""
    return [json.dumps(dict(e, kind="Event")).encode() for e in mix(n)]


def _plain_json(lines) -> list:
    """The baseline: plain ``json.loads`` of each line, the results kept, the GC as Python leaves it."""
    return [json.loads(line) for line in lines]


def _best_plain(fn, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _best(fn, runs: int = 5) -> float:
    """Fewest CPU seconds of ``fn()`` over ``runs`` (CPU time: the machine is shared), the GC paused as in replay."""
    from edgeguard.falco.source import batch_gc_paused

    best = float("inf")
    for _ in range(runs):
        with batch_gc_paused():
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
    return best


def bench_engine() -> None:
    from edgeguard.falco import rule_files
    from edgeguard.falco.engine import load_engine
    from edgeguard.falco.source import split_payload

    engine = load_engine(rule_files.read(rule_files.plan()))
    lines = _lines(N_EVENTS)
    t_json = _best_plain(lambda: _plain_json(lines))
    t_json_paused = _best(lambda: _plain_json(lines))
    objs = [json.loads(line) for line in lines]
    alerts = [0]

    def run():
        n = 0
        match, alert_json = engine.match, engine.alert_json
        for obj in objs:
            for evt in split_payload(obj, raw_size=1).events:
                for r in match(evt):
                    alert_json(r, evt)
                    n += 1
        alerts[0] = n

    t_engine = _best(run)

    def run_objects():
        for obj in objs:
            for evt in split_payload(obj, raw_size=1).events:
                engine.evaluate(evt)

    t_objects = _best(run_objects)
    n = N_EVENTS
    print(
        f"engine, bundled ruleset + rules.d ({len(engine.rules)} rules), {n} pre-decoded events "
        f"({len(corpus())} distinct shapes), {alerts[0]} alerts as Falco JSON: {t_engine * 1000:.0f} ms, "
        f"{n / t_engine:,.0f} events/s on one core (target >= 20,000)"
    )
    print(
        f"  vs plain json.loads of the same {sum(map(len, lines)) / 1e6:.1f} MB of lines {t_json * 1000:.0f} ms: "
        f"ratio {t_engine / t_json:.2f}x (target <= 1.0x); with Alert objects instead of JSON (the handler's path) "
        f"{t_objects * 1000:.0f} ms, {t_objects / t_json:.2f}x"
    )
    print(
        f"  (json.loads with the GC paused as the engine runs, {t_json_paused * 1000:.0f} ms: engine "
        f"{t_engine / t_json_paused:.2f}x)"
    )


def bench_cli() -> None:
    from edgeguard.falco import cli, source

    lines = _lines(N_EVENTS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        args = cli.build_parser().parse_args(["replay", str(path)])
        engine, _ = cli._engine(args, ())

        def plain():
            with open(path, "rb") as fh:
                _plain_json(fh)

        def replay():
            rp = cli._Replay(engine, io.StringIO())
            with source.batch_gc_paused(), open(path, "rb") as fh:
                cli._replay_stream(str(path), fh, rp)
            rp.flush()

        t_json = _best_plain(plain)
        t_cli = _best_plain(replay)  # replay pauses the GC itself
        fast = source._orjson is not None
        saved, source._orjson = source._orjson, None
        try:
            t_cli_json = _best_plain(replay, 3)
        finally:
            source._orjson = saved
        print(
            f"edgeguard-rules replay of {N_EVENTS} JSON lines ({path.stat().st_size / 1e6:.1f} MB; bundled rules "
            f"+ rules.d, rule_matching first, alerts written), decoder {'orjson' if fast else 'json'}: "
            f"{t_cli * 1000:.0f} ms, {N_EVENTS / t_cli:,.0f} events/s on one core (target >= 20,000); "
            f"plain json.loads of the lines {t_json * 1000:.0f} ms: ratio {t_cli / t_json:.2f}x (target <= 1.5x)"
        )
        print(f"  the same replay with json instead of orjson: {t_cli_json * 1000:.0f} ms, {t_cli_json / t_json:.2f}x")
        # Startup (imports, rules compiled) is paid once per run, on top of the stream.
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "edgeguard.falco.cli", "replay", os.devnull], check=True, capture_output=True
        )
        print(
            f"  process start-up with the rules compiled (replay of an empty input): "
            f"{(time.perf_counter() - t) * 1000:.0f} ms wall"
        )


_RSS_REPLAY = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "edgeguard.falco.cli", "replay", sys.argv[1]], stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def bench_replay_memory() -> None:
    lines = _lines(20_000)
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (5_000, 10_000, 20_000):
            path = Path(tmp) / f"audit-{n}.jsonl"
            path.write_bytes(b"\n".join(lines[:n]) + b"\n")
            out = subprocess.run(
                [sys.executable, "-c", _RSS_REPLAY, str(path)], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
            peaks.append((n, path.stat().st_size / 2**20, int(out)))
    print(
        "edgeguard-rules replay peak RSS: "
        + ", ".join(f"{n:,} lines ({mb:.0f} MiB) -> {rss} MiB" for n, mb, rss in peaks)
        + " (target: independent of the input's length)"
    )


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
    spec = importlib.util.spec_from_file_location(
        "_bench_ai", ctx / "function" / "__init__.py", submodule_search_locations=[str(ctx / "function")]
    )
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
                body = json.dumps(
                    {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}
                ).encode()
                evt = SimpleNamespace(
                    body=body,
                    method="POST",
                    path="/",
                    query=ImmutableMultiDict(),
                    headers=Headers([("Content-Type", "application/json"), ("Authorization", "Bearer bench-token")]),
                )
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
            print(
                f"HTTP handler, {BATCH}-event EventList ({len(body) / 1e6:.2f} MB, decode + auth + rules + "
                f"hand-off to a loopback alert-forwarder stand-in): median {statistics.median(lat):.1f} ms, "
                f"p99 {lat[max(0, int(len(lat) * 0.99) - 1)]:.1f} ms over {len(lat)} batches, "
                f"{alerts / len(lat):.0f} alerts/batch (target median <= 50 ms)"
            )
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
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE.format(root=str(ROOT), local=local)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    vals = dict(zip(out[::2], out[1::2]))
    print(
        f"RSS after loading the rules (fresh python, rules + requests + yaml imported): {vals['VmRSS']} MB "
        f"(peak {vals['VmHWM']} MB; target <= 60 MB)"
    )


def main() -> None:
    bench_engine()
    bench_cli()
    bench_replay_memory()
    bench_handler()
    bench_rss()


if __name__ == "__main__":
    main()
