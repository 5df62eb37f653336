"""What the real of-watchdog does in front of the template's index.py, where local/runtime.py differed.

Each test states one behaviour of the real runtime that the functions (and the stand-in) must live
with; README "How the OpenFaaS side is proven" lists them. They run the probe function of
tests/data/contract_fn under the watchdog.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests
import yaml

from local import components, stackfile

DATA = Path(__file__).resolve().parents[1] / "data"
SKIP = components.locate().watchdog_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture
def probe(serve_function, tmp_path):
    shutil.copytree(DATA / "contract_fn", tmp_path / "functions" / "probe")
    (tmp_path / "stack.yml").write_text(
        yaml.safe_dump(
            {
                "version": "1.0",
                "provider": {"name": "openfaas"},
                "functions": {
                    "probe": {
                        "lang": "python3-http",
                        "handler": "./functions/probe",
                        "image": "x/probe:1",
                        "environment": {"exec_timeout": "1s", "read_timeout": "5s", "write_timeout": "5s"},
                    }
                },
            }
        )
    )
    return serve_function("probe", stack=stackfile.load(tmp_path / "stack.yml"))


def test_forwarding_headers_never_reach_the_handler(probe):
    sent = {
        "X-Forwarded-For": "198.51.100.7",
        "X-Forwarded-Host": "edge.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=198.51.100.7",
        "X-Real-Ip": "198.51.100.8",
        "X-Probe": "kept",
    }
    seen = requests.get(probe.url + "/headers", headers=sent, timeout=5).json()["headers"]
    assert not {"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} & set(seen), seen
    assert seen["X-Real-Ip"] == "198.51.100.8" and seen["X-Probe"] == "kept"


def test_exec_timeout_is_an_empty_504_from_the_watchdog(probe):
    started = time.monotonic()
    r = requests.get(probe.url + "/sleep?s=3", timeout=10)
    assert (r.status_code, r.content, r.headers["X-Openfaas-Internal"]) == (504, b"", "of-watchdog")
    assert float(r.headers["X-Duration-Seconds"]) >= 1.0 and time.monotonic() - started < 2.5


def test_every_request_line_query_included_is_written_to_the_log(probe):
    assert requests.get(probe.url + "/none?secret-looking=value", timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while "GET /none?secret-looking=value - 200 OK" not in probe.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(
        r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d GET /none\?secret-looking=value - 200 OK - ContentLength: ",
        probe.logs(),
        re.M,
    )


def test_the_handlers_stderr_is_relayed_with_a_date_and_stream_prefix(probe):
    requests.get(probe.url + "/raise", timeout=5)  # Flask prints the traceback to stderr
    deadline = time.monotonic() + 5
    while "RuntimeError: boom" not in probe.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d stderr: RuntimeError: boom", probe.logs(), re.M)


def test_the_watchdog_exits_when_the_function_process_dies(probe):
    assert requests.get(probe.url + "/_/health", timeout=5).text == "OK"
    python = [p for p in Path("/proc").glob("[0-9]*") if _ppid(p) == probe.process.proc.pid]
    assert len(python) == 1
    os.kill(int(python[0].name), signal.SIGKILL)  # the function dies; the pod's PID 1 goes with it
    assert probe.process.proc.wait(10) != 0
    deadline = time.monotonic() + 5  # the log pump may still be writing the last lines
    while "Forked function has terminated" not in probe.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Forked function has terminated" in probe.logs()


def _ppid(p: Path) -> int:
    try:
        return int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_health_says_ok_before_the_function_listens_so_readiness_waits_for_the_function(tmp_path, function_runtime):
    fn_dir = tmp_path / "functions" / "slow-start"
    fn_dir.mkdir(parents=True)
    (fn_dir / "handler.py").write_text(
        "import time\ntime.sleep(1.5)  # a slow import, like loading rules\n\n"
        "def handle(event, context):\n    return {'statusCode': 200, 'body': 'up'}\n"
    )
    (fn_dir / "requirements.txt").write_text("")
    (tmp_path / "stack.yml").write_text(
        yaml.safe_dump(
            {
                "version": "1.0",
                "provider": {"name": "openfaas"},
                "functions": {
                    "slow-start": {"lang": "python3-http", "handler": "./functions/slow-start", "image": "x/s:1"}
                },
            }
        )
    )
    stack = stackfile.load(tmp_path / "stack.yml")
    ctx = function_runtime.build_contexts(stack, tmp_path / "build")["slow-start"]
    env = function_runtime.base_env(stack.functions["slow-start"])
    process = function_runtime.process("slow-start", ctx, env, tmp_path / "slow.log", scratch=tmp_path)
    try:
        process.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(process.url + "/_/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.02)
        with pytest.raises(requests.ConnectionError):  # the watchdog is healthy; waitress is not listening yet
            requests.get(f"http://127.0.0.1:{process.upstream_port}/", timeout=1)
        process.wait_ready(time.monotonic() + 20)
        assert requests.get(process.url + "/", timeout=5).text == "up"
    finally:
        process.stop()


def test_no_body_limit_at_the_watchdog_but_headers_over_1_mib_get_its_431(probe):
    big = b"x" * (13 << 20)  # above audit-ingest's 12 MiB max_body_bytes: that limit is the function's own
    r = requests.post(probe.url + "/", data=big, timeout=60)
    assert r.status_code == 200 and len(r.json()["body"]) == len(big)
    r = requests.get(probe.url + "/headers", headers={"X-Big": "a" * (2 << 20)}, timeout=10)
    assert r.status_code == 431 and "Request Header Fields Too Large" in r.text
