"""`make up` (python -m local.gateway) serves in the foreground and stops cleanly on SIGTERM."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from local import gateway, runs, stackfile

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def test_gateway_serves_until_sigterm_and_prints_how_to_curl_it():
    port = gateway.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.gateway", "--port", str(port), "--kube", "none"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("gateway did not come up")
        r = requests.post(
            f"http://127.0.0.1:{port}/function/audit-ingest", data=b"{}", headers={"Content-Type": "application/json"}
        )
        assert r.headers["Content-Type"].startswith("application/json")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert f"http://127.0.0.1:{port}" in out and "curl" in out
        assert "audit-ingest-token)" in out  # tells where the token is, never the token itself
        runtime = gateway.launch.Runtime()
        assert f"  runtime: {'real: of-watchdog' if runtime.watchdog else 'stand-in: local/runtime.py'}" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_functions_die_with_a_killed_gateway(tmp_path):
    port = gateway.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.gateway", "--port", str(port), "--kube", "none"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/system/functions", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        children = _descendants(proc.pid)  # under of-watchdog: the watchdogs and their python index.py
        assert children, "the gateway should have started function processes"
        if gateway.launch.Runtime().watchdog:
            assert any(_cmdline(c) == "python index.py" for c in children), [_cmdline(c) for c in children]
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() and _state(c) != "Z" for c in children):
            time.sleep(0.1)
        assert not [c for c in children if Path(f"/proc/{c}").exists() and _state(c) != "Z"]
    finally:
        if proc.poll() is None:
            proc.kill()


def _descendants(pid: int) -> list[str]:
    found, frontier = [], {pid}
    while frontier:
        kids = [p.parent.name for p in Path("/proc").glob("[0-9]*/stat") if _ppid(p) in frontier]
        found += kids
        frontier = {int(k) for k in kids}
    return found


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _ppid(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _start_up(port: int, state: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.gateway",
            "--port",
            str(port),
            "--kube",
            "none",
            "--state-dir",
            str(state),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"make up did not come up: {proc.communicate()[0][-3000:]}")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)[0]


@pytest.mark.slow
def test_a_second_run_says_who_is_running_and_keeps_to_its_own_state_folder(tmp_path):
    """Issue 15 §1: runs beside each other do not share a folder; a run names the other before it starts."""
    first_port, second_port = gateway.free_port(), gateway.free_port()
    first = _start_up(first_port, tmp_path / "first")
    try:
        run = runs.read(tmp_path / "first")
        assert run is not None and (run.pid, run.port) == (first.pid, first_port)
        # the same folder: refused before anything starts, naming the holder
        same = subprocess.run(
            [
                sys.executable,
                "-m",
                "local.gateway",
                "--port",
                str(second_port),
                "--kube",
                "none",
                "--state-dir",
                str(tmp_path / "first"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert same.returncode == 1 and "Traceback" not in same.stdout + same.stderr
        assert f"python -m local.gateway is running (pid {first.pid}, port {first_port})" in same.stderr
        assert "STATE_DIR=" in same.stderr
        # the same port: refused, naming the holder
        port_taken = subprocess.run(
            [
                sys.executable,
                "-m",
                "local.gateway",
                "--port",
                str(first_port),
                "--kube",
                "none",
                "--state-dir",
                str(tmp_path / "third"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert port_taken.returncode == 1
        assert (
            f"port {first_port} on 127.0.0.1 is in use by python -m local.gateway (pid {first.pid}" in port_taken.stderr
        )
        # another folder and port: it says who else runs, first, and then starts
        second = _start_up(second_port, tmp_path / "second")
        out = _stop(second)
        assert out.splitlines()[0] == (
            f"note: python -m local.gateway is running (pid {first.pid}, port {first_port}), "
            f"state in {tmp_path / 'first'}"
        )
        assert (tmp_path / "second" / "secrets" / "audit-ingest-token").read_text() != (
            tmp_path / "first" / "secrets" / "audit-ingest-token"
        ).read_text()
    finally:
        _stop(first)
    assert runs.read(tmp_path / "first") is None and not (tmp_path / "first" / "run.json").exists()


def test_runs_default_to_a_folder_per_port_under_the_state_root(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.STATE_ROOT_ENV, str(tmp_path))
    assert gateway.LocalStack(18123, kube="none").state_dir == tmp_path / "18123"
    # the suite itself runs with its own root, never the checkout's .local-state (tests/conftest.py)
    monkeypatch.undo()
    assert runs.state_root() != ROOT / ".local-state" and runs.state_root().is_dir()


def test_a_function_that_exits_at_start_up_has_its_last_log_lines_printed(tmp_path):
    (tmp_path / "functions" / "broken").mkdir(parents=True)
    (tmp_path / "functions" / "broken" / "handler.py").write_text(
        'import sys\nprint("opening the spool", file=sys.stderr)\n'
        'raise RuntimeError("SpoolBusy: another process holds the spool lock")\n'
    )
    (tmp_path / "stack.yml").write_text(
        yaml.safe_dump(
            {
                "version": "1.0",
                "provider": {"name": "openfaas"},
                "functions": {"broken": {"lang": "python3-http", "handler": "./functions/broken", "image": "x/b:1"}},
            }
        )
    )
    stack = gateway.LocalStack(
        gateway.free_port(), state_dir=tmp_path / "state", kube="none", stack=stackfile.load(tmp_path / "stack.yml")
    )
    with pytest.raises(RuntimeError) as err:
        stack.start()
    message = str(err.value)
    assert message.startswith("function broken exited with ") and "at start-up; the last lines of" in message
    assert "opening the spool" in message and "RuntimeError: SpoolBusy: another process holds the spool lock" in message
    assert runs.read(tmp_path / "state") is None  # the failed run released its folder


@pytest.mark.parametrize("command", [["make", "-s", "demo", "PORT=abc"], ["make", "-s", "up", "PORT=70000"]])
def test_a_bad_port_is_a_one_line_error_not_a_traceback(command):
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "PORT must be a number from 1 to 65535" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_make_help_lists_every_target():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert [t for t in phony if f"make {t} " not in out] == [], out
    assert "PORT=" in out and "STATE_DIR=" in out and "KUBE=" in out and "SCRUBBER_MODE=" in out


def test_a_run_is_named_as_the_user_started_it(monkeypatch):
    monkeypatch.delenv(runs.RUN_KIND_ENV, raising=False)
    assert runs.kind("local.gateway") == "python -m local.gateway"
    monkeypatch.setenv(runs.RUN_KIND_ENV, "make up")  # what the Makefile's up recipe sets
    assert runs.kind("local.gateway") == "make up"
    assert "EDGEGUARD_RUN_KIND='make up'" in (ROOT / "Makefile").read_text()
