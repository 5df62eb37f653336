"""Run a join script with bash against a fake PATH of recording executables.

PATH holds only the fakes, so any command the script did not declare fails
loudly instead of touching this machine.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

RECORDER = r"""#!/bin/bash
# Fake {name}: records argv (tab-separated) and, for sh, the environment it got and its stdin; for
# edgeguard-bootstrap, its stdin (the node's alert token).
log="$FAKE_LOG"
printf '%s' "{name}" >> "$log"
for a in "$@"; do printf '\t%s' "$a" >> "$log"; done
printf '\n' >> "$log"
{body}
"""

BODIES = {
    "id": 'printf "%s\\n" "${FAKE_UID:-0}"',
    "curl": r"""
if [ -n "${FAKE_CURL_FAIL:-}" ]; then exit 22; fi
printf '#!/bin/sh\n# fake k3s installer\n'
""",
    "sh": r"""
IFS= read -r -d '' input || true
printf 'K3S_URL=%s\nK3S_TOKEN=%s\nINSTALL_K3S_EXEC=%s\nINSTALL_K3S_VERSION=%s\nINSTALL_K3S_CHANNEL=%s\n' \
  "${K3S_URL-}" "${K3S_TOKEN-}" "${INSTALL_K3S_EXEC-}" "${INSTALL_K3S_VERSION-}" "${INSTALL_K3S_CHANNEL-}" \
  >> "$FAKE_ENV"
printf '%s' "$input" > "$FAKE_ENV.stdin"
exit "${FAKE_SH_RC:-0}"
""",
    "systemctl": 'exit "${FAKE_SYSTEMCTL_RC:-0}"',
    "edgeguard-bootstrap": r"""
IFS= read -r -d '' input || true
printf '%s' "$input" > "$FAKE_ENV.bootstrap-stdin"
exit 0
""",
}


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    calls: list
    env: dict


def run_script(script: str, tmp: Path, *, extra_env: dict | None = None, shell: str | None = None) -> Run:
    fakes = tmp / "fakebin"
    fakes.mkdir(exist_ok=True)
    for name, body in BODIES.items():
        p = fakes / name
        p.write_text(RECORDER.replace("{name}", name).replace("{body}", body))
        p.chmod(0o755)
    log, envf = tmp / "calls.log", tmp / "sh-env.log"
    for f in (log, envf):
        f.write_text("")
    script_path = tmp / "join.sh"
    script_path.write_text(script)
    env = {"PATH": str(fakes), "FAKE_LOG": str(log), "FAKE_ENV": str(envf), "HOME": str(tmp)}
    env.update(extra_env or {})
    shell = shell or ("/bin/bash" if os.path.exists("/bin/bash") else "/usr/bin/bash")
    proc = subprocess.run([shell, str(script_path)], cwd=tmp, env=env, capture_output=True, text=True, timeout=30)
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    sh_env = {}
    for line in envf.read_text().splitlines():
        k, _, v = line.partition("=")
        sh_env.setdefault(k, v)
    stdin = Path(str(envf) + ".stdin")
    sh_env["STDIN"] = stdin.read_text() if stdin.exists() else None
    bootstrap_stdin = Path(str(envf) + ".bootstrap-stdin")
    sh_env["BOOTSTRAP_STDIN"] = bootstrap_stdin.read_text() if bootstrap_stdin.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, calls, sh_env)
