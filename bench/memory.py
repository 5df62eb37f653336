"""Memory and cold start of every function under the real of-watchdog, against the edge targets.

``python -m bench memory`` (part of ``make bench``). Each function runs as in its pod: of-watchdog
(from EDGEGUARD_TOOLS, else ../shared/tools) in front of the template's ``python index.py``, with its
stack.yml environment and secrets, behind the local gateway (local/gateway.py), the other functions
beside it and the in-memory Kubernetes API (or $KUBECONFIG's cluster). For each function:

1. cold start: the function is restarted ``runs`` times; each start is timed until ready and until the
   answer of its first real request (bench/workloads.py, via bench/coldstart.py's ``time_start``);
2. RSS (``VmRSS``) of the watchdog and of the python process, separately and summed: idle (the fresh
   process, before its first request, after a second to settle), after the first request, and after a
   load test of a few hundred representative authenticated requests;
3. peak: ``VmHWM`` of each process after the load (the sum of the two peaks is an upper bound of the
   moment both were highest).

Targets (issue 12): Python + watchdog <= 64 MiB after load, cold start to the first answer <= 0.6 s.
RSS counts the shared pages each process maps (libpython, libc), as ``ps`` does; a container's memory
cgroup counts them once, so the sum is the conservative figure.

Other benches measure one function with ``measure(name, load=...)``; e.g. audit-ingest's largest batch::

    from bench import memory
    result = memory.measure("audit-ingest", load=lambda ctx, tally: tally.check(
        ctx.call("audit-ingest", "?dry_run=1", body=big, token_secret="audit-ingest-token"), (200,), "big"))
    print(memory.table([result]))

``sample(process)`` reads the figures of any running ``local.launch.FunctionProcess`` (or the
``ServedFunction.process`` of the tests' ``serve_function``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import coldstart, workloads
from local import components, gateway, launch
from local.scenarios import Context

TARGET_MIB = 64.0
TARGET_COLD_S = coldstart.TARGET_S
SETTLE_S = 1.0


# --- reading /proc ---------------------------------------------------------------------------------
def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the watchdog's ``python index.py`` and anything it started)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents.setdefault(_ppid(int(d.name)), []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass  # gone while we looked
    found, frontier = [], [pid]
    while frontier:
        kids = [k for p in frontier for k in parents.get(p, [])]
        found += kids
        frontier = kids
    return found


@dataclass(frozen=True)
class Sample:
    """RSS and peak RSS, in KiB, of the watchdog (None under the stand-in runtime) and the function's python."""

    watchdog_kib: int | None
    python_kib: int
    watchdog_hwm_kib: int | None
    python_hwm_kib: int

    @property
    def total_kib(self) -> int:
        return (self.watchdog_kib or 0) + self.python_kib

    @property
    def peak_kib(self) -> int:
        return (self.watchdog_hwm_kib or 0) + self.python_hwm_kib


def sample(process: launch.FunctionProcess) -> Sample:
    """The figures of a running function process (its process group as local/launch.py started it)."""
    if process.proc is None or process.proc.poll() is not None:
        raise RuntimeError(f"{process.name} is not running")
    top = process.proc.pid
    if isinstance(process, launch.WatchdogProcess):
        wd = _status_kib(top)
        kids = [_status_kib(p) for p in descendants(top)]
        if not kids:
            raise RuntimeError(f"{process.name}: the watchdog (pid {top}) has no python child")
        return Sample(wd["VmRSS"], sum(k["VmRSS"] for k in kids), wd["VmHWM"], sum(k["VmHWM"] for k in kids))
    py = _status_kib(top)
    return Sample(None, py["VmRSS"], None, py["VmHWM"])


# --- one function ----------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    runtime: str
    idle: Sample
    first: Sample
    loaded: Sample
    starts: list = field(default_factory=list)  # coldstart.ColdStart per restart
    requests: int = 0  # the load test's requests
    statuses: dict = field(default_factory=dict)
    what: str = ""

    @property
    def cold_first_s(self) -> float:
        return sorted(s.first_s for s in self.starts)[len(self.starts) // 2]

    @property
    def cold_ready_s(self) -> float:
        return sorted(s.ready_s for s in self.starts)[len(self.starts) // 2]


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def measure_in(
    stack: gateway.LocalStack,
    name: str,
    *,
    load: Callable | None = None,
    first: Callable | None = None,
    requests: int = workloads.DEFAULT_REQUESTS,
    runs: int = 3,
    what: str = "",
) -> Result:
    """Measure function ``name`` of a started LocalStack (it is restarted ``runs`` times for the cold start).

    ``first(ctx, tally)`` is its first request after a start, ``load(ctx, tally)`` (or the workload's
    ``load(ctx, tally, requests)``) the load test; both default to bench/workloads.py's for ``name``.
    """
    wl = workloads.WORKLOADS.get(name)
    first = first or (wl.first if wl else None)
    if first is None:
        raise ValueError(f"no workload for {name}: pass first= and load=")
    if load is None:
        if wl is None:
            raise ValueError(f"no workload for {name}: pass load=")
        load = lambda ctx, tally: wl.load(ctx, tally, requests)  # noqa: E731
    quiet = open("/dev/null", "w")
    ctx = Context(stack, out=quiet)
    process = stack.functions[name].process
    starts = []
    for _ in range(max(1, runs)):
        process.stop()
        starts.append(coldstart.time_start(process, lambda: first(ctx, workloads.Tally())))
    # One more start for the idle figure: measured outside the timing, after the process settled.
    process.stop()
    process.start().wait_ready(time.monotonic() + 60)
    time.sleep(SETTLE_S)
    idle = sample(process)
    first(ctx, workloads.Tally())
    time.sleep(SETTLE_S)
    after_first = sample(process)
    tally = workloads.Tally()
    load(ctx, tally)
    stack.drain_async(timeout=60)
    time.sleep(SETTLE_S)
    loaded = sample(process)
    quiet.close()
    return Result(
        name,
        stack.runtime.name,
        idle,
        after_first,
        loaded,
        starts,
        tally.sent,
        dict(tally.statuses),
        what or (wl.what if wl else ""),
    )


def measure(
    name: str,
    *,
    load: Callable | None = None,
    first: Callable | None = None,
    requests: int = workloads.DEFAULT_REQUESTS,
    runs: int = 3,
    functions: list[str] | None = None,
    env_overrides: dict | None = None,
    kube: str = "auto",
    what: str = "",
) -> Result:
    """Start a local stack (every function unless ``functions`` says which), measure ``name``, stop it."""
    return measure_all(
        [name],
        load=load,
        first=first,
        requests=requests,
        runs=runs,
        functions=functions,
        env_overrides=env_overrides,
        kube=kube,
        what=what,
    )[0]


def measure_all(
    names: list[str] | None = None,
    *,
    functions: list[str] | None = None,
    env_overrides: dict | None = None,
    kube: str = "auto",
    runtime: launch.Runtime | None = None,
    progress: bool = False,
    **how,
) -> list[Result]:
    """One local stack in a scratch folder; each of ``names`` (default: all it runs) measured in turn."""
    env = {fn: dict(v) for fn, v in workloads.LOAD_ENV.items()}
    for fn, v in (env_overrides or {}).items():
        env.setdefault(fn, {}).update(v)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeguard-bench-memory-") as tmp:
        with gateway.LocalStack(
            gateway.free_port(),
            state_dir=Path(tmp) / "state",
            env_overrides=env,
            kube=kube,
            functions=functions,
            runtime=runtime,
        ) as stack:
            if progress:
                print(f"kubernetes: {stack.kube_description}", flush=True)
            with open("/dev/null", "w") as quiet:
                ctx = Context(stack, out=quiet)
                for name in stack.functions:
                    wl = workloads.WORKLOADS.get(name)
                    if wl and wl.prepare and stack.kubeconfig_text is not None:
                        wl.prepare(ctx)
            for name in names or list(stack.functions):
                t = time.perf_counter()
                results.append(measure_in(stack, name, **how))
                if progress:
                    print(f"measured {name} in {time.perf_counter() - t:.1f} s", flush=True)
    return results


def table(results: list[Result]) -> str:
    """One row per function: MiB as watchdog + python = sum, and the verdict against both targets."""
    head = (
        f"{'function':<26} {'idle':>17} {'after 1st':>17} {'after load':>17} {'peak (HWM)':>17} "
        f"{'ready':>7} {'1st ans':>7}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in results:

        def cell(s: Sample, peak: bool = False) -> str:
            wd, py, tot = (
                (s.watchdog_hwm_kib, s.python_hwm_kib, s.peak_kib)
                if peak
                else (s.watchdog_kib, s.python_kib, s.total_kib)
            )
            return f"{_mib(wd)}+{_mib(py)}={_mib(tot)}"

        mem_ok = r.loaded.total_kib / 1024 <= TARGET_MIB
        cold_ok = r.cold_first_s <= TARGET_COLD_S
        verdict = ", ".join(
            [
                f"memory {'ok' if mem_ok else 'OVER'} (<= {TARGET_MIB:.0f} MiB)",
                f"cold start {'ok' if cold_ok else 'OVER'} (<= {TARGET_COLD_S} s)",
            ]
        )
        lines.append(
            f"{r.name:<26} {cell(r.idle):>17} {cell(r.first):>17} {cell(r.loaded):>17} "
            f"{cell(r.loaded, peak=True):>17} {r.cold_ready_s:>6.2f}s {r.cold_first_s:>6.2f}s  {verdict}"
        )
    lines.append(
        "MiB as watchdog+python=sum (VmRSS; peak: VmHWM); ready / 1st ans: median seconds from process "
        "start to readiness / to the first real answer"
    )
    for r in results:
        lines.append(
            f"  {r.name}: load = {r.requests} requests ({r.what}); statuses {r.statuses}; "
            f"{len(r.starts)} starts under {r.runtime}"
        )
    return "\n".join(lines)


def main(runs: int = 3, requests: int = workloads.DEFAULT_REQUESTS) -> None:
    comps = components.locate()
    reason = comps.watchdog_skip_reason()
    if reason:
        print(f"bench memory skipped: {reason}")
        return
    runtime = launch.Runtime(comps)
    print(f"runtime: {runtime.describe()}")
    print(table(measure_all(runtime=runtime, progress=True, runs=runs, requests=requests)))
