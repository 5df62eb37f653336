"""The local gateway's HTTP side: OpenFaaS CE's routes, its proxy to the functions, and its access log.

Routes as the CE gateway registers them (faas gateway/main.go, gorilla mux; names ``[-a-zA-Z_0-9.]+``):

* ``/function/<name>``, ``/function/<name>/`` and ``/function/<name>/<rest>``, any method: the proxy. The
  function gets ``/<rest>`` (``/`` for the first two) and the query string. The real watchdog answers 504
  itself at the function's ``exec_timeout``; in front of the stand-in runtime this proxy does, with the
  watchdog's empty 504.
* ``/async-function/<name>[/...]``, POST only (another method: mux's empty 405): 202 with ``X-Call-Id``; the
  call goes on the queue (local/queueworker.py); bodies over 256,000 bytes are refused as CE refuses them.
* ``/healthz``; ``/system/functions`` and ``/system/function/<name>`` behind basic auth (user ``admin``).
* anything else: mux's ``404 page not found``.

The server is the standard library's, not a WSGI one, because a WSGI server joins repeated header lines
into one before the application sees them, and the Go gateway passes every line on as it came
(``copyHeaders`` copies every value). Header values are forwarded as the bytes that arrived: Go accepts
any octet but CR, LF and NUL in a value (so ``\\x85`` or ``\\xa0`` in front is just a byte), where
``requests`` refuses what Python calls whitespace.

The access log has the gateway's line per request (its ``LoggingNotifier``): ``Forwarded [POST] to
/function/x?q=1 - [202] - 0.0012s``, the full URL with its query string, as an operator reads it with
``kubectl logs -n openfaas deploy/gateway``.
"""

from __future__ import annotations

import base64
import hmac
import http.client
import json
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .httpbody import read_body

CE_ASYNC_LIMIT = 256_000
# faas-provider's proxy client timeout under the CE chart (gateway.upstreamTimeout); the watchdog answers first.
GATEWAY_UPSTREAM_TIMEOUT = 60.0
BASIC_AUTH_USER = "admin"
SERVED_BY = "edgeguard-local-gateway (openfaas-ce routes)"
# Go's reverse-proxy hop-by-hop list, plus what this proxy sets itself (Host is not a header in Go's request).
HOP_HEADERS = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_NAME = r"[-a-zA-Z_0-9.]+"
_FUNCTION = re.compile(rf"^/function/({_NAME})(/.*)?$")
_ASYNC = re.compile(rf"^/async-function/({_NAME})(/.*)?$")
_STATUS = re.compile(rf"^/system/function/({_NAME})$")
NOT_FOUND = b"404 page not found\n"  # gorilla mux's NotFoundHandler (Go's http.NotFound)


@dataclass
class Answer:
    status: int
    headers: list = field(default_factory=list)  # [(name, value)], repeated names kept
    body: bytes = b""


@dataclass
class Call:
    """One request as it arrived: repeated header lines kept, values as bytes."""

    method: str
    target: str  # the request-target: path and query as sent
    headers: list  # [(name, bytes)]
    body: bytes
    client: str = "127.0.0.1"

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v.decode("latin-1")
        return None


def internal(status: int, text: str) -> Answer:
    """An answer from the platform itself (CE marks them with X-OpenFaaS-Internal)."""
    return Answer(status, [("X-OpenFaaS-Internal", "gateway"), ("Content-Type", "text/plain")], (text + "\n").encode())


def forward(port: int, method: str, target: str, headers: list, body: bytes, timeout: float) -> Answer:
    """One call to a function process on loopback, headers passed line by line as bytes (http.client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, resp.getheaders(), data)
    finally:
        conn.close()


class Gateway:
    """Routes one Call to an Answer; ``stack`` is the LocalStack (functions, secrets, runtime, queue, logs)."""

    def __init__(self, stack):
        self.stack = stack

    def route(self, call: Call) -> Answer:
        path = call.path
        m = _FUNCTION.match(path)
        if m:
            return self._with_call_id(call, lambda cid: self.sync(m.group(1), m.group(2) or "/", call, cid))
        m = _ASYNC.match(path)
        if m:
            if call.method != "POST":
                return Answer(405)
            return self._with_call_id(call, lambda cid: self.enqueue(m.group(1), m.group(2) or "/", call, cid))
        if path == "/healthz":
            return Answer(405) if call.method != "GET" else Answer(200, [("Content-Type", "text/plain")], b"OK")
        if path == "/system/functions" or _STATUS.match(path):
            if call.method != "GET":
                return Answer(405)
            return self.system(call)
        return Answer(
            404, [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")], NOT_FOUND
        )

    @staticmethod
    def _with_call_id(call: Call, handler) -> Answer:
        """CE's call-ID middleware: keep the caller's X-Call-Id or make one; X-Start-Time and X-Served-By."""
        call_id = call.header("X-Call-Id") or str(uuid.uuid4())
        if call.header("X-Call-Id") is None:
            call.headers.append(("X-Call-Id", call_id.encode()))
        started = time.time_ns()
        answer = handler(call_id)
        answer.headers = [(k, v) for k, v in answer.headers if k.lower() not in ("x-call-id", "x-start-time")]
        answer.headers += [("X-Call-Id", call_id), ("X-Start-Time", str(started)), ("X-Served-By", SERVED_BY)]
        return answer

    # --- /function/ ------------------------------------------------------------------------------
    def _deployment(self, name: str):
        """A function by name, or as faas-cli addresses it: <name>.<namespace> (CE has only openfaas-fn)."""
        return self.stack.functions.get(name) or self.stack.functions.get(name.removesuffix(".openfaas-fn"))

    def sync(self, name: str, rest: str, call: Call, call_id: str) -> Answer:
        dep = self._deployment(name)
        if dep is None:
            return internal(404, f"error finding function {name}.openfaas-fn: not found")
        target = rest + (f"?{call.query}" if call.query else "")
        return self.invoke(dep, call.method, target, call.headers, call.body, call.client)

    def invoke(self, dep, method: str, target: str, headers: list, body: bytes, client: str = "127.0.0.1") -> Answer:
        """What faas-provider's proxy does with a call: to the function's watchdog, hop-by-hop headers dropped."""
        dep.invocations += 1
        sent = [(k, v) for k, v in headers if k.lower() not in HOP_HEADERS]
        names = {k.lower() for k, _ in sent}
        if "x-forwarded-host" not in names:
            sent.append(("X-Forwarded-Host", f"127.0.0.1:{self.stack.port}".encode()))
        if "x-forwarded-for" not in names:
            sent.append(("X-Forwarded-For", client.encode()))  # the watchdog drops both before the function
        enforced = self.stack.runtime.enforces_exec_timeout
        try:
            answer = forward(
                dep.process.port, method, target, sent, body, GATEWAY_UPSTREAM_TIMEOUT if enforced else dep.exec_timeout
            )
        except TimeoutError:
            if enforced:
                return Answer(
                    500, [("X-OpenFaaS-Internal", "proxy")], f"Can't reach service for: {dep.fn.name}.\n".encode()
                )
            # Standing in for of-watchdog's exec_timeout: it answers 504 with an empty body.
            return Answer(504, [("X-OpenFaaS-Internal", "of-watchdog")], b"")
        except OSError:
            return Answer(
                503, [("X-OpenFaaS-Internal", "gateway")], f"No endpoints available for: {dep.fn.name}.\n".encode()
            )
        answer.headers = [(k, v) for k, v in answer.headers if k.lower() not in HOP_HEADERS | {"date", "server"}]
        return answer

    # --- /async-function/ ------------------------------------------------------------------------
    def enqueue(self, name: str, rest: str, call: Call, call_id: str) -> Answer:
        dep = self._deployment(name)
        if dep is None:
            return internal(404, f"function {name} not found")
        name = dep.fn.name
        if len(call.body) > CE_ASYNC_LIMIT:
            return internal(500, "Error queuing request: request body too large for OpenFaaS CE")
        self.stack.queue.put(name, rest, call.query, list(call.headers), call.body, call_id)
        return Answer(202)

    # --- /system/ --------------------------------------------------------------------------------
    def _basic_auth_ok(self, call: Call) -> bool:
        scheme, _, encoded = (call.header("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        want = self.stack.secret("basic-auth-password")
        return hmac.compare_digest(user.encode(), BASIC_AUTH_USER.encode()) & hmac.compare_digest(
            password.encode(), want.encode()
        )

    def system(self, call: Call) -> Answer:
        if not self._basic_auth_ok(call):
            return Answer(
                401,
                [("WWW-Authenticate", 'Basic realm="Restricted"'), ("Content-Type", "text/plain")],
                b"Unauthorized\n",
            )
        m = _STATUS.match(call.path)
        if m:
            dep = self.stack.functions.get(m.group(1))
            if dep is None:
                return internal(404, f"function {m.group(1)} not found")
            doc: dict | list = self._describe(dep)
        else:
            doc = [self._describe(d) for d in self.stack.functions.values()]
        return Answer(200, [("Content-Type", "application/json")], json.dumps(doc).encode() + b"\n")

    @staticmethod
    def _describe(dep) -> dict:
        return {
            "name": dep.fn.name,
            "image": dep.fn.image,
            "namespace": "openfaas-fn",
            "invocationCount": dep.invocations,
            "replicas": 1,
            "availableReplicas": 1 if dep.proc and dep.proc.poll() is None else 0,
            "envProcess": "python index.py",
            "labels": dep.fn.labels,
            "annotations": dep.fn.annotations,
            "secrets": dep.fn.secrets,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gateway: Gateway


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Go's server
    server_version = "edgeguard-local-gateway"

    def log_message(self, *args):  # the gateway writes its own access log
        pass

    def _read_body(self) -> bytes:
        return read_body(self)

    def _any(self):
        gateway: Gateway = self.server.gateway  # type: ignore[attr-defined]
        started = time.monotonic()
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "malformed body framing")
            return
        # http.server decodes header lines as latin-1: encoding back gives the bytes that came.
        call = Call(
            self.command,
            self.path,
            [(k, v.encode("latin-1", "replace")) for k, v in self.headers.items()],
            body,
            self.client_address[0],
        )
        try:
            answer = gateway.route(call)
        except Exception as exc:  # noqa: BLE001 - a bug here must not become an HTML page or a traceback to the caller
            gateway.stack.log_gateway(f"internal error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            answer = internal(500, "internal error in the local gateway (see its log)")
        self.send_response(answer.status)
        for k, v in answer.headers:
            self.send_header(k, v.decode("latin-1") if isinstance(v, bytes) else v)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)
        if call.path.startswith(("/function/", "/async-function/", "/system/", "/healthz")):
            gateway.stack.log_access(self.command, self.path, answer.status, time.monotonic() - started)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any


class GatewayServer:
    """The gateway listening on 127.0.0.1:<port> in daemon threads."""

    def __init__(self, stack, port: int):
        self.gateway = Gateway(stack)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.gateway = self.gateway
        self.port = self._server.server_address[1]

    def start(self) -> GatewayServer:
        threading.Thread(target=self._server.serve_forever, name="local-gateway", daemon=True).start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
