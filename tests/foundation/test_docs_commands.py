"""Every shell command in README.md and docs/ works when copied (issue 15 §5).

Each command of a fenced ``sh`` block is accounted for here, one of:

* **run**: the ``make up`` blocks are executed as written by bash against a running local stack: in a scratch
  folder laid out like the checkout (``tests/``, ``functions/``, ``.venv`` linked in) whose
  ``.local-state/8080`` is that stack's state folder, on port 8080 when it is free (in CI), else with
  ``127.0.0.1:8080`` pointed at the stack's port. ``curl`` is wrapped with ``--fail-with-body``, so an HTTP
  error fails the block; ``kubectl`` and ``faas-cli`` are the real ones;
* **tested**: another test runs the same command (the file is named and must hold the words given);
* **not here**: it needs a real edge node (installing k3s, arkade, OpenFaaS), so no test can run it; the reason
  says what stands in for it.

A new command in the docs fails this test until it is accounted for.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from local import components, gateway

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NODE = "not here: needs a real k3s edge node (sudo, the internet); bootstrap's plan for it is tested in tests/bootstrap"

# (pattern matched against the command, how it is exercised)
ACCOUNTED = [
    (r"^make demo\b", "tested: tests/foundation/test_demo.py: make"),
    (r"^make test\b", "tested: .ci/run: make test"),
    (r"^make up SCRUBBER_MODE=move$", "tested: tests/foundation/test_docs_commands.py: SCRUBBER_MODE=move"),
    (r"^make up$", "tested: tests/foundation/test_make_up.py: local.gateway"),
    (r"^\.venv/bin/python -m pytest ", "tested: .ci/run: make test"),
    (
        r"EDGEGUARD_TOOLS=\S+ \.venv/bin/python -m pytest tests/bootstrap/test_audit_flow_real\.py",
        "tested: .ci/run: make test",
    ),
    (
        r"127\.0\.0\.1:8080|\.local-state/8080|^export KUBECONFIG=\$PWD/\.local-state|"
        r"^kubectl create configmap aws-creds",
        "run",
    ),
    (r"^\.venv/bin/edgeguard-rules (validate|list|replay)\b", "tested: tests/audit_ingest/test_cli.py: replay"),
    (r"^\.venv/bin/edgeguard-routes (validate|explain)\b", "tested: tests/alert_forwarder/test_routes.py: routing"),
    (r"^faas-cli secret create ", NODE),
    (
        r"^curl -sfL https://get\.k3s\.io|^sudo k3s |^curl -sSL https://get\.arkade\.dev|^arkade |^mkdir -p ~/\.kube|"
        r"^export KUBECONFIG=~/\.kube|^kubectl rollout status -n openfaas|^PASSWORD=\$\(kubectl|"
        r"^echo -n \"\$PASSWORD\"|"
        r"^cd edgeguard$|^faas-cli template pull stack$|^OPENFAAS_URL=\S+ faas-cli up",
        NODE,
    ),
    (r"^sudo -E bootstrap/edgeguard-bootstrap openfaas\b", "tested: tests/bootstrap/test_openfaas.py: openfaas"),
    (r"^sudo -E bootstrap/edgeguard-bootstrap preflight\b", "tested: tests/bootstrap/test_preflight.py: preflight"),
    (r"^sudo -E bootstrap/edgeguard-bootstrap all\b", "tested: tests/bootstrap/test_all_and_revert.py: dry"),
    (r"^sudo -E bootstrap/edgeguard-bootstrap k3s-audit\b", "tested: tests/bootstrap/test_k3s_audit.py: k3s-audit"),
    (
        r"^\.venv/bin/python -c 'from bench\.\w+ import compare_clients",
        "not here: a benchmark (figures are measured by hand, never in a test); bench/ runs under make bench",
    ),
    (r"^tail -f audit\.log \| \.venv/bin/edgeguard-rules replay -$", "tested: tests/audit_ingest/test_cli.py: stdin"),
]
# Whole blocks, by their first command: examples whose every line is accounted for the same way.
BLOCKS = [
    (
        "docs/configmap-secret-scrubber.md",
        r"^for ns in default demo team-a; do$",
        "tested: tests/scrubber/test_rbac.py: __NAMESPACE__",
    ),
    ("docs/node-enroll.md", r"^body='\{\"hostname\"", "tested: tests/node_enroll/test_client.py: signature"),
    ("docs/node-enroll.md", r"^python3 edgeguard-enroll\.py ", "tested: tests/node_enroll/test_client.py: client"),
    ("docs/node-enroll.md", r"^set -eu$", "tested: tests/node_enroll/test_join_script.py: K3S_TOKEN"),
]


def doc_blocks() -> list[tuple[Path, int, str]]:
    """(file, first line, text) of every fenced sh/bash/shell block."""
    out = []
    for doc in DOCS:
        lines, block, start = doc.read_text().splitlines(), None, 0
        for i, line in enumerate(lines, 1):
            fence = re.match(r"^\s*```(\S*)", line)
            if fence and block is None:
                block, start, lang = [], i + 1, fence.group(1)
            elif fence:
                if lang in ("sh", "bash", "shell", "console"):
                    out.append((doc, start, "\n".join(block)))
                block = None
            elif block is not None:
                block.append(line)
    return out


def commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line.strip()) if not line.strip().startswith("#") else ""
        if line:
            cmds.append(line)
    return cmds


def how(cmd: str, doc: Path | None = None, first: str | None = None) -> list[str]:
    if doc is not None and first is not None:
        for path, pattern, h in BLOCKS:
            if str(doc.relative_to(ROOT)) == path and re.search(pattern, first):
                return [h]
    return [h for pattern, h in ACCOUNTED if re.search(pattern, cmd)]


def _accounted() -> list[tuple[str, str, str]]:
    out = []
    for doc, line, text in doc_blocks():
        cmds = commands(text)
        for cmd in cmds:
            out.append((f"{doc.relative_to(ROOT)}:{line}", cmd, ";".join(sorted(set(how(cmd, doc, cmds[0]))))))
    return out


def test_every_documented_command_is_run_tested_or_says_why_not():
    unaccounted, ambiguous = [], []
    for doc, line, text in doc_blocks():
        cmds = commands(text)
        for cmd in cmds:
            found = how(cmd, doc, cmds[0])
            if not found:
                unaccounted.append(f"{doc.relative_to(ROOT)}:{line}: {cmd[:120]}")
            elif len(set(found)) > 1:
                ambiguous.append(f"{doc.relative_to(ROOT)}:{line}: {cmd[:120]} -> {found}")
    assert unaccounted == [] and ambiguous == [], "\n".join(unaccounted + ambiguous)


def test_no_documented_command_is_left_for_its_owner_to_fix():
    left = [f"{where}: {cmd[:100]} ({h})" for where, cmd, h in _accounted() if h.startswith("owner to fix")]
    assert left == [], "\n".join(left)


def test_the_tests_named_for_documented_commands_exist_and_run_them():
    for h in [h for _, h in ACCOUNTED] + [h for _, _, h in BLOCKS]:
        if h.startswith("tested: "):
            path, words = h[len("tested: ") :].split(": ", 1)
            assert (ROOT / path).is_file(), path
            assert words in (ROOT / path).read_text(), (path, words)


def test_cli_commands_in_the_docs_use_the_venv_path():
    """`edgeguard-rules` and `edgeguard-routes` are in .venv/bin, not on a new user's PATH."""
    bare = [
        (doc.name, cmd)
        for doc, _, text in doc_blocks()
        for cmd in commands(text)
        if re.search(r"(^|[|;&]\s*)edgeguard-(rules|routes)\b", cmd)
    ]
    assert bare == []


# --- the make up blocks, run as written -----------------------------------------------------------------
def _port_8080_free() -> bool:
    # Under pytest-xdist each worker may set up this module's stack at the same moment: only the first worker
    # tries 8080, the others take a free port (the commands are rewritten to it either way).
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    port = 8080 if _port_8080_free() else gateway.free_port()
    state = tmp_path_factory.mktemp("docs-up") / "state"
    stack = gateway.LocalStack(port, state_dir=state, kube="emulator", audit_webhook=True, kind="make up (docs test)")
    stack.start()
    work = tmp_path_factory.mktemp("docs-checkout")
    for name in ("tests", "functions", "bootstrap", "deploy", "stack.yml"):
        os.symlink(ROOT / name, work / name)
    os.symlink(Path(sys.prefix), work / ".venv")
    (work / ".local-state").mkdir()
    os.symlink(state, work / ".local-state" / "8080")
    # docs/alert-forwarder.md posts the user's own alert.json: one Falco alert
    (work / "alert.json").write_text(
        '{"hostname":"pi-01","output":"10:11:12.123456789: Notice A shell was spawned","output_fields":'
        '{"container.name":"nginx"},"priority":"Notice","rule":"Terminal shell in container","source":"syscall",'
        '"tags":["shell"],"time":"2026-11-26T10:11:12.123456789Z"}'
    )
    yield stack, work
    stack.stop()


def _run_block(stack, work: Path, text: str):
    if stack.port != 8080:
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{stack.port}")
    # A block that starts with `make up` means "with make up running": here it is the test's stack.
    text = re.sub(r"(?m)^make up\b.*$", ": make up is running", text)
    faas_cli = components.locate().faas_cli
    path = ([str(faas_cli.parent)] if faas_cli else []) + [os.environ.get("PATH", "")]
    script = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n' + text + "\n"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PATH=os.pathsep.join(path)),
    )


def _up_blocks() -> list[tuple[str, str]]:
    return [
        (f"{doc.relative_to(ROOT)}:{line}", text)
        for doc, line, text in doc_blocks()
        if any(h == "run" for cmd in commands(text) for h in how(cmd))
    ]


def _up_params():
    return [pytest.param(w, t, id=w) for w, t in _up_blocks()]


@pytest.mark.parametrize("where,text", _up_params())
def test_make_up_block_runs_as_written(up, where, text):
    stack, work = up
    if "kubectl " in text and shutil.which("kubectl") is None:
        pytest.skip("needs real component: kubectl (the README's block calls it)")
    if "faas-cli " in text and components.locate().faas_cli is None:
        pytest.skip(components.needs_real("faas-cli (EDGEGUARD_TOOLS / make FAAS_CLI=)"))
    proc = _run_block(stack, work, text)
    for _ in range(4):  # what the block set off (audit events, hand-offs through the queue) lands in this test
        stack.emulator.flush_audit(10)
        stack.drain_async(15)
        time.sleep(0.5)
    assert proc.returncode == 0, f"{where}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_make_up_scrubber_mode_move_runs_the_scrubber_in_move_mode(tmp_path):
    """README: `make up SCRUBBER_MODE=move` (run through make, as written, plus a free port and folder)."""
    port = gateway.free_port()
    proc = subprocess.Popen(
        ["make", "-s", "up", "SCRUBBER_MODE=move", f"PORT={port}", f"STATE_DIR={tmp_path}", "KUBE=none"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, found = time.monotonic() + 120, None
        while time.monotonic() < deadline and found is None and proc.poll() is None:
            for env in _environs(proc.pid):
                if env.get("OPENFAAS_NAME") == "configmap-secret-scrubber" and "scrub_mode" in env:
                    found = env["scrub_mode"]
            time.sleep(0.2)
        assert found == "move"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # make up prints its summary once the gateway listens
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "configmap-secret-scrubber: scrub_mode=move" in out, out[-2000:]


def _environs(pid: int) -> list[dict]:
    from bench.memory import descendants

    out = []
    for child in descendants(pid):
        try:
            raw = Path(f"/proc/{child}/environ").read_bytes()
        except (OSError, ValueError):
            continue
        out.append(dict(kv.split("=", 1) for kv in raw.decode("utf-8", "replace").split("\0") if "=" in kv))
    return out
