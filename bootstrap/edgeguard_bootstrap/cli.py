"""edgeguard-bootstrap: set up Falco, the k3s audit webhook and OpenFaaS for edgeguard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import audit_tls, edgechecks, facts, falco, k3s_audit, k3s_restart, offline, openfaas, revert, scrubber_rbac
from .engine import BootstrapError, Ctx, Refused, print_table

DEFAULT_GATEWAY = "http://127.0.0.1:31112"  # gateway-external NodePort, reachable from the server host
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
LOCK_FILE = "/var/lib/edgeguard/.bootstrap.lock"
REPO = Path(__file__).resolve().parent.parent.parent

ORDER_NOTE = (
    "order: preflight, openfaas (secrets first: Falco and the webhook kubeconfig carry tokens it "
    "creates), k3s-audit, falco, offline (last: it pins the images the others deployed), then one k3s "
    "restart for k3s-audit and offline"
)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dry-run", action="store_true", help="print the plan and a diff of every file; change nothing"
    )
    common.add_argument("--root", default="/", help="filesystem root (tests, preparing an SD-card image)")
    common.add_argument("--force", action="store_true", help="go on after a failed check")
    common.add_argument("--yes", "-y", action="store_true", help="restart k3s without asking")
    common.add_argument(
        "--gateway",
        default=DEFAULT_GATEWAY,
        help=f"OpenFaaS gateway as seen from this node (default {DEFAULT_GATEWAY})",
    )
    common.add_argument("--repo", type=Path, default=REPO, help="edgeguard checkout (stack.yml, deploy/rbac)")
    common.add_argument(
        "--image",
        action="store_true",
        help="prepare an OS image under --root: write files only, list the commands for first boot",
    )
    common.add_argument(
        "--driver",
        choices=("modern_ebpf", "kmod"),
        help="Falco driver instead of the one preflight picks (e.g. when preparing an image)",
    )

    falco_opts = argparse.ArgumentParser(add_help=False)
    falco_opts.add_argument(
        "--mode",
        dest="falco_mode",
        choices=("helm", "host"),
        default="helm",
        help="helm: falcosecurity/falco chart (default on k3s); host: apt package + systemd",
    )
    falco_opts.add_argument("--deb", help="host mode: install this Falco .deb instead of using the apt repository")
    falco_opts.add_argument("--headers-package", help="host mode, kmod: kernel headers package name")
    falco_opts.add_argument(
        "--falco-gateway", help="gateway URL Falco posts to (default: in-cluster DNS for helm, --gateway for host)"
    )
    falco_opts.add_argument(
        "--node-name", help="host mode: send alerts as this node (Basic auth user), with its own token"
    )
    falco_opts.add_argument(
        "--alert-token-stdin",
        action="store_true",
        help="host mode, with --node-name: read the node's alert token (node-enroll mints it) "
        "from stdin instead of using the fleet alert-forwarder-token",
    )

    audit_opts = argparse.ArgumentParser(add_help=False)
    audit_opts.add_argument(
        "--audit-url",
        help="https URL the API server posts to (default: k3s's Traefik on this node, "
        f"{audit_tls.DEFAULT_URL}, with bootstrap's own CA and an Ingress for "
        "/function/audit-ingest only). http is refused: client-go sends no token over it",
    )
    audit_opts.add_argument(
        "--audit-ca",
        metavar="PEM",
        help="your own https front instead of Traefik: the CA certificate(s) that sign its "
        "certificate (embedded in the webhook kubeconfig); bootstrap makes no CA, "
        "Secret or Ingress then",
    )
    audit_opts.add_argument(
        "--audit-tls-server-name",
        metavar="NAME",
        help="with --audit-ca: the name in your front's certificate, sent as SNI and verified "
        "(needed when --audit-url uses an IP address the certificate does not list)",
    )
    audit_opts.add_argument(
        "--check",
        dest="check",
        action="store_const",
        const="always",
        default="auto",
        help="probe audit delivery even if nothing changed",
    )
    audit_opts.add_argument(
        "--skip-check", dest="check", action="store_const", const="never", help="do not probe audit delivery"
    )
    audit_opts.add_argument("--check-timeout", type=float, default=90.0, help="seconds to wait for the probe")

    of_opts = argparse.ArgumentParser(add_help=False)
    of_opts.add_argument("--deploy", action="store_true", help="run faas-cli up -f stack.yml at the end")
    of_opts.add_argument("--cron-connector", action="store_true", help="arkade install cron-connector if missing")
    of_opts.add_argument(
        "--api-server", default=openfaas.API_SERVER, help="API server URL in the functions' kubeconfigs"
    )
    of_opts.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="SECRET",
        help="replace this token or key with a new random one (repeatable)",
    )
    of_opts.add_argument(
        "--scrubber-namespaces",
        action="append",
        metavar="NS[,NS]",
        help="namespaces where configmap-secret-scrubber may move credentials (renders "
        "deploy/rbac/configmap-secret-scrubber-namespace.yaml for each; default none: "
        "it only reports). Never kube-system, kube-public, kube-node-lease, openfaas, "
        "openfaas-fn",
    )
    of_opts.add_argument(
        "--scrubber-immutable-namespaces",
        action="append",
        metavar="NS[,NS]",
        help="of those, where it may also replace immutable ConfigMaps (allow_immutable=true; "
        "renders deploy/rbac/configmap-secret-scrubber-immutable.yaml)",
    )
    of_opts.add_argument(
        "--token-timeout", type=float, default=60.0, help="seconds to wait for the ServiceAccount token controller"
    )
    of_opts.add_argument(
        "--rotation-timeout",
        type=float,
        default=300.0,
        help="--rotate alert-forwarder-token: seconds to wait until alert-forwarder accepts the "
        "new token before Falco gets it",
    )

    offline_opts = argparse.ArgumentParser(add_help=False)
    offline_opts.add_argument(
        "--offline-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for k3s to pull and pin the bundle's images",
    )

    p = argparse.ArgumentParser(prog="edgeguard-bootstrap", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("preflight", parents=[common], help="check the node; non-zero exit on any fail")
    sub.add_parser("falco", parents=[common, falco_opts], help="install Falco posting to alert-forwarder")
    sub.add_parser("k3s-audit", parents=[common, audit_opts], help="audit policy + webhook to audit-ingest")
    sub.add_parser("openfaas", parents=[common, of_opts], help="function secrets, RBAC credentials, cron-connector")
    sub.add_parser(
        "offline",
        parents=[common, offline_opts],
        help="make the bundle's images start with the uplink down (embedded registry mirror, pinned images)",
    )
    sub.add_parser("all", parents=[common, falco_opts, audit_opts, of_opts, offline_opts], help=ORDER_NOTE)
    sub.add_parser("revert", parents=[common], help="undo what bootstrap wrote")
    return p


def main(argv: list[str] | None = None, *, out=None, stdin=None, env: dict | None = None, executor=None) -> int:
    args = parser().parse_args(argv)
    if args.image and args.root == "/":
        print("--image writes into an image: give its mount point with --root", file=out or sys.stderr)
        return 2
    ctx = Ctx(
        args.root,
        dry_run=args.dry_run,
        force=args.force,
        yes=args.yes,
        out=out,
        stdin=stdin,
        env=env,
        image=args.image,
        executor=executor,
    )
    where = f" under --root {args.root}" if args.root != "/" else ""
    ctx.say(f"edgeguard-bootstrap {args.command}{where}" + (" (dry run: nothing is changed)" if args.dry_run else ""))
    admin = ctx.host(K3S_KUBECONFIG)
    if not args.image and not ctx.env.get("KUBECONFIG") and admin.is_file():
        # k3s's kubectl finds this file by itself, helm does not (and sudo drops KUBECONFIG).
        ctx.env["KUBECONFIG"] = str(admin)
        ctx.say(f"using KUBECONFIG={K3S_KUBECONFIG} (k3s's admin kubeconfig) for kubectl and helm")
    lock = None
    try:
        lock = None if args.dry_run else take_lock(ctx)
        code = dispatch(ctx, args)
    except Refused as exc:
        ctx.say(f"\n{exc}")
        return 1
    except BootstrapError as exc:
        ctx.say(f"\nerror: {exc}")
        summary(ctx)
        return 2
    except KeyboardInterrupt:
        ctx.say("\ninterrupted")
        return 130
    finally:
        if lock is not None:
            import os

            os.close(lock)
    summary(ctx)
    return code


def take_lock(ctx: Ctx):
    """One bootstrap at a time: two runs would interleave backups and state."""
    import fcntl
    import os

    path = ctx.host(LOCK_FILE)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BootstrapError(f"another edgeguard-bootstrap is running (lock {LOCK_FILE})") from None
    return fd  # held until the process exits


def summary(ctx: Ctx) -> None:
    ctx.say("")
    if ctx.deferred:
        ctx.say("run these on the node at first boot (bootstrap did not run them: --image):")
        for command in ctx.deferred:
            ctx.say(f"  {command}")
    if ctx.changes == 0:
        ctx.say("no changes")
    elif ctx.dry_run:
        ctx.say(f"{ctx.changes} change(s) planned; nothing was changed (dry run)")
    else:
        ctx.say(f"{ctx.changes} change(s) made")


def dispatch(ctx: Ctx, args) -> int:
    cmd = args.command
    if ctx.image and cmd in ("preflight", "revert"):
        raise BootstrapError(f"`{cmd}` needs the live node; it cannot run with --image")
    if cmd == "preflight":
        ctx.section("preflight")
        checks = facts.preflight_checks(ctx, args.gateway, args.driver, args.repo)
        checks += edgechecks.checks(ctx, args.repo, checks)
        print_table(ctx, checks)
        return 1 if any(c.status == "fail" for c in checks) else 0
    if cmd == "revert":
        revert.run(ctx, gateway=args.gateway)
        return 0
    if cmd in ("openfaas", "all"):
        # Before any check runs: a refused namespace is a usage error, not something to --force past.
        scrubber_ns, scrubber_imm = scrubber_rbac.parse_options(
            args.scrubber_namespaces, args.scrubber_immutable_namespaces
        )
    if cmd == "all":
        ctx.say(ORDER_NOTE)
        ctx.section("preflight")
        ctx.require(facts.preflight_checks(ctx, args.gateway, args.driver, args.repo), "preflight")
    if ctx.image and cmd in ("openfaas", "all"):
        raise BootstrapError(f"`{cmd}` needs the live node or cluster; with --image use k3s-audit and falco")
    if cmd in ("openfaas", "all"):
        openfaas.run(
            ctx,
            gateway=args.gateway,
            repo=args.repo,
            deploy=args.deploy,
            cron_connector=args.cron_connector,
            api_server=args.api_server,
            token_timeout=args.token_timeout,
            rotate=tuple(args.rotate),
            rotation_timeout=args.rotation_timeout,
            scrubber_namespaces=scrubber_ns,
            scrubber_immutable_namespaces=scrubber_imm,
        )
    if cmd == "all":
        # k3s-audit and offline both need k3s restarted: once, after offline has written its files.
        k3s_restart.batch(ctx)
    if cmd in ("k3s-audit", "all"):
        k3s_audit.run(
            ctx,
            gateway=args.gateway,
            audit_url=args.audit_url,
            audit_ca=args.audit_ca,
            audit_server_name=args.audit_tls_server_name,
            check=args.check,
            check_timeout=args.check_timeout,
        )
    if cmd in ("falco", "all"):
        falco.run(
            ctx,
            mode=args.falco_mode,
            gateway=args.gateway,
            falco_gateway=args.falco_gateway,
            driver=args.driver,
            deb=args.deb,
            headers_package=args.headers_package,
            node_name=args.node_name,
            token_stdin=args.alert_token_stdin,
        )
    if cmd in ("offline", "all"):
        offline.run(ctx, repo=args.repo, timeout=args.offline_timeout)
    if cmd == "all":
        ctx.section("k3s restart (once, for k3s-audit and offline)")
        k3s_restart.flush(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
