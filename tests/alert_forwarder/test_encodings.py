"""Falco's other http_output settings (issue 11 §6): gzip bodies within a decompressed limit; a 415 naming the fix."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc

from edgeguard.falco.alert import dumps


def post(mod, h, body: bytes, **headers):
    return h.call(mod, "POST", "/", body, headers=h.auth_headers(headers))


def test_a_gzip_body_is_accepted_and_routed(load_handler, h):
    mod = load_handler()
    al = h.falco_alert(priority="Warning")
    resp = post(mod, h, gzip.compress(dumps(al).encode()), **{"Content-Encoding": "gzip"})
    assert resp["statusCode"] == 202, resp
    assert json.loads(resp["body"])["alerts"][0]["destinations"] == ["console"]


def test_a_gzip_batch_of_concatenated_members_is_accepted(load_handler, h):
    mod = load_handler()
    body = gzip.compress((dumps(h.falco_alert(rule="a")) + "\n").encode()) + gzip.compress(
        dumps(h.falco_alert(rule="b")).encode()
    )
    resp = post(mod, h, body, **{"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"})
    assert resp["statusCode"] == 202 and json.loads(resp["body"])["accepted"] == 2


def test_a_zip_bomb_gets_413_without_inflating_it(load_handler, h):
    mod = load_handler(env={"max_body_bytes": "1048576"})
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)  # 200 MiB in ~200 KiB
    assert len(bomb) < 1048576
    tracemalloc.start()
    started = time.monotonic()
    resp = post(mod, h, bomb, **{"Content-Encoding": "gzip"})
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert resp["statusCode"] == 413, resp
    assert "decompresses to more than the limit of 1048576 bytes" in json.loads(resp["body"])["error"]
    assert peak < 8 * 1024 * 1024, peak  # about the limit, never the 200 MiB
    assert elapsed < 2, elapsed
    assert mod.FORWARDER.metrics.total("falco_events_total") == 0 and mod.FORWARDER.spool.depth() == 0
    assert h.call(mod, "GET", "/metrics")["statusCode"] == 200


def test_broken_gzip_and_unknown_encodings_are_4xx_with_a_reason(load_handler, h):
    mod = load_handler()
    body = gzip.compress(dumps(h.falco_alert()).encode())
    resp = post(mod, h, body[: len(body) // 2], **{"Content-Encoding": "gzip"})
    assert resp["statusCode"] == 400 and "truncated" in json.loads(resp["body"])["error"]
    resp = post(mod, h, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert resp["statusCode"] == 400 and "not valid gzip" in json.loads(resp["body"])["error"]
    resp = post(mod, h, dumps(h.falco_alert()).encode(), **{"Content-Encoding": "br"})
    assert resp["statusCode"] == 415 and json.loads(resp["body"])["accepted_encodings"] == ["identity", "gzip"]
    assert mod.FORWARDER.metrics.total("falco_events_total") == 0


def test_falco_text_output_gets_415_that_names_json_output(load_handler, h):
    """json_output: false makes http_output send one formatted line as text/plain."""
    mod = load_handler()
    line = b"10:11:12.123456789: Warning A shell was spawned in a container (user=root)"
    resp = post(mod, h, line, **{"Content-Type": "text/plain"})
    assert resp["statusCode"] == 415
    assert "set json_output: true" in json.loads(resp["body"])["error"]
