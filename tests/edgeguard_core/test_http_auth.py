"""Request parsing, JSON errors and caller authentication shared by every function."""

import io
import json

import pytest

from edgeguard import auth, config, http, log
from tests.conftest import make_event


def ev(body=b"{}", ctype="application/json", **kw):
    headers = kw.pop("headers", {})
    if ctype:
        headers["Content-Type"] = ctype
    return make_event(body=body, headers=headers, **kw)


def test_parse_json_accepts_json_and_json_suffix_types():
    assert http.parse_json(ev(b'{"a":1}'), max_bytes=100) == {"a": 1}
    assert http.parse_json(ev(b"[1]", "application/merge-patch+json"), max_bytes=100) == [1]
    assert http.parse_json(ev(b"{}", "application/json; charset=utf-8"), max_bytes=100) == {}


@pytest.mark.parametrize(
    "body,ctype,status,words",
    [
        (b"x" * 101, "application/json", 413, "larger than the limit"),
        (b"{}", "application/x-www-form-urlencoded", 415, "Content-Type must be"),
        (b"{}", None, 415, "got none"),
        (b"", "application/json", 400, "empty"),
        (b"{nope", "application/json", 400, "invalid JSON"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
        (b"[" * 100000, "application/json", 400, "invalid JSON"),
    ],
)
def test_parse_json_rejects_bad_bodies_with_a_reason(body, ctype, status, words):
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(body, ctype), max_bytes=max(101, len(body)) if status != 413 else 100)
    assert e.value.status == status and words in e.value.reason


def test_declared_content_length_over_limit_is_413_before_reading():
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(b"{}", headers={"Content-Length": "5000"}), max_bytes=100)
    assert e.value.status == 413


def test_ndjson_only_where_allowed():
    body = b'{"a":1}\n\n{"a":2}\n'
    assert http.parse_json(ev(body, "application/x-ndjson"), max_bytes=100, allow_ndjson=True) == [{"a": 1}, {"a": 2}]
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(body, "application/x-ndjson"), max_bytes=100)
    assert e.value.status == 415
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(b'{"a":1}\n{x', "application/x-ndjson"), max_bytes=100, allow_ndjson=True)
    assert "line 2" in e.value.reason


def test_guarded_turns_errors_into_json_and_hides_tracebacks(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(log, "_stream", buf)

    @http.guarded
    def handle(event, context):
        if event.path == "/bad":
            raise http.HTTPError(422, "nope", field="x")
        raise KeyError("internal detail")

    r = handle(make_event(path="/bad"), None)
    assert r["statusCode"] == 422 and json.loads(r["body"]) == {"error": "nope", "status": 422, "field": "x"}
    r = handle(make_event(path="/boom", headers={"X-Call-Id": "c1"}), None)
    assert r["statusCode"] == 500 and r["headers"]["Content-Type"] == "application/json"
    assert json.loads(r["body"]) == {"error": "internal error", "status": 500, "call_id": "c1"}
    assert "Traceback" not in r["body"] and "internal detail" not in r["body"]
    assert json.loads(buf.getvalue().splitlines()[-1])["error"] == "KeyError"


def test_require_method_405_with_allow_header_and_head_as_get():
    assert http.require_method(make_event("HEAD"), ["GET"]) == "GET"
    with pytest.raises(http.HTTPError) as e:
        http.require_method(make_event("DELETE"), ["GET", "POST"])
    assert e.value.status == 405 and e.value.headers == {"Allow": "GET, POST"}


@pytest.fixture
def secret_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    (tmp_path / "fn-token").write_text("s3cr3t-token-value\n")  # faas-cli --from-file keeps the newline
    return tmp_path


def test_bearer_token_with_trailing_newline_in_secret_is_accepted(secret_dir):
    auth.require_bearer(make_event(headers={"Authorization": "Bearer s3cr3t-token-value"}), "fn-token")


@pytest.mark.parametrize(
    "headers,query",
    [
        ({}, {}),
        ({"Authorization": "Bearer wrong"}, {}),
        ({"Authorization": "Basic czNjcjN0"}, {}),
        ({"Authorization": "Bearer "}, {}),
        ({}, {"token": "s3cr3t-token-value"}),  # query token not allowed on this route
    ],
)
def test_missing_or_wrong_credentials_are_401(secret_dir, headers, query):
    with pytest.raises(http.HTTPError) as e:
        auth.require_bearer(make_event(headers=headers, query=query), "fn-token")
    assert e.value.status == 401 and "WWW-Authenticate" in e.value.headers
    assert "s3cr3t" not in e.value.reason


def basic(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_password_only_where_the_caller_cannot_set_headers(secret_dir):
    auth.require_bearer(make_event(headers=basic("falco", "s3cr3t-token-value")), "fn-token", allow_basic=True)
    for headers in (basic("falco", "nope"), basic("s3cr3t-token-value", ""), {"Authorization": "Basic !!notb64"}):
        with pytest.raises(http.HTTPError) as e:
            auth.require_bearer(make_event(headers=headers), "fn-token", allow_basic=True)
        assert e.value.status == 401
    with pytest.raises(http.HTTPError):  # not where it was not asked for
        auth.require_bearer(make_event(headers=basic("falco", "s3cr3t-token-value")), "fn-token")


def test_a_token_in_the_query_string_is_refused_because_the_watchdog_logs_urls(secret_dir):
    for allow_basic in (False, True):
        with pytest.raises(http.HTTPError) as e:
            auth.require_bearer(make_event(query={"token": "s3cr3t-token-value"}), "fn-token", allow_basic=allow_basic)
        assert e.value.status == 401 and "query string" in e.value.reason and "s3cr3t" not in e.value.reason


def test_missing_secret_fails_closed_with_503(secret_dir):
    with pytest.raises(http.HTTPError) as e:
        auth.require_bearer(make_event(headers={"Authorization": "Bearer x"}), "absent-token")
    assert e.value.status == 503


def test_tokens_are_compared_in_constant_time(secret_dir, monkeypatch):
    calls = []
    import hmac

    real = hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    auth.require_bearer(make_event(headers={"Authorization": "Bearer s3cr3t-token-value"}), "fn-token")
    assert calls


def test_rotated_secret_takes_effect_without_restart(secret_dir):
    assert config.read_secret("fn-token") == "s3cr3t-token-value"
    import os
    import time

    p = secret_dir / "fn-token"
    p.write_text("rotated-token-value")
    os.utime(p, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert config.read_secret("fn-token") == "rotated-token-value"


def test_logs_redact_sensitive_keys_and_known_secret_values(secret_dir, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(log, "_stream", buf)
    config.read_secret("fn-token")
    log.info("x", token="abc", url="http://h/?token=s3cr3t-token-value", nested={"password": "p", "ok": 1})
    line = json.loads(buf.getvalue())
    assert line["token"] == "[redacted]" and line["nested"] == {"password": "[redacted]", "ok": 1}
    assert "s3cr3t-token-value" not in buf.getvalue()
    assert line["event"] == "x" and line["level"] == "info"


def test_a_log_line_stays_under_the_watchdogs_64_kib_line_limit_with_the_cut_marked(secret_dir, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(log, "_stream", buf)
    config.read_secret("fn-token")
    log.warning("alert", output="x" * 200_000 + "s3cr3t-token-value", keys=[f"k{i}" for i in range(50_000)], rule="R")
    line = buf.getvalue()
    assert len(line.encode()) <= log.MAX_LINE_BYTES
    rec = json.loads(line)
    assert rec["event"] == "alert" and rec["rule"] == "R"
    assert rec["output"].startswith("x" * 100) and "more chars]" in rec["output"]
    assert rec["keys"][0] == "k0" and rec["keys"][-1].endswith("more items]")
    assert "s3cr3t-token-value" not in line
    buf.truncate(0), buf.seek(0)
    log.info("many", **{f"field_{i}": "v" * 200 for i in range(2000)})
    rec = json.loads(buf.getvalue())
    assert len(buf.getvalue().encode()) <= log.MAX_LINE_BYTES and rec["event"] == "many"
    assert rec["truncated_fields"][:2] == ["field_0", "field_1"]
    buf.truncate(0), buf.seek(0)
    log.info("small", a="b" * 100)
    assert json.loads(buf.getvalue())["a"] == "b" * 100  # short lines are untouched


def test_env_parsing_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(config.ConfigError, match="X_INT"):
        config.env_int("X_INT", 1)
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(config.ConfigError, match="X_BOOL"):
        config.env_bool("X_BOOL", False)
    monkeypatch.setenv("X_BOOL", "TRUE")
    assert config.env_bool("X_BOOL", False) is True


@pytest.mark.parametrize(
    "body,words",
    [
        # over Python's int conversion limit: ValueError, not JSONDecodeError
        (b'{"a": ' + b"1" * 5000 + b"}", "invalid JSON"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b"[Infinity]", "Infinity is not valid JSON"),
        (b'{"a": -Infinity}', "-Infinity is not valid JSON"),
    ],
)
def test_values_json_cannot_carry_are_400_not_500(body, words):
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(body), max_bytes=10_000)
    assert e.value.status == 400 and words in e.value.reason


def test_invoke_refuses_to_call_unauthenticated_when_the_token_secret_is_missing(secret_dir, monkeypatch):
    from edgeguard import gateway, httpclient

    def boom(*a, **kw):
        raise AssertionError("no request may be sent without the callee's token")

    monkeypatch.setattr(httpclient.Client, "request", boom)
    with pytest.raises(config.ConfigError, match="absent-token"):
        gateway.invoke("alert-forwarder", b"[]", token_secret="absent-token")


def test_even_a_short_secret_value_is_masked(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(log, "_stream", buf)
    log.register_secret("k9z")
    log.info("x", detail="token k9z rejected")
    assert "k9z" not in buf.getvalue()


def test_metrics_reader_takes_the_read_only_metrics_token_or_the_functions_own(tmp_path, monkeypatch):
    from edgeguard import auth, http
    from tests.conftest import make_event

    monkeypatch.setenv("EDGEGUARD_SECRETS_DIR", str(tmp_path))
    (tmp_path / "fn-token").write_text("own-token\n")

    def call(token):
        return auth.require_metrics_reader(
            make_event("GET", "/metrics", b"", {"Authorization": f"Bearer {token}"}), "fn-token"
        )

    call("own-token")
    with pytest.raises(http.HTTPError) as info:
        call("metrics-token")  # not mounted: only the function's own token works
    assert info.value.status == 401
    (tmp_path / auth.METRICS_SECRET).write_text("metrics-token\n")
    call("metrics-token")
    call("own-token")
    with pytest.raises(http.HTTPError):
        call("metrics-tokenX")


@pytest.mark.parametrize("length", ["¹", "1²", "abc", "-5", ""])
def test_a_content_length_that_is_not_a_plain_decimal_is_ignored_and_the_real_size_still_counts(length):
    assert http.declared_length(ev(b"{}", headers={"Content-Length": length})) is None
    assert http.parse_json(ev(b"{}", headers={"Content-Length": length}), max_bytes=100) == {}
    with pytest.raises(http.HTTPError) as e:
        http.parse_json(ev(b"[" + b"1," * 100 + b"1]", headers={"Content-Length": length}), max_bytes=100)
    assert e.value.status == 413
