"""``make demo``: start the local stack, play the seed scenarios, stop everything, report."""

from __future__ import annotations

import importlib
import socket
import sys
import time

from . import gateway, runs
from .scenarios import Context, NotBuilt, ScenarioFailed

SCENARIOS = [
    ("audit_ingest", "audit-ingest: an anonymous 'create namespace foo' raises \"Anonymous Request Allowed\""),
    ("configmap_secret_scrubber", "ConfigMap aws-creds: detected, forwarded, key moved into a Secret"),
    ("alert_forwarder", "alert-forwarder: a Falco syscall alert from http_output is routed to the console"),
    ("node_enroll", "node-enroll: a new edge node enrolls and receives its join instructions"),
]

RULE = "\u2501" * 78


def run_scenario(ctx: Context, module_name: str) -> str:
    try:
        module = importlib.import_module(f"local.scenarios.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"local.scenarios.{module_name}":
            ctx.say("\u2013 not built yet: this scenario's function has not been delivered.")
            return "not built yet"
        raise
    before = len(ctx.results)
    try:
        module.run(ctx)
    except NotBuilt as exc:
        ctx.say(f"\u2013 not built yet: {exc}")
        return "not built yet"
    except ScenarioFailed as exc:
        ctx.fail(str(exc))
    except Exception as exc:  # a broken scenario is a failed scenario, reported, not a crash of the demo
        ctx.fail(f"scenario crashed: {type(exc).__name__}: {exc}")
    outcomes = [r for r, _ in ctx.results[before:]]
    if "fail" in outcomes:
        return "FAILED"
    return "ok" if outcomes else "FAILED (no result reported)"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main(argv=None) -> int:
    parser = gateway.parser_with_run_options(__doc__)
    parser.add_argument("--only", action="append", help="run only these scenarios (module names)")
    parser.add_argument(
        "--kubeconfig-secret",
        action="append",
        default=[],
        metavar="SECRET=FILE",
        help="give the function secret SECRET (e.g. node-enroll-kubeconfig) this kubeconfig "
        "instead of the demo's admin one (repeatable)",
    )
    args = parser.parse_args(argv)
    port, explicit = gateway.resolve_port(parser, args)
    kubeconfigs = {}
    for item in args.kubeconfig_secret:
        name, sep, path = item.partition("=")
        if not sep or not name.endswith("-kubeconfig"):
            parser.error(f"--kubeconfig-secret {item!r}: expected <name>-kubeconfig=FILE")
        try:
            kubeconfigs[name] = open(path, encoding="utf-8").read()
        except OSError as exc:
            parser.error(f"--kubeconfig-secret {name}: {exc.strerror}: {path}")

    print(RULE)
    print("edgeguard demo: the seed scenarios through a local OpenFaaS-style gateway")
    print(RULE)
    gateway.say_who_else_runs(port)
    if not explicit and not _port_free(port):
        # The default port is taken (by make up, say): the demo is self-contained, any free port will do.
        chosen = gateway.free_port()
        print(f"note: port {port} is in use; the demo runs on port {chosen} (PORT=<n> to choose)")
        port = chosen
    started = time.monotonic()
    try:
        stack = gateway.LocalStack(
            port,
            state_dir=args.state_dir,
            env_overrides={"configmap-secret-scrubber": {"scrub_mode": "move"}},
            kube=args.kube,
            kubeconfigs=kubeconfigs,
            kind=runs.kind("local.demo"),
        )
        print(f"runtime     {stack.runtime.describe()}", flush=True)
        stack.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = []
    try:
        print(f"gateway     {stack.url}  (functions: {', '.join(stack.functions)})")
        print(f"kubernetes  {stack.kube_description}")
        if kubeconfigs:
            print(f"            {', '.join(sorted(kubeconfigs))}: the kubeconfig files given (not the admin's)")
        print(f"state       {stack.state_dir}")
        print(f"logs        {stack.logs_dir}")
        ctx = Context(stack)
        for i, (module_name, title) in enumerate(SCENARIOS, 1):
            if args.only and module_name not in args.only:
                continue
            print(f"\n{i}. {title}")
            summary.append((i, title, run_scenario(ctx, module_name)))
    finally:
        stack.stop()
    leaks = stack.leak_watch().check()
    checked = ", ".join(p.name for p in stack.leak_watch().files())
    print(f"\n{RULE}\nSummary ({time.monotonic() - started:.1f}s; everything the demo started is stopped)")
    for i, title, outcome in summary:
        print(f"  {i}. {outcome:<14} {title}")
    # What `kubectl logs` would show an operator: the gateway's access log, the queue-worker's, the watchdogs'.
    if leaks:
        print(f"  LEAK           secret values in the platform logs ({stack.logs_dir}):")
        for leak in leaks:
            print(f"                   {leak}")
    else:
        print(f"  no secret value in any platform log ({checked})")
    return 1 if leaks or any(o.startswith("FAILED") for _, _, o in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
