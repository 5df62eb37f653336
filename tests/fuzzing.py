"""Property tests (marked ``fuzz``): hypothesis profiles, and the count of requests sent per route.

Profiles are derandomized, so every run draws the same inputs: ``default`` (make test) sends a few
hundred requests per route, ``bench`` (make bench, bench/fuzz.py) at least 2,000. Select one with
``--hypothesis-profile`` or EDGEGUARD_HYPOTHESIS_PROFILE.

A fuzz test names the route each generated request goes to, once per request it sends::

    from tests.fuzzing import fuzz_route

    @pytest.mark.fuzz
    @given(body=st.binary())
    def test_post_never_5xx(body):
        fuzz_route("alert-forwarder", "POST /")
        ...

The counts (real requests, shrinking and explicit ``@example`` runs included) are printed at the end of
the session and, with EDGEGUARD_FUZZ_COUNTS=<file>, written there as JSON for bench/fuzz.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

COUNTS_ENV = "EDGEGUARD_FUZZ_COUNTS"
PROFILE_ENV = "EDGEGUARD_HYPOTHESIS_PROFILE"
_COUNTS: Counter = Counter()


def fuzz_route(function: str, route: str) -> None:
    """Count one generated request to ``route`` of ``function`` (and tell hypothesis's statistics)."""
    key = f"{function} {route}"
    _COUNTS[key] += 1
    try:
        from hypothesis import event

        event(key)
    except Exception:  # noqa: BLE001 - outside a hypothesis test there is no event to record
        pass


def counts() -> dict[str, int]:
    return dict(_COUNTS)


def register_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # an old venv: the fuzz tests then fail at import, naming hypothesis
        return
    common = dict(
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.register_profile("default", max_examples=300, **common)
    settings.register_profile("bench", max_examples=2000, **common)
    settings.load_profile(os.environ.get(PROFILE_ENV, "default"))


register_profiles()


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller sums the workers' counts
        workeroutput["fuzz_counts"] = counts()
        return
    path = os.environ.get(COUNTS_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(counts(), f, indent=1, sort_keys=True)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist (make test runs two workers): a worker's counts reach the controller's summary and file."""
    _COUNTS.update(getattr(node, "workeroutput", {}).get("fuzz_counts", {}))


def pytest_terminal_summary(terminalreporter):
    if _COUNTS:
        terminalreporter.write_line(
            "fuzz requests per route: " + ", ".join(f"{k} {v}" for k, v in sorted(_COUNTS.items()))
        )
