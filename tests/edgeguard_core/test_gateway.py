"""edgeguard.gateway: the one client both audit-ingest's hand-off and alert-forwarder's openfaas destinations use."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeguard import config, gateway


class Gateway:
    """A loopback stand-in for the OpenFaaS gateway (HTTP/1.1, keep-alive) recording each call and its connection."""

    def __init__(self, status=202, delay=0.0):
        self.calls: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "peer": self.client_address}
                )
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("X-Call-Id", f"call-{len(outer.calls)}")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the caller gave up (the timeout test)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gw(monkeypatch, tmp_path):
    made = []

    def make(**kw):
        g = Gateway(**kw)
        made.append(g)
        monkeypatch.setenv("gateway_url", g.url)
        return g

    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    (tmp_path / "callee-token").write_text("callee-token-value-123\n")
    yield make
    for g in made:
        g.close()


def test_async_call_carries_the_token_from_the_secret_and_returns_the_call_id(gw):
    g = gw()
    res = gateway.invoke("alert-forwarder", '[{"rule": "x"}]', token_secret="callee-token")
    assert res.status == 202 and res.call_id == "call-1"
    [call] = g.calls
    assert call["path"] == "/async-function/alert-forwarder" and call["body"] == b'[{"rule": "x"}]'
    assert call["headers"]["Authorization"] == "Bearer callee-token-value-123"
    assert call["headers"]["Content-Type"] == "application/json"


def test_sync_route_path_and_callback(gw):
    g = gw(status=200)
    res = gateway.Gateway(
        "responder", async_=False, path="/run", callback_url="http://gateway:8080/function/cb", token="direct-token-456"
    ).invoke(b"{}", {"Idempotency-Key": "k1"})
    assert res.status == 200
    [call] = g.calls
    assert call["path"] == "/function/responder/run"
    assert call["headers"]["Authorization"] == "Bearer direct-token-456"
    assert call["headers"]["X-Callback-Url"] == "http://gateway:8080/function/cb"
    assert call["headers"]["Idempotency-Key"] == "k1"


def test_http_errors_are_returned_not_raised(gw):
    gw(status=503)
    assert gateway.invoke("alert-forwarder", b"[]").status == 503


def test_hand_offs_reuse_one_kept_alive_connection(gw):
    g = gw()
    for _ in range(3):
        assert gateway.invoke("alert-forwarder", b"[]", token_secret="callee-token").status == 202
    assert len({c["peer"] for c in g.calls}) == 1  # one TCP connection (same client port) for all three


def test_a_rotated_token_secret_applies_to_the_next_call(gw, tmp_path):
    g = gw()
    gateway.invoke("alert-forwarder", b"[]", token_secret="callee-token")
    (tmp_path / "callee-token").write_text("rotated-token-789\n")
    gateway.invoke("alert-forwarder", b"[]", token_secret="callee-token")
    assert [c["headers"]["Authorization"] for c in g.calls] == [
        "Bearer callee-token-value-123",
        "Bearer rotated-token-789",
    ]


def test_environment_proxies_are_not_used(gw, monkeypatch):
    g = gw()
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert gateway.invoke("alert-forwarder", b"[]").status == 202 and len(g.calls) == 1


def test_unreachable_gateway_raises_a_transport_error_naming_the_kind(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    monkeypatch.setenv("gateway_url", f"http://127.0.0.1:{port}")
    with pytest.raises(gateway.TransportError) as exc:
        gateway.invoke("alert-forwarder", b"[]")
    assert exc.value.kind == "connect"


def test_a_slow_gateway_times_out_after_the_callers_timeout(gw):
    gw(delay=2.0)
    started = time.monotonic()
    with pytest.raises(gateway.TransportError) as exc:
        gateway.invoke("alert-forwarder", b"[]", timeout=0.3)
    assert exc.value.kind == "timeout" and time.monotonic() - started < 1.5


def test_missing_token_secret_is_a_config_error_naming_it(gw):
    g = gw()
    with pytest.raises(config.ConfigError, match="'absent-token' \\(the token for alert-forwarder\\)"):
        gateway.Gateway("alert-forwarder", token_secret="absent-token").invoke(b"[]")
    assert g.calls == []
