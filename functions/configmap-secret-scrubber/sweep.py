"""One run: the ConfigMaps a target names, the namespace policy and the run's limits, each one processed.

A target is ``{"namespace", "name"}``, ``{"namespace"}``, ``{"name"}`` (a Falco alert without a namespace:
looked up everywhere) or ``{"all_namespaces": True}``. The answer lists every ConfigMap that is not clean
(or the one named) with key names, detectors and fingerprints, never a value.
"""

from __future__ import annotations

import time
from typing import Any

from .edgeguard import log
from .edgeguard.kubeapi import KubeError
from .remediate import Scrubber
from .settings import Settings


class ListFailed(Exception):
    """Listing the candidates failed: nothing was processed (the handler answers 502)."""

    def __init__(self, err: KubeError):
        super().__init__(str(err))
        self.err = err


def _write_refused(err: KubeError) -> bool:
    """A 403 on a call the per-namespace Role grants (cluster-wide reads are list, and get on ConfigMaps)."""
    if err.status != 403 or err.verb == "list":
        return False
    return not (err.verb == "get" and err.what.startswith("ConfigMap "))


def candidates(scrubber: Scrubber, target: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(namespace, name) of every ConfigMap the target names, and errors worth telling; each is re-read later."""
    k = scrubber.kube
    found: list[tuple[str, str]] = []
    errors = []
    try:
        if "name" in target and "namespace" in target:
            found.append((target["namespace"], target["name"]))
        else:
            # names only: a page of 100 ConfigMaps can hold 100 MiB of data, and each is re-read when processed
            if "name" in target:
                # the upstream rule's output has no namespace: look the name up where we may act
                listing = k.each(
                    "ConfigMap", None, field_selector=f"metadata.name={target['name']}", metadata_only=True
                )
            else:
                listing = k.each("ConfigMap", target.get("namespace"), metadata_only=True)
            for cm in listing:
                found.append((cm["metadata"]["namespace"], cm["metadata"]["name"]))
            if "name" in target and not found:
                errors.append(f"no ConfigMap named {target['name']} in any namespace")
    except KubeError as err:
        raise ListFailed(err) from None
    return found, errors


def run(scrubber: Scrubber, target: dict, mode: str, trigger: str, settings: Settings) -> dict:
    result: dict[str, Any] = {"mode": mode, "trigger": trigger, "target": target, "configmaps": [], "errors": []}
    found, result["errors"] = candidates(scrubber, target)
    allowed, skipped = [], []
    for ns, name in sorted(found):
        if settings.allowed(ns):
            allowed.append((ns, name))
        else:
            skipped.append(f"{ns}/{name}")
    if skipped:
        result["skipped_by_namespace_policy"] = skipped
    if len(allowed) > settings.max_configmaps:
        result["truncated"] = {
            "examined": settings.max_configmaps,
            "not_examined": len(allowed) - settings.max_configmaps,
            "reason": "max_configmaps_per_run",
        }
        allowed = allowed[: settings.max_configmaps]
    moves = 0
    statuses: dict[str, int] = {}
    deferred = []
    for ns, name in allowed:
        if scrubber.deadline is not None and time.monotonic() >= scrubber.deadline:
            deferred.append(f"{ns}/{name}")  # answer within exec_timeout; the next run continues
            continue
        report_only = settings.report_only_reason(ns)
        if mode == "move" and not report_only and moves >= settings.max_moves:
            report_only = f"max_moves_per_run ({settings.max_moves}) reached"
        try:
            out = scrubber.process(ns, name, mode=mode, report_only=report_only)
        except KubeError as err:
            statuses["error"] = statuses.get("error", 0) + 1
            result["configmaps"].append(_error_entry(ns, name, err))
            log.warning(
                "configmap.error", namespace=ns, configmap=name, verb=err.verb, what=err.what, status=err.status
            )
            continue
        statuses[out.status] = statuses.get(out.status, 0) + 1
        if out.status == "moved":
            moves += 1
        if out.status != "clean" or "name" in target:
            result["configmaps"].append(out.public())
        log.info(
            "configmap.processed",
            namespace=ns,
            configmap=name,
            status=out.status,
            keys=[k["key"] for k in out.keys],
            actions=[k.get("action") for k in out.keys],
        )
    if deferred:
        result["deferred"] = {"configmaps": deferred, "reason": "run_budget_seconds reached; run again"}
    result["summary"] = {
        "examined": len(allowed) - len(deferred),
        "by_status": statuses,
        "rotate": sorted(
            f"{c['namespace']}/{c['name']}:{k['key']}"
            for c in result["configmaps"]
            for k in c.get("keys", [])
            if k.get("rotate")
        ),
    }
    if not result["errors"]:
        del result["errors"]
    return result


def _error_entry(ns: str, name: str, err: KubeError) -> dict:
    reason = f"Kubernetes API: {err.verb} {err.what}: {err.status or 'no response'}"
    if _write_refused(err):
        reason += (
            f"; the scrubber may not write in namespace {ns}: apply "
            "deploy/rbac/configmap-secret-scrubber-namespace.yaml there (and "
            "configmap-secret-scrubber-immutable.yaml for allow_immutable), or list it in "
            "report_only_namespaces"
        )
    return {
        "namespace": ns,
        "name": name,
        "status": "error",
        "reasons": [reason],
        "note": "stopped safely; every value is still in the ConfigMap or the Secret; re-run",
    }
