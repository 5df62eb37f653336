"""Flows that still write a token to a platform log, by owner: the xfail(strict=True) reasons until each is fixed.

The check itself (tests/conftest.py, local/leakcheck.py) runs after every test; a marker here only records
who owns the fix. Remove the marker with the fix: strict xfail turns a fixed flow into a failure until then.

None is left: audit-ingest hands off to alert-forwarder and alert-forwarder calls the scrubber synchronously
through the gateway, so no token crosses CE's queue (issue 11 §1).
"""
