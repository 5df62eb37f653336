"""Dedup windows under a controllable clock, and the durable spool (restart, bound, crash leftovers)."""

from __future__ import annotations

import pytest


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


KEY = ("rule", "hostname", "output_fields.k8s.pod.name")


def a(pod="p1", rule="Terminal shell in container", t="2024-05-01T10:11:12.000000000Z"):
    return {
        "rule": rule,
        "priority": "Warning",
        "source": "syscall",
        "hostname": "h",
        "tags": ["shell"],
        "time": t,
        "output": "o",
        "output_fields": {"k8s.pod.name": pod, "k8s.ns.name": "default"},
    }


# ----------------------------------------------------------------------------- dedup


class _CountingTime(float):
    """A clock value that counts how often it is compared: eviction must not compare every open window."""

    compared = 0

    def __lt__(self, other):
        _CountingTime.compared += 1
        return float.__lt__(self, other)

    def __gt__(self, other):
        _CountingTime.compared += 1
        return float.__gt__(self, other)


def test_eviction_at_max_keys_drops_the_oldest_window_without_scanning_all(pkg):
    t = [1_700_000_000.0]
    d = pkg.dedup.Deduper(clock=lambda: _CountingTime(t[0]), max_keys=1000)
    for i in range(1000):
        t[0] += 0.001
        d.check("r", 60, KEY, a(pod=f"p{i}"))
    assert d.check("r", 60, KEY, a(pod="p0")) == (False, [])  # p0 repeats: its window is open, counted
    _CountingTime.compared = 0
    sent, summaries = d.check("r", 60, KEY, a(pod="new-1"))
    assert sent and [s.alert["output_fields"]["k8s.pod.name"] for s in summaries] == ["p0"]  # oldest, with its count
    sent, summaries = d.check("r", 60, KEY, a(pod="new-2"))
    assert sent and summaries == []  # p1 evicted next, silently: it suppressed nothing
    assert _CountingTime.compared < 10
    assert d.open_windows() == 1000
    assert d.check("r", 60, KEY, a(pod="p1")) == (True, [])  # p1's window is gone, p2's is not
    assert d.check("r", 60, KEY, a(pod="p3"))[0] is False


def test_repeats_inside_window_are_suppressed_and_other_keys_pass(pkg):
    clock = Clock()
    d = pkg.dedup.Deduper(clock=clock)
    assert d.check("r", 60, KEY, a()) == (True, [])
    clock.advance(10)
    assert d.check("r", 60, KEY, a())[0] is False
    assert d.check("r", 60, KEY, a())[0] is False
    assert d.check("r", 60, KEY, a(pod="p2"))[0] is True  # different key field value
    assert d.check("other-route", 60, KEY, a())[0] is True  # windows are per route


def test_summary_when_window_closes_counts_suppressed_repeats(pkg):
    clock = Clock()
    d = pkg.dedup.Deduper(clock=clock)
    d.check("r", 60, KEY, a(t="2024-05-01T10:00:00.000000000Z"))
    for i in range(4):
        clock.advance(5)
        d.check("r", 60, KEY, a(t=f"2024-05-01T10:00:0{i + 1}.000000000Z"))
    assert d.expire() == []  # window still open at t+20
    clock.advance(40)  # t+60: closes
    [s] = d.expire()
    assert s.route == "r"
    f = s.alert["output_fields"]
    assert f["edgeguard.suppressed"] == 4 and f["edgeguard.window_seconds"] == 60
    assert f["edgeguard.first_time"] == "2024-05-01T10:00:00.000000000Z"
    assert f["edgeguard.last_time"] == "2024-05-01T10:00:04.000000000Z"
    assert f["k8s.pod.name"] == "p1"
    assert '4 repeats of "Terminal shell in container" suppressed' in s.alert["output"]
    assert "edgeguard_dedup_summary" in s.alert["tags"]
    assert d.open_windows() == 0
    assert d.expire() == []  # emitted once


def test_summary_comes_with_next_alert_after_window(pkg):
    clock = Clock()
    d = pkg.dedup.Deduper(clock=clock)
    d.check("r", 30, KEY, a())
    clock.advance(1)
    d.check("r", 30, KEY, a())
    clock.advance(30)
    send, summaries = d.check("r", 30, KEY, a())
    assert send is True
    assert [s.alert["output_fields"]["edgeguard.suppressed"] for s in summaries] == [1]
    clock.advance(1)
    assert d.check("r", 30, KEY, a())[0] is False  # the new alert opened a fresh window


def test_window_without_repeats_closes_silently(pkg):
    clock = Clock()
    d = pkg.dedup.Deduper(clock=clock)
    d.check("r", 5, KEY, a())
    clock.advance(6)
    assert d.expire() == []


def test_summary_is_a_valid_falco_alert(pkg):
    from edgeguard.falco.alert import parse_alert

    clock = Clock()
    d = pkg.dedup.Deduper(clock=clock)
    d.check("r", 5, KEY, a())
    d.check("r", 5, KEY, a())
    clock.advance(5)
    [s] = d.expire()
    parse_alert(s.alert)


# ----------------------------------------------------------------------------- spool


def entry(pkg, dest="hook", n=0, created=None):
    import time

    created = created if created is not None else time.time() + n * 1e-3
    return pkg.spool.Entry(
        id=pkg.spool.new_entry_id(created),
        destination=dest,
        key=f"k{n}",
        payload=a(),
        created=created,
        next_attempt=created,
    )


def test_spooled_entries_survive_a_new_spool_instance(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    e = entry(pkg)
    s.put(e)
    journal = tmp_path / "sp" / "spool.wal"
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    s.close()
    again = pkg.spool.Spool(tmp_path / "sp")
    [got] = again.claim_due(ignore_schedule=True)
    assert got.id == e.id and got.key == "k0" and got.payload == a()


def test_delivered_entries_stay_gone_after_restart(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    keep, done = entry(pkg, n=1), entry(pkg, n=2)
    s.put_many([keep, done])
    s.remove(done.id)
    s.close()
    again = pkg.spool.Spool(tmp_path / "sp")
    assert [e.id for e in again.snapshot()] == [keep.id]


def test_full_spool_drops_oldest_and_counts(pkg, tmp_path):
    drops = []
    s = pkg.spool.Spool(tmp_path / "sp", max_entries=3, on_drop=lambda d, r, _eid: drops.append((d, r)))
    ids = []
    for n in range(5):
        e = entry(pkg, dest=f"d{n}", n=n)
        ids.append(e.id)
        s.put(e)
    assert s.depth() == 3
    assert drops == [("d0", "spool_full"), ("d1", "spool_full")]
    assert {e.id for e in s.claim_due(ignore_schedule=True)} == set(ids[2:])
    s.close()
    assert {e.id for e in pkg.spool.Spool(tmp_path / "sp").snapshot()} == set(ids[2:])


def test_claimed_entries_are_not_handed_out_twice(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    s.put(entry(pkg, n=1))
    s.put(entry(pkg, n=2))
    first = s.claim_due(ignore_schedule=True)
    assert len(first) == 2
    assert s.claim_due(ignore_schedule=True) == []
    s.release(first[0].id)
    assert [e.id for e in s.claim_due(ignore_schedule=True)] == [first[0].id]


def test_not_due_entries_wait_and_old_ones_expire(pkg, tmp_path):
    now = [1000.0]
    drops = []
    s = pkg.spool.Spool(tmp_path / "sp", max_age=100, clock=lambda: now[0], on_drop=lambda d, r, _eid: drops.append(r))
    e = entry(pkg, created=1000.0)
    e.next_attempt = 1050.0
    s.put(e)
    assert s.claim_due() == []
    now[0] = 1050.0
    [got] = s.claim_due()
    s.release(got.id)
    now[0] = 1101.0
    assert s.claim_due(ignore_schedule=True) == [] and drops == ["expired"] and s.depth() == 0


def test_torn_last_line_and_compaction_leftovers_are_handled_at_start(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    good = entry(pkg)
    s.put(good)
    s.close()
    d = tmp_path / "sp"
    with open(d / "spool.wal", "ab") as f:
        f.write(b'{"op":"put","e":{"id":"x","destin')  # the process died mid-write
    (d / "spool.wal.tmp").write_bytes(b"half a compaction")
    again = pkg.spool.Spool(d)
    assert [e.id for e in again.snapshot()] == [good.id] and again.corrupt == 1
    assert not (d / "spool.wal.tmp").exists()
    again.put(entry(pkg, n=5))  # the journal is usable after the torn line
    again.close()
    assert pkg.spool.Spool(d).depth() == 2


def test_updates_survive_restart_and_removed_entries_are_not_resurrected(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    e = entry(pkg)
    s.put(e)
    e.attempts, e.last_error, e.next_attempt = 3, "HTTP 503", 12345.0
    s.update(e)
    s.close()
    s = pkg.spool.Spool(tmp_path / "sp")
    [got] = s.snapshot()
    assert (got.attempts, got.last_error, got.next_attempt) == (3, "HTTP 503", 12345.0)
    s.remove(got.id)
    s.update(got)
    assert s.depth() == 0
    s.close()
    assert pkg.spool.Spool(tmp_path / "sp").depth() == 0


def test_journal_is_compacted_when_dead_records_pile_up(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    for n in range(1500):
        e = entry(pkg, n=n)
        s.put(e)
        s.remove(e.id)
    live = entry(pkg, n=9999)
    s.put(live)
    lines = (tmp_path / "sp" / "spool.wal").read_bytes().count(b"\n")
    assert lines < 1000
    s.close()
    assert [x.id for x in pkg.spool.Spool(tmp_path / "sp").snapshot()] == [live.id]


def test_concurrent_puts_share_fsyncs_and_all_survive(pkg, tmp_path):
    import threading

    s = pkg.spool.Spool(tmp_path / "sp")
    ids = []
    lock = threading.Lock()

    def writer(k):
        for n in range(50):
            e = entry(pkg, n=k * 100 + n)
            s.put(e)
            with lock:
                ids.append(e.id)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s.close()
    assert {e.id for e in pkg.spool.Spool(tmp_path / "sp").snapshot()} == set(ids)


def test_a_second_process_cannot_share_the_spool(pkg, tmp_path):
    s = pkg.spool.Spool(tmp_path / "sp")
    with pytest.raises(pkg.spool.SpoolBusy):
        pkg.spool.Spool(tmp_path / "sp")  # flock is per open file description, so this models a second process
    s.close()
    pkg.spool.Spool(tmp_path / "sp").close()


# ----------------------------------------------------------------------------- throttle


def test_throttle_passes_max_per_window_then_sends_one_digest(pkg):
    from edgeguard.falco.alert import parse_alert

    clock = Clock()
    t = pkg.dedup.Throttler(clock=clock)
    sent = [t.check("chat", 3, 60, a(pod=f"p{i}", rule="R1" if i % 2 else "R2"))[0] for i in range(8)]
    assert sent == [True, True, True, False, False, False, False, False]
    crit = dict(a(pod="x", rule="R3"), priority="Critical", hostname="h2")
    assert t.check("chat", 3, 60, crit)[0] is False
    assert t.check("other", 3, 60, a())[0] is True  # buckets are per route
    clock.advance(59)
    assert t.expire() == []
    clock.advance(1)
    summaries = t.expire()
    [s] = [x for x in summaries if x.route == "chat"]
    f = s.alert["output_fields"]
    assert f["edgeguard.suppressed"] == 6 and f["edgeguard.max"] == 3
    assert f["edgeguard.by_rule"] == {"R1": 3, "R2": 2, "R3": 1}
    assert f["edgeguard.hostnames"] == ["h", "h2"]
    assert s.alert["priority"] == "Critical"  # the most severe alert held back
    assert "6 alerts held back by route chat (at most 3 per 60s): R1 x3, R2 x2, R3 x1" in s.alert["output"]
    parse_alert(s.alert)
    assert t.check("chat", 3, 60, a())[0] is True  # a new window


def test_throttle_digest_comes_with_the_next_alert_after_the_window(pkg):
    clock = Clock()
    t = pkg.dedup.Throttler(clock=clock)
    t.check("r", 1, 10, a())
    t.check("r", 1, 10, a(pod="p2"))
    clock.advance(10)
    send, summaries = t.check("r", 1, 10, a(pod="p3"))
    assert send is True and [s.alert["output_fields"]["edgeguard.suppressed"] for s in summaries] == [1]
