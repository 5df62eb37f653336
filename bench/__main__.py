"""``make bench``: run every ``bench/<name>.py`` that defines ``main()``; figures go to stdout.

Benchmarks are kept out of the test suite so timing never makes a test flaky.
Run one with ``python -m bench <name>``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")
    )
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        print(f"== bench {name} ==", flush=True)
        t0 = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # one broken bench must not hide the others' figures
            failed += 1
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"== {name} done in {time.perf_counter() - t0:.1f}s ==\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
