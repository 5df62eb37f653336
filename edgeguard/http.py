"""The python3-http contract as our handlers use it: parse, answer, fail cleanly.

Handlers receive the template's ``event`` (bytes body, case-insensitive headers,
multi-dict query, method, path) and return a dict. Every response body here is a
JSON *string* with an explicit Content-Type, because the template turns only
dict bodies into JSON and renders lists with ``str()``.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from . import jsonsafe, log

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")


class HTTPError(Exception):
    """An answer to the caller: status, a human reason, optional extra JSON fields and headers."""

    def __init__(self, status: int, reason: str, *, headers: dict | None = None, **extra: Any):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.extra = extra


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> dict:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return {"statusCode": status, "body": json.dumps(obj, ensure_ascii=False, default=str) + "\n", "headers": hdrs}


def text_response(
    text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8", headers: dict | None = None
) -> dict:
    hdrs = {"Content-Type": content_type}
    if headers:
        hdrs.update(headers)
    return {"statusCode": status, "body": text, "headers": hdrs}


def error_response(err: HTTPError) -> dict:
    body = {"error": err.reason, "status": err.status}
    body.update(err.extra)
    return json_response(body, err.status, err.headers)


def header(event, name: str, default: str | None = None) -> str | None:
    headers = getattr(event, "headers", None) or {}
    value = headers.get(name)
    if value is None and isinstance(headers, dict):  # plain dicts in unit tests are case-sensitive
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return default if value is None else value


def query(event, name: str, default: str | None = None) -> str | None:
    q = getattr(event, "query", None) or {}
    value = q.get(name)
    if isinstance(value, list):  # plain dict in tests
        value = value[0] if value else None
    return default if value is None else value


def query_flag(event, name: str) -> bool:
    value = query(event, name)
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on", "")


def method(event) -> str:
    return (getattr(event, "method", "GET") or "GET").upper()


def path(event) -> str:
    p = getattr(event, "path", "/") or "/"
    return p if p.startswith("/") else "/" + p


def call_id(event) -> str:
    return header(event, "X-Call-Id") or uuid.uuid4().hex


def media_type(event) -> str:
    return (header(event, "Content-Type", "") or "").split(";", 1)[0].strip().lower()


GZIP_ENCODINGS = ("gzip", "x-gzip")


def declared_length(event) -> int | None:
    """The Content-Length header as a number, None when absent or not a plain decimal (str.isdigit() alone
    takes '¹' and other Unicode digits that int() refuses)."""
    declared = (header(event, "Content-Length") or "").strip()
    return int(declared) if declared.isascii() and declared.isdigit() else None


def read_body(event, *, max_bytes: int, allow_gzip: bool = False) -> bytes:
    """The request body, at most ``max_bytes`` as sent and, with ``allow_gzip``, decompressed (413 past either).

    A ``Content-Encoding`` other than identity (or gzip where allowed) is a 415 naming it: decoding it as text
    would only fail later with a misleading "not valid UTF-8".
    """
    body = getattr(event, "body", b"") or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    declared = declared_length(event)
    if declared is not None and declared > max_bytes or len(body) > max_bytes:
        raise HTTPError(413, f"request body is larger than the limit of {max_bytes} bytes", limit=max_bytes)
    encoding = (header(event, "Content-Encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if allow_gzip and encoding in GZIP_ENCODINGS:
        return gunzip(body, max_bytes)
    accepted = ["identity"] + (["gzip"] if allow_gzip else [])
    raise HTTPError(
        415,
        f"Content-Encoding {encoding[:40]!r} is not supported here; use {' or '.join(accepted)}",
        accepted_encodings=accepted,
    )


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip ``data`` (members may be concatenated), never holding more than ``max_bytes`` + 1 of output:
    a zip bomb is refused with 413 after inflating one byte past the limit, not after filling memory."""
    import zlib

    out, rest = [], data
    size = 0
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = d.decompress(rest, max_bytes + 1 - size)
            size += len(chunk)
            if size > max_bytes or d.unconsumed_tail:
                raise HTTPError(
                    413, f"the gzip body decompresses to more than the limit of {max_bytes} bytes", limit=max_bytes
                )
            out.append(chunk)
            if not d.eof:
                raise HTTPError(400, "the gzip body is truncated")
            rest = d.unused_data
    except zlib.error as exc:
        raise HTTPError(400, f"the body is not valid gzip ({str(exc)[:80]})") from None
    return b"".join(out)


def parse_json(
    event,
    *,
    max_bytes: int,
    allow_ndjson: bool = False,
    allow_empty: bool = False,
    max_depth: int = jsonsafe.MAX_DEPTH,
    allow_gzip: bool = False,
) -> Any:
    """Decode a JSON (or, if allowed, NDJSON) request body and hold it to jsonsafe's rule.

    Raises HTTPError 413 (too large, as sent or once decompressed), 415 (wrong Content-Type or Content-Encoding) or
    400 (not JSON, or a value no function
    should pass on: a lone surrogate, a non-finite or out-of-range number, nesting past ``max_depth``;
    the answer's ``path`` names where). NDJSON bodies come back as a list of the decoded lines.
    """
    body = read_body(event, max_bytes=max_bytes, allow_gzip=allow_gzip)
    mtype = media_type(event)
    is_ndjson = allow_ndjson and mtype in NDJSON_TYPES
    if not (is_ndjson or mtype in JSON_TYPES or (mtype.startswith("application/") and mtype.endswith("+json"))):
        accepted = list(JSON_TYPES) + (list(NDJSON_TYPES) if allow_ndjson else [])
        raise HTTPError(
            415, f"Content-Type must be one of {', '.join(accepted)} (got {mtype or 'none'})", accepted=accepted
        )
    if not body.strip():
        if allow_empty:
            return None
        raise HTTPError(400, "request body is empty; a JSON document is required")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    surrogates, numbers = jsonsafe.prefilter(text)
    if is_ndjson:
        items: list[Any] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                item = _loads(line, f"line {lineno}: ")
                sanitize(item, root=f"$[{len(items)}]", max_depth=max_depth, surrogates=surrogates, numbers=numbers)
                items.append(item)
        return items
    doc = _loads(text, "")
    sanitize(doc, max_depth=max_depth, surrogates=surrogates, numbers=numbers)
    return doc


def sanitize(
    value: Any, *, root: str = "$", max_depth: int = jsonsafe.MAX_DEPTH, surrogates: bool = True, numbers: bool = True
) -> None:
    """jsonsafe.check as a 400 answer naming the JSON path."""
    try:
        jsonsafe.check(value, root=root, max_depth=max_depth, surrogates=surrogates, numbers=numbers)
    except jsonsafe.UnsafeJSON as exc:
        raise HTTPError(400, f"invalid JSON value at {exc.where}: {exc.what}", path=exc.where) from None


def _reject_constant(name: str):
    # Python's json accepts NaN/Infinity, which are not JSON: passed on, they break every receiver.
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise HTTPError(400, f"{where}invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise HTTPError(400, f"{where}invalid JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer over Python's 4300-digit conversion limit
        raise HTTPError(400, f"{where}invalid JSON: {str(exc)[:120]}") from None


def require_method(event, allowed: Iterable[str]) -> str:
    m = method(event)
    allowed = tuple(allowed)
    if m == "HEAD" and "GET" in allowed:
        return "GET"
    if m not in allowed:
        listed = ", ".join(allowed)
        raise HTTPError(405, f"method {m} is not allowed here; use {listed}", headers={"Allow": listed})
    return m


def guarded(fn: Callable) -> Callable:
    """Wrap a ``handle(event, context)``: HTTPError becomes its JSON answer, anything else a bare 500.

    The caller never sees a traceback; the log gets the exception type and a scrubbed message.
    """

    @functools.wraps(fn)
    def wrapper(event, context):
        try:
            return fn(event, context)
        except HTTPError as err:
            if err.status >= 500:
                log.error("request.failed", status=err.status, reason=err.reason, path=path(event))
            return error_response(err)
        except Exception as exc:  # noqa: BLE001 - last line of defence for the template
            cid = call_id(event)
            log.error(
                "request.crashed", error=type(exc).__name__, message=str(exc)[:500], call_id=cid, path=path(event)
            )
            return json_response({"error": "internal error", "status": 500, "call_id": cid}, 500)

    return wrapper
