"""The bench harnesses measure what they say: memory per process under the watchdog, fuzz requests per route.

No figure is asserted against a target here (targets live in `make bench`): these tests prove the
harness reads the right processes and counts every request.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import requests
import yaml

from bench import fuzz, memory
from local import components, stackfile

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SKIP = components.locate().watchdog_skip_reason()


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_memory_sample_reads_the_watchdog_and_its_python_separately(serve_function, tmp_path):
    shutil.copytree(DATA / "contract_fn", tmp_path / "functions" / "probe")
    (tmp_path / "stack.yml").write_text(
        yaml.safe_dump(
            {
                "version": "1.0",
                "provider": {"name": "openfaas"},
                "functions": {"probe": {"lang": "python3-http", "handler": "./functions/probe", "image": "x/probe:1"}},
            }
        )
    )
    probe = serve_function("probe", stack=stackfile.load(tmp_path / "stack.yml"))
    assert requests.get(probe.url + "/none", timeout=5).status_code == 200
    kids = memory.descendants(probe.proc.pid)
    cmdlines = [Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").strip() for k in kids]
    assert cmdlines == [b"python index.py"]
    s = memory.sample(probe.process)
    own = memory._status_kib(kids[0])
    assert s.python_kib == own["VmRSS"] or abs(s.python_kib - own["VmRSS"]) < 2048  # read a moment apart
    assert s.watchdog_kib > 0 and s.watchdog_hwm_kib >= s.watchdog_kib
    assert s.python_kib > s.watchdog_kib  # an interpreter with Flask loaded outweighs the Go watchdog
    assert s.python_hwm_kib >= s.python_kib and s.total_kib == s.watchdog_kib + s.python_kib
    probe.stop()
    with pytest.raises(RuntimeError, match="not running"):
        memory.sample(probe.process)


def test_fuzz_bench_counts_every_request_a_fuzz_test_sends(tmp_path):
    calls = tmp_path / "calls.txt"
    test_file = tmp_path / "test_probe_fuzz.py"
    test_file.write_text(
        textwrap.dedent(f"""
        import pytest
        from hypothesis import given, strategies as st
        from tests.fuzzing import fuzz_route

        @pytest.mark.fuzz
        @given(st.integers())
        def test_counted(n):
            fuzz_route("probe", "POST /")
            with open({str(calls)!r}, "a") as f:
                f.write("x")

        @pytest.mark.fuzz
        @given(st.booleans())
        def test_small_space(b):  # hypothesis stops when it has tried every value
            fuzz_route("probe", "GET /")

        def test_not_fuzz():
            fuzz_route("probe", "never")
    """)
    )
    code, counts, out = fuzz.run(
        ["-c", str(ROOT / "pyproject.toml"), "-p", "tests.fuzzing", str(test_file)], profile="default", timeout=120
    )
    assert code == 0, out
    assert counts["probe POST /"] == len(calls.read_text()) >= 300  # the default profile's 300 examples
    assert counts["probe GET /"] == 2 and "probe never" not in counts
    assert "UNDER the 2000 target" in fuzz.report(counts)
