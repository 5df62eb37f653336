"""edgeguard.kubeapi on a recording loopback server: what goes on the wire, and how failures surface.

What the real kube-apiserver answers to these calls is tests/edgeguard_core/test_kubeapi_cluster.py.
"""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3

from edgeguard import kube, kubeapi


class Recorder(BaseHTTPRequestHandler):
    answers: list = []  # (status, body bytes) per request, in order; then 200 {}
    seen: list = []

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers), body))
        status, payload = self.answers.pop(0) if self.answers else (200, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Recorder.answers, Recorder.seen = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, Recorder
    srv.shutdown()
    srv.server_close()


def client(srv, tokens=None, **kw):
    tokens = tokens if tokens is not None else iter(["tok-1"] * 100)
    conn = kube.Connection(
        f"http://127.0.0.1:{srv.server_address[1]}",
        urllib3.PoolManager(),
        lambda: {"authorization": f"Bearer {next(tokens)}"},
    )
    return kubeapi.Client(conn, **kw)


def test_paths_quote_names_and_leave_cluster_scoped_kinds_without_a_namespace():
    assert kubeapi.path("ConfigMap", "demo", "a b/c") == "/api/v1/namespaces/demo/configmaps/a%20b%2Fc"
    assert kubeapi.path("Deployment", "demo") == "/apis/apps/v1/namespaces/demo/deployments"
    assert kubeapi.path("CronJob", None) == "/apis/batch/v1/cronjobs"
    assert kubeapi.path("Node", "ignored", "n1") == "/api/v1/nodes/n1"
    assert kubeapi.path("Pod", "demo", "p", "eviction") == "/api/v1/namespaces/demo/pods/p/eviction"


def test_writes_carry_the_field_manager_content_type_and_a_fresh_auth_header_each(server):
    srv, rec = server
    tokens = iter(["first-token", "rotated-token", "third-token"])
    c = client(srv, tokens, field_manager="configmap-secret-scrubber")
    c.create("Secret", "demo", {"metadata": {"name": "s"}, "data": {}})
    c.patch("Secret", "demo", "s", [{"op": "remove", "path": "/data/k"}], kubeapi.JSON_PATCH)
    c.delete("Secret", "demo", "s", {"preconditions": {"resourceVersion": "7"}})
    (m1, p1, h1, b1), (m2, p2, h2, b2), (m3, p3, h3, b3) = rec.seen
    assert (m1, p1) == ("POST", "/api/v1/namespaces/demo/secrets?fieldManager=configmap-secret-scrubber")
    assert (m2, p2) == ("PATCH", "/api/v1/namespaces/demo/secrets/s?fieldManager=configmap-secret-scrubber")
    assert (m3, p3) == ("DELETE", "/api/v1/namespaces/demo/secrets/s")
    assert h1["Content-Type"] == "application/json" and h2["Content-Type"] == kubeapi.JSON_PATCH
    assert [h["authorization"] for h in (h1, h2, h3)] == [
        "Bearer first-token",
        "Bearer rotated-token",
        "Bearer third-token",
    ]
    assert json.loads(b3) == {"preconditions": {"resourceVersion": "7"}}


def test_each_follows_continue_tokens_and_sends_both_selectors(server):
    srv, rec = server
    rec.answers = [
        (200, json.dumps({"items": [{"n": 1}], "metadata": {"continue": "abc="}}).encode()),
        (200, json.dumps({"items": [{"n": 2}], "metadata": {}}).encode()),
    ]
    got = client(srv).list("Pod", None, field_selector="spec.nodeName=n1", label_selector="app=x", limit=1)
    assert got == [{"n": 1}, {"n": 2}]
    assert [p for _, p, _, _ in rec.seen] == [
        "/api/v1/pods?limit=1&fieldSelector=spec.nodeName%3Dn1&labelSelector=app%3Dx",
        "/api/v1/pods?limit=1&fieldSelector=spec.nodeName%3Dn1&labelSelector=app%3Dx&continue=abc%3D",
    ]


@pytest.mark.parametrize("status,prop", [(409, "conflict"), (404, "not_found"), (403, "forbidden"), (422, "invalid")])
def test_an_error_answer_is_a_kube_error_with_the_status_message(server, status, prop):
    srv, rec = server
    rec.answers = [(status, json.dumps({"kind": "Status", "message": f"says {status}"}).encode())]
    with pytest.raises(kubeapi.KubeError) as e:
        client(srv).patch("ConfigMap", "demo", "cm", {}, kubeapi.MERGE_PATCH)
    err = e.value
    assert (err.status, err.reason, err.verb, err.what) == (status, f"says {status}", "patch", "ConfigMap demo/cm")
    assert [p for p in ("conflict", "not_found", "forbidden", "invalid") if getattr(err, p)] == [prop]


def test_get_of_a_missing_object_is_none_and_a_2xx_that_is_not_json_is_an_error(server):
    srv, rec = server
    rec.answers = [(404, b'{"message": "configmaps \\"x\\" not found"}'), (200, b"<html>proxy</html>")]
    c = client(srv)
    assert c.get("ConfigMap", "demo", "x") is None
    with pytest.raises(kubeapi.KubeError, match="not JSON"):
        c.get("ConfigMap", "demo", "y")


def test_no_answer_is_status_none_naming_the_transport_failure_only():
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    conn = kube.Connection(f"http://127.0.0.1:{port}", urllib3.PoolManager(), lambda: {"authorization": "Bearer t0k3n"})
    with pytest.raises(kubeapi.KubeError) as e:
        kubeapi.Client(conn, timeout=2).get("Secret", "demo", "s")
    assert e.value.status is None and e.value.reason == "NewConnectionError"
    assert "t0k3n" not in str(e.value)


def test_the_request_path_never_imports_the_clients_api_classes_or_models(tmp_path):
    """The point of the helper (issue 12 §2): kubeconfig loading imports the kubernetes package, a call must not
    pull in CoreV1Api and its models (+21 MiB)."""
    code = f"""
import sys, threading, yaml
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{{}}")
    def log_message(self, *a): pass
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
import os
os.environ["EDGEGUARD_SECRETS_DIR"] = {str(tmp_path)!r}
open(os.path.join({str(tmp_path)!r}, "kc"), "w").write(yaml.safe_dump({{
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{{"name": "k", "cluster": {{"server": f"http://127.0.0.1:{{srv.server_address[1]}}"}}}}],
    "users": [{{"name": "u", "user": {{"token": "t"}}}}],
    "contexts": [{{"name": "c", "context": {{"cluster": "k", "user": "u"}}}}]}}))
from edgeguard import kubeapi
assert kubeapi.Client.for_secret("kc").get("ConfigMap", "d", "x") == {{}}
heavy = sorted(m for m in sys.modules if m.startswith(("kubernetes.client.api.", "kubernetes.client.models.")))
print(len(heavy), heavy[:5])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 "), out.stdout


def test_on_error_sees_every_failed_call_including_the_404_get_turns_into_none(server):
    srv, rec = server
    rec.answers = [(404, b"{}"), (409, b'{"message": "exists"}')]
    seen = []
    c = client(srv, on_error=lambda err: seen.append((err.verb, err.status)))
    assert c.get("Secret", "demo", "s") is None
    with pytest.raises(kubeapi.KubeError):
        c.create("Secret", "demo", {"metadata": {"name": "s"}})
    c.get("Secret", "demo", "s")  # 200: not an error
    assert seen == [("get", 404), ("create", 409)]
