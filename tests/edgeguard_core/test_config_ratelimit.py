"""Shared settings parsers and rate limits."""

import pytest

from edgeguard import config
from edgeguard.ratelimit import KeyedRateLimiter, TokenBucket


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30", 30),
        (45, 45),
        (2.5, 2.5),
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        (" 1h ", 3600),
    ],
)
def test_durations_in_the_forms_openfaas_users_write(text, seconds):
    assert config.parse_duration(text, "x") == seconds


@pytest.mark.parametrize("bad", ["", "h", "1x", "-5s", -1, True, "1h junk", "5m5"])
def test_bad_durations_name_the_setting(bad):
    with pytest.raises(config.ConfigError, match="token_ttl"):
        config.parse_duration(bad, "token_ttl")


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_bucket_allows_a_burst_then_refills_at_its_rate():
    clock = Clock()
    b = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert b.take() == 0 and b.take() == 0
    assert b.take() == pytest.approx(1.0)
    clock.t += 1.0
    assert b.take() == 0


def test_keyed_limiter_isolates_keys_and_caps_overall():
    clock = Clock()
    rl = KeyedRateLimiter(per_key_rate=0.1, per_key_burst=1, overall_rate=0.1, overall_burst=2, clock=clock)
    assert rl.take("a") == 0
    assert rl.take("a") > 0  # a's own bucket is empty
    assert rl.take("b") == 0  # b is not punished for a
    assert rl.take("c") > 0  # but the overall bucket (2) is spent


def test_keyed_limiter_forgets_the_oldest_key_beyond_its_bound():
    rl = KeyedRateLimiter(per_key_rate=0.0, per_key_burst=1, max_keys=2, clock=Clock())
    for k in ("a", "b", "c"):
        assert rl.take(k) == 0
    assert rl.take("a") == 0  # a was forgotten: bounded memory, fresh bucket
    assert rl.take("c") > 0


def test_startup_settings_are_read_once_and_a_bad_value_is_a_503_naming_it(monkeypatch):
    from edgeguard import http

    calls = []

    def load():
        calls.append(1)
        return config.env_int("max_things", 5, minimum=1)

    monkeypatch.setenv("max_things", "7")
    good = config.Startup("fn", load)
    assert good.get() == 7 and good.get() == 7 and len(calls) == 1
    monkeypatch.setenv("max_things", "lots")
    bad = config.Startup("fn", load)
    with pytest.raises(http.HTTPError) as info:
        bad.get()
    assert info.value.status == 503 and "fn is misconfigured" in info.value.reason
    assert "max_things='lots'" in info.value.reason and info.value.extra == {"misconfigured": True}
