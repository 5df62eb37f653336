"""audit.k8s.io/v1 events for the requests the emulator serves, as kube-apiserver's audit backend emits them.

A Policy (the same YAML a k3s server is given with --audit-policy-file) picks each request's level; events go to
an in-memory list and, optionally, to a webhook in batches (`EventList` POSTs, like --audit-webhook-mode=batch),
so audit-ingest can be fed by real API activity instead of hand-written events.
"""

from __future__ import annotations

import datetime
import http.client
import json
import queue
import socket
import ssl
import threading
import urllib.parse
import uuid
from collections import deque
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

LEVELS = ("None", "Metadata", "Request", "RequestResponse")

# Used when no policy is given: everything at RequestResponse except Secret (and token) bodies, which stay
# at Metadata so no secret value ever lands in an audit event (what Falco's recommended policy does too).
DEFAULT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets", "serviceaccounts/token"]}]},
        {"level": "Metadata", "resources": [{"group": "authentication.k8s.io"}]},
        {"level": "RequestResponse"},
    ],
}


def _micro(ts: datetime.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Policy:
    def __init__(self, doc: dict | str | Path | None = None):
        if doc is None:
            doc = DEFAULT_POLICY
        elif isinstance(doc, (str, Path)):
            import yaml

            doc = yaml.safe_load(Path(doc).read_text())
        if not isinstance(doc, dict) or doc.get("kind") != "Policy" or not doc.get("rules"):
            raise ValueError("an audit policy needs kind: Policy and at least one rule")
        for rule in doc["rules"]:
            if rule.get("level") not in LEVELS:
                raise ValueError(f"audit rule level must be one of {LEVELS}: {rule!r}")
        self.rules: list[dict] = doc["rules"]
        self.omit_stages = set(doc.get("omitStages") or [])

    def rule_for(
        self,
        *,
        user: str,
        groups: tuple[str, ...],
        verb: str,
        group: str | None,
        resource: str | None,
        subresource: str | None,
        namespace: str | None,
        name: str | None,
        path: str,
    ) -> dict | None:
        """First matching rule (kube-apiserver's policy checker), or None (level None)."""
        for rule in self.rules:
            if rule.get("users") and user not in rule["users"]:
                continue
            if rule.get("userGroups") and not set(groups) & set(rule["userGroups"]):
                continue
            if rule.get("verbs") and verb not in rule["verbs"]:
                continue
            if resource is None:  # a non-resource URL
                if rule.get("resources") or rule.get("namespaces"):
                    continue
                urls = rule.get("nonResourceURLs")
                if urls and not any(fnmatchcase(path, u) for u in urls):
                    continue
                return rule
            if rule.get("nonResourceURLs"):
                continue
            if rule.get("namespaces") is not None and (namespace or "") not in rule["namespaces"]:
                continue
            if rule.get("resources") and not any(
                _group_matches(g, group, resource, subresource, name) for g in rule["resources"]
            ):
                continue
            return rule
        return None


def _group_matches(spec: dict, group: str | None, resource: str, subresource: str | None, name: str | None) -> bool:
    if spec.get("group", "") != (group or ""):
        return False
    wanted = spec.get("resources")
    if wanted:
        full = f"{resource}/{subresource}" if subresource else resource
        if not (
            full in wanted
            or "*" in wanted
            or (subresource and f"{resource}/*" in wanted)
            or (subresource and f"*/{subresource}" in wanted)
        ):
            return False
    names = spec.get("resourceNames")
    return not names or name in names


class Auditor:
    """Builds events, keeps the last ones in memory, and ships them to a webhook from a background thread."""

    def __init__(
        self,
        policy: Policy,
        webhook: str | None = None,
        token: str | None = None,
        batch_max_size: int = 100,
        batch_max_wait: float = 0.5,
        keep: int = 10000,
        ca_pem: bytes | None = None,
        server_name: str | None = None,
    ):
        self.policy = policy
        self.ca_pem = ca_pem
        self.server_name = server_name
        self.events: deque[dict] = deque(maxlen=keep)
        self.webhook = webhook
        self.token = token
        self.batch_max_size = batch_max_size
        self.batch_max_wait = batch_max_wait
        self.sent = 0
        self.errors: list[str] = []
        self._queue: queue.Queue = queue.Queue(maxsize=10000)  # --audit-webhook-batch-buffer-size
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if webhook:
            self._thread = threading.Thread(target=self._ship, name="kubeemu-audit", daemon=True)
            self._thread.start()

    def emit(self, event: dict) -> None:
        self.events.append(event)
        if self.webhook:
            try:
                self._idle.clear()
                self._queue.put_nowait(event)
            except queue.Full:  # the apiserver drops events when its buffer is full
                self.errors.append("audit buffer queue blocked")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was POSTed (or failed). True when drained."""
        if not self.webhook:
            return True
        return self._idle.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self.flush(5.0)
            self._stop.set()
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None

    _warned_http = False

    def _send(self, body: bytes, headers: dict, https: bool) -> int:
        """One POST; the status. TLS verified against ``ca_pem`` (else the system's CAs) for ``server_name``."""
        url = urllib.parse.urlsplit(str(self.webhook))
        target = url.path + (f"?{url.query}" if url.query else "")
        conn: http.client.HTTPConnection
        if https:
            ctx = ssl.create_default_context(cadata=self.ca_pem.decode("ascii") if self.ca_pem else None)
            conn = http.client.HTTPSConnection(url.hostname or "", url.port or 443, timeout=10, context=ctx)
            name = self.server_name
            if name:
                # The Ingress's name (SNI and the certificate check), while connecting to the URL's address.
                def connect(c: http.client.HTTPConnection = conn, n: str = name) -> None:
                    _connect_with_sni(c, ctx, n)

                conn.connect = connect  # type: ignore[method-assign]
        else:
            conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=10)
        try:
            conn.request("POST", target, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def _ship(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = utcnow() + datetime.timedelta(seconds=self.batch_max_wait)
            while len(batch) < self.batch_max_size:
                wait = (deadline - utcnow()).total_seconds()
                if wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                batch.append(item)
            self._post(batch)
            if self._queue.empty():
                self._idle.set()
        self._idle.set()

    def _post(self, batch: list[dict]) -> None:
        # List items go without kind/apiVersion on the wire (the log backend's JSON lines carry them).
        items = [{k: v for k, v in e.items() if k not in ("kind", "apiVersion")} for e in batch]
        body = json.dumps(
            {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}
        ).encode()
        headers = {"Content-Type": "application/json"}
        https = urllib.parse.urlsplit(self.webhook).scheme == "https"
        if self.token and https:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.token and not self._warned_http:
            # client-go (the API server's webhook client, as kubectl) sends credentials only over https.
            self._warned_http = True
            self.errors.append(
                "the webhook URL is http: its token is not sent (client-go sends credentials only over https)"
            )
        last = "webhook unreachable"
        for attempt in range(3):
            try:
                status = self._send(body, headers, https)
                if status < 300:
                    self.sent += len(batch)
                    return
                if status < 500 and status != 429:
                    self.errors.append(f"webhook answered {status} for {len(batch)} events")
                    return
                last = f"webhook answered {status}"
            except ssl.SSLError as e:
                last = f"webhook TLS failed: {e.reason or type(e).__name__}"
            except OSError as e:
                last = f"webhook unreachable: {type(e).__name__}"
            self._stop.wait(0.2 * (2**attempt))
        self.errors.append(f"{last}; dropped {len(batch)} events")


def _connect_with_sni(conn: http.client.HTTPConnection, ctx: ssl.SSLContext, server_name: str) -> None:
    sock = socket.create_connection((conn.host, conn.port), conn.timeout)
    conn.sock = ctx.wrap_socket(sock, server_hostname=server_name)


def build_event(
    *,
    level: str,
    stage: str,
    method: str,
    request_uri: str,
    verb: str,
    user: str,
    groups: tuple[str, ...],
    source_ips: list[str],
    user_agent: str | None,
    route: Any,
    code: int,
    status_body: dict | None,
    request_object: Any,
    response_object: Any,
    received: datetime.datetime,
    allowed: bool,
    audit_id: str | None = None,
) -> dict:
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": audit_id or str(uuid.uuid4()),
        "stage": stage,
        "requestURI": request_uri,
        "verb": verb,
        "user": {"username": user, "groups": list(groups)},
        "sourceIPs": source_ips,
    }
    if user_agent:
        ev["userAgent"] = user_agent
    if route is not None:
        ref: dict[str, Any] = {"resource": route.res.plural}
        if route.namespace:
            ref["namespace"] = route.namespace
        name = route.name
        if name is None and verb == "create" and isinstance(response_object, dict):
            name = (response_object.get("metadata") or {}).get("name")  # the apiserver fills it from the object
        if name is None and verb == "create" and isinstance(request_object, dict):
            name = (request_object.get("metadata") or {}).get("name")
        if name:
            ref["name"] = name
        # uid/resourceVersion come from the request object, as LogRequestObject fills them (absent on create).
        req_meta = (request_object.get("metadata") or {}) if isinstance(request_object, dict) else {}
        if isinstance(req_meta, dict):
            if req_meta.get("uid"):
                ref["uid"] = req_meta["uid"]
            if req_meta.get("resourceVersion"):
                ref["resourceVersion"] = req_meta["resourceVersion"]
        if route.res.group:
            ref["apiGroup"] = route.res.group
        ref["apiVersion"] = route.res.version
        if route.subresource:
            ref["subresource"] = route.subresource
        ev["objectRef"] = ref
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 400 and status_body:
        for k in ("status", "message", "reason", "details"):
            if k in status_body:
                status[k] = status_body[k]
    ev["responseStatus"] = status
    if route is not None and level in ("Request", "RequestResponse") and request_object is not None:
        ev["requestObject"] = request_object
    if route is not None and level == "RequestResponse" and response_object is not None:
        ev["responseObject"] = response_object
    ev["requestReceivedTimestamp"] = _micro(received)
    ev["stageTimestamp"] = _micro(utcnow())
    ev["annotations"] = {
        "authorization.k8s.io/decision": "allow" if allowed else "forbid",
        "authorization.k8s.io/reason": "",
    }
    return ev
