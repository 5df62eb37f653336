"""configmap-secret-scrubber: find credentials in ConfigMaps and move them into Secrets.

Routes (every one needs the bearer token):
  POST /           a Falco alert ("Create/Modify Configmap With Private Credentials") from alert-forwarder,
                   or ``{"namespace","name"}``, ``{"namespace"}``, ``{"all_namespaces": true}``: a job,
                   answered 202 with its id at once and run in the background (jobs.py); ``?wait=1``
                   waits for it and answers its result, for people with curl.
  GET /?namespace=..&name=..   a report, synchronous, never changes anything.
  GET /jobs, GET /jobs/<id>    recent jobs, one job's state and result.
  GET /metrics     Prometheus text (the token, or the read-only edgeguard-metrics-token).
Default mode is ``report``; ``scrub_mode=move`` moves the high-confidence keys (remediate.py).
Answers and logs carry key names, detector ids and fingerprints keyed with the function's own secret
(never the caller token), never a value.
"""

from __future__ import annotations

import hmac
import re
import threading
import time

from . import jobs, sweep
from . import metrics as scrub_metrics
from .detect import Detector
from .edgeguard import auth, config, http, kube, log, metrics
from .edgeguard.kubeapi import Client
from .edgeguard.ratelimit import TokenBucket
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
METRICS = scrub_metrics.Metrics()


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
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_JOB_PATH = re.compile(r"/jobs/([0-9a-f]{16})")


def _fingerprint_key() -> bytes:
    """The HMAC key for fingerprints; 503 (fail closed) when it is missing, short or the caller token."""
    key = (config.read_secret_bytes(FINGERPRINT_SECRET) or b"").strip()
    if not key:
        raise http.HTTPError(
            503,
            f"secret '{FINGERPRINT_SECRET}' is missing or empty; value fingerprints "
            "are keyed with it and there is no fallback key",
        )
    log.register_secret(key.decode("utf-8", "replace"))
    if len(key) < MIN_FINGERPRINT_KEY_BYTES:
        raise http.HTTPError(
            503,
            f"secret '{FINGERPRINT_SECRET}' is shorter than {MIN_FINGERPRINT_KEY_BYTES} "
            "bytes; use a random value (e.g. openssl rand -hex 32)",
        )
    token = (config.read_secret_bytes(TOKEN_SECRET) or b"").strip()
    if hmac.compare_digest(key, token):
        raise http.HTTPError(
            503,
            f"secret '{FINGERPRINT_SECRET}' must not equal the caller token "
            f"'{TOKEN_SECRET}' (other functions hold that one)",
        )
    return key


def _scrubber(settings: Settings, fingerprint_key: bytes) -> Scrubber:
    """A Scrubber for one run; its deadline is the run budget. Raises kube.KubeConfigError."""
    k = Client.for_secret(
        KUBECONFIG_SECRET, timeout=settings.kube_timeout, field_manager=FIELD_MANAGER, on_error=_api_error
    )
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
        # named, but shortened: a caller's field name can be as long as the body
        named = ", ".join(repr(f[:40]) + ("..." if len(f) > 40 else "") for f in sorted(unknown)[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise http.HTTPError(
            400,
            f"unknown field(s): {named}{more}; use namespace, name, all_namespaces, dry_run",
            accepted=sorted(_REQUEST_FIELDS),
        )
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
        raise http.HTTPError(400, 'say what to scan: {"namespace","name"}, {"namespace"} or {"all_namespaces": true}')
    return target


def _target_from_query(event) -> dict:
    doc: dict[str, str | bool] = {}
    for f in ("namespace", "name"):
        v = http.query(event, f)
        if v is not None:
            doc[f] = v
    if http.query(event, "all_namespaces") is not None:
        doc["all_namespaces"] = http.query_flag(event, "all_namespaces")
    return _target_from_request(doc)


def _api_error(err) -> None:
    METRICS.inc("api_errors_total", {"verb": err.verb, "code": err.status or "none"})


def _sweep(settings: Settings, fingerprint_key: bytes, target: dict, mode: str, trigger: str) -> dict:
    """One run, counted; raises kube.KubeConfigError or sweep.ListFailed when it cannot start."""
    started = time.monotonic()
    outcome = "failed"
    try:
        result = sweep.run(_scrubber(settings, fingerprint_key), target, mode, trigger, settings)
        outcome = "completed"
        scrub_metrics.record_run(METRICS, result)
        return result
    finally:
        METRICS.inc("runs_total", {"trigger": trigger, "mode": mode, "outcome": outcome})
        METRICS.observe("run_seconds", time.monotonic() - started, {"mode": mode})


def _run_job(job: jobs.Job) -> dict:
    """The worker's side of a job: one sweep, with the settings and keys as they are now."""
    settings = SETTINGS.get()
    try:
        return _sweep(settings, _fingerprint_key(), job.target, job.mode, job.trigger)
    except http.HTTPError as err:  # the fingerprint key went missing since the request was accepted
        raise jobs.JobFailed(err.status, err.reason) from None
    except kube.KubeConfigError as err:
        raise jobs.JobFailed(503, str(err)) from None
    except sweep.ListFailed as failed:
        raise jobs.JobFailed(502, f"Kubernetes API: {failed.err}", api_status=failed.err.status) from None


def _job_crashed(job: jobs.Job, exc: Exception) -> None:
    log.error("job.crashed", job=job.id, error=type(exc).__name__, message=str(exc)[:300])


def _jobs() -> jobs.Jobs:
    global _JOBS
    if _JOBS is None:
        _JOBS = jobs.Jobs(_run_job, max_queued=SETTINGS.get().max_queued_jobs, on_crash=_job_crashed)
    return _JOBS


_JOBS: jobs.Jobs | None = None


def _queue_gauges(m) -> None:
    waiting, running = _JOBS.depth() if _JOBS is not None else (0, 0)
    m.set("jobs_queued", waiting)
    m.set("jobs_running", running)


METRICS.add_collector(_queue_gauges)


def _parse_post(event, settings: Settings) -> tuple[dict, str, str] | None:
    """(target, mode, trigger), or None for an alert of a rule this function does not handle."""
    doc = http.parse_json(event, max_bytes=settings.max_body)
    if not isinstance(doc, dict):
        raise http.HTTPError(400, "request body must be a JSON object")
    if "rule" in doc or "output_fields" in doc:
        # never keep or log the alert's copy of the data: only the object's coordinates are used
        target = _target_from_alert(doc, settings)
        return None if target is None else (target, settings.mode, "falco")
    target = _target_from_request(doc)
    return target, "report" if doc.get("dry_run") else settings.mode, "request"


def _take_rate(settings: Settings) -> None:
    wait = _rate.take(settings.rate_per_minute)
    if wait:
        raise http.HTTPError(
            429,
            "rate limit reached; retry later",
            headers={"Retry-After": str(int(wait) + 1)},
            limit_per_minute=settings.rate_per_minute,
        )


def _submit(event, settings: Settings, target: dict, mode: str, trigger: str) -> dict:
    key = http.header(event, "Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise http.HTTPError(400, "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    queue = _jobs()
    if queue.existing(target, mode, trigger, key) is None:
        _take_rate(settings)  # a duplicate uses no token: it starts nothing
    try:
        job, new = queue.submit(target, mode, trigger, key)
    except jobs.Full:
        METRICS.inc("jobs_total", {"event": "queue_full"})
        retry = max(1, int(settings.run_budget))
        raise http.HTTPError(
            503,
            f"busy: {queue.max_queued} jobs are waiting (max_queued_jobs); retry later",
            headers={"Retry-After": str(retry)},
            max_queued_jobs=queue.max_queued,
        ) from None
    METRICS.inc("jobs_total", {"event": "accepted" if new else "duplicate"})
    if not new:
        log.info("job.duplicate", job=job.id, state=job.state, trigger=trigger)
    if http.query_flag(event, "wait"):
        if job.done.wait(settings.wait_seconds):
            if job.error is not None:
                extra = {k: v for k, v in job.error.items() if k not in ("status", "error")}
                raise http.HTTPError(job.error["status"], job.error["error"], job=job.id, **extra)
            if job.result is not None:
                return http.json_response(dict(job.result, job=job.id))
    answer = job.public(with_result=False)
    answer["status_path"] = f"/jobs/{job.id}"
    return http.json_response(answer, 202)


def _job_status(path: str) -> dict:
    if path in ("/jobs", "/jobs/"):
        return http.json_response({"jobs": [j.public(with_result=False) for j in _jobs().recent()], "kept": jobs.KEEP})
    m = _JOB_PATH.fullmatch(path)
    job = _jobs().get(m.group(1)) if m else None
    if job is None:
        raise http.HTTPError(
            404, f"no such job; this replica keeps the last {jobs.KEEP} finished jobs and forgets them when it restarts"
        )
    return http.json_response(job.public())


def _route(event, context):
    path = http.path(event).rstrip("/") or "/"
    if path == "/metrics":
        http.require_method(event, ("GET",))
        # before the settings: a misconfigured function still shows what it did
        auth.require_metrics_reader(event, TOKEN_SECRET)
        return http.text_response(METRICS.render(), content_type=metrics.CONTENT_TYPE)
    jobs_route = path == "/jobs" or path.startswith("/jobs/")
    if path != "/" and not jobs_route:
        raise http.HTTPError(404, "no such route; use / (POST a job, GET a report), /jobs/<id> or /metrics")
    method = http.require_method(event, ("GET",) if jobs_route else ("GET", "POST"))
    auth.require_bearer(event, TOKEN_SECRET)
    settings = SETTINGS.get()
    if jobs_route:
        return _job_status(path)
    # validate before taking a rate token: a malformed request must not use up a legitimate caller's budget
    if method == "POST":
        parsed = _parse_post(event, settings)
        if parsed is None:
            return http.json_response({"ignored": True, "reason": "rule is not one this function handles"})
        _fingerprint_key()
        return _submit(event, settings, *parsed)
    target = _target_from_query(event)
    fingerprint_key = _fingerprint_key()
    _take_rate(settings)
    try:
        result = _sweep(settings, fingerprint_key, target, "report", "get")
    except kube.KubeConfigError as err:
        raise http.HTTPError(503, str(err)) from None
    except sweep.ListFailed as failed:
        raise http.HTTPError(502, f"Kubernetes API: {failed.err}", api_status=failed.err.status) from None
    return http.json_response(result)


_guarded = http.guarded(_route)
_ROUTES = ("/", "/jobs", "/metrics")


def handle(event, context):
    resp = _guarded(event, context)
    path = http.path(event).rstrip("/") or "/"
    route = "/jobs" if path.startswith("/jobs/") else path if path in _ROUTES else "other"
    METRICS.inc(
        "requests_total",
        {
            "route": route,
            "method": http.method(event) if http.method(event) in ("GET", "POST", "HEAD") else "other",
            "code": resp["statusCode"],
        },
    )
    return resp
