"""OpenFaaS CE's async path: the queue behind ``/async-function/`` and its one worker, logging as CE's does.

CE's queue-worker (openfaas/nats-queue-worker, ``main.go``) takes one message at a time (concurrency 1),
invokes ``POST /function/<name><path>?<query>`` through the gateway with the original headers and
``User-Agent: openfaas-ce/nats-queue-worker``, never retries whatever the status, and POSTs the answer to
``X-Callback-Url`` when there is one (no retry either). It logs every message it receives as
``[#N] Received on [faas-request]: '<the stan.Msg>'``: the message is the gateway's ``queue.Request`` as
JSON, every request header included, the body base64-encoded. So a token in an ``/async-function/`` call's
``Authorization`` header is in the queue-worker's log (issue 11); this worker writes the same lines.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from http import HTTPStatus

import requests

from .gatewayserver import HOP_HEADERS


def _canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey, for ASCII names."""
    return "-".join(w[:1].upper() + w[1:].lower() for w in name.split("-"))


def message(name: str, path: str, query: str, headers: list, body: bytes, host: str) -> bytes:
    """faas gateway/queue.Request as the gateway marshals it onto the queue."""
    header: dict = {}
    for k, v in headers:
        header.setdefault(_canonical(k), []).append(v.decode("latin-1") if isinstance(v, bytes) else v)
    callback = next((v[0] for k, v in header.items() if k == "X-Callback-Url"), None)
    return json.dumps(
        {
            "Header": header,
            "Host": host,
            "Body": base64.b64encode(body).decode("ascii"),
            "Method": "POST",
            "Path": path,
            "QueryString": query,
            "Function": name,
            "QueueName": "",
            "CallbackUrl": {"Scheme": callback.split(":", 1)[0], "Host": "", "Path": callback} if callback else None,
        },
        separators=(",", ":"),
    ).encode()


def proto_text(data: bytes) -> str:
    """Bytes as Go's protobuf text format prints them (the worker logs the stan.Msg with %s)."""
    out = []
    for b in data:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


class QueueWorker:
    """The queue and its single worker thread; ``stack`` gives the functions, the gateway and the logs."""

    def __init__(self, stack):
        self.stack = stack
        self._q: queue.Queue = queue.Queue()
        self._received = 0
        self._stopping = threading.Event()

    def start(self) -> QueueWorker:
        threading.Thread(target=self._run, name="queue-worker", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def put(self, name: str, path: str, query: str, headers: list, body: bytes, call_id: str) -> None:
        self._q.put((name, path, query, headers, body, call_id))

    def drain(self, timeout: float = 30) -> bool:
        """Wait until every queued call has been delivered (demo and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._q.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(*item)
            except Exception as exc:  # noqa: BLE001 - CE's worker logs and drops; so does this one
                self.stack.log_queue([f"error delivering a queued call: {type(exc).__name__}: {exc}"])
            finally:
                self._q.task_done()

    def _deliver(self, name, path, query, headers, body, call_id) -> None:
        started = time.monotonic()
        self._received += 1
        msg = message(name, path, query, headers, body, f"127.0.0.1:{self.stack.port}")
        self.stack.log_queue(
            [
                f'[#{self._received}] Received on [faas-request]: \'sequence:{self._received} subject:"faas-request" '
                f'data:"{proto_text(msg)}" timestamp:{time.time_ns()} \'',
                f"Invoking: {name}, {len(body)} bytes.",
            ]
        )
        callback = next((v for k, v in headers if k.lower() == "x-callback-url"), None)
        sent = [(k, v) for k, v in headers if k.lower() not in ("x-callback-url", "user-agent")]
        sent.append(("User-Agent", b"openfaas-ce/nats-queue-worker"))
        target = path + (f"?{query}" if query else "")
        t = time.monotonic()
        dep = self.stack.functions[name]
        answer = self.stack.gateway.invoke(dep, "POST", target, sent, body)
        seconds = time.monotonic() - t
        # CE's worker invokes through the gateway (gateway_invoke=true), which logs that call too.
        self.stack.log_access(
            "POST",
            f"/function/{name}{path if path != '/' else ''}" + (f"?{query}" if query else ""),
            answer.status,
            seconds,
        )
        phrase = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
        lines = [
            f"Invoked: {name} [{answer.status}] in {seconds:f}s",
            f"Wrote {len(answer.body)} Bytes",
            f"{answer.status} {phrase}".strip(),
        ]
        if callback:
            url = callback.decode("latin-1") if isinstance(callback, bytes) else callback
            lines.append(f"Callback to: {url}")
            cb_headers = {k: v for k, v in answer.headers if k.lower() not in HOP_HEADERS}
            cb_headers.update(
                {
                    "X-Call-Id": call_id,
                    "X-Function-Status": str(answer.status),
                    "X-Function-Name": name,
                    "X-Duration-Seconds": f"{time.monotonic() - started:.6f}",
                }
            )
            try:
                r = requests.post(url, data=answer.body, headers=cb_headers, timeout=10)
                lines.append(f"Posted result: {r.status_code}")
            except requests.RequestException as exc:
                lines.append(f"error posting result to URL {url} {type(exc).__name__}")
        self.stack.log_queue(lines)
