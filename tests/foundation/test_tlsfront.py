"""local/tlsfront.py plays Traefik for bootstrap's Ingress: SNI picks the certificate, only the Ingress's paths
are proxied, headers pass through, and its log never holds a token."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local import localca, tlsfront

NAME = "audit-ingest.edgeguard.internal"
TOKEN = "tok-5f1c0ffee-never-logged"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for NAME only (no IP: the front must match the name by SNI)."""
    if not localca.available():
        pytest.skip("needs openssl to make a test CA")
    cert = localca.LocalCA(tmp_path_factory.mktemp("pki")).issue("tls", dns=(NAME,), ips=())
    return {"ca.crt": cert.ca.read_bytes(), "tls.crt": cert.cert.read_bytes(), "tls.key": cert.key.read_bytes()}


def objects(pki, path_type="Exact"):
    ingress = {
        "kind": "Ingress",
        "metadata": {"name": "edgeguard-audit-ingest", "namespace": "openfaas"},
        "spec": {
            "tls": [{"hosts": [NAME], "secretName": "edgeguard-audit-ingest"}],
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/function/audit-ingest",
                                "pathType": path_type,
                                "backend": {"service": {"name": "gateway", "port": {"number": 8080}}},
                            }
                        ]
                    }
                }
            ],
        },
    }
    secret = {
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "edgeguard-audit-ingest"},
        "data": {
            "tls.crt": base64.b64encode(pki["tls.crt"]).decode(),
            "tls.key": base64.b64encode(pki["tls.key"]).decode(),
        },
    }
    return ingress, {"edgeguard-audit-ingest": secret}


class Upstream:
    """A gateway stand-in that records what reaches it."""

    def __init__(self):
        self.seen = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                reply = json.dumps({"ok": True}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Call-Id", "abc")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def front(pki, tmp_path):
    up = Upstream()
    ingress, secrets = objects(pki)
    f = tlsfront.TLSFront(
        tlsfront.Site.from_objects(ingress, secrets), {("gateway", 8080): up.url}, log_path=tmp_path / "tlsfront.log"
    ).start()
    f.upstream = up
    yield f
    f.stop()
    up.close()


def request(front, pki, method, path, *, sni=NAME, headers=None, body=None):
    ctx = ssl.create_default_context(cadata=pki["ca.crt"].decode())
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname=sni)
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    conn.sock = tls
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def test_the_ingress_path_is_proxied_with_authorization_and_host_and_the_log_holds_no_token(front, pki, tmp_path):
    status, headers, body = request(
        front,
        pki,
        "POST",
        "/function/audit-ingest?timeout=30s",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Host": "127.0.0.1:443"},
        body=b'{"kind":"EventList"}',
    )
    assert status == 201 and json.loads(body) == {"ok": True} and headers["X-Call-Id"] == "abc"
    [seen] = front.upstream.seen
    assert seen["path"] == "/function/audit-ingest?timeout=30s" and seen["body"] == b'{"kind":"EventList"}'
    assert seen["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert seen["headers"]["Host"] == "127.0.0.1:443"
    assert seen["headers"]["X-Forwarded-Proto"] == "https" and seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert (front.requests, front.with_authorization, front.sni_seen[NAME]) == (1, 1, 1)
    log = (tmp_path / "tlsfront.log").read_text()
    assert '"POST /function/audit-ingest HTTP/1.1" 201' in log and f"sni={NAME} authorization=present" in log
    assert TOKEN not in log and "timeout=30s" not in log


@pytest.mark.parametrize(
    "path",
    ["/function/alert-forwarder", "/system/functions", "/function/audit-ingest/x", "/function/audit-ingestx", "/"],
)
def test_only_the_exact_ingress_path_is_exposed(front, pki, path):
    status, _, body = request(front, pki, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (status, body) == (404, tlsfront.NOT_FOUND)
    assert front.upstream.seen == []


def test_prefix_paths_match_whole_segments(pki):
    route = tlsfront.Site.from_objects(*objects(pki, "Prefix")).routes[0]
    assert route.matches("/function/audit-ingest") and route.matches("/function/audit-ingest/x")
    assert not route.matches("/function/audit-ingestx")


@pytest.mark.parametrize("sni", [None, "127.0.0.1", "other.example"])
def test_a_handshake_without_the_ingress_name_as_sni_is_refused(front, pki, tmp_path, sni):
    # Go sends no SNI for an IP address; Traefik would then present its default certificate.
    ctx = ssl.create_default_context(cadata=pki["ca.crt"].decode())
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(raw, server_hostname=sni).do_handshake()
    assert front.upstream.seen == [] and front.requests == 0
    assert "is not among the Ingress's tls hosts" in (tmp_path / "tlsfront.log").read_text()


def test_the_certificate_is_verified_against_the_ca_and_the_name(front, pki):
    ctx = ssl.create_default_context()  # the system's CAs: bootstrap's own CA is not among them
    with socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname=NAME)


def test_site_needs_a_tls_secret_of_the_right_type(pki):
    ingress, secrets = objects(pki)
    with pytest.raises(ValueError, match="not found"):
        tlsfront.Site.from_objects(ingress, {})
    secrets["edgeguard-audit-ingest"]["type"] = "Opaque"
    with pytest.raises(ValueError, match="kubernetes.io/tls"):
        tlsfront.Site.from_objects(ingress, secrets)
