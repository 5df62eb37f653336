"""Destination types: how one alert becomes one HTTP request (or one log line).

Each sender returns a ``Result`` that says whether the attempt worked and, if
not, whether trying again can help and how long the receiver asked us to wait.
Retrying, spooling and counting are the forwarder's job, not the sender's.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .edgeguard import config, gateway, httpclient, log
from .edgeguard.falco.alert import dumps, priority_number
from .edgeguard.routing.templates import render_template

USER_AGENT = "edgeguard-alert-forwarder/0.1"

# falcosidekick's Slack colours by priority (its outputs/slack.go, outputs/constants.go); the page uses them too.
COLOURS = {
    "Emergency": "#e20b0b",
    "Alert": "#ff5400",
    "Critical": "#ff5400",
    "Error": "#e20b0b",
    "Warning": "#ffc700",
    "Notice": "#5bffb5",
    "Informational": "#68c2ff",
    "Debug": "#ccfff2",
}


@dataclass
class Result:
    ok: bool
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    error: str = ""


def idempotency_key(alert: dict) -> str:
    """Stable across retries, restarts and replicas: a hash of the alert's canonical Falco JSON."""
    return hashlib.sha256(dumps(alert).encode("utf-8")).hexdigest()[:32]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
        return max(0.0, secs) if secs == secs else None  # NaN guard
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, headers, body: bytes = b"") -> Result:
    if 200 <= status < 300:
        return Result(True, status)
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
        if retry_after is None and status == 429 and body[:1] == b"{":
            # Discord puts the wait in the JSON body ("retry_after": seconds).
            try:
                ra = json.loads(body).get("retry_after")
                retry_after = float(ra) if isinstance(ra, (int, float)) else None
            except (ValueError, AttributeError):
                pass
    retryable = status in (408, 425, 429) or status >= 500
    return Result(False, status, retryable, retry_after, f"HTTP {status}")


# ----------------------------------------------------------------------------- message formats


def _field_items(alert: dict, wanted: list[str] | None, limit: int = 20) -> list[tuple[str, str]]:
    fields = alert.get("output_fields") or {}
    if wanted:
        keys = [k for k in wanted if fields.get(k) is not None]
    else:
        # Like falcosidekick: string-valued fields, sorted by name.
        keys = sorted(k for k, v in fields.items() if isinstance(v, str) and v)
    out = []
    for k in keys[:limit]:
        v = fields[k]
        out.append((k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
    return out


def _message_text(alert: dict) -> str:
    return alert.get("output") or f"{alert.get('priority')} {alert.get('rule')}"


def slack_payload(alert: dict, opts: dict) -> dict:
    prio = alert.get("priority", "")
    fields = [
        {"title": "rule", "value": alert.get("rule", ""), "short": False},
        {"title": "priority", "value": prio, "short": True},
        {"title": "source", "value": alert.get("source", ""), "short": True},
    ]
    if alert.get("hostname"):
        fields.append({"title": "hostname", "value": alert["hostname"], "short": True})
    if alert.get("tags"):
        fields.append({"title": "tags", "value": ", ".join(sorted(alert["tags"])), "short": False})
    for k, v in _field_items(alert, opts.get("fields")):
        fields.append({"title": k, "value": v, "short": len(v) < 36})
    fields.append({"title": "time", "value": alert.get("time", ""), "short": False})
    text = _message_text(alert)
    payload = {
        "text": f"*{prio}*: {alert.get('rule', '')}",
        "username": opts["username"],
        "attachments": [
            {
                "fallback": text,
                "color": COLOURS.get(prio, "#cccccc"),
                "text": text,
                "fields": fields,
                "footer": "edgeguard alert-forwarder",
            }
        ],
    }
    if opts.get("channel"):
        payload["channel"] = opts["channel"]
    if opts.get("icon_url"):
        payload["icon_url"] = opts["icon_url"]
    return payload


def _facts(alert: dict, opts: dict) -> list[tuple[str, str]]:
    facts = [("priority", alert.get("priority", "")), ("source", alert.get("source", ""))]
    if alert.get("hostname"):
        facts.append(("hostname", alert["hostname"]))
    if alert.get("tags"):
        facts.append(("tags", ", ".join(sorted(alert["tags"]))))
    facts.extend(_field_items(alert, opts.get("fields")))
    facts.append(("time", alert.get("time", "")))
    return facts


def teams_payload(alert: dict, opts: dict) -> dict:
    prio = alert.get("priority", "")
    title = f"{prio}: {alert.get('rule', '')}"
    facts = _facts(alert, opts)
    if opts.get("format") == "messagecard":
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "themeColor": COLOURS.get(prio, "#cccccc").lstrip("#"),
            "summary": title,
            "title": title,
            "text": _message_text(alert),
            "sections": [{"facts": [{"name": k, "value": v} for k, v in facts]}],
        }
    try:
        n = priority_number(prio)
    except ValueError:
        n = 7
    colour = "attention" if n <= 3 else "warning" if n == 4 else "accent" if n == 5 else "default"
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": title, "color": colour, "wrap": True},
            {"type": "TextBlock", "text": _message_text(alert), "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def discord_payload(alert: dict, opts: dict) -> dict:
    prio = alert.get("priority", "")
    fields = [{"name": k[:256], "value": (v or "-")[:1024], "inline": len(v) < 36} for k, v in _facts(alert, opts)]
    embed = {
        "title": f"{prio}: {alert.get('rule', '')}"[:256],
        "description": _message_text(alert)[:4000],
        "color": int(COLOURS.get(prio, "#cccccc").lstrip("#"), 16),
        "fields": fields[:25],
        "footer": {"text": "edgeguard alert-forwarder"},
    }
    if alert.get("time"):
        embed["timestamp"] = alert["time"]
    return {"username": opts["username"], "embeds": [embed]}


# ----------------------------------------------------------------------------- senders


class Sender:
    def __init__(self, name: str, opts: dict, *, timeout: float):
        self.name = name
        self.opts = opts
        self.timeout = timeout
        self._client = None
        self._client_lock = threading.Lock()

    def client(self):
        # Built on first use (a disabled destination has no URL), by whichever worker comes first: the lock
        # keeps two workers from each building one and leaking the other's connections.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self):
        return httpclient.Client(self.url(), timeout=self.timeout, user_agent=USER_AGENT, **self.tls_options())

    def url(self) -> str:
        return self.opts["url"]

    def tls_options(self) -> dict:
        return {}

    def send(self, alert: dict, key: str) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _post(self, body: bytes, headers: dict, method: str = "POST") -> Result:
        return self._result(lambda: self.client().request(method, body, headers))

    def _result(self, call: Callable[[], httpclient.Response | gateway.Invocation]) -> Result:
        try:
            resp = call()
        except httpclient.TransportError as exc:
            if exc.kind == "timeout":
                return Result(False, None, True, None, f"timeout after {self.timeout:g}s")
            if exc.kind == "tls":
                # Usually a configuration problem, but also what a certificate rotation looks like: keep retrying.
                return Result(False, None, True, None, f"TLS error: {exc}")
            return Result(False, None, True, None, f"transport error: {exc}")
        return classify(resp.status, resp.headers, resp.body[:512] if resp.status == 429 else b"")


class ConsoleSender(Sender):
    def send(self, alert: dict, key: str) -> Result:
        log.warning(
            "alert",
            destination=self.name,
            rule=alert.get("rule"),
            priority=alert.get("priority"),
            source=alert.get("source"),
            hostname=alert.get("hostname"),
            output=alert.get("output"),
            idempotency_key=key,
        )
        return Result(True)


class _JSONWebhook(Sender):
    def payload(self, alert: dict) -> dict:
        raise NotImplementedError

    def send(self, alert: dict, key: str) -> Result:
        body = json.dumps(self.payload(alert), ensure_ascii=False).encode("utf-8")
        return self._post(body, {"Content-Type": "application/json", "Idempotency-Key": key})


class SlackSender(_JSONWebhook):
    def payload(self, alert: dict) -> dict:
        return slack_payload(alert, self.opts)


class TeamsSender(_JSONWebhook):
    def payload(self, alert: dict) -> dict:
        return teams_payload(alert, self.opts)


class DiscordSender(_JSONWebhook):
    def payload(self, alert: dict) -> dict:
        return discord_payload(alert, self.opts)


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``<timestamp>.<body>``: binding the time stops replays of a captured request."""
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class WebhookSender(Sender):
    def __init__(self, name: str, opts: dict, *, timeout: float):
        super().__init__(name, opts, timeout=timeout)
        self._tmpdir: str | None = None
        self.ca_file: str | None = None
        self.cert: tuple[str, str] | None = None
        if opts.get("ca_cert"):
            self.ca_file = self._pem_file("ca.pem", opts["ca_cert"])
        elif opts.get("ca_file"):
            self.ca_file = opts["ca_file"]
        if opts.get("client_cert"):
            self.cert = (
                self._pem_file("client.crt", opts["client_cert"]),
                self._pem_file("client.key", opts["client_key"]),
            )

    def tls_options(self) -> dict:
        return {"ca_file": self.ca_file, "client_cert": self.cert}

    def _pem_file(self, name: str, pem: str) -> str:
        # ssl only loads certificates from files; keep them private to this process.
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"edgeguard-{self.name}-")
        path = os.path.join(self._tmpdir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem.strip() + "\n")
        return path

    def body(self, alert: dict, key: str) -> bytes:
        if self.opts["body"] == "template":
            extra = {"idempotency_key": key, "priority_number": priority_number(alert.get("priority", "Debug"))}
            return json.dumps(render_template(self.opts["template"], alert, extra), ensure_ascii=False).encode("utf-8")
        return dumps(alert).encode("utf-8")

    def send(self, alert: dict, key: str) -> Result:
        body = self.body(alert, key)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Edgeguard-Event-Id": key}
        headers.update(self.opts.get("headers") or {})
        if self.opts.get("token"):
            headers["Authorization"] = f"Bearer {self.opts['token']}"
        if self.opts.get("hmac_key"):
            ts = str(int(time.time()))
            headers["X-Edgeguard-Timestamp"] = ts
            headers[self.opts["signature_header"]] = sign(self.opts["hmac_key"].encode("utf-8"), ts, body)
        return self._post(body, headers, method=self.opts["method"])

    def close(self) -> None:
        if self._tmpdir:
            import shutil

            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


class OpenFaaSSender(Sender):
    """Through edgeguard's gateway client (audit-ingest's hand-off uses it too), on the webhooks' HTTP client."""

    def _build_client(self) -> gateway.Gateway:
        o = self.opts
        # A token given in the destinations secret wins over token_secret (read on every call).
        # Always /function/<name>: the routes refuse async (CE's queue logs the token and never retries).
        return gateway.Gateway(
            o["function"],
            async_=False,
            path=o["path"],
            timeout=self.timeout,
            token=o.get("token"),
            token_secret=o.get("token_secret"),
            user_agent=USER_AGENT,
        )

    def send(self, alert: dict, key: str) -> Result:
        body, headers = dumps(alert).encode("utf-8"), {"Idempotency-Key": key, "X-Edgeguard-Event-Id": key}
        try:
            return self._result(lambda: self.client().invoke(body, headers))
        except config.ConfigError as exc:
            # The token secret is not mounted: keep the alert spooled until it is (the message names it, never a
            # value). The gateway client refused to call unauthenticated.
            return Result(False, None, True, None, str(exc))


SENDERS = {
    "console": ConsoleSender,
    "slack": SlackSender,
    "teams": TeamsSender,
    "discord": DiscordSender,
    "webhook": WebhookSender,
    "openfaas": OpenFaaSSender,
}


def make_sender(name: str, opts: dict, *, timeout: float) -> Sender:
    return SENDERS[opts["type"]](name, opts, timeout=timeout)
