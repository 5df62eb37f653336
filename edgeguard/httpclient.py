"""edgeguard's one HTTP(S) client (webhooks, chat and the OpenFaaS gateway), on the standard library.

Measured against a requests.Session variant (pooled HTTPAdapter, verify, cert;
``compare_clients()`` in bench/alert_forwarder.py): requests delivers ~1,000
alerts/s with 6-8 ms p50 added latency at saturation, this client ~1,900 at
~2.8 ms, and the targets are 1,000/s and 5 ms (figures in docs/alert-forwarder.md).
Delivery needs only POST/PUT with a body, a timeout, verified TLS (optional
private CA and client certificate) and a reused connection. Proxies from the
environment are not used (edge receivers and the gateway are reached directly).
"""

from __future__ import annotations

import http.client
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

# Receivers answer with a status; the body is only looked at for a 429's retry_after. A hostile or broken
# receiver must not make us buffer megabytes per delivery.
MAX_RESPONSE_BYTES = 64 * 1024


class TransportError(Exception):
    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # "timeout", "tls", "connect"


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class Client:
    """One connection per thread per client: http.client connections are not thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
        user_agent: str = "",
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        if "@" in parts.netloc:
            raise ValueError("credentials in the URL (user:pass@) are not supported; use headers or token")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc
        self.timeout = timeout
        self.user_agent = user_agent
        self.ssl_context = None
        if self.https:
            ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if client_cert:
                ctx.load_cert_chain(client_cert[0], client_cert[1])
            self.ssl_context = ctx
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            if self.https:
                c = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = c
        return c

    def _drop(self) -> None:
        c = getattr(self._local, "conn", None)
        self._local.conn = None
        if c is not None:
            c.close()

    def request(self, method: str, body: bytes, headers: dict) -> Response:
        hdrs = {
            "Host": self.host_header,
            "User-Agent": self.user_agent,
            "Content-Length": str(len(body)),
            "Connection": "keep-alive",
        }
        hdrs.update(headers)
        # A kept-alive connection the server has closed fails on first use: resend once on a fresh one. The
        # server may in rare cases have processed the first POST before the connection dropped; the resend is
        # acceptable only because every request carries the same Idempotency-Key for receivers to dedupe on.
        for fresh in (False, True):
            reused = getattr(self._local, "conn", None) is not None
            c = self._conn()
            try:
                c.request(method, self.target, body=body, headers=hdrs)
                resp = c.getresponse()
                data = resp.read(MAX_RESPONSE_BYTES + 1)
            except TimeoutError as exc:
                self._drop()
                raise TransportError("timeout", str(exc)) from None
            except ssl.SSLError as exc:
                self._drop()
                raise TransportError("tls", type(exc).__name__) from None
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                http.client.BadStatusLine,
            ) as exc:
                self._drop()
                if reused and not fresh:
                    continue
                raise TransportError("connect", type(exc).__name__) from None
            except OSError as exc:
                self._drop()
                raise TransportError("connect", type(exc).__name__) from None
            if resp.will_close or len(data) > MAX_RESPONSE_BYTES:
                # The unread rest of an oversized body would corrupt the next response on this connection.
                self._drop()
            return Response(resp.status, resp.headers, data[:MAX_RESPONSE_BYTES])
        raise TransportError("connect", "connection closed")  # pragma: no cover - loop always returns or raises
