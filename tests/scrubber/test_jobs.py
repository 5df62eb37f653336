"""POST is a job: 202 with an id at once, the run in the background, bounded and idempotent (issue 11).

The same on the real of-watchdog, past its timeouts: tests/scrubber/test_served.py.
"""

from __future__ import annotations

import time

import pytest

from .conftest import submodule, writes
from .test_handler import SEED_VALUE, alert, seed_aws


def finished(call, mod, job_id, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = call(mod, "GET", path=f"/jobs/{job_id}")
        assert status == 200, body
        if body["state"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def test_a_post_is_answered_202_with_a_job_and_the_move_happens_in_the_background(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    status, body, resp = call(mod, "POST", alert("aws-creds", "demo"), background=True)
    assert status == 202, body
    assert body["state"] in ("queued", "running") and body["status_path"] == f"/jobs/{body['id']}"
    assert body["trigger"] == "falco" and body["target"] == {"name": "aws-creds", "namespace": "demo"}
    job = finished(call, mod, body["id"])
    assert job["state"] == "done" and job["result"]["configmaps"][0]["status"] == "moved", job
    assert job["started_at"] and job["finished_at"]
    assert kube_emulator.get("configmaps", "demo", "aws-creds")["data"] == {"region": "eu-west-1"}
    listed = call(mod, "GET", path="/jobs")[1]["jobs"]
    assert [(j["id"], j["state"]) for j in listed] == [(body["id"], "done")] and "result" not in listed[0]
    for text in (resp["body"], call(mod, "GET", path=f"/jobs/{body['id']}")[2]["body"]):
        assert SEED_VALUE not in text


def test_the_same_alert_twice_is_one_job_and_uses_one_rate_token(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move", rate_limit_per_minute="1")
    key = {"Idempotency-Key": "0f3a9c1d2e4b5a6978801234abcdef01"}
    first = call(mod, "POST", alert("aws-creds", "demo"), headers=key, background=True)[1]
    finished(call, mod, first["id"])
    before = len(writes(kube_emulator))
    status, again, _ = call(mod, "POST", alert("aws-creds", "demo"), headers=key, background=True)
    assert status == 202 and again["id"] == first["id"] and again["duplicates"] == 1 and again["state"] == "done"
    assert len(writes(kube_emulator)) == before
    # with ?wait=1 the duplicate answers the first run's result
    status, body, _ = call(mod, "POST", alert("aws-creds", "demo"), headers=key)
    assert status == 200 and body["job"] == first["id"] and body["configmaps"][0]["status"] == "moved"
    # a different alert is a new job, and here the one rate token is used up
    status, _, resp = call(mod, "POST", alert("aws-creds", "demo"), background=True)
    assert status == 429 and int(resp["headers"]["Retry-After"]) >= 1


def test_a_target_already_waiting_is_that_job_and_a_running_one_gets_one_job_after_it(scrubber_fn, call, kube_emulator):
    for ns in ("a", "b"):
        seed_aws(kube_emulator, ns=ns)
    kube_emulator.hold_rollouts(True)  # the first job waits for its rollout: what comes next has to queue
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="1.5", namespaces_allow="a,b")
    running = call(mod, "POST", {"namespace": "a", "name": "aws-creds"}, background=True)[1]
    deadline = time.monotonic() + 5
    while call(mod, "GET", path=f"/jobs/{running['id']}")[1]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiting = call(mod, "POST", {"namespace": "b", "name": "aws-creds"}, background=True)[1]
    same = call(mod, "POST", alert("aws-creds", "b"), background=True)[1]
    assert waiting["state"] == "queued" and same["id"] == waiting["id"] and same["duplicates"] == 1
    after = call(mod, "POST", {"namespace": "a", "name": "aws-creds"}, background=True)[1]
    assert after["id"] != running["id"] and after["state"] == "queued"
    assert finished(call, mod, running["id"])["result"]["configmaps"][0]["status"] == "pending_rollout"
    kube_emulator.hold_rollouts(False)
    assert finished(call, mod, waiting["id"])["state"] == "done"
    assert finished(call, mod, after["id"])["result"]["configmaps"][0]["status"] in ("moved", "pending_rollout")


def test_a_rerun_of_a_converged_configmap_writes_nothing(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="move")
    assert call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})[1]["configmaps"][0]["status"] == "moved"
    before = len(writes(kube_emulator))
    for _ in range(2):
        job = finished(call, mod, call(mod, "POST", alert("aws-creds", "demo"), background=True)[1]["id"])
        assert job["result"]["configmaps"][0]["status"] == "clean", job
    assert len(writes(kube_emulator)) == before


def test_a_full_queue_answers_503_with_retry_after_and_accepts_nothing(scrubber_fn, call, kube_emulator):
    for ns in ("a", "b", "c"):
        seed_aws(kube_emulator, ns=ns)
    kube_emulator.hold_rollouts(True)
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="1", max_queued_jobs="1", run_budget_seconds="5")
    running = call(mod, "POST", {"namespace": "a", "name": "aws-creds"}, background=True)[1]
    deadline = time.monotonic() + 5
    while call(mod, "GET", path=f"/jobs/{running['id']}")[1]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert call(mod, "POST", {"namespace": "b", "name": "aws-creds"}, background=True)[0] == 202
    status, body, resp = call(mod, "POST", {"namespace": "c", "name": "aws-creds"}, background=True)
    assert status == 503 and "max_queued_jobs" in body["error"] and resp["headers"]["Retry-After"] == "5"
    assert len(call(mod, "GET", path="/jobs")[1]["jobs"]) == 2
    kube_emulator.hold_rollouts(False)
    finished(call, mod, running["id"])
    assert kube_emulator.get("secrets", "c", "aws-creds-credentials") is None


def test_a_job_that_crashes_is_failed_without_a_traceback_and_the_worker_goes_on(
    scrubber_fn, call, kube_emulator, monkeypatch, capfd
):
    seed_aws(kube_emulator)
    mod = scrubber_fn(scrub_mode="report")
    sweep = submodule(mod, "sweep")
    real, calls = sweep.run, []

    def crash_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*a, **kw)

    monkeypatch.setattr(sweep, "run", crash_once)
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert status == 500 and body["error"] == "internal error" and body["job"]
    assert call(mod, "GET", path=f"/jobs/{body['job']}")[1]["state"] == "failed"
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert status == 200 and body["configmaps"][0]["status"] == "would_move"
    err = capfd.readouterr().err
    assert "job.crashed" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/jobs/0123456789abcdef", 404),
        ("GET", "/jobs/not-an-id", 404),
        ("POST", "/jobs", 405),
        ("DELETE", "/jobs/0123456789abcdef", 405),
        ("GET", "/elsewhere", 404),
        ("POST", "/x/y", 404),
    ],
)
def test_job_routes_refuse_what_they_do_not_serve(scrubber_fn, call, kube_emulator, method, path, status):
    mod = scrubber_fn()
    got, body, _ = call(mod, method, {"namespace": "demo"} if method == "POST" else None, path=path)
    assert got == status and body["error"], body
    assert kube_emulator.requests == []


def test_job_routes_need_the_token(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn()
    job = call(mod, "POST", {"namespace": "demo"}, background=True)[1]
    for path in ("/jobs", f"/jobs/{job['id']}"):
        assert call(mod, "GET", path=path, token=None)[0] == 401
        assert call(mod, "GET", path=path, token="wrong")[0] == 401


def test_a_malformed_idempotency_key_is_refused_before_any_job(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn()
    status, body, _ = call(mod, "POST", {"namespace": "demo"}, headers={"Idempotency-Key": "a b"}, background=True)
    assert status == 400 and "Idempotency-Key" in body["error"]
    assert call(mod, "GET", path="/jobs")[1]["jobs"] == [] and kube_emulator.requests == []


def test_wait_answers_202_with_the_job_when_the_run_outlasts_wait_seconds(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.hold_rollouts(True)
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="1", wait_seconds="0.2")
    status, body, _ = call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})
    assert status == 202 and body["state"] == "running", body
    assert finished(call, mod, body["id"])["result"]["configmaps"][0]["status"] == "pending_rollout"
