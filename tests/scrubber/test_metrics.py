"""GET /metrics: Prometheus text of requests, jobs, runs, findings, moves and API errors (issue 15 §4)."""

from __future__ import annotations

import time

import yaml

from tests.conftest import make_event

from .conftest import FINGERPRINT_KEY, FN, TOKEN, configmap
from .test_handler import CREDS, SEED_VALUE, seed_aws

P = "edgeguard_configmap_secret_scrubber_"
READER = "read-only-metrics-token-5a8b"


def scrape(call, mod, token=TOKEN) -> tuple[int, dict, str]:
    """(status, {sample: value}, text) of GET /metrics."""
    resp = mod.handle(_event(token), None)
    text = resp["body"]
    if resp["statusCode"] != 200:
        return resp["statusCode"], {}, text
    assert resp["headers"]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return 200, samples, text


def _event(token):
    return make_event(method="GET", path="/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})


def test_metrics_count_a_move_its_findings_requests_jobs_and_api_errors(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.seed(configmap("app-env", CREDS))
    mod = scrubber_fn(scrub_mode="move")
    assert call(mod, "POST", {"namespace": "demo", "name": "aws-creds"})[1]["configmaps"][0]["status"] == "moved"
    assert call(mod, "GET", query={"namespace": "demo"})[0] == 200
    assert call(mod, "POST", {"namespace": "Bad_NS"})[0] == 400
    status, m, text = scrape(call, mod)
    assert status == 200
    assert m[P + 'requests_total{route="/",method="POST",code="200"}'] == 1
    assert m[P + 'requests_total{route="/",method="POST",code="400"}'] == 1
    assert m[P + 'requests_total{route="/",method="GET",code="200"}'] == 1
    assert m[P + 'jobs_total{event="accepted"}'] == 1
    assert m[P + 'runs_total{trigger="request",mode="move",outcome="completed"}'] == 1
    assert m[P + 'runs_total{trigger="get",mode="report",outcome="completed"}'] == 1
    assert m[P + 'run_seconds_count{mode="move"}'] == 1
    assert m[P + 'configmaps_total{status="moved"}'] == 1
    assert m[P + 'moves_total{outcome="moved"}'] == 1
    # the GET report: aws-creds is clean now, app-env would move (two high keys)
    assert m[P + 'moves_total{outcome="would_move"}'] == 1 and m[P + 'configmaps_total{status="clean"}'] == 1
    assert m[P + 'findings_total{tier="high"}'] == 3
    # the Secret did not exist yet when the move first read it: the API's 404 is counted
    assert m[P + 'api_errors_total{verb="get",code="404"}'] >= 1
    assert m[P + "jobs_queued"] == 0 and m[P + "jobs_running"] == 0
    for value in (SEED_VALUE, *CREDS.values()):
        assert value not in text or value in ("info", "app-credentials")


def test_refusals_blocked_moves_and_403s_are_counted(scrubber_fn, call, kube_emulator):
    seed_aws(kube_emulator)
    kube_emulator.seed(
        configmap(
            "helm-creds", {"DB_PASSWORD": "IfWqrAz2KrHhSyrntT1L"}, labels={"app.kubernetes.io/managed-by": "Helm"}
        )
    )
    kube_emulator.deny("list", "deployments", namespace="demo")
    mod = scrubber_fn(scrub_mode="move")
    call(mod, "POST", {"namespace": "demo"})
    _, m, _ = scrape(call, mod)
    assert m[P + 'moves_total{outcome="failed"}'] == 2  # the 403 on listing Deployments stops both
    assert m[P + 'api_errors_total{verb="list",code="403"}'] >= 1


def test_metrics_need_a_token_and_take_the_read_only_metrics_token(load_function, call, kube_emulator):
    mod = load_function(
        FN,
        env={"rate_limit_per_minute": "1000"},
        secrets={
            "configmap-secret-scrubber-token": TOKEN,
            "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
            "configmap-secret-scrubber-kubeconfig": yaml.safe_dump(kube_emulator.kubeconfig_dict()),
            "edgeguard-metrics-token": READER,
        },
    )
    assert scrape(call, mod, token=None)[0] == 401
    assert scrape(call, mod, token="wrong")[0] == 401
    assert scrape(call, mod, token=READER)[0] == 200
    assert scrape(call, mod, token=TOKEN)[0] == 200
    # the metrics token reads metrics and nothing else
    assert call(mod, "POST", {"namespace": "demo"}, token=READER)[0] == 401
    assert call(mod, "GET", query={"namespace": "demo"}, token=READER)[0] == 401
    assert call(mod, "GET", path="/jobs", token=READER)[0] == 401
    _, m, _ = scrape(call, mod)
    assert m[P + 'requests_total{route="/metrics",method="GET",code="401"}'] == 2
    assert kube_emulator.requests == []


def test_a_misconfigured_function_still_serves_its_metrics(scrubber_fn, call, kube_emulator):
    mod = scrubber_fn(scrub_mode="yolo")
    assert call(mod, "GET", query={"namespace": "demo"})[0] == 503
    status, m, _ = scrape(call, mod)
    assert status == 200 and m[P + 'requests_total{route="/",method="GET",code="503"}'] == 1


def test_a_full_queue_and_duplicates_are_counted(scrubber_fn, call, kube_emulator):
    for ns in ("a", "b", "c"):
        seed_aws(kube_emulator, ns=ns)
    kube_emulator.hold_rollouts(True)
    mod = scrubber_fn(scrub_mode="move", rollout_timeout_seconds="0.5", max_queued_jobs="1")
    first = call(mod, "POST", {"namespace": "a", "name": "aws-creds"}, background=True)[1]
    deadline = time.monotonic() + 5
    while call(mod, "GET", path=f"/jobs/{first['id']}")[1]["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    call(mod, "POST", {"namespace": "b", "name": "aws-creds"}, background=True)
    call(mod, "POST", {"namespace": "b", "name": "aws-creds"}, background=True)
    assert call(mod, "POST", {"namespace": "c", "name": "aws-creds"}, background=True)[0] == 503
    _, m, _ = scrape(call, mod)
    assert m[P + 'jobs_total{event="accepted"}'] == 2 and m[P + 'jobs_total{event="duplicate"}'] == 1
    assert m[P + 'jobs_total{event="queue_full"}'] == 1
    assert m[P + "jobs_queued"] + m[P + "jobs_running"] >= 1
    assert m[P + 'requests_total{route="/jobs",method="GET",code="200"}'] >= 1
    kube_emulator.hold_rollouts(False)
