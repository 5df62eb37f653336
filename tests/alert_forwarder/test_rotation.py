"""Rotation without a gap (issue 11 §4): after the token secret changes, the previous token keeps working for
token_grace_seconds, is counted in /metrics, and is refused after the window."""

from __future__ import annotations

import os
import time

import requests


def rotate(secrets_dir, name, value):
    path = secrets_dir / name
    before = path.stat().st_mtime_ns
    path.write_text(value + "\n")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))  # a later mtime, as kubelet's rewrite has


def post(mod, h, token):
    return h.call(
        mod,
        "POST",
        "/",
        h.falco_alert(priority="Warning"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def grace_metric(mod, h, name):
    text = h.call(mod, "GET", "/metrics")["body"]
    for line in text.splitlines():
        if line.startswith(f'edgeguard_alert_forwarder_{name}{{secret="alert-forwarder-token"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_previous_token_works_within_the_grace_and_not_after(load_handler, h, monkeypatch):
    mod = load_handler(env={"token_grace_seconds": "300"})
    auth = mod.auth
    now = [time.time()]
    monkeypatch.setattr(auth, "_clock", lambda: now[0])
    old, new = h.TOKEN, "af-rotated-token-9876543210"
    assert post(mod, h, old)["statusCode"] == 202
    rotate(mod.secrets_dir, "alert-forwarder-token", new)
    mod.config.read_secret("alert-forwarder-token")  # the function notices the rotation (at the real time) ...
    now[0] = time.time()  # ... before the test's clock starts
    assert post(mod, h, new)["statusCode"] == 202
    assert post(mod, h, old)["statusCode"] == 202  # Falco has not been restarted yet
    st = h.call(mod, "GET", "/", headers={"Authorization": f"Bearer {new}"})
    rot = __import__("json").loads(st["body"])["token_rotation"]
    assert rot["previous_token_accepted"] == 1 and 295 < rot["grace_seconds_left"] <= 300
    now[0] += 301
    assert post(mod, h, old)["statusCode"] == 401
    assert post(mod, h, new)["statusCode"] == 202
    assert h.call(mod, "GET", "/", headers={"Authorization": f"Bearer {new}"})["statusCode"] == 200
    assert mod.FORWARDER.metrics.total("falco_events_total") == 4


def test_metrics_say_how_often_and_how_long(load_handler, h, monkeypatch):
    mod = load_handler(env={"token_grace_seconds": "10m"})
    now = [time.time()]
    monkeypatch.setattr(mod.auth, "_clock", lambda: now[0])
    rotate(mod.secrets_dir, "alert-forwarder-token", "af-rotated-token-9876543210")
    mod.config.read_secret("alert-forwarder-token")  # the rotation is seen before the test's clock starts
    now[0] = time.time()
    for _ in range(3):
        assert post(mod, h, h.TOKEN)["statusCode"] == 202
    hdr = {"Authorization": "Bearer af-rotated-token-9876543210"}
    text = h.call(mod, "GET", "/metrics", headers=hdr)["body"]
    assert 'edgeguard_alert_forwarder_token_previous_accepted_total{secret="alert-forwarder-token"} 3' in text
    left = [
        ln
        for ln in text.splitlines()
        if ln.startswith('edgeguard_alert_forwarder_token_rotation_grace_seconds{secret="alert-forwarder-token"}')
    ]
    assert 590 < float(left[0].rsplit(" ", 1)[1]) <= 600


def test_grace_zero_refuses_the_previous_token_at_once(load_handler, h):
    mod = load_handler(env={"token_grace_seconds": "0"})
    rotate(mod.secrets_dir, "alert-forwarder-token", "af-rotated-token-9876543210")
    assert post(mod, h, "af-rotated-token-9876543210")["statusCode"] == 202
    assert post(mod, h, h.TOKEN)["statusCode"] == 401


def test_only_one_rotation_back_and_a_removed_secret_fails_closed(load_handler, h):
    mod = load_handler()
    rotate(mod.secrets_dir, "alert-forwarder-token", "second-token-0123456789")
    assert post(mod, h, "second-token-0123456789")["statusCode"] == 202
    rotate(mod.secrets_dir, "alert-forwarder-token", "third-token-0123456789")
    assert post(mod, h, "third-token-0123456789")["statusCode"] == 202
    assert post(mod, h, "second-token-0123456789")["statusCode"] == 202
    assert post(mod, h, h.TOKEN)["statusCode"] == 401  # two rotations back
    (mod.secrets_dir / "alert-forwarder-token").unlink()
    assert post(mod, h, "second-token-0123456789")["statusCode"] == 503


def test_a_bad_grace_setting_makes_every_request_a_503_naming_it(load_handler, h):
    from tests.alert_forwarder.test_handler import misconfigured

    assert "token_grace_seconds='soon'" in misconfigured(load_handler(env={"token_grace_seconds": "soon"}), h)


def test_the_window_on_the_served_function(serve_function, h, tmp_path):
    """The same under the real runtime: the secret file is rewritten under the running process."""
    sf = serve_function(
        "alert-forwarder",
        env={"spool_dir": str(tmp_path / "spool"), "token_grace_seconds": "3"},
        secrets={"alert-forwarder-token": h.TOKEN},
    )
    new = "af-rotated-token-9876543210"

    def status(token):
        return requests.post(
            sf.url + "/", json=h.falco_alert(priority="Debug"), timeout=5, headers={"Authorization": f"Bearer {token}"}
        ).status_code

    assert status(h.TOKEN) == 202
    rotate(sf.secrets_dir, "alert-forwarder-token", new)
    assert status(new) == 202
    assert status(h.TOKEN) == 202
    time.sleep(3.5)
    assert status(h.TOKEN) == 401
    assert status(new) == 202
    metrics = requests.get(sf.url + "/metrics", headers={"Authorization": f"Bearer {new}"}, timeout=5).text
    assert 'edgeguard_alert_forwarder_token_previous_accepted_total{secret="alert-forwarder-token"} 1' in metrics
    assert h.TOKEN not in sf.logs() and new not in sf.logs()
