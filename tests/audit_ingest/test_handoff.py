"""Hand-off to alert-forwarder: partial failures, concurrent batches, a missing forwarder token."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from .conftest import post
from .test_handler import anon, eventlist, health


def _post_in_thread(mod, make_event, body, results, name, **kw):
    def run():
        results[name] = post(mod, make_event, body, **kw)

    t = threading.Thread(target=run)
    t.start()
    return t


# ---- issue: a hand-off in parts is resumed, not repeated ------------------------------------------
def test_partly_failed_hand_off_is_retried_without_resending_accepted_parts(ingest, make_event, forwarder):
    mod = ingest(env={"forward_max_bytes": "2000"})
    batch = eventlist(*[anon(200 + i) for i in range(7)])
    forwarder.statuses = [202, 500]  # part 1 accepted, part 2 refused
    status, reply = post(mod, make_event, batch)
    assert status == 502
    first = forwarder.alerts(accepted_only=True)
    assert 0 < len(first) < 7
    status, reply = post(mod, make_event, batch)  # the API server's retry
    assert status == 200
    assert reply["forwarded"] == 7 - len(first) and reply["duplicates"] == len(first)
    # The 7 alerts were accepted exactly once in all: part 1 was not sent again.
    assert len(forwarder.alerts(accepted_only=True)) == 7
    assert post(mod, make_event, batch)[1]["duplicates"] == 7


def test_alerts_of_one_event_split_across_parts_are_not_resent(ingest, make_event, forwarder):
    # rule_matching all: the anonymous namespace creation raises 3 alerts, too big for one 1 KiB part.
    mod = ingest(env={"forward_max_bytes": "1024", "rule_matching": "all"})
    forwarder.statuses = [202, 500]
    status, _ = post(mod, make_event, eventlist(anon(210)))
    assert status == 502 and len(forwarder.requests) == 2
    sent = [a["rule"] for a in forwarder.alerts(accepted_only=True)]
    assert 0 < len(sent) < 3
    status, reply = post(mod, make_event, eventlist(anon(210)))
    assert status == 200 and reply["forwarded"] == 3 - len(sent) and not set(sent) & set(reply["rules"])
    rules = [a["rule"] for a in forwarder.alerts(accepted_only=True)]
    assert sorted(rules) == ["Anonymous Request Allowed", "Create Disallowed Namespace", "K8s Namespace Created"]
    status, reply = post(mod, make_event, eventlist(anon(210)))
    assert reply["duplicates"] == 1 and reply["forwarded"] == 0


def test_a_retried_alert_is_byte_identical_so_its_idempotency_key_is_stable(ingest, make_event, forwarder):
    # alert-forwarder's Idempotency-Key is a hash of the alert's Falco JSON: the same event and rule must
    # give the same JSON on every evaluation, so a repeat that does get through can be dropped downstream.
    mod = ingest(env={"dedup_max_events": "0"})
    post(mod, make_event, eventlist(anon(220)))
    post(mod, make_event, eventlist(anon(220)))
    a, b = (r["body"] for r in forwarder.requests)
    assert a == b


def test_same_event_twice_in_one_batch_is_handed_off_once(ingest, make_event, forwarder):
    mod = ingest()
    status, reply = post(mod, make_event, eventlist(anon(230), anon(230)))
    assert status == 200 and reply["forwarded"] == 1 and reply["duplicates"] == 1


# ---- issue: one slow hand-off must not stall every batch ------------------------------------------
def test_slow_hand_off_does_not_block_other_batches(ingest, make_event, forwarder):
    mod = ingest()
    forwarder.hold = threading.Event()
    results: dict = {}
    slow = _post_in_thread(mod, make_event, eventlist(anon(300)), results, "slow")
    try:
        assert forwarder.arrived.wait(5)
        quiet = dict(anon(301), verb="get", user={"username": "admin", "groups": ["system:masters"]})
        started = time.monotonic()
        status, reply = post(mod, make_event, eventlist(quiet))
        assert status == 200 and time.monotonic() - started < 2
        assert "slow" not in results, "the slow hand-off finished first; the test proves nothing"
    finally:
        forwarder.hold.set()
        slow.join(10)
    assert results["slow"][0] == 200


def test_retry_racing_an_in_flight_hand_off_waits_then_answers_503(ingest, make_event, forwarder):
    mod = ingest(env={"batch_wait_seconds": "0.5"})
    forwarder.hold = threading.Event()
    batch = eventlist(anon(310), anon(311))
    results: dict = {}
    first = _post_in_thread(mod, make_event, batch, results, "first")
    try:
        assert forwarder.arrived.wait(5)
        started = time.monotonic()
        res = mod.handle(
            make_event(
                "POST",
                body=json.dumps(batch),
                headers={"Content-Type": "application/json", "Authorization": "Bearer ingest-test-token-123"},
            ),
            None,
        )
        assert res["statusCode"] == 503 and time.monotonic() - started < 3
        assert "being handed off" in json.loads(res["body"])["error"]
        assert int(res["headers"]["Retry-After"]) >= 1
    finally:
        forwarder.hold.set()
        first.join(10)
    assert results["first"][0] == 200 and len(forwarder.requests) == 1
    status, reply = post(mod, make_event, batch)  # a later retry: all handed off by the first request
    assert status == 200 and reply["duplicates"] == 2 and len(forwarder.requests) == 1


def test_retry_racing_a_failing_hand_off_takes_over_and_delivers_once(ingest, make_event, forwarder):
    mod = ingest(env={"batch_wait_seconds": "5"})
    forwarder.hold = threading.Event()
    forwarder.statuses = [500]
    batch = eventlist(anon(320))
    results: dict = {}
    first = _post_in_thread(mod, make_event, batch, results, "first")
    assert forwarder.arrived.wait(5)
    second = _post_in_thread(mod, make_event, batch, results, "second")
    time.sleep(0.3)
    assert "second" not in results  # waiting for the first request's outcome, not sending its events too
    forwarder.hold.set()
    first.join(10)
    second.join(10)
    assert results["first"][0] == 502
    assert results["second"][0] == 200 and results["second"][1]["forwarded"] == 1
    assert [r["status"] for r in forwarder.requests] == [500, 202]


def test_busy_batch_slot_answers_503_with_retry_after(ingest, make_event, forwarder, monkeypatch):
    mod = ingest(env={"max_concurrent_batches": "1", "batch_wait_seconds": "0.3"})
    inside, leave = threading.Event(), threading.Event()
    real = mod.batch.evaluate

    def slow_decode(*a, **kw):
        inside.set()
        leave.wait(10)
        return real(*a, **kw)

    monkeypatch.setattr(mod.batch, "evaluate", slow_decode)
    results: dict = {}
    t = _post_in_thread(mod, make_event, eventlist(anon(330)), results, "first")
    try:
        assert inside.wait(5)
        monkeypatch.setattr(mod.batch, "evaluate", real)
        res = mod.handle(
            make_event(
                "POST",
                body=json.dumps(eventlist(anon(331))),
                headers={"Content-Type": "application/json", "Authorization": "Bearer ingest-test-token-123"},
            ),
            None,
        )
        assert res["statusCode"] == 503 and int(res["headers"]["Retry-After"]) >= 1
        assert "busy" in json.loads(res["body"])["error"]
    finally:
        leave.set()
        t.join(10)
    assert results["first"][0] == 200
    assert health(mod, make_event)[1]["counters"]["busy"] == 1
    assert post(mod, make_event, eventlist(anon(331)))[0] == 200


def test_at_most_max_concurrent_batches_are_decoded_at_once(ingest, make_event, forwarder, monkeypatch):
    mod = ingest(env={"max_concurrent_batches": "1", "batch_wait_seconds": "10", "answer_within_seconds": "30"})
    real = mod.batch.evaluate
    lock = threading.Lock()
    now, peak = [0], [0]

    def counting_decode(*a, **kw):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        try:
            return real(*a, **kw)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(mod.batch, "evaluate", counting_decode)
    results: dict = {}
    threads = [_post_in_thread(mod, make_event, eventlist(anon(340 + i)), results, i) for i in range(4)]
    for t in threads:
        t.join(10)
    assert [results[i][0] for i in range(4)] == [200] * 4
    assert peak[0] == 1


# ---- a forwarder token that is not configured ----------------------------------------------------
def test_hand_off_config_error_is_a_clear_503_and_nothing_is_remembered(ingest, make_event, forwarder, monkeypatch):
    mod = ingest()
    real = mod.forward.gateway.Gateway.invoke

    def unconfigured(*a, **kw):
        raise mod.config.ConfigError("OpenFaaS secret 'alert-forwarder-token' is missing or empty")

    monkeypatch.setattr(mod.forward.gateway.Gateway, "invoke", unconfigured)
    status, reply = post(mod, make_event, eventlist(anon(350)))
    assert status == 503
    assert "alert-forwarder-token" in reply["error"] and "not configured" in reply["error"]
    monkeypatch.setattr(mod.forward.gateway.Gateway, "invoke", real)
    status, reply = post(mod, make_event, eventlist(anon(350)))
    assert status == 200 and reply["forwarded"] == 1


def test_missing_forwarder_token_secret_is_a_503_naming_it(ingest, make_event, forwarder):
    mod = ingest()
    (mod.secrets_dir / "alert-forwarder-token").unlink()
    status, reply = post(mod, make_event, eventlist(anon(360)))
    assert status == 503 and "alert-forwarder-token" in reply["error"]
    assert forwarder.requests == []
    (mod.secrets_dir / "alert-forwarder-token").write_text("forwarder-test-token-456")
    status, reply = post(mod, make_event, eventlist(anon(360)))
    assert status == 200 and reply["forwarded"] == 1


def test_unreachable_forwarder_is_a_502_naming_the_transport_failure(ingest, make_event, forwarder):
    mod = ingest()
    forwarder.close()  # nothing listens behind the gateway URL any more
    status, reply = post(mod, make_event, eventlist(anon(365)))
    assert status == 502
    assert "alert hand-off to alert-forwarder failed: connect: ConnectionRefusedError" in reply["error"]
    assert health(mod, make_event)[1]["counters"]["forward_failures"] == 1


NAN_RULE = """
- rule: Replicas shown
  desc: an output field that takes a number from the request
  condition: ka.target.resource=namespaces
  output: replicas=%jevt.value[/requestObject/spec/replicas]
  priority: INFO
  source: k8s_audit
"""


def test_nan_or_infinity_in_a_json_body_is_a_400_like_the_shared_parser(ingest, make_event, forwarder):
    # NaN is not JSON: the plugin's Go decoder refuses it, and so does edgeguard.http for NDJSON bodies.
    mod = ingest(extra_rules=NAN_RULE, env={"rule_matching": "all"})
    for const in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(eventlist(anon(370))).replace('"spec": {}', f'"spec": {{"replicas": {const}}}')
        assert const in body
        status, reply = post(mod, make_event, body)
        assert status == 400 and const in reply["error"], reply
        ndjson = post(mod, make_event, body, content_type="application/x-ndjson")
        assert ndjson[0] == 400
    assert forwarder.requests == []


def test_integer_too_long_to_convert_is_a_400(ingest, make_event, forwarder):
    mod = ingest()
    body = json.dumps(eventlist(anon(380))).replace('"spec": {}', '"spec": {"n": %s}' % ("9" * 5000))
    status, reply = post(mod, make_event, body)
    assert status == 400 and "invalid JSON" in reply["error"]
    assert forwarder.requests == []


# ---- the ledger on its own: no HTTP event, a send() callable --------------------------------------
def _ledger_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "functions" / "audit-ingest" / "handoff.py"
    spec = importlib.util.spec_from_file_location("_audit_ingest_handoff", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # handoff.py imports nothing from the build context
    spec.loader.exec_module(mod)
    return mod


def _groups(h, *keys, rules=("A",)):
    return [h.Group(k, [h.Alert(r, "Warning", json.dumps({"rule": r, "event": k})) for r in rules]) for k in keys]


def test_ledger_hands_off_once_and_counts_a_second_delivery_as_duplicates():
    h = _ledger_module()
    ledger, bodies = h.HandoffLedger(limit=100), []
    done = ledger.deliver(_groups(h, "e1", "e2", None), lambda body: bodies.append(body), part_bytes=100_000, wait=1)
    assert (done.forwarded, done.duplicates, done.rules) == (3, 0, {"A"}) and len(bodies) == 1
    again = ledger.deliver(_groups(h, "e1", "e2", None), lambda body: bodies.append(body), part_bytes=100_000, wait=1)
    # Keyless events are never remembered: they are sent again; keyed ones are duplicates.
    assert (again.forwarded, again.duplicates) == (1, 2) and ledger.remembered() == 2


def test_ledger_resumes_a_part_way_failure_with_only_the_unsent_alerts():
    h = _ledger_module()
    ledger, accepted = h.HandoffLedger(limit=100), []

    def flaky(body):
        if accepted:
            raise h.HandoffError("refused", status=500)
        accepted.extend(json.loads(body))

    groups = _groups(h, "e1", "e2", "e3")
    part = len(groups[0].alerts[0].json) + 3  # one alert per part
    with pytest.raises(h.HandoffError) as err:
        ledger.deliver(groups, flaky, part_bytes=part, wait=1)
    assert err.value.forwarded == 1 and [a["event"] for a in accepted] == ["e1"]
    retry: list = []
    done = ledger.deliver(_groups(h, "e1", "e2", "e3"), lambda b: retry.extend(json.loads(b)), part_bytes=part, wait=1)
    assert [a["event"] for a in retry] == ["e2", "e3"] and (done.forwarded, done.duplicates) == (2, 1)


def test_ledger_remembers_the_rules_of_an_event_split_across_parts():
    h = _ledger_module()
    ledger, calls = h.HandoffLedger(limit=100), []

    def second_fails(body):
        calls.append(json.loads(body))
        if len(calls) == 2:
            raise h.HandoffError("refused")

    group = _groups(h, "e1", rules=("A", "B", "C"))
    part = len(group[0].alerts[0].json) + 3
    with pytest.raises(h.HandoffError):
        ledger.deliver(group, second_fails, part_bytes=part, wait=1)
    sent: list = []
    done = ledger.deliver(
        _groups(h, "e1", rules=("A", "B", "C")), lambda b: sent.extend(json.loads(b)), part_bytes=part, wait=1
    )
    assert [a["rule"] for a in sent] == ["B", "C"] and done.rules == {"B", "C"}


def test_ledger_events_without_alerts_are_remembered_without_a_send():
    h = _ledger_module()
    ledger = h.HandoffLedger(limit=100)
    done = ledger.deliver([h.Group("quiet", [])], lambda b: pytest.fail("nothing to send"), part_bytes=1000, wait=1)
    assert done.forwarded == 0 and ledger.remembered() == 1


def test_ledger_a_concurrent_delivery_of_the_same_event_waits_for_the_first_outcome():
    h = _ledger_module()
    ledger, release, entered, sent = h.HandoffLedger(limit=100), threading.Event(), threading.Event(), []

    def slow(body):
        entered.set()
        release.wait(5)
        sent.append(body)

    first = threading.Thread(
        target=ledger.deliver, args=(_groups(h, "e1"), slow), kwargs={"part_bytes": 1000, "wait": 5}
    )
    first.start()
    assert entered.wait(5)
    result: dict = {}
    second = threading.Thread(
        target=lambda: result.update(
            done=ledger.deliver(_groups(h, "e1"), lambda b: sent.append(b), part_bytes=1000, wait=5)
        )
    )
    second.start()
    time.sleep(0.2)
    assert not result, "the second delivery must wait, not send the event's alerts too"
    release.set()
    first.join(5)
    second.join(5)
    assert len(sent) == 1 and result["done"].duplicates == 1


def test_ledger_wait_for_another_request_runs_out_as_busy():
    h = _ledger_module()
    ledger, release, entered = h.HandoffLedger(limit=100), threading.Event(), threading.Event()
    first = threading.Thread(
        target=ledger.deliver,
        args=(_groups(h, "e1"), lambda b: (entered.set(), release.wait(5))),
        kwargs={"part_bytes": 1000, "wait": 5},
    )
    first.start()
    try:
        assert entered.wait(5)
        with pytest.raises(h.HandoffBusy) as err:
            ledger.deliver(_groups(h, "e1", "e2"), lambda b: None, part_bytes=1000, wait=0.2)
        assert err.value.pending == 1 and err.value.forwarded == 1  # e2 went; e1 is still the other's
    finally:
        release.set()
        first.join(5)


def test_ledger_memory_is_an_lru_of_limit_keys():
    h = _ledger_module()
    ledger = h.HandoffLedger(limit=2)
    for k in ("e1", "e2", "e3"):
        ledger.deliver(_groups(h, k), lambda b: None, part_bytes=1000, wait=1)
    assert ledger.remembered() == 2
    assert ledger.deliver(_groups(h, "e1"), lambda b: None, part_bytes=1000, wait=1).forwarded == 1
    assert ledger.deliver(_groups(h, "e3"), lambda b: None, part_bytes=1000, wait=1).duplicates == 1


def test_ledger_starts_no_part_that_would_end_after_the_deadline_and_a_retry_resumes():
    h = _ledger_module()
    clock = [0.0]
    ledger, sent = h.HandoffLedger(limit=100, clock=lambda: clock[0]), []
    groups = _groups(h, "e1", "e2", "e3")
    part = len(groups[0].alerts[0].json) + 3

    def slow_send(body):  # each part takes 4 s of the request's time
        sent.append(json.loads(body)[0]["event"])
        clock[0] += 4

    with pytest.raises(h.HandoffOutOfTime) as err:
        ledger.deliver(groups, slow_send, part_bytes=part, wait=1, deadline=10.0, part_time=3.0)
    # 0 s: e1 (ends 4), 4 s: e2 (ends 8), 8 s: 8 + 3 > 10, so e3 waits for the retry.
    assert sent == ["e1", "e2"] and err.value.forwarded == 2 and err.value.left == 1
    done = ledger.deliver(_groups(h, "e1", "e2", "e3"), slow_send, part_bytes=part, wait=1)
    assert sent[2:] == ["e3"] and (done.forwarded, done.duplicates) == (1, 2)
