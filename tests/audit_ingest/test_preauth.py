"""Refusing an unauthenticated request without reading its body (edgeguard.preauth; issue 17 §7).

Under the python3-http template, index.py reads every body (``request.get_data()``) before ``handle()``
runs. audit-ingest installs a screen in front of the template's WSGI app that refuses from the headers
alone and bounds how many authenticated bodies are read at once. Proven here on the real template and the
real of-watchdog; the memory figures are in ``make bench`` (bench/audit_ingest_memory.py).
"""

from __future__ import annotations

import ast
import io
import json
import threading

import pytest
import requests

from local import components

from .conftest import FWD_TOKEN, TOKEN
from .test_handler import anon, eventlist

COMPONENTS = components.locate()


@pytest.mark.skipif(
    COMPONENTS.template is None,
    reason=components.needs_real("the python3-http template folder (EDGEGUARD_TEMPLATE or EDGEGUARD_TOOLS)"),
)
def test_the_real_template_serves_with_waitress_serve_by_name_after_importing_the_handler():
    """What preauth.install relies on: index.py imports ``serve`` from waitress and the handler at module level,
    and calls the global ``serve(app, ...)`` only under ``if __name__ == '__main__'``, after both."""
    tree = ast.parse((COMPONENTS.template / "index.py").read_text())
    top = tree.body
    imports_serve = [
        i
        for i, n in enumerate(top)
        if isinstance(n, ast.ImportFrom)
        and n.module == "waitress"
        and any(a.name == "serve" and a.asname is None for a in n.names)
    ]
    imports_handler = [
        i
        for i, n in enumerate(top)
        if isinstance(n, ast.ImportFrom) and n.module == "function" and any(a.name == "handler" for a in n.names)
    ]
    main = [i for i, n in enumerate(top) if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert imports_serve and imports_handler and main and imports_serve[0] < imports_handler[0] < main[0]
    calls = [n for n in ast.walk(top[main[0]]) if isinstance(n, ast.Call)]
    assert [ast.unparse(c.func) for c in calls] == ["serve"] and ast.unparse(calls[0].args[0]) == "app"
    # And nothing rebinds ``serve`` at module level after the handler is imported.
    later = [n for n in top[imports_handler[0] + 1 :] if isinstance(n, (ast.Assign, ast.ImportFrom, ast.FunctionDef))]
    assert not [n for n in later if "serve" in ast.unparse(n).split("(")[0]]


def test_install_does_nothing_outside_the_template_and_says_why():
    from edgeguard import preauth

    assert preauth.install(lambda req: None) == "not run by the template's index.py"


class _Unreadable(io.RawIOBase):
    def read(self, *a):
        raise AssertionError("the body was read")

    readinto = readline = read


def _environ(method="POST", auth=None, length="12582912", path="/"):
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": length,
        "wsgi.input": _Unreadable(),
    }
    if auth:
        env["HTTP_AUTHORIZATION"] = auth
    return env


def test_a_refusal_never_calls_the_app_nor_reads_the_body():
    from edgeguard import preauth

    def app(environ, start_response):
        raise AssertionError("the app ran")

    def screen(req):
        assert req.headers.get("Authorization") is None and req.method == "POST" and req.body == b""
        raise preauth.Refuse(401, {"Content-Type": "application/json"}, b'{"error": "no"}')

    got = {}
    body = preauth.middleware(app, screen)(
        _environ(), lambda status, headers: got.update(status=status, headers=headers)
    )
    assert got["status"] == "401 Unauthorized" and b"".join(body) == b'{"error": "no"}'
    assert ("Content-Length", "15") in got["headers"]


def test_what_a_screen_holds_is_released_once_the_app_answered():
    from edgeguard import preauth

    order = []

    def app(environ, start_response):
        order.append("app")
        start_response("200 OK", [])
        return [b"ok"]

    assert preauth.middleware(app, lambda req: lambda: order.append("released"))(_environ(), lambda *a: None) == [b"ok"]
    assert order == ["app", "released"]


def test_the_handlers_screen_refuses_from_headers_and_counts_as_handle_would(ingest, make_event):
    from .test_handler import health

    mod = ingest()
    cases = [
        (_environ(), 401),
        (_environ(auth="Bearer wrong"), 401),
        (_environ(method="PUT", auth=f"Bearer {TOKEN}"), 405),
        (_environ(auth=f"Bearer {TOKEN}", length=str(20 << 20)), 413),
    ]
    for environ, status in cases:
        with pytest.raises(mod.preauth.Refuse) as r:
            mod._screen(mod.preauth.Request(environ))
        assert r.value.status == status and "error" in json.loads(r.value.body)
    assert "--audit-webhook-truncate-max-batch-size" in json.loads(r.value.body)["error"]
    c = health(mod, make_event)[1]["counters"]
    counted = (c["unauthenticated"], c["invalid_token"], c["refused_unread"], c["rejected"], c["requests"])
    assert counted == (1, 1, 4, 4, 5)
    assert c["authenticated_batches"] == 0


def test_at_most_max_batches_in_memory_bodies_are_read_at_once(ingest):
    mod = ingest(env={"max_batches_in_memory": "1", "batch_wait_seconds": "0.2"})
    ok = mod.preauth.Request(_environ(auth=f"Bearer {TOKEN}", length="100"))
    release = mod._screen(ok)
    with pytest.raises(mod.preauth.Refuse) as r:
        mod._screen(ok)
    assert r.value.status == 503 and int(r.value.headers["Retry-After"]) >= 1
    release()
    mod._screen(ok)()


def test_under_the_real_watchdog_unauthenticated_bodies_are_refused_unread(serve_function, forwarder):
    fn = serve_function(
        "audit-ingest",
        env={"gateway_url": forwarder.url},
        secrets={"audit-ingest-token": TOKEN, "alert-forwarder-token": FWD_TOKEN},
    )
    if fn.process.kind != "of-watchdog":
        pytest.skip(components.needs_real("of-watchdog and the python3-http template (EDGEGUARD_TOOLS)"))
    big = b'{"kind":"EventList","items":[{"a":"' + b"x" * (12 << 20) + b'"}]}'
    statuses: list = []

    def send(token):
        hdrs = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        statuses.append(requests.post(fn.url + "/", data=big, headers=hdrs, timeout=60).status_code)

    threads = [threading.Thread(target=send, args=(t,)) for t in (None, "wrong") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [401] * 8
    hdrs = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = requests.post(fn.url + "/", data=json.dumps(eventlist(anon(1))), headers=hdrs, timeout=30)
    assert r.status_code == 200 and r.json()["forwarded"] == 1
    counters = requests.get(fn.url + "/", headers=hdrs, timeout=30).json()["counters"]
    assert counters["refused_unread"] == 8 and (counters["unauthenticated"], counters["invalid_token"]) == (4, 4)
    (installed,) = [rec for rec in fn.log_records() if rec.get("event") == "preauth.installed"]
    limit = int(fn.env["max_body_bytes"])
    assert installed["waitress"] == {"inbuf_overflow": 65536, "max_request_body_size": 2 * limit}
