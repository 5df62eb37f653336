"""The compiled ruleset is replaced only by a successful load: a failure is a 503 with its reason, never stale rules."""

from __future__ import annotations

from .conftest import post
from .test_handler import EXTRA, anon, health


def _boom(*a, **kw):
    raise RuntimeError("compiler exploded")


def test_unexpected_error_on_first_load_is_503_with_its_reason(ingest, make_event, forwarder, monkeypatch):
    mod = ingest()
    monkeypatch.setattr(mod.rules, "load_engine", _boom)
    for _ in range(2):  # the retry must still say why, not "rules failed to load: None"
        status, reply = post(mod, make_event, anon(1))
        assert status == 503
        assert "RuntimeError" in reply["error"] and "compiler exploded" in reply["error"]
        assert "None" not in reply["error"]
    status, h = health(mod, make_event)
    assert status == 503 and "compiler exploded" in h["error"]
    assert forwarder.requests == []


def test_unexpected_error_is_retried_on_the_next_request(ingest, make_event, forwarder, monkeypatch):
    mod = ingest()
    real = mod.rules.load_engine
    monkeypatch.setattr(mod.rules, "load_engine", _boom)
    assert post(mod, make_event, anon(2))[0] == 503
    # the cause went away (e.g. memory pressure): no rules change is needed to recover
    monkeypatch.setattr(mod.rules, "load_engine", real)
    status, reply = post(mod, make_event, anon(2))
    assert status == 200 and reply["forwarded"] == 1


def test_failed_reload_never_serves_the_previous_ruleset(ingest, make_event, forwarder, monkeypatch):
    mod = ingest(extra_rules=EXTRA)
    assert health(mod, make_event)[1]["ruleset"]["rules_loaded"] == 49
    (mod.secrets_dir / "audit-ingest-extra-rules").write_text(EXTRA.replace("Namespace foo", "Namespace bar"))
    real = mod.rules.load_engine
    monkeypatch.setattr(mod.rules, "load_engine", _boom)
    for _ in range(2):
        status, reply = post(mod, make_event, anon(3))
        assert status == 503 and "compiler exploded" in reply["error"]
    status, h = health(mod, make_event)
    assert status == 503
    assert forwarder.requests == []
    monkeypatch.setattr(mod.rules, "load_engine", real)
    status, reply = post(mod, make_event, anon(3), query={"dry_run": "1"})
    assert status == 200 and health(mod, make_event)[1]["ruleset"]["rules_loaded"] == 49
