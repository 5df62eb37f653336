"""node-enroll's Prometheus metrics (the registry is edgeguard.metrics); served at GET /metrics.

Every label value here comes from a fixed set below, never from a caller: a flood of made-up
hostnames or reasons cannot grow the exposition.
"""

from __future__ import annotations

from .edgeguard import metrics

PREFIX = "edgeguard_node_enroll_"

DEFINITIONS: metrics.Definitions = {
    "requests_total": ("counter", "HTTP requests by route and status code.", ("route", "code")),
    "enrollments_total": (
        "counter",
        "POST /enroll outcomes: issued (201, a new token), reused (200, the machine's "
        "outstanding token), refused (4xx), failed (5xx).",
        ("outcome",),
    ),
    "rejections_total": ("counter", "Enrollment requests refused, by reason.", ("reason",)),
    "revocations_total": (
        "counter",
        "Bootstrap tokens revoked: deleted (DELETE /nodes), rotated, consumed (the "
        "node joined) or expired (records cleaned up).",
        ("reason",),
    ),
    "alert_tokens_issued_total": (
        "counter",
        "Per-node alert tokens handed out (host mode; each replaces the node's previous one).",
        (),
    ),
    "alert_tokens_revoked_total": ("counter", "Per-node alert tokens deleted with their node.", ()),
    "tokens_outstanding": (
        "gauge",
        "Unexpired bootstrap tokens node-enroll holds a record of (refreshed at most "
        "once a minute, and on every enrollment and listing).",
        (),
    ),
    "tokens_outstanding_cap": ("gauge", "max_outstanding_tokens: enrollments beyond it get 429.", ()),
    "api_errors_total": (
        "counter",
        "Kubernetes API calls that failed, by HTTP status (none = no answer).",
        ("status",),
    ),
}

ROUTES = ("/enroll", "/nodes", "/nodes/<name>", "/metrics")

# rejections_total's reasons
SIGNATURE = "signature"  # missing, malformed or wrong signature
CLOCK_SKEW = "clock_skew"  # timestamp too far behind or ahead
SIGNED_BEFORE_START = "signed_before_start"
REPLAY = "replay"  # nonce already used (also across restarts)
RATE_UNSIGNED, RATE_NODE, RATE_GLOBAL = "rate_limit_unsigned", "rate_limit_node", "rate_limit_global"
BY_STATUS = {
    400: "bad_request",
    403: "not_allowlisted",
    409: "conflict",
    413: "too_large",
    415: "media_type",
    422: "refused_label",
    429: "token_cap",
}


def Metrics() -> metrics.Metrics:  # noqa: N802 - reads as the constructor it stands for
    return metrics.Metrics(PREFIX, DEFINITIONS)


def route_label(path: str) -> str:
    if path in ("/enroll", "/"):
        return "/enroll"
    if path.startswith("/nodes/"):
        return "/nodes/<name>"
    return path if path in ROUTES else "other"


# The function's one registry (one per process; the tests load each copy of the function as its own package).
REGISTRY = Metrics()
