"""Our runtime maps handler return values exactly as the python3-http (alpine) template does."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def _serve(tmp_path, src: Path):
    ctx = tmp_path / "ctx"
    shutil.copytree(src, ctx / "function")
    (ctx / "function" / "__init__.py").touch()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "local/runtime.py"), "--context", str(ctx), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"HOSTNAME": "probe-pod", "PATH": "/usr/bin:/bin"},
    )
    return proc, port


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    proc, port = _serve(tmp, DATA / "contract_fn")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_event_attributes_reach_the_handler(probe):
    r = requests.post(probe + "/x/y?q=1&q=2", data=b"hello", headers={"X-Probe": "p"})
    assert r.json() == {
        "method": "POST",
        "path": "/x/y",
        "query": ["1", "2"],
        "body": "hello",
        "body_type": "bytes",
        "header": "p",
        "call_id": None,
        "ua": r.json()["ua"],
    }


def test_forwarding_headers_are_dropped_as_of_watchdog_drops_them(probe):
    seen = requests.get(
        probe + "/headers",
        headers={
            "X-Forwarded-For": "198.51.100.7",
            "Forwarded": "for=x",
            "X-Forwarded-Host": "h",
            "X-Real-Ip": "198.51.100.8",
        },
    ).json()
    assert "X-Forwarded-For" not in seen["headers"] and "Forwarded" not in seen["headers"]
    assert "X-Forwarded-Host" not in seen["headers"] and seen["headers"]["X-Real-Ip"] == "198.51.100.8"


def test_context_hostname_comes_from_the_environment(probe):
    assert requests.get(probe + "/context").json() == {"hostname": "probe-pod"}


def test_none_is_an_empty_200(probe):
    r = requests.get(probe + "/none")
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (200, "", "text/html; charset=utf-8")


def test_dict_body_becomes_compact_json_with_newline(probe):
    r = requests.get(probe + "/dict-body")
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (201, '{"a":1}\n', "application/json")


def test_missing_status_is_200_and_missing_body_is_empty(probe):
    assert requests.get(probe + "/no-status").status_code == 200
    r = requests.get(probe + "/no-body")
    assert (r.status_code, r.text) == (204, "")


def test_list_body_is_python_repr_not_json(probe):
    assert requests.get(probe + "/list-body").text == "[1, 'a', None]"


def test_string_status_code_is_accepted(probe):
    assert requests.get(probe + "/str-status").status_code == 202


def test_header_list_allows_repeats_and_content_type_overrides(probe):
    assert requests.get(probe + "/list-headers").raw.headers.getlist("X-A") == ["1", "2"]
    assert requests.get(probe + "/content-type").headers["Content-Type"] == "application/json"


def test_uncaught_exception_is_flasks_html_500(probe):
    r = requests.get(probe + "/raise")
    assert r.status_code == 500 and "Internal Server Error" in r.text and "boom" not in r.text


def test_options_is_answered_without_the_handler_and_other_verbs_405(probe):
    r = requests.options(probe + "/raise")
    assert r.status_code == 200 and "POST" in r.headers["Allow"]
    assert requests.request("PROPFIND", probe + "/").status_code == 405


def test_head_calls_the_handler_without_a_body(probe):
    r = requests.head(probe + "/dict-body")
    assert r.status_code == 201 and r.content == b""


def test_top_level_edgeguard_import_fails_as_in_the_image(tmp_path):
    proc, _ = _serve(tmp_path, DATA / "bad_import_fn")
    assert proc.wait(20) != 0
    assert "import it relatively" in (tmp_path / "log").read_text()


def test_call_handler_maps_return_values_as_the_template_does(call_handler):
    """tests/conftest.py's call_handler: the one helper tests use to call handle(event, context)."""
    from tests.conftest import Answer

    assert (Answer({"statusCode": 201, "body": {"a": 1}}).status, Answer({"body": "x"}).status) == (201, 200)
    assert Answer(None).status == 200 and Answer(None).text == "" and Answer("plain").text == "plain"
    assert Answer({"statusCode": 400, "body": '{"error": "bad"}'}).json() == {"error": "bad"}

    class Probe:
        @staticmethod
        def handle(event, context):
            return {
                "statusCode": 202,
                "headers": {"X-Seen": event.headers.get("Content-Type")},
                "body": {
                    "method": event.method,
                    "path": event.path,
                    "q": event.query.get("q"),
                    "body": event.body.decode(),
                    "host": context.hostname,
                },
            }

    a = call_handler(Probe, "POST", "/x", {"k": 1}, query={"q": "v"})
    assert a.status == 202 and a.headers["X-Seen"] == "application/json"
    assert a.json() == {"method": "POST", "path": "/x", "q": "v", "body": '{"k": 1}', "host": "test"}
