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

from . import sweep
from .edgeguard import auth, config, http, kube, log
from .edgeguard.kubeapi import Client
from .edgeguard.ratelimit import TokenBucket
from .detect import Detector
from .remediate import FIELD_MANAGER, Scrubber
from .settings import Settings

TOKEN_SECRET = "configmap-secret-scrubber-token"
KUBECONFIG_SECRET = "configmap-secret-scrubber-kubeconfig"
# Its own key: the caller token is shared with alert-forwarder, and whoever holds the HMAC key
# can test password guesses against a fingerprint offline.
FINGERPRINT_SECRET = "configmap-secret-scrubber-fingerprint-key"
MIN_FINGERPRINT_KEY_BYTES = 16

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_REQUEST_FIELDS = {"namespace", "name", "all_namespaces", "dry_run"}

SETTINGS = config.Startup("configmap-secret-scrubber", Settings.from_env)


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


def _scrubber(settings: Settings, fingerprint_key: bytes) -> Scrubber:
    """A Scrubber for one run; its deadline is the run budget. Raises kube.KubeConfigError."""
    k = Client.for_secret(KUBECONFIG_SECRET, timeout=settings.kube_timeout, field_manager=FIELD_MANAGER)
    return Scrubber(k, Detector(fingerprint_key), settings, deadline=time.monotonic() + settings.run_budget)


# --- request parsing -----------------------------------------------------------------------------

def _check_name(value, what: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise http.HTTPError(400, f"'{what}' must be a Kubernetes {what} name (lower-case DNS name)")
    return value


def _target_from_alert(doc: dict, settings: Settings) -> dict | None:
    rule = doc.get("rule")
    if not isinstance(rule, str):
        raise http.HTTPError(400, "alert has no 'rule'")
    if rule not in settings.rules:
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


@http.guarded
def handle(event, context):
    method = http.require_method(event, ("GET", "POST"))
    auth.require_bearer(event, TOKEN_SECRET)
    settings = SETTINGS.get()
    # validate before taking a rate token: a malformed request must not use up a legitimate caller's budget
    if method == "GET":
        target = _target_from_query(event)
        mode, trigger = "report", "get"
    else:
        doc = http.parse_json(event, max_bytes=settings.max_body)
        if not isinstance(doc, dict):
            raise http.HTTPError(400, "request body must be a JSON object")
        if "rule" in doc or "output_fields" in doc:
            # never keep or log the alert's copy of the data: only the object's coordinates are used
            target = _target_from_alert(doc, settings)
            if target is None:
                return http.json_response({"ignored": True, "reason": "rule is not one this function handles"})
            trigger = "falco"
            mode = settings.mode
        else:
            target = _target_from_request(doc)
            trigger = "request"
            mode = "report" if doc.get("dry_run") else settings.mode
    fingerprint_key = _fingerprint_key()
    wait = _rate.take(settings.rate_per_minute)
    if wait:
        raise http.HTTPError(429, "rate limit reached; retry later", headers={"Retry-After": str(int(wait) + 1)},
                             limit_per_minute=settings.rate_per_minute)
    try:
        scrubber = _scrubber(settings, fingerprint_key)
        if mode == "move":
            with _move_lock:
                result = sweep.run(scrubber, target, mode, trigger, settings)
        else:
            result = sweep.run(scrubber, target, mode, trigger, settings)
    except kube.KubeConfigError as err:
        raise http.HTTPError(503, str(err)) from None
    except sweep.ListFailed as failed:
        raise http.HTTPError(502, f"Kubernetes API: {failed.err}", api_status=failed.err.status) from None
    return http.json_response(result)
