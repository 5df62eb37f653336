"""Flows that still write a token to a platform log, by owner: the xfail(strict=True) reasons until each is fixed.

The check itself (tests/conftest.py, local/leakcheck.py) runs after every test; a marker here only records
who owns the fix. Remove the marker with the fix: strict xfail turns a fixed flow into a failure until then.
"""

AUDIT_HANDOFF = (
    "audit-owner: audit-ingest hands off to alert-forwarder through /async-function/ (forward_async), "
    "so CE's queue-worker logs its Authorization header (issue 11 §1)"
)
SCRUBBER_ASYNC = (
    "forwarder-owner: the configmap-secret-scrubber destination is async: true, so CE's queue-worker "
    "logs its Authorization header (issue 11 §1)"
)
QUEUE = AUDIT_HANDOFF + "; and " + SCRUBBER_ASYNC
