"""Request signing, replay/skew protection and rate limiting (pure parts of node-enroll)."""

from __future__ import annotations

import pytest

from tests.node_enroll.helpers import KEY, signed, sub


@pytest.fixture
def mods(enroll_fn):
    fn = enroll_fn()
    return sub(fn, "signing"), sub(fn, "replay"), sub(fn, "ratelimit")


def test_signature_made_by_independent_implementation_is_accepted(mods):
    signing, _, _ = mods
    body, h = signed({"hostname": "pi-1"}, timestamp=1_700_000_000, nonce="n" * 20)
    assert signing.signature_matches(KEY, h["X-Enroll-Timestamp"], h["X-Enroll-Nonce"], body, h["X-Enroll-Signature"])


@pytest.mark.parametrize("field", ["body", "timestamp", "nonce", "key"])
def test_any_change_to_signed_material_breaks_the_signature(mods, field):
    signing, _, _ = mods
    body, h = signed(b'{"hostname":"pi-1"}', timestamp=1_700_000_000, nonce="n" * 20)
    ts, nonce, key = h["X-Enroll-Timestamp"], h["X-Enroll-Nonce"], KEY
    if field == "body":
        body = b'{"hostname":"pi-2"}'
    elif field == "timestamp":
        ts = str(int(ts) + 1)
    elif field == "nonce":
        nonce = "m" * 20
    else:
        key = KEY + "x"
    assert not signing.signature_matches(key, ts, nonce, body, h["X-Enroll-Signature"])


def test_canonical_string_is_the_documented_four_lines(mods):
    signing, _, _ = mods
    c = signing.canonical("1700000000", "abcdefghijklmnop", b"{}")
    assert c == (
        b"edgeguard-enroll-v1\n1700000000\nabcdefghijklmnop\n"
        b"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_replayed_nonce_is_refused(mods):
    _, replay, _ = mods
    g = replay.ReplayGuard(max_skew=300, clock=Clock(1000.0), started_at=0)
    g.check_and_record(1000, "a" * 16)
    with pytest.raises(replay.ReplayRejected) as exc:
        g.check_and_record(1000, "a" * 16)
    assert exc.value.status == 401 and "replayed" in exc.value.reason


@pytest.mark.parametrize(
    "offset,ok", [(-300, True), (30, True), (-301, False), (31, False), (240, False), (-3600, False)]
)
def test_timestamps_over_five_minutes_behind_or_thirty_seconds_ahead_are_refused(mods, offset, ok):
    _, replay, _ = mods
    g = replay.ReplayGuard(max_skew=300, max_ahead=30, clock=Clock(10_000.0), started_at=0)
    if ok:
        g.check_and_record(10_000 + offset, "b" * 16)
    else:
        with pytest.raises(replay.ReplayRejected) as exc:
            g.check_and_record(10_000 + offset, "b" * 16)
        assert exc.value.status == 401 and "clock" in exc.value.reason


def test_requests_signed_before_the_process_started_are_refused(mods):
    _, replay, _ = mods
    g = replay.ReplayGuard(max_skew=300, clock=Clock(5000.0), started_at=4990.0)
    with pytest.raises(replay.ReplayRejected, match="before the service"):
        g.check_and_record(4980, "c" * 16)
    g.check_and_record(4995, "d" * 16)


def test_nonce_cache_forgets_only_nonces_that_can_no_longer_pass_the_skew_check(mods):
    _, replay, _ = mods
    clock = Clock(1000.0)
    g = replay.ReplayGuard(max_skew=300, max_entries=100, clock=clock, started_at=0)
    g.check_and_record(1000, "e" * 16)
    clock.t = 1290.0  # still within skew of ts=1000: must still be remembered
    with pytest.raises(replay.ReplayRejected):
        g.check_and_record(1000, "e" * 16)
    clock.t = 1302.0
    g.check_and_record(1301, "f" * 16)  # triggers expiry
    assert len(g) == 1  # "e" forgotten, and ts=1000 would now fail the skew check anyway
    with pytest.raises(replay.ReplayRejected, match="clock"):
        g.check_and_record(1000, "e" * 16)


def test_full_nonce_cache_refuses_instead_of_forgetting_live_nonces(mods):
    _, replay, _ = mods
    g = replay.ReplayGuard(max_skew=300, max_entries=3, clock=Clock(1000.0), started_at=0)
    for i in range(3):
        g.check_and_record(1000, f"nonce-{i:011d}")
    with pytest.raises(replay.ReplayRejected) as exc:
        g.check_and_record(1000, "nonce-99999999999")
    assert exc.value.status == 503
    with pytest.raises(replay.ReplayRejected, match="replayed"):
        g.check_and_record(1000, "nonce-00000000000")


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, None),
        ("", None),
        ("203.0.113.7", "203.0.113.7"),
        (" 2001:db8::1 ", "2001:db8::1"),
        ("not-an-ip", None),
        ("203.0.113.7, 198.51.100.2", None),
    ],
)
def test_source_address_is_what_x_real_ip_names_or_nothing(mods, header, expected):
    _, _, rl = mods
    assert rl.source_address(header) == expected


def limits(rl, clock, *, per=10, overall=10**6, unsigned=10**6, **kw):
    return rl.EnrollLimits(per_minute=per, global_per_minute=overall, unsigned_per_minute=unsigned, clock=clock, **kw)


def test_rate_limit_per_node_then_refill(mods):
    _, _, rl = mods
    clock = Clock(0.0)
    lim = limits(rl, clock, per=2)
    assert lim.node("a") == 0 and lim.node("a") == 0
    wait = lim.node("a")
    assert wait == 30  # one token per 30 s
    assert lim.node("b") == 0  # other nodes unaffected
    clock.t = 30.0
    assert lim.node("a") == 0


def test_global_rate_limit_caps_all_sources_together(mods):
    _, _, rl = mods
    lim = limits(rl, Clock(0.0), per=10, overall=5)
    results = [(lim.node(f"pi-{i}"), lim.overall()) for i in range(8)]
    assert all(r[0] == 0 for r in results)  # each new node name is fresh...
    assert [r[1] for r in results[:5]] == [0] * 5 and all(r[1] > 0 for r in results[5:])  # ...the total is not


def test_unsigned_bucket_is_shared_and_separate_from_the_signed_ones(mods):
    _, _, rl = mods
    lim = limits(rl, Clock(0.0), per=1, overall=1, unsigned=3)
    assert [lim.unsigned() for _ in range(4)] == [0, 0, 0, 20]
    assert lim.node("pi-north-01") == 0 and lim.overall() == 0


def test_rate_limiter_remembers_a_bounded_number_of_nodes(mods):
    _, _, rl = mods
    lim = limits(rl, Clock(0.0), per=1, max_keys=50)
    for i in range(500):
        lim.node(f"s{i}")
    assert len(lim._per_node._keys) == 50


def test_documented_openssl_recipe_produces_the_same_signature(mods, tmp_path):
    import shutil
    import subprocess

    if not (shutil.which("openssl") and shutil.which("sha256sum")):
        pytest.skip("openssl/sha256sum not installed")
    signing, _, _ = mods
    body = '{"hostname":"pi-north-01","arch":"aarch64","machine_id":"0123456789abcdef0123456789abcdef"}'
    (tmp_path / "key").write_text(KEY + "\n")
    recipe = (
        'sig=$(printf \'edgeguard-enroll-v1\\n%s\\n%s\\n%s\' "$ts" "$nonce" '
        '"$(printf %s "$body" | sha256sum | cut -d\' \' -f1)" '
        '| openssl dgst -sha256 -hmac "$(cat "$keyfile")" -r | cut -d\' \' -f1); printf %s "$sig"'
    )
    out = subprocess.run(
        ["bash", "-c", recipe],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "ts": "1700000000",
            "nonce": "abcdefghijklmnop",
            "body": body,
            "keyfile": str(tmp_path / "key"),
        },
    ).stdout
    assert "v1=" + out == signing.sign(KEY, "1700000000", "abcdefghijklmnop", body.encode())


class FakeSecret:
    """The persisted window as the store keeps it: {nonce: forget-after}, with every write recorded."""

    def __init__(self):
        self.data, self.writes = {}, []

    def read(self):
        return dict(self.data)

    def write(self, add, drop):
        self.writes.append((dict(add), list(drop)))
        for n in drop:
            self.data.pop(n, None)
        self.data.update(add)


def test_a_restart_does_not_forget_an_accepted_nonce(mods):
    """issue 17 §1: the new process loads the window before it accepts anything."""
    _, replay, _ = mods
    clock, stored = Clock(1000.0), FakeSecret()
    first = replay.ReplayGuard(max_skew=300, max_ahead=30, clock=clock, started_at=990.0)
    window = replay.PersistedWindow(first, stored.read, stored.write, clock=clock)
    window.ensure_loaded()
    window.record("n" * 16, first.check_and_record(1020, "n" * 16))  # signed 20 s ahead
    clock.t = 1007.0  # the restart
    second = replay.ReplayGuard(max_skew=300, max_ahead=30, clock=clock, started_at=1005.0)
    replay.PersistedWindow(second, stored.read, stored.write, clock=clock).ensure_loaded()
    with pytest.raises(replay.ReplayRejected, match="replayed"):
        second.check_and_record(1020, "n" * 16)
    second.check_and_record(1020, "m" * 16)  # others still pass


def test_the_stored_window_drops_what_can_no_longer_be_replayed(mods):
    _, replay, _ = mods
    clock, stored = Clock(1000.0), FakeSecret()
    g = replay.ReplayGuard(max_skew=300, max_ahead=30, clock=clock, started_at=0)
    w = replay.PersistedWindow(g, stored.read, stored.write, clock=clock)
    w.record("a" * 16, g.check_and_record(1000, "a" * 16))
    clock.t = 1302.0
    w.record("b" * 16, g.check_and_record(1301, "b" * 16))
    assert set(stored.data) == {"b" * 16} and stored.writes[-1][1] == ["a" * 16]


def test_a_window_that_cannot_be_read_is_not_taken_as_empty(mods):
    _, replay, _ = mods
    calls = []

    def broken():
        calls.append(1)
        raise OSError("API down")

    w = replay.PersistedWindow(replay.ReplayGuard(clock=Clock(1000.0), started_at=0), broken, lambda a, d: None)
    for _ in range(2):
        with pytest.raises(OSError):
            w.ensure_loaded()
    assert len(calls) == 2  # asked again next time, never cached as loaded
