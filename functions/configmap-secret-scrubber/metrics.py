"""The scrubber's Prometheus metrics (the registry is edgeguard.metrics); GET /metrics serves them."""

from __future__ import annotations

from .edgeguard import metrics

PREFIX = "edgeguard_configmap_secret_scrubber_"

DEFINITIONS: metrics.Definitions = {
    "requests_total": ("counter", "HTTP requests by route, method and status code.", ("route", "method", "code")),
    "jobs_total": (
        "counter",
        "POSTed runs: accepted, duplicate (the same job answered again) or queue_full.",
        ("event",),
    ),
    "runs_total": (
        "counter",
        "Runs (jobs and GET reports) finished, by trigger, mode and outcome.",
        ("trigger", "mode", "outcome"),
    ),
    "run_seconds": ("histogram", "Time one run took, by mode.", ("mode",)),
    "configmaps_total": (
        "counter",
        "ConfigMaps examined, by status (clean, suspect, would_move, moved, ...).",
        ("status",),
    ),
    "findings_total": ("counter", "Keys with a finding, by tier (high moves, suspect is only reported).", ("tier",)),
    "moves_total": (
        "counter",
        "ConfigMaps with high-confidence keys, by outcome: moved, would_move (report), "
        "blocked, pending_rollout, failed (error or conflict).",
        ("outcome",),
    ),
    "api_errors_total": (
        "counter",
        "Kubernetes API calls answered with an error (code none: no answer), "
        "including 404s on reads of what may not exist yet.",
        ("verb", "code"),
    ),
    "jobs_queued": ("gauge", "Jobs waiting for the worker.", ()),
    "jobs_running": ("gauge", "Jobs running (0 or 1).", ()),
}

# a ConfigMap status -> moves_total outcome (statuses without high-confidence keys are not moves)
MOVE_OUTCOMES = {
    "moved": "moved",
    "would_move": "would_move",
    "blocked": "blocked",
    "would_block": "blocked",
    "pending_rollout": "pending_rollout",
    "conflict": "failed",
    "error": "failed",
}


def Metrics() -> metrics.Metrics:  # noqa: N802 - reads as the constructor it stands for
    return metrics.Metrics(PREFIX, DEFINITIONS)


def record_run(m: metrics.Metrics, result: dict) -> None:
    """What one sweep's answer says: statuses, findings by tier, move outcomes."""
    for status, n in (result.get("summary") or {}).get("by_status", {}).items():
        m.inc("configmaps_total", {"status": status}, n)
        if status in MOVE_OUTCOMES:
            m.inc("moves_total", {"outcome": MOVE_OUTCOMES[status]}, n)
    for cm in result.get("configmaps") or []:
        for key in cm.get("keys") or []:
            if key.get("tier"):
                m.inc("findings_total", {"tier": key["tier"]})
