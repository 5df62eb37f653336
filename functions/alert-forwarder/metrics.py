"""alert-forwarder's Prometheus metrics (the registry is edgeguard.metrics).

Where falcosidekick has a metric of the same meaning its name is used, under our prefix, so its dashboards and
alerting rules carry over: ``falco_events_total`` (alerts received), ``inputs_total{source="requests",status}``
(requests to the input, accepted or rejected) and ``outputs_total{destination,status="ok|error"}`` (delivery
attempts), as falcosidekick 2.30+ names them ``falcosecurity_falcosidekick_<name>``.
"""

from __future__ import annotations

from .edgeguard import auth, metrics

PREFIX = "edgeguard_alert_forwarder_"

# name -> (type, help, label names)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "falco_events_total": (
        "counter",
        "Alerts accepted, by priority, rule, source and hostname (falcosidekick's falco_events).",
        ("priority", "rule", "source", "hostname"),
    ),
    "inputs_total": (
        "counter",
        "Requests to the alert input (POST /), accepted or rejected (falcosidekick's inputs).",
        ("source", "status"),
    ),
    "requests_total": ("counter", "HTTP requests by endpoint and status code.", ("endpoint", "code")),
    "senders_total": (
        "counter",
        "Authenticated alert posts by credential: fleet (alert-forwarder-token) or node (a per-node alert token).",
        ("sender",),
    ),
    "rejected_total": ("counter", "Requests refused before anything was forwarded, by reason.", ("reason",)),
    "filtered_total": ("counter", "Alerts dropped below the global min_priority.", ("priority",)),
    "unrouted_total": ("counter", "Alerts that matched no route and the default route has no destination.", ()),
    "routed_total": ("counter", "Alerts handed to a route's destinations, by route.", ("route",)),
    "dedup_suppressed_total": ("counter", "Repeats suppressed by a route's dedup window.", ("route",)),
    "dedup_summaries_total": ("counter", "'N repeats suppressed' summaries emitted.", ("route",)),
    "throttled_total": ("counter", "Alerts held back by a route's throttle (max per window).", ("route",)),
    "throttle_summaries_total": ("counter", "Digests of throttled alerts emitted.", ("route",)),
    "outputs_total": (
        "counter",
        "Delivery attempts by destination: ok (acknowledged by the destination) or error "
        "(transport or HTTP error); falcosidekick's outputs.",
        ("destination", "status"),
    ),
    "retried_total": ("counter", "Delivery attempts that were retries of an earlier failure.", ("destination",)),
    "spooled_total": ("counter", "Deliveries left in the durable spool for a later retry.", ("destination",)),
    "dropped_total": (
        "counter",
        "Deliveries given up: spool_full, expired, rejected (4xx) or disabled.",
        ("destination", "reason"),
    ),
    "spool_depth": ("gauge", "Entries waiting in the durable spool.", ()),
    "spool_depth_by_destination": ("gauge", "Entries waiting in the durable spool, by destination.", ("destination",)),
    "spool_oldest_age_seconds": ("gauge", "Age of the oldest spooled entry.", ()),
    "queue_depth": ("gauge", "Deliveries waiting in memory for a worker, by destination.", ("destination",)),
    "destination_up": (
        "gauge",
        "1 when the destination took its last delivery (0: failing, backing off or disabled).",
        ("destination",),
    ),
    "handover_total": (
        "counter",
        "Spooled deliveries moved through the handover Secret on pod replacement: out "
        "(this pod was terminating) or in (taken from the pod before).",
        ("direction",),
    ),
    "handover_left_behind_total": (
        "counter",
        "Deliveries that did not fit the handover Secret and stayed in the terminating pod.",
        (),
    ),
    "handover_errors_total": ("counter", "Failed reads or writes of the handover Secret.", ()),
    "delivery_seconds": ("histogram", "Time from alert receipt to acknowledged delivery.", ("destination",)),
    **auth.ROTATION_METRICS,
}

# Labels whose values come from callers (any rule name, any source): capped, see edgeguard.metrics.
CALLER_LABELS: dict[str, tuple[str, ...]] = {"falco_events_total": ("rule", "source", "hostname")}


def Metrics() -> metrics.Metrics:  # noqa: N802 - reads as the constructor it stands for
    return metrics.Metrics(PREFIX, DEFINITIONS, CALLER_LABELS)
