"""Screen requests at the WSGI level, before the python3-http template reads their body into memory.

The template's ``index.py`` builds its ``Event`` with ``request.get_data()`` before ``handle()`` runs, so a
handler that refuses an unauthenticated request has already paid for its body: a 12 MiB body is 12 MiB of
bytes plus werkzeug's copy while it reads. With 4 waitress threads, senders without a token can hold
~100 MiB of a function's memory. A *screen* runs on the WSGI environ (headers, method, path, query, never
``wsgi.input``) and either refuses the request with an answer at once, or lets it through, optionally
holding something (a slot of a semaphore) until the application has answered.

What this does not change, and cannot under this template: waitress receives a request's whole body before
it hands the request to any application (its HTTP parser completes the request first), and of-watchdog
proxies the body to it. Below waitress's ``inbuf_overflow`` the body is in waitress's memory, above it in a
temporary file (TMPDIR: the pod's /tmp). ``install`` lowers ``inbuf_overflow`` so only a small head of each
body is in memory, and can set ``max_request_body_size``: waitress then refuses a larger declared body (413)
from its headers alone, without receiving it.

How it is installed, and when it is not: the template's ``index.py`` (openfaas/python-flask-template,
python3-http) runs as ``__main__``, imports ``serve`` from waitress, imports ``function.handler`` and finally
calls ``serve(app, host=..., port=...)`` by that global name. A handler module calling ``install()`` while it
is imported replaces that ``serve`` with one that wraps ``app`` in the screen and passes the waitress
options. If ``__main__`` is not shaped like that (pytest, another runtime, a changed template) nothing is
replaced, ``install`` returns the reason and logs it, and the handler's own checks still refuse the
request, only after the body was read. tests/audit_ingest/test_preauth.py holds the real template to this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from . import log

Release = Callable[[], None]


class Refuse(Exception):
    """Answer now, without the application: ``status``, headers and body (bytes)."""

    def __init__(self, status: int, headers: dict, body: bytes):
        super().__init__(status)
        self.status, self.headers, self.body = status, headers, body


class Request:
    """The environ as edgeguard.http reads an event: headers, query, method, path; no body, ever."""

    body = b""

    def __init__(self, environ: dict):
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if environ.get(key):
                headers[name] = environ[key]
        self.headers = headers
        self.query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "/") or "/"


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def middleware(app, screen: Callable[[Request], Release | None]):
    """``app`` behind ``screen``: Refuse answers at once; a returned release runs once the app has answered."""

    def screened(environ, start_response) -> Iterable[bytes]:
        try:
            release = screen(Request(environ))
        except Refuse as r:
            start_response(
                f"{r.status} {_REASONS.get(r.status, 'Refused')}",
                [(k, str(v)) for k, v in r.headers.items()] + [("Content-Length", str(len(r.body)))],
            )
            return [r.body]
        except Exception as exc:  # noqa: BLE001 - a broken screen must not take the function down: let it through
            log.error("preauth.screen_failed", error=type(exc).__name__, message=str(exc)[:200])
            release = None
        try:
            # Flask builds the whole response and pops the request (and its body) before returning.
            return app(environ, start_response)
        finally:
            if release is not None:
                release()

    return screened


def install(screen: Callable[[Request], Release | None], *, waitress: dict | None = None) -> str | None:
    """Put ``screen`` in front of the template's app when it is served; None when installed, else why not."""
    main = sys.modules.get("__main__")
    try:
        import waitress as _waitress
    except ImportError:
        _waitress = None
    if main is None or os.path.basename(getattr(main, "__file__", "") or "") != "index.py":
        return _not_installed("not run by the template's index.py")
    if _waitress is None or getattr(main, "serve", None) is not _waitress.serve:
        return _not_installed("index.py does not serve with waitress.serve by that name")
    real_serve = main.serve
    options = dict(waitress or {})

    def serve(app, **kwargs):
        return real_serve(middleware(app, screen), **{**kwargs, **options})

    vars(main)["serve"] = serve  # index.py's global, which it calls once every module is imported
    log.info("preauth.installed", waitress=options)
    return None


def _not_installed(reason: str) -> str:
    log.info("preauth.not_installed", reason=reason)
    return reason
