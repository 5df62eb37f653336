"""configmap-secret-scrubber: find credentials in ConfigMaps and move them into Secrets.

Triggers: a Falco alert ("Create/Modify Configmap With Private Credentials") from
alert-forwarder; a JSON request ``{"namespace","name"}``, ``{"namespace"}`` or
``{"all_namespaces": true}``; ``GET`` with the same query parameters returns a
report and changes nothing. Default mode is ``report``; ``scrub_mode=move`` moves the
high-confidence keys (see remediate.py for the order of steps).
The answer and the logs carry key names, detector ids and fingerprints keyed
with the function's own secret (never the caller token), never a value.
"""
from __future__ import annotations

import hmac
import re
import threading
import time

from .edgeguard import auth, config, http, kube, log
from .edgeguard.kubeapi import Client, KubeError
from .edgeguard.ratelimit import TokenBucket
from .detect import Detector
from .remediate import FIELD_MANAGER, Scrubber, Settings

TOKEN_SECRET = "configmap-secret-scrubber-token"
KUBECONFIG_SECRET = "configmap-secret-scrubber-kubeconfig"
# Its own key: the caller token is shared with alert-forwarder, and whoever holds the HMAC key
# can test password guesses against a fingerprint offline.
FINGERPRINT_SECRET = "configmap-secret-scrubber-fingerprint-key"
MIN_FINGERPRINT_KEY_BYTES = 16
DEFAULT_RULES = ("Create/Modify Configmap With Private Credentials",)
# Also enforced by RBAC: the write Role is never bound in these (deploy/rbac/configmap-secret-scrubber-namespace.yaml).
# openfaas-fn holds every function's OpenFaaS secrets.
DEFAULT_REPORT_ONLY = "kube-system,kube-public,kube-node-lease,openfaas,openfaas-fn"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_REQUEST_FIELDS = {"namespace", "name", "all_namespaces", "dry_run"}


def _csv(name: str, default: str = "") -> list[str]:
    return [x.strip() for x in (config.env_str(name, default) or "").split(",") if x.strip()]


class Limits:
    def __init__(self):
        # Not `mode`: of-watchdog reads that itself (the template sets mode=http), see docs "Settings".
        self.mode = (config.env_str("scrub_mode", "report") or "report").strip().lower()
        if self.mode not in ("report", "move"):
            raise config.ConfigError(f"environment variable scrub_mode={self.mode!r} must be 'report' or 'move'")
        self.allow = _csv("namespaces_allow")
        self.deny = set(_csv("namespaces_deny"))
        self.report_only = set(_csv("report_only_namespaces", DEFAULT_REPORT_ONLY))
        self.max_configmaps = config.env_int("max_configmaps_per_run", 200, minimum=1)
        self.max_moves = config.env_int("max_moves_per_run", 10, minimum=0)
        self.rules = set(_csv("trigger_rules")) or set(DEFAULT_RULES)
        self.max_body = config.env_int("max_body_bytes", 1048576, minimum=1024)
        self.rate_per_minute = config.env_int("rate_limit_per_minute", 30, minimum=1)

    def allowed(self, ns: str) -> bool:
        if ns in self.deny:
            return False
        return not self.allow or ns in self.allow

    def report_only_reason(self, ns: str) -> str | None:
        if ns in self.report_only:
            return f"namespace {ns} is report-only (report_only_namespaces)"
        return None


class _Rate:
    """One token bucket per replica: a burst of alerts must not become a burst of writes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bucket: TokenBucket | None = None

    def take(self, per_minute: int) -> float:
        """0 if allowed now, else seconds until the next token (a changed setting starts a new bucket)."""
        with self.lock:
            if self.bucket is None or self.bucket.burst != per_minute:
                self.bucket = TokenBucket(per_minute / 60.0, per_minute)
            bucket = self.bucket
        return bucket.take()


_rate = _Rate()
# One move at a time per replica: a duplicated alert (at-least-once delivery) must not race itself.
# The workflow is safe under races anyway (resourceVersion tests); this just avoids pointless conflicts.
_move_lock = threading.Lock()


def _fingerprint_key() -> bytes:
    """The HMAC key for fingerprints; 503 (fail closed) when it is missing, short or the caller token."""
    key = (config.read_secret_bytes(FINGERPRINT_SECRET) or b"").strip()
    if not key:
        raise http.HTTPError(503, f"secret '{FINGERPRINT_SECRET}' is missing or empty; value fingerprints "
                                  "are keyed with it and there is no fallback key")
    log.register_secret(key.decode("utf-8", "replace"))
    if len(key) < MIN_FINGERPRINT_KEY_BYTES:
        raise http.HTTPError(503, f"secret '{FINGERPRINT_SECRET}' is shorter than {MIN_FINGERPRINT_KEY_BYTES} "
                                  "bytes; use a random value (e.g. openssl rand -hex 32)")
    token = (config.read_secret_bytes(TOKEN_SECRET) or b"").strip()
    if hmac.compare_digest(key, token):
        raise http.HTTPError(503, f"secret '{FINGERPRINT_SECRET}' must not equal the caller token "
                                  f"'{TOKEN_SECRET}' (other functions hold that one)")
    return key


def _scrubber(limits: Limits, fingerprint_key: bytes) -> Scrubber:
    k = Client.for_secret(KUBECONFIG_SECRET, timeout=config.env_float("kube_timeout_seconds", 10.0),
                          field_manager=FIELD_MANAGER)
    settings = Settings(
        mode=limits.mode,
        secret_name_template=config.env_str("secret_name_template", "{configmap}-credentials"),
        rollout_timeout=config.env_float("rollout_timeout_seconds", 60.0),
        rollout_poll=config.env_float("rollout_poll_seconds", 1.0),
        allow_immutable=config.env_bool("allow_immutable", False),
        replacement_name_template=config.env_str("replacement_name_template", "{configmap}-v2"),
        deadline=time.monotonic() + config.env_float("run_budget_seconds", 40.0),
    )
    for t in ("secret_name_template", "replacement_name_template"):
        if "{configmap}" not in getattr(settings, t):
            raise config.ConfigError(f"{t} must contain {{configmap}}")
    return Scrubber(k, Detector(fingerprint_key), settings)


# --- request parsing -----------------------------------------------------------------------------

def _check_name(value, what: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise http.HTTPError(400, f"'{what}' must be a Kubernetes {what} name (lower-case DNS name)")
    return value


def _target_from_alert(doc: dict, limits: Limits) -> dict | None:
    rule = doc.get("rule")
    if not isinstance(rule, str):
        raise http.HTTPError(400, "alert has no 'rule'")
    if rule not in limits.rules:
        return None
    fields = doc.get("output_fields")
    if not isinstance(fields, dict):
        raise http.HTTPError(400, "alert has no 'output_fields' object")
    name = fields.get("ka.req.configmap.name") or fields.get("ka.target.name")
    if not name or name == "<NA>":
        raise http.HTTPError(400, "alert names no ConfigMap (ka.req.configmap.name / ka.target.name)")
    ns = fields.get("ka.target.namespace")
    target = {"name": _check_name(name, "name", _NAME)}
    if ns and ns != "<NA>":
        target["namespace"] = _check_name(ns, "namespace", _NAMESPACE)
    return target


def _target_from_request(doc: dict) -> dict:
    unknown = set(doc) - _REQUEST_FIELDS
    if unknown:
        raise http.HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}; use namespace, name, "
                                  "all_namespaces, dry_run", accepted=sorted(_REQUEST_FIELDS))
    target: dict = {}
    if "all_namespaces" in doc:
        if not isinstance(doc["all_namespaces"], bool):
            raise http.HTTPError(400, "'all_namespaces' must be true or false")
        if doc["all_namespaces"]:
            if "namespace" in doc or "name" in doc:
                raise http.HTTPError(400, "'all_namespaces' cannot be combined with 'namespace' or 'name'")
            target["all_namespaces"] = True
    if "dry_run" in doc and not isinstance(doc["dry_run"], bool):
        raise http.HTTPError(400, "'dry_run' must be true or false")
    if "namespace" in doc:
        target["namespace"] = _check_name(doc["namespace"], "namespace", _NAMESPACE)
    if "name" in doc:
        target["name"] = _check_name(doc["name"], "name", _NAME)
    if not target:
        raise http.HTTPError(400, "say what to scan: {\"namespace\",\"name\"}, {\"namespace\"} or "
                                  "{\"all_namespaces\": true}")
    return target


def _target_from_query(event) -> dict:
    doc = {}
    for f in ("namespace", "name"):
        v = http.query(event, f)
        if v is not None:
            doc[f] = v
    if http.query(event, "all_namespaces") is not None:
        doc["all_namespaces"] = http.query_flag(event, "all_namespaces")
    return _target_from_request(doc)


def _write_refused(err: KubeError) -> bool:
    """A 403 on a call the per-namespace Role grants (cluster-wide reads are list, and get on ConfigMaps)."""
    if err.status != 403 or err.verb == "list":
        return False
    return not (err.verb == "get" and err.what.startswith("ConfigMap "))


# --- the run ---------------------------------------------------------------------------------------

def _run(target: dict, mode: str, limits: Limits, trigger: str, fingerprint_key: bytes) -> dict:
    scrubber = _scrubber(limits, fingerprint_key)
    k = scrubber.kube
    result = {"mode": mode, "trigger": trigger, "target": target, "configmaps": [], "errors": []}
    # candidates: (namespace, name); each ConfigMap is read again when it is processed
    candidates: list[tuple[str, str]] = []
    skipped = []
    try:
        if "name" in target and "namespace" in target:
            candidates.append((target["namespace"], target["name"]))
        else:
            if "name" in target:
                # the upstream rule's output has no namespace: look the name up where we may act
                listing = k.each("ConfigMap", None, field_selector=f"metadata.name={target['name']}")
            else:
                listing = k.each("ConfigMap", target.get("namespace"))
            for cm in listing:
                candidates.append((cm["metadata"]["namespace"], cm["metadata"]["name"]))
            if "name" in target and not candidates:
                result["errors"].append(f"no ConfigMap named {target['name']} in any namespace")
    except KubeError as err:
        raise http.HTTPError(502, f"Kubernetes API: {err}", api_status=err.status) from None
    allowed = []
    for ns, name in sorted(candidates):
        if limits.allowed(ns):
            allowed.append((ns, name))
        else:
            skipped.append(f"{ns}/{name}")
    if skipped:
        result["skipped_by_namespace_policy"] = skipped
    if len(allowed) > limits.max_configmaps:
        result["truncated"] = {"examined": limits.max_configmaps, "not_examined": len(allowed) - limits.max_configmaps,
                               "reason": "max_configmaps_per_run"}
        allowed = allowed[: limits.max_configmaps]
    moves = 0
    statuses: dict[str, int] = {}
    deferred = []
    for ns, name in allowed:
        if time.monotonic() >= scrubber.settings.deadline:
            deferred.append(f"{ns}/{name}")  # answer within exec_timeout; the next run continues
            continue
        report_only = limits.report_only_reason(ns)
        if mode == "move" and not report_only and moves >= limits.max_moves:
            report_only = f"max_moves_per_run ({limits.max_moves}) reached"
        try:
            out = scrubber.process(ns, name, mode=mode, report_only=report_only)
        except KubeError as err:
            out = None
            statuses["error"] = statuses.get("error", 0) + 1
            reason = f"Kubernetes API: {err.verb} {err.what}: {err.status or 'no response'}"
            if _write_refused(err):
                reason += (f"; the scrubber may not write in namespace {ns}: apply "
                           "deploy/rbac/configmap-secret-scrubber-namespace.yaml there (and "
                           "configmap-secret-scrubber-immutable.yaml for allow_immutable), or list it in "
                           "report_only_namespaces")
            result["configmaps"].append({"namespace": ns, "name": name, "status": "error",
                                         "reasons": [reason],
                                         "note": "stopped safely; every value is still in the ConfigMap or the Secret; re-run"})
            log.warning("configmap.error", namespace=ns, configmap=name, verb=err.verb, what=err.what,
                        status=err.status)
        if out is not None:
            statuses[out.status] = statuses.get(out.status, 0) + 1
            if out.status == "moved":
                moves += 1
            if out.status != "clean" or "name" in target:
                result["configmaps"].append(out.public())
            log.info("configmap.processed", namespace=ns, configmap=name, status=out.status,
                     keys=[k["key"] for k in out.keys], actions=[k.get("action") for k in out.keys])
    if deferred:
        result["deferred"] = {"configmaps": deferred, "reason": "run_budget_seconds reached; run again"}
    result["summary"] = {"examined": len(allowed) - len(deferred), "by_status": statuses,
                         "rotate": sorted(f"{c['namespace']}/{c['name']}:{k['key']}" for c in result["configmaps"]
                                          for k in c.get("keys", []) if k.get("rotate"))}
    if not result["errors"]:
        del result["errors"]
    return result


@http.guarded
def handle(event, context):
    method = http.require_method(event, ("GET", "POST"))
    auth.require_bearer(event, TOKEN_SECRET)
    try:
        limits = Limits()
    except config.ConfigError as err:
        raise http.HTTPError(500, f"misconfigured: {err}") from None
    # validate before taking a rate token: a malformed request must not use up a legitimate caller's budget
    if method == "GET":
        target = _target_from_query(event)
        mode, trigger = "report", "get"
    else:
        doc = http.parse_json(event, max_bytes=limits.max_body)
        if not isinstance(doc, dict):
            raise http.HTTPError(400, "request body must be a JSON object")
        if "rule" in doc or "output_fields" in doc:
            # never keep or log the alert's copy of the data: only the object's coordinates are used
            target = _target_from_alert(doc, limits)
            if target is None:
                return http.json_response({"ignored": True, "reason": "rule is not one this function handles"})
            trigger = "falco"
            mode = limits.mode
        else:
            target = _target_from_request(doc)
            trigger = "request"
            mode = "report" if doc.get("dry_run") else limits.mode
    fingerprint_key = _fingerprint_key()
    wait = _rate.take(limits.rate_per_minute)
    if wait:
        raise http.HTTPError(429, "rate limit reached; retry later", headers={"Retry-After": str(int(wait) + 1)},
                             limit_per_minute=limits.rate_per_minute)
    try:
        if mode == "move":
            with _move_lock:
                result = _run(target, mode, limits, trigger, fingerprint_key)
        else:
            result = _run(target, mode, limits, trigger, fingerprint_key)
    except kube.KubeConfigError as err:
        raise http.HTTPError(503, str(err)) from None
    except config.ConfigError as err:
        raise http.HTTPError(500, f"misconfigured: {err}") from None
    return http.json_response(result)
