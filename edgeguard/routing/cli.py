"""``edgeguard-routes``: check an alert-forwarder routes file offline, and explain where an alert would go.

    edgeguard-routes validate routes.yaml [--destinations destinations.yaml]
    edgeguard-routes explain routes.yaml alert.json [--destinations destinations.yaml]

Exit status 0 when valid, 1 with ``FILE: <place>: <problem>`` on stderr when not.
The destinations file is the content of the ``alert-forwarder-destinations``
secret; its values are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..falco.alert import parse_alert
from .document import RoutesError
from .explain import explain
from .routes import load_routes_text
from .secret import parse_destination_secrets, resolve_destinations, unknown_secret_entries


def _load(path: str):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesError(path, f"cannot read: {exc.strerror}") from None
    return load_routes_text(text, path)


def _secrets(path: str | None) -> dict:
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesError(path, f"cannot read: {exc.strerror}") from None
    return parse_destination_secrets(text, path)


def cmd_validate(args) -> int:
    table = _load(args.file)
    secrets = _secrets(args.destinations)
    resolved = resolve_destinations(table, secrets)
    routes = table.all_routes()
    print(
        f"{args.file}: OK: {len(routes) - 1} route(s) + default, {len(resolved)} destination(s), "
        f"min_priority {table.min_priority}"
    )
    for name, d in resolved.items():
        state = "enabled" if d["enabled"] else f"disabled ({d['disabled_reason']})"
        print(f"  destination {name} [{d['type']}]: {state}")
    for r in routes:
        matchers = " and ".join(m.text for m in r.matchers) or (
            "(everything else)" if r.where == "default" else "(all)"
        )
        dedup = f", dedup {r.dedup.window:g}s" if r.dedup else ""
        dedup += f", throttle {r.throttle.max}/{r.throttle.window:g}s" if r.throttle else ""
        cont = ", continue" if r.cont else ""
        print(f"  {r.where} {r.name}: {matchers} -> {', '.join(r.to) or '(nowhere)'}{dedup}{cont}")
    if args.destinations:
        for name in unknown_secret_entries(table, secrets):
            print(f"  warning: {args.destinations}: entry '{name}' matches no declared destination", file=sys.stderr)
    return 0


def cmd_explain(args) -> int:
    table = _load(args.file)
    try:
        doc = json.loads(Path(args.alert).read_text(encoding="utf-8"))
        alert = parse_alert(doc).to_dict()
    except (OSError, ValueError) as exc:
        print(f"{args.alert}: {exc}", file=sys.stderr)
        return 1
    # Without --destinations every destination that needs a URL is disabled, exactly as in a function whose
    # alert-forwarder-destinations secret is empty.
    resolved = resolve_destinations(table, _secrets(args.destinations))
    print(json.dumps(explain(table, resolved, alert), indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="edgeguard-routes", description="Check alert-forwarder routes files.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="validate a routes file (exit 1 naming the exact place of a problem)")
    v.add_argument("file")
    v.add_argument("--destinations", help="the alert-forwarder-destinations secret content (YAML/JSON) to check too")
    v.set_defaults(fn=cmd_validate)
    e = sub.add_parser("explain", help="show which routes and destinations an alert (JSON file) would reach")
    e.add_argument("file")
    e.add_argument("alert")
    e.add_argument(
        "--destinations",
        help="the alert-forwarder-destinations secret content: without it, destinations "
        "that need a URL count as disabled",
    )
    e.set_defaults(fn=cmd_explain)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except RoutesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
