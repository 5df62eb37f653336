"""A request body to audit events, one item at a time, as the k8saudit plugin's source reads it.

The payload forms are the plugin's (edgeguard.falco.source): a JSON array is walked, an ``EventList`` gives
its items, an ``Event`` is one event, anything else is "data not recognized as a k8s audit event"; NDJSON
bodies hold one such payload per line. What differs is memory: the decoded batch is never built. A 10 MiB
EventList decodes to 60-90 MB of Python objects, but here each item is decoded, handed to ``sink`` (which
evaluates it and keeps only its alerts) and dropped before the next one.

Items are found with the C decoder on the body read as latin-1, a window at a time: one character per
byte, so positions are byte offsets, JSON's structural characters are where they are in UTF-8, and the text
costs one byte per byte whatever the body holds (UTF-8 text would cost two or four per character as soon as
one character needs it). An item decoded that way is correct if its bytes are ASCII; any other item is decoded again
from its bytes as UTF-8, which also checks them.

Errors are BadBody with the status and the words http.parse_json would use: the whole body is checked
before anything is handed off (the caller keeps the alerts until then), so bad input changes nothing.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable

from .edgeguard import http
from .edgeguard.falco.source import NOT_AUDIT

_WS = re.compile(r"[ \t\n\r]*")
MAX_NESTING = 32  # arrays of payloads inside arrays; deeper is refused, not walked with recursion


class BadBody(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _not_json(name: str):
    # Python accepts NaN/Infinity; JSON (the plugin's Go decoder, edgeguard.http) does not.
    raise ValueError(f"{name} is not valid JSON")


_DEC = json.JSONDecoder(parse_constant=_not_json)


class Sink:
    """What the walk finds: ``event(obj, raw_bytes)`` per audit item, and the counts of what it skipped."""

    def __init__(self, event: Callable[[object, int], None]):
        self.event = event
        self.skipped = 0
        self.errors: set = set()

    def not_audit(self, why: str = NOT_AUDIT) -> None:
        self.skipped += 1
        self.errors.add(why)


class _Text:
    """The body (or one NDJSON line) read as latin-1 text through a window, and errors turned into answers.

    Only a window of the body is text at a time (WINDOW characters, more for an item that does not fit), so
    decoding costs the body's bytes, one window and one item, not a second copy of the whole body.
    Positions are offsets in ``raw``.
    """

    WINDOW = 1 << 20

    def __init__(self, raw: bytes, where: str = "", base: int = 0):
        self.raw = raw
        self.n = len(raw)
        self.ascii = raw.isascii()
        self.where = where  # "line 3: " for NDJSON
        self.base = base  # offset of ``raw`` in the body, for UTF-8 error positions
        self.off, self.win = 0, ""
        self.view = memoryview(raw)

    def _load(self, i: int, size: int) -> None:
        self.win = ""  # the old window goes first; the new one is decoded from a view, not a copied slice
        self.off, self.win = i, codecs.latin_1_decode(self.view[i : i + size])[0]

    def _at_end(self) -> bool:
        return self.off + len(self.win) >= self.n

    def _window(self, i: int, ahead: int) -> None:
        """Make the window hold ``raw[i:i + ahead]`` (or up to the end)."""
        if i < self.off or self.off + len(self.win) < min(self.n, i + ahead):
            self._load(i, max(ahead, self.WINDOW))

    def ws(self, i: int) -> int:
        while True:
            self._window(i, 1)
            m = _WS.match(self.win, i - self.off)
            assert m is not None  # the pattern matches the empty string: it always matches
            j = self.off + m.end()
            if j < self.off + len(self.win) or self._at_end():
                return j
            i = j

    def char(self, i: int) -> str:
        if i >= self.n:
            raise self.syntax("Expecting value", i)
        self._window(i, 1)
        return self.win[i - self.off]

    def syntax(self, msg: str, pos: int) -> BadBody:
        line, col = self.raw.count(b"\n", 0, pos) + 1, pos - self.raw.rfind(b"\n", 0, pos)
        return self._invalid(f"{msg} at line {line} column {col}")

    def _invalid(self, what: str) -> BadBody:
        """Invalid JSON; but a body that is not UTF-8 is reported as such first, as http.parse_json does."""
        if not self.ascii:
            dec = codecs.getincrementaldecoder("utf-8")()
            for at in range(0, len(self.raw), 1 << 16):  # in slices: no copy of the whole body as text
                try:
                    dec.decode(self.raw[at : at + (1 << 16)], final=at + (1 << 16) >= len(self.raw))
                except UnicodeDecodeError as exc:
                    return BadBody(400, f"request body is not valid UTF-8 (byte {self.base + at + exc.start})")
        return BadBody(400, f"{self.where}invalid JSON: {what}")

    def value(self, i: int):
        """(the value at ``i``, the index after it). A value the window cuts is decoded again in a bigger one."""
        ahead = self.WINDOW // 4
        while True:
            self._window(i, ahead)
            try:
                obj, end = _DEC.raw_decode(self.win, i - self.off)
            except json.JSONDecodeError as exc:
                if not self._at_end():
                    ahead = len(self.win) * 4
                    self._load(i, ahead)
                    continue
                raise self.syntax(exc.msg, self.off + exc.pos) from None
            except RecursionError:
                raise self._invalid("nested too deeply") from None
            except ValueError as exc:  # NaN/Infinity, or an integer over Python's 4300-digit conversion limit
                raise self._invalid(str(exc)[:120]) from None
            if end == len(self.win) and not self._at_end():  # a number may go on past the window
                ahead = len(self.win) * 4
                self._load(i, ahead)
                continue
            end += self.off
            break
        if not self.ascii and not self.raw[i:end].isascii():
            try:
                obj = _DEC.decode(self.raw[i:end].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BadBody(400, f"request body is not valid UTF-8 (byte {self.base + i + exc.start})") from None
        return obj, end

    def separator(self, i: int, close: str) -> tuple[int, bool]:
        """After an element: (start of the next one, True), or (after ``close``, False)."""
        i = self.ws(i)
        c = self.char(i)
        if c == ",":
            return self.ws(i + 1), True
        if c == close:
            return i + 1, False
        raise self.syntax("Expecting ',' delimiter", i)


def _payload(t: _Text, i: int, sink: Sink, depth: int) -> int:
    """The payload value at ``i`` (array, object or other); returns the index after it."""
    c = t.char(i)
    if c == "[":
        return _array(t, i, sink, depth)
    if c == "{":
        return _object(t, i, sink)
    _, end = t.value(i)
    sink.not_audit()
    return end


def _array(t: _Text, i: int, sink: Sink, depth: int) -> int:
    if depth >= MAX_NESTING:
        raise BadBody(400, f"{t.where}invalid JSON: arrays of payloads nested more than {MAX_NESTING} deep")
    i = t.ws(i + 1)
    if t.char(i) == "]":
        return i + 1
    while True:
        i = _payload(t, i, sink, depth + 1)
        i, more = t.separator(i, "]")
        if not more:
            return i


def _items(t: _Text, i: int, each: Callable[[object, int], None]) -> int:
    """The elements of the array at ``i``, decoded one by one; returns the index after the array."""
    i = t.ws(i + 1)
    if t.char(i) == "]":
        return i + 1
    while True:
        start = i
        obj, i = t.value(i)
        each(obj, i - start)
        i, more = t.separator(i, "]")
        if not more:
            return i


def _object(t: _Text, i: int, sink: Sink) -> int:
    """An object: an EventList's items are streamed; any other object is decoded whole (one event at most)."""
    start = i
    members: dict = {}
    items_at = None  # where an "items" array starts, when the object's kind was not known before it
    i = t.ws(i + 1)
    if t.char(i) == "}":
        sink.not_audit()
        return i + 1
    while True:
        if t.char(i) != '"':
            raise t.syntax("Expecting property name enclosed in double quotes", i)
        key, i = t.value(i)
        if key in ("kind", "items") and members.get("items") is True:
            # json.loads would keep the last of two: the items already streamed might then not be events.
            raise t.syntax(f"Duplicate '{key}' in an EventList", i)
        i = t.ws(i)
        if t.char(i) != ":":
            raise t.syntax("Expecting ':' delimiter", i)
        i = t.ws(i + 1)
        if key == "items" and t.char(i) == "[" and members.get("kind", "EventList") == "EventList":
            if members.get("kind") == "EventList":  # the API server writes kind first: stream at once
                members["items"] = True
                i = _items(t, i, sink.event)
            else:  # kind may come later: decide at the end
                items_at = i
                i = _items(t, i, lambda obj, n: None)
        else:
            members[key], i = t.value(i)
        i, more = t.separator(i, "}")
        if not more:
            break
    kind = members.get("kind")
    if kind == "EventList":
        if items_at is not None:
            _items(t, items_at, sink.event)
        elif members.get("items") is not True:
            sink.not_audit("EventList without an 'items' array")
    elif kind == "Event":
        obj, end = t.value(start)  # the object is one event: decoded whole, as the plugin reads it
        sink.event(obj, end - start)
    else:
        sink.not_audit()
    return i


def walk(raw: bytes, sink: Sink, *, ndjson: bool = False) -> None:
    """Every audit item of the body, in order, to ``sink``; BadBody for a body that is not valid."""
    if not raw.strip():
        raise BadBody(400, "request body is empty; a JSON document is required")
    if not ndjson:
        t = _Text(raw)
        end = _payload(t, t.ws(0), sink, 0)
        if t.ws(end) != t.n:
            raise t.syntax("Extra data", t.ws(end))
        return
    pos, lineno = 0, 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        nl = len(raw) if nl < 0 else nl
        lineno += 1
        line = raw[pos:nl]
        if line.strip():
            t = _Text(line, f"line {lineno}: ", pos)
            end = _payload(t, t.ws(0), sink, 0)
            if t.ws(end) != t.n:
                raise t.syntax("Extra data", t.ws(end))
        pos = nl + 1


def read(event, max_bytes: int) -> tuple[bytes, bool]:
    """(the body, whether it is NDJSON); BadBody 413/415 naming the limit or the accepted types."""
    mtype = http.media_type(event)
    ndjson = mtype in http.NDJSON_TYPES
    if not (ndjson or mtype in http.JSON_TYPES or (mtype.startswith("application/") and mtype.endswith("+json"))):
        accepted = list(http.JSON_TYPES) + list(http.NDJSON_TYPES)
        raise BadBody(415, f"Content-Type must be one of {', '.join(accepted)} (got {mtype or 'none'})")
    try:
        return http.read_body(event, max_bytes=max_bytes), ndjson
    except http.HTTPError as err:
        raise BadBody(err.status, err.reason) from None
