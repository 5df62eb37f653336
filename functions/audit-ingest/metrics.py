"""audit-ingest's Prometheus metrics (the registry is edgeguard.metrics), and the counters GET / reports from them.

``outputs_total{destination, status}`` is falcosidekick's ``falcosidekick_outputs`` (an output's deliveries by
status); ``alerts_total{priority, rule}`` is named as alert-forwarder's.
"""

from __future__ import annotations

from .edgeguard import metrics

PREFIX = "edgeguard_audit_ingest_"

DEFINITIONS: metrics.Definitions = {
    "requests_total": ("counter", "HTTP requests by route and status code.", ("route", "code")),
    "rejected_total": (
        "counter",
        "Requests refused before anything was evaluated or handed off, by reason.",
        ("reason",),
    ),
    "refused_unread_total": ("counter", "Refusals answered from the headers, before the body was read.", ()),
    "authenticated_batches_total": ("counter", "POSTs with the right token, whatever their outcome.", ()),
    "busy_total": ("counter", "503 + Retry-After: a batch waited too long for its turn or for another request.", ()),
    "events_total": ("counter", "Audit events evaluated (dry runs included; repeats within a body excluded).", ()),
    "skipped_total": ("counter", "Payload objects that are not audit events.", ()),
    "dropped_total": ("counter", "Audit items dropped as the k8saudit plugin drops them, by reason.", ("reason",)),
    "duplicates_total": ("counter", "Events not handed off again: already handed off, or repeated in a body.", ()),
    "evaluation_errors_total": ("counter", "Events whose evaluation raised an error (logged, counted, skipped).", ()),
    "alerts_total": ("counter", "Alerts raised, by priority and rule (dry runs included).", ("priority", "rule")),
    "outputs_total": (
        "counter",
        "Hand-off requests to alert-forwarder, by destination and status.",
        ("destination", "status"),
    ),
    "handoff_alerts_total": ("counter", "Alerts alert-forwarder accepted (they are in its durable spool).", ()),
    "batch_seconds": ("histogram", "Time to decode and evaluate one request body.", ()),
    "rules_loaded": ("gauge", "1 while a compiled ruleset is in service, 0 while the rules fail to load.", ()),
    "rules_enabled": ("gauge", "Rules evaluated (after priority and the rules: selection).", ()),
    "rules_warnings": ("gauge", "Load warnings of the ruleset in service.", ()),
    "rules_loads_total": ("counter", "Ruleset compilations, by result.", ("result",)),
    "dedup_remembered": ("gauge", "(auditID, stage) keys remembered as handed off.", ()),
}

# Rule names come from the operator's files, but a rotated extra-rules secret can add any: capped all the same.
CALLER_LABELS: dict[str, tuple[str, ...]] = {"alerts_total": ("rule",)}


def registry() -> metrics.Metrics:
    return metrics.Metrics(PREFIX, DEFINITIONS, CALLER_LABELS)


def counters(m: metrics.Metrics) -> dict:
    """The JSON counters of GET / (bootstrap's delivery probe reads authenticated_batches, unauthenticated and
    invalid_token), each a sum over the metrics above."""

    def t(name, **match) -> int:
        return int(m.total(name, **match))

    return {
        "requests": t("requests_total"),
        "events": t("events_total"),
        "alerts": t("alerts_total"),
        "alerts_forwarded": t("handoff_alerts_total"),
        "skipped_not_audit": t("skipped_total"),
        "dropped": t("dropped_total"),
        "duplicates": t("duplicates_total"),
        "forward_failures": t("outputs_total") - t("outputs_total", status="ok"),
        "rejected": t("rejected_total"),
        "evaluation_errors": t("evaluation_errors_total"),
        "busy": t("busy_total"),
        "authenticated_batches": t("authenticated_batches_total"),
        "unauthenticated": t("rejected_total", reason="unauthenticated"),
        "invalid_token": t("rejected_total", reason="invalid_token"),
        "refused_unread": t("refused_unread_total"),
    }


CONTENT_TYPE = metrics.CONTENT_TYPE
