"""``make lint``: ruff (lint and format check) and mypy over the tree, findings listed per owner.

mypy checks ``edgeguard/`` and ``local/`` in place (pyproject.toml's ``[tool.mypy] files``), and each
function's domain modules where they run: in its build context, as the package ``function`` with its copy
of ``edgeguard`` (the folders under functions/ have hyphens and import the package relatively, so they
cannot be checked in place). A finding in a context is reported at its source path.

``python -m local.lint [--owner NAME]``; exit 1 when anything is found.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from . import buildctx, stackfile

ROOT = stackfile.ROOT
BIN = Path(sys.executable).parent
# Who owns which files (the wave-3 split); the first match wins.
OWNERS = [
    (
        r"^functions/audit-ingest/|^tests/audit_ingest/(test_handler|test_handoff|test_served|test_concurrency|"
        r"test_ruleset_reload)",
        "audit-owner",
    ),
    (r"^functions/configmap-secret-scrubber/(detect|shapes|formats|gitleaks)\.py|^tests/scrubber/test_detect", "lead"),
    (
        r"^functions/alert-forwarder/|^edgeguard/routing/|^edgeguard/(auth|config)\.py|^tests/alert_forwarder/",
        "forwarder-owner",
    ),
    (r"^functions/configmap-secret-scrubber/|^edgeguard/kube(api)?\.py|^tests/scrubber/", "scrubber-owner"),
    (r"^functions/node-enroll/|^tests/node_enroll/", "enroll-owner"),
    (r"^bootstrap/|^tests/bootstrap/|^docs/bootstrap", "edge-bootstrap"),
    (
        r"^local/|^Makefile|^\.ci/|^bench/(__main__|memory|fuzz|workloads|coldstart|gateway|kubeemu)\.py|"
        r"^tests/(foundation|kubeemu)/|^tests/(conftest|fuzzing|leaks)\.py",
        "platform",
    ),
]
_FINDING = re.compile(r"^(?P<path>[^:\s]+\.py):(?P<line>\d+):(?:\d+:)? (?P<text>.*)$")


def owner(path: str) -> str:
    return next((who for pattern, who in OWNERS if re.search(pattern, path)), "lead")


def _run(cmd: list[str], cwd: Path = ROOT) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return proc.stdout + proc.stderr


def ruff(root: Path = ROOT) -> list[tuple[str, str]]:
    found = []
    for line in _run([str(BIN / "ruff"), "check", "--output-format", "concise", "."], cwd=root).splitlines():
        m = _FINDING.match(line)
        if m:
            found.append((m["path"], f"{m['line']}: ruff {m['text']}"))
    # Concise output names each file as path:line:col (ruff >= 0.9 no longer prints "Would reformat: path").
    fmt = [str(BIN / "ruff"), "format", "--check", "--output-format", "concise", "."]
    for line in _run(fmt, cwd=root).splitlines():
        m = _FINDING.match(line)
        if m:
            found.append((m["path"], "ruff format: would reformat"))
        elif line.startswith("Would reformat: "):
            found.append((line.split(": ", 1)[1].strip(), "ruff format: would reformat"))
    return found


def mypy() -> list[tuple[str, str]]:
    found = []
    for line in _run([str(BIN / "mypy")]).splitlines():
        m = _FINDING.match(line)
        if m and " error: " in f" {m['text']}":
            found.append((m["path"], f"{m['line']}: mypy {m['text']}"))
    stack = stackfile.load()
    with tempfile.TemporaryDirectory(prefix="edgeguard-lint-") as tmp:
        for name, fn in stack.functions.items():
            ctx = buildctx.assemble(fn, stack, Path(tmp))
            out = _run([str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), "-p", "function"], cwd=ctx)
            for line in out.splitlines():
                m = _FINDING.match(line)
                if not m or "error:" not in m["text"] or m["path"].startswith("function/edgeguard/"):
                    continue  # the edgeguard copy is checked in place
                found.append(
                    (m["path"].replace("function/", f"functions/{name}/", 1), f"{m['line']}: mypy {m['text']}")
                )
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owner", help="only this owner's findings")
    parser.add_argument("--summary", action="store_true", help="counts per owner and file only")
    args = parser.parse_args(argv)
    by_owner: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, text in ruff() + mypy():
        by_owner[owner(path)][path].append(text)
    total = 0
    for who in sorted(by_owner):
        if args.owner and who != args.owner:
            continue
        files = by_owner[who]
        n = sum(len(v) for v in files.values())
        total += n
        print(f"== {who}: {n} finding(s) in {len(files)} file(s)")
        for path in sorted(files):
            if args.summary:
                print(f"   {len(files[path]):4d}  {path}")
            else:
                for text in files[path]:
                    print(f"   {path}:{text}")
    print(f"lint: {total} finding(s)" if total else "lint: clean")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
