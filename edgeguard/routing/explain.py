"""Where one alert would go: the routes it matches and the destinations that would really get it.

One answer for the offline ``edgeguard-routes explain`` and the function's ``/test?dry_run=1``: a destination that
a matching route names but that is disabled (no URL in the destinations secret, ``enabled: false``) or whose
``min_priority`` the alert does not reach is not a target, and is listed with the reason instead.
"""

from __future__ import annotations

from ..falco.alert import priority_number
from .routes import RouteTable


def explain(table: RouteTable, resolved: dict[str, dict], alert: dict) -> dict:
    """``resolved``: destination name -> options with ``enabled``/``disabled_reason`` (``resolve_destinations``)."""
    routes = table.match(alert)
    targets, disabled, below = [], {}, {}
    for name in dict.fromkeys(d for r in routes for d in r.to):
        opts = resolved.get(name) or {}
        if not opts.get("enabled"):
            disabled[name] = opts.get("disabled_reason") or "disabled"
        elif opts.get("min_priority") and priority_number(alert["priority"]) > priority_number(opts["min_priority"]):
            below[name] = f"below its min_priority {opts['min_priority']}"
        else:
            targets.append(name)
    return {
        "passes_min_priority": table.passes_min_priority(alert),
        "routes": [r.name for r in routes],
        "destinations": sorted(targets),
        "disabled_destinations": disabled,
        "below_min_priority": below,
    }
