"""Serve an assembled build context under the python3-http template contract.

Written from the template's contract (openfaas/python-flask-template at the
commit stack.yml pins; its index.py is not copied): Flask routes ``/`` and ``/<path:path>`` for GET, PUT,
POST, PATCH and DELETE; ``handle(event, context)`` gets ``event.body`` (bytes),
``event.headers`` (werkzeug headers), ``event.method``, ``event.query`` (multi
dict) and ``event.path``, and ``context.hostname``; the return value is mapped
exactly as the alpine template maps it; waitress serves with its defaults
(4 threads).

What of-watchdog does in front of index.py is the gateway's part (local/gateway.py: the
exec_timeout 504), except one thing done here: the watchdog drops the forwarding headers
(X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto, Forwarded) before the handler sees
them, so this runtime drops them too (tests/foundation/test_watchdog_behaviour.py shows it
on the real watchdog).

Run as a script (``python local/runtime.py --context build/<fn> --port N``) so
that, as in the image, the working directory is the context and ``function`` is
a top-level package. A guard makes ``import edgeguard`` fail here as it would in
the image, where only ``function.edgeguard`` exists.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import os
import sys


class _NoTopLevelEdgeguard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "edgeguard" or name.startswith("edgeguard."):
            raise ImportError(
                "'import edgeguard' does not work inside the function image; "
                "import it relatively: from .edgeguard import ..."
            )
        return None


class Event:
    def __init__(self, request):
        self.body = request.get_data()
        self.headers = request.headers
        self.method = request.method
        self.query = request.args
        self.path = request.path


class Context:
    def __init__(self):
        self.hostname = os.getenv("HOSTNAME", "localhost")


def format_response(res):
    from flask import jsonify

    if res is None:
        return ("", 200)
    if not isinstance(res, dict):
        return res  # str, tuple, flask.Response: Flask handles them as the template does
    status = res.get("statusCode", 200)
    headers = res.get("headers")
    body = res.get("body", "")
    if isinstance(body, dict):
        body = jsonify(body)
    elif not isinstance(body, str):
        body = str(body)  # the template renders lists, numbers, None and bytes with str()
    if headers:
        return (body, status, headers)
    return (body, status)


_DROPPED_BY_WATCHDOG = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED")


def _as_behind_the_watchdog(wsgi_app):
    def app(environ, start_response):
        for key in _DROPPED_BY_WATCHDOG:
            environ.pop(key, None)
        return wsgi_app(environ, start_response)

    return app


def create_app(handler_module):
    from flask import Flask, request

    app = Flask("edgeguard-runtime")
    app.wsgi_app = _as_behind_the_watchdog(app.wsgi_app)  # type: ignore[method-assign]

    @app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
    def call_handler(path):
        return format_response(handler_module.handle(Event(request), Context()))

    return app


def load_handler(context_dir: str):
    context_dir = os.path.abspath(context_dir)
    os.chdir(context_dir)
    sys.path[0:1] = [context_dir]
    sys.meta_path.insert(0, _NoTopLevelEdgeguard())
    return importlib.import_module("function.handler")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", required=True, help="assembled build context (holds function/)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    from waitress import serve

    app = create_app(load_handler(args.context))
    serve(app, host=args.host, port=args.port, threads=4, ident="edgeguard-runtime", _quiet=True)


if __name__ == "__main__":
    main()
