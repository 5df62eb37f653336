"""The local gateway offers the OpenFaaS CE routes our functions and users rely on."""

import http.client
import json
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from local import gateway, stackfile

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    for name in ("probe", "slow"):
        shutil.copytree(DATA / "contract_fn", tmp / "functions" / name)
    (tmp / "shared").mkdir()
    (tmp / "shared" / "__init__.py").touch()
    doc = {
        "version": "1.0",
        "provider": {"name": "openfaas"},
        "configuration": {"copy": ["./shared"]},
        "functions": {
            "probe": {
                "lang": "python3-http",
                "handler": "./functions/probe",
                "image": "x/probe:1",
                "environment": {"exec_timeout": "5s"},
                "secrets": ["probe-token"],
            },
            "slow": {
                "lang": "python3-http",
                "handler": "./functions/slow",
                "image": "x/slow:1",
                "environment": {"exec_timeout": "1s"},
            },
        },
    }
    (tmp / "stack.yml").write_text(yaml.safe_dump(doc))
    ls = gateway.LocalStack(
        port=gateway.free_port(), state_dir=tmp / "state", kube="none", stack=stackfile.load(tmp / "stack.yml")
    )
    ls.start()
    yield ls
    ls.stop()


def test_healthz(stack):
    assert requests.get(stack.url + "/healthz").status_code == 200


def test_sync_route_passes_path_query_body_and_call_id(stack):
    r = requests.post(stack.url + "/function/probe/a/b?q=1", data=b"x", headers={"X-Probe": "1"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["path"] == "/a/b" and body["query"] == ["1"] and body["body"] == "x" and body["header"] == "1"
    assert body["call_id"] == r.headers["X-Call-Id"]


def test_unknown_function_is_404(stack):
    assert requests.get(stack.url + "/function/nope").status_code == 404


def test_exec_timeout_gives_504_like_the_watchdog(stack):
    r = requests.get(stack.url + "/function/slow/sleep?s=3")
    # from the real watchdog, or from the gateway standing in for it: the same empty 504
    assert r.status_code == 504 and r.headers["X-OpenFaaS-Internal"] == "of-watchdog" and r.content == b""


def test_function_sees_only_its_own_secrets(stack):
    mounted = {p.name for p in stack.functions["probe"].secrets_dir.iterdir()}
    assert mounted == {"probe-token"}
    assert not any(stack.functions["slow"].secrets_dir.iterdir())
    assert (stack.store.path("probe-token").stat().st_mode & 0o777) == 0o600


class _Callback(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        _Callback.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_async_route_answers_202_and_calls_back(stack):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = requests.post(
            stack.url + "/async-function/probe/cb",
            data=b"payload",
            headers={"X-Callback-Url": f"http://127.0.0.1:{srv.server_port}/done"},
        )
        assert r.status_code == 202 and r.content == b"" and r.headers["X-Call-Id"]
        deadline = time.monotonic() + 10
        while not _Callback.received and time.monotonic() < deadline:
            time.sleep(0.05)
        headers, body = _Callback.received[0]
        assert headers["X-Call-Id"] == r.headers["X-Call-Id"]
        assert headers["X-Function-Status"] == "200" and headers["X-Function-Name"] == "probe"
        assert b'"body":"payload"' in body and b'"method":"POST"' in body
    finally:
        srv.shutdown()


def test_async_refuses_bodies_over_the_ce_limit(stack):
    r = requests.post(stack.url + "/async-function/probe", data=b"x" * 256_001)
    assert r.status_code == 500 and "too large for OpenFaaS CE" in r.text


def test_async_is_post_only(stack):
    assert requests.get(stack.url + "/async-function/probe").status_code == 405


def test_system_functions_needs_basic_auth(stack):
    assert requests.get(stack.url + "/system/functions").status_code == 401
    bad = requests.get(stack.url + "/system/functions", auth=("admin", "wrong"))
    assert bad.status_code == 401
    ok = requests.get(stack.url + "/system/functions", auth=("admin", stack.secret("basic-auth-password")))
    assert ok.status_code == 200
    assert {f["name"] for f in ok.json()} == {"probe", "slow"}


def _wait_for(path: Path, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if re.search(pattern, text, re.M):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path}:\n{path.read_text()[-2000:]}")


def test_access_log_has_method_full_url_and_status_like_the_real_gateway(stack):
    requests.post(stack.url + "/function/probe/a/b?q=1&x=y", data=b"x")
    # faas gateway LoggingNotifier: log.Printf("Forwarded [%s] to %s - [%d] - %.4fs", method, r.URL.String(), ...)
    _wait_for(
        stack.access_log,
        r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d Forwarded \[POST\] to /function/probe/a/b\?q=1&x=y "
        r"- \[200\] - \d+\.\d{4}s$",
    )


def test_queue_worker_logs_each_message_with_its_headers_and_the_gateway_logs_its_call(stack):
    r = requests.post(stack.url + "/async-function/probe/queued?q=2", data=b'{"a":1}', headers={"X-Probe": "seen"})
    assert r.status_code == 202 and stack.drain_async()
    text = _wait_for(stack.queue_log, r"^Invoked: probe \[200\] in [0-9.]+s$")
    received = [ln for ln in text.splitlines() if ln.startswith("[#") and '\\"X-Probe\\":[\\"seen\\"]' in ln]
    assert len(received) == 1 and received[0].split("]", 1)[1].startswith(" Received on [faas-request]: 'sequence:")
    assert f'\\"X-Call-Id\\":[\\"{r.headers["X-Call-Id"]}\\"]' in received[0]
    assert '\\"Path\\":\\"/queued\\"' in received[0] and '\\"QueryString\\":\\"q=2\\"' in received[0]
    assert '\\"Body\\":\\"eyJhIjoxfQ==\\"' in received[0]  # nats-queue-worker's JSON carries the body base64-encoded
    assert "Invoking: probe, 7 bytes." in text
    _wait_for(stack.access_log, r"Forwarded \[POST\] to /async-function/probe/queued\?q=2 - \[202\] - ")
    _wait_for(stack.access_log, r"Forwarded \[POST\] to /function/probe/queued\?q=2 - \[200\] - ")


def test_a_token_in_a_url_is_found_in_the_gateway_and_watchdog_logs(stack):
    """The leak check (run after every test, tests/conftest.py) reads both logs and names the secret, not its value."""
    token = stack.secret("probe-token")
    requests.get(stack.url + f"/function/probe/none?token={token}")
    time.sleep(0.2)
    leaks = stack.leak_watch().check()  # consumes these lines, so the after-test check does not fail this test
    where = {(leak.secret, leak.file, leak.form) for leak in leaks}
    assert ("probe-token", "gateway.log", "as written") in where
    if gateway.launch.Runtime().watchdog:  # of-watchdog logs every request URI
        assert ("probe-token", "probe.log", "as written") in where
    assert not any(token in str(leak) for leak in leaks)


def _raw(stack, method: str, path: str, headers: list) -> tuple[int, list, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("value", [b"\x85abc", b"\xa0abc", b"ok\x85"])
def test_a_header_value_with_a_non_ascii_byte_reaches_the_function_as_sent(stack, value):
    """Go's gateway accepts any octet but CR, LF and NUL in a value; Python's `requests` called \\x85 and \\xa0
    whitespace and the gateway answered an HTML 500 (issue 17 §9)."""
    status, headers, body = _raw(stack, "GET", "/function/probe/headers", [("X-Odd", value)])
    assert status == 200, body
    assert json.loads(body)["headers"]["X-Odd"] == value.decode("latin-1")


def test_a_trailing_slash_after_the_function_name_is_passed_on_as_the_real_gateway_does(stack):
    """faas gateway/main.go registers /function/{name}/ too: the function gets / (issue 17 §9)."""
    r = requests.post(stack.url + "/function/probe/?q=7", data=b"x")
    assert r.status_code == 200 and r.json()["path"] == "/" and r.json()["query"] == ["7"]
    assert requests.post(stack.url + "/async-function/probe/", data=b"x").status_code == 202


def test_repeated_header_lines_reach_the_function_line_by_line(stack):
    """Go's proxy copies every value of a header; a WSGI server had joined them into one line (issue 17 §9)."""
    seen = []
    ready = threading.Event()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def capture():
        ready.set()
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            seen.extend(data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n")

    t = threading.Thread(target=capture, daemon=True)
    t.start()
    ready.wait()
    process = stack.functions["probe"].process
    real_port = process.port
    process.port = srv.getsockname()[1]  # the probe's address, for this one call, is the capturing socket
    try:
        status, headers, _ = _raw(
            stack, "GET", "/function/probe/dup", [("X-Dup", "1"), ("X-Dup", "2"), ("Cookie", "a=1"), ("Cookie", "b=2")]
        )
    finally:
        process.port = real_port
        srv.close()
    t.join(5)
    assert status == 200
    assert [h for h in seen if h.lower().startswith(b"x-dup:")] == [b"X-Dup: 1", b"X-Dup: 2"]
    assert [h for h in seen if h.lower().startswith(b"cookie:")] == [b"Cookie: a=1", b"Cookie: b=2"]
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1", "b=2"]  # and back, line by line


def test_an_unknown_route_is_muxs_plain_404(stack):
    r = requests.get(stack.url + "/nothing/here")
    assert (r.status_code, r.text) == (404, "404 page not found\n")


def test_every_function_of_stack_yml_serves_metrics_to_the_read_only_metrics_token(tmp_path):
    """stack.yml mounts edgeguard-metrics-token into every function (bootstrap creates it), and each one's code
    reads it there: Prometheus's one token scrapes all four, and a wrong one is refused."""
    real = stackfile.load()
    assert [n for n, fn in real.functions.items() if "edgeguard-metrics-token" not in fn.secrets] == []
    with gateway.LocalStack(gateway.free_port(), state_dir=tmp_path / "state", kube="emulator") as ls:
        reader = ls.store.get("edgeguard-metrics-token")
        for name in real.functions:
            url = f"{ls.url}/function/{name}/metrics"
            r = requests.get(url, headers={"Authorization": f"Bearer {reader}"}, timeout=10)
            assert r.status_code == 200 and "edgeguard_" in r.text, (name, r.status_code, r.text[:200])
            wrong = requests.get(url, headers={"Authorization": "Bearer not-the-metrics-token"}, timeout=10)
            assert wrong.status_code == 401, (name, wrong.status_code)
