"""The alert-forwarder route tree: parse, validate and match.

Shared by the function (which loads it at start-up) and ``edgeguard-routes
validate`` (which checks a file offline), so both report the same error for the
same mistake, naming its place: ``routes[2].matchers[0]: unknown priority 'warn'``.

Model (Alertmanager's, with Falco's fields instead of labels):

* ``routes`` is a list of route nodes tried in order. A node matches when all its
  ``matchers`` match. Its child ``routes`` are then tried the same way; the
  deepest matching node decides the destinations (``to``), as in Alertmanager.
  Unless a matching node says ``continue: true``, its siblings are not tried.
* ``default`` lists the destinations used when no top-level route matched.
* ``min_priority`` drops less severe alerts before any routing.

Destinations are declared in the same document (``destinations.py``); their
secret values come from the destinations secret (``secret.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..falco.alert import PRIORITIES, priority_number
from .destinations import parse_destination
from .document import RoutesError, load_yaml, parse_duration
from .fields import as_text

DEFAULT_DEDUP_KEY = (
    "rule",
    "hostname",
    "output_fields.k8s.ns.name",
    "output_fields.k8s.pod.name",
    "output_fields.container.id",
    "output_fields.proc.cmdline",
    "output_fields.ka.user.name",
    "output_fields.ka.target.namespace",
    "output_fields.ka.target.resource",
    "output_fields.ka.target.name",
)

_ALERT_KEYS = ("rule", "priority", "source", "hostname", "output", "time")


# ----------------------------------------------------------------------------- matchers

_VALUE_OPS = ("equals", "not_equals", "regex", "not_regex", "in", "not_in", "exists")


def _compile_regex(pattern: Any, where: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise RoutesError(where, f"regex must be a string, got {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RoutesError(where, f"invalid regex {pattern!r}: {exc}") from None


def _string_list(value: Any, where: str, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise RoutesError(where, f"{what} must be a string or a non-empty list of strings")
    return [str(v) for v in value]


def _value_predicate(spec: Any, where: str, subject: str) -> tuple[Callable[[Any], bool], str]:
    """A predicate over one alert value from a scalar (exact) or ``{op: arg}`` mapping."""
    if isinstance(spec, (str, int, float)) and not isinstance(spec, bool):
        want = str(spec)
        return (lambda v: as_text(v) == want), f"{subject} = {want!r}"
    if isinstance(spec, bool):
        want = "true" if spec else "false"
        return (lambda v: as_text(v) == want), f"{subject} = {want}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise RoutesError(where, f"{subject}: expected a value or a mapping with one of {', '.join(_VALUE_OPS)}")
    ((op, arg),) = spec.items()
    if op == "equals":
        return _value_predicate(arg, where, subject)
    if op == "not_equals":
        pred, _ = _value_predicate(arg, where, subject)
        return (lambda v: not pred(v)), f"{subject} != {arg!r}"
    if op in ("regex", "not_regex"):
        rx = _compile_regex(arg, f"{where}")
        if op == "regex":
            return (lambda v: (t := as_text(v)) is not None and rx.fullmatch(t) is not None), f"{subject} =~ {arg!r}"
        return (lambda v: (t := as_text(v)) is None or rx.fullmatch(t) is None), f"{subject} !~ {arg!r}"
    if op in ("in", "not_in"):
        items = set(_string_list(arg, where, f"{subject}: '{op}'"))
        if op == "in":
            return (lambda v: as_text(v) in items), f"{subject} in {sorted(items)}"
        return (lambda v: as_text(v) not in items), f"{subject} not in {sorted(items)}"
    if op == "exists":
        if not isinstance(arg, bool):
            raise RoutesError(where, f"{subject}: 'exists' takes true or false")
        return (lambda v: (v is not None) == arg), f"{subject} exists={arg}"
    raise RoutesError(where, f"{subject}: unknown operator {op!r}; expected one of {', '.join(_VALUE_OPS)}")


_PRIORITY_EXPR = re.compile(r"^\s*(>=|<=|!=|=|>|<)?\s*([A-Za-z]+)\s*$")


def _priority_predicate(spec: Any, where: str) -> tuple[Callable[[dict], bool], str]:
    """``">=Warning"`` means Warning or more severe (Falco order: Emergency is highest)."""
    if not isinstance(spec, str):
        raise RoutesError(where, f"priority must be a string like '>=Warning', got {spec!r}")
    m = _PRIORITY_EXPR.match(spec)
    if not m:
        raise RoutesError(where, f"priority {spec!r} is not of the form [>=|<=|=|>|<|!=]Name")
    op, name = m.group(1) or "=", m.group(2)
    try:
        want = priority_number(name)
    except ValueError:
        raise RoutesError(where, f"unknown priority {name!r} (expected one of {', '.join(PRIORITIES)})") from None
    # Smaller number = more severe, so "at least Warning" is number <= 4.
    cmp = {
        ">=": lambda n: n <= want,
        "<=": lambda n: n >= want,
        ">": lambda n: n < want,
        "<": lambda n: n > want,
        "=": lambda n: n == want,
        "!=": lambda n: n != want,
    }[op]

    def pred(alert: dict) -> bool:
        try:
            return cmp(priority_number(alert.get("priority", "")))
        except ValueError:
            return False

    return pred, f"priority {op} {PRIORITIES[want]}"


def _tags_predicate(spec: Any, where: str) -> tuple[Callable[[dict], bool], str]:
    if isinstance(spec, (str, list)):
        spec = {"any": spec}
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("any", "all", "none"):
        raise RoutesError(where, "tags: expected a list (any of) or a mapping with one of any, all, none")
    ((mode, arg),) = spec.items()
    want = set(_string_list(arg, where, f"tags: '{mode}'"))
    if mode == "any":
        return (lambda a: bool(want & set(a.get("tags") or []))), f"tags any of {sorted(want)}"
    if mode == "all":
        return (lambda a: want <= set(a.get("tags") or [])), f"tags all of {sorted(want)}"
    return (lambda a: not (want & set(a.get("tags") or []))), f"tags none of {sorted(want)}"


MATCHER_SUBJECTS = ("rule", "priority", "source", "hostname", "tags", "output_fields", "output")


@dataclass
class Matcher:
    text: str
    test: Callable[[dict], bool] = field(repr=False)

    def __call__(self, alert: dict) -> bool:
        return self.test(alert)


def parse_matcher(spec: Any, where: str) -> Matcher:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise RoutesError(where, f"a matcher is a mapping with exactly one of {', '.join(MATCHER_SUBJECTS)}")
    ((subject, arg),) = spec.items()
    if subject == "priority":
        pred, text = _priority_predicate(arg, where)
        return Matcher(text, pred)
    if subject == "tags":
        pred, text = _tags_predicate(arg, where)
        return Matcher(text, pred)
    if subject in ("rule", "source", "hostname", "output"):
        vp, text = _value_predicate(arg, where, subject)

        def on_field(alert: dict, vp: Callable[[Any], bool] = vp, s: str = subject) -> bool:
            return vp(alert.get(s))

        return Matcher(text, on_field)
    if subject == "output_fields":
        if not isinstance(arg, dict) or not arg:
            raise RoutesError(where, "output_fields: expected a mapping of field name to value or {operator: value}")
        parts = []
        for key, val in arg.items():
            vp, text = _value_predicate(val, where, f"output_fields[{key}]")
            parts.append((str(key), vp, text))

        def pred(a: dict, parts=parts) -> bool:
            fields = a.get("output_fields") or {}
            return all(vp(fields.get(k)) for k, vp, _ in parts)

        return Matcher(" and ".join(t for _, _, t in parts), pred)
    raise RoutesError(where, f"unknown matcher {subject!r}; expected one of {', '.join(MATCHER_SUBJECTS)}")


# ----------------------------------------------------------------------------- routes


@dataclass
class Dedup:
    window: float
    key: tuple[str, ...]


@dataclass
class Throttle:
    max: int
    window: float


@dataclass
class Route:
    name: str
    where: str
    matchers: list[Matcher]
    to: list[str]
    cont: bool
    dedup: Dedup | None
    routes: list[Route]
    throttle: Throttle | None = None

    def matches(self, alert: dict) -> bool:
        return all(m(alert) for m in self.matchers)


@dataclass
class RouteTable:
    min_priority: str
    routes: list[Route]
    default: Route
    destinations: dict[str, dict]

    def match(self, alert: dict) -> list[Route]:
        """The routes that decide where ``alert`` goes (deepest matching nodes), in order.

        Empty when the alert is below ``min_priority``. The default route is
        returned when no top-level route matched.
        """
        if not self.passes_min_priority(alert):
            return []
        hits = _walk(self.routes, alert)
        return hits if hits else [self.default]

    def passes_min_priority(self, alert: dict) -> bool:
        try:
            return priority_number(alert.get("priority", "")) <= priority_number(self.min_priority)
        except ValueError:
            return False

    def all_routes(self) -> list[Route]:
        out, stack = [], list(reversed(self.routes))
        while stack:
            r = stack.pop()
            out.append(r)
            stack.extend(reversed(r.routes))
        return out + [self.default]


def _walk(routes: list[Route], alert: dict) -> list[Route]:
    hits: list[Route] = []
    for route in routes:
        if not route.matches(alert):
            continue
        deeper = _walk(route.routes, alert)
        hits.extend(deeper if deeper else [route])
        if not route.cont:
            break
    return hits


_ROUTE_KEYS = {"name", "matchers", "to", "continue", "dedup", "throttle", "routes"}
_TOP_KEYS = {"min_priority", "routes", "default", "destinations"}


def _parse_to(value: Any, where: str, destinations: dict) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RoutesError(where, "expected a destination name or a list of destination names")
    for i, n in enumerate(names):
        if n not in destinations:
            known = ", ".join(sorted(destinations)) or "none declared"
            raise RoutesError(
                f"{where}[{i}]" if isinstance(value, list) else where, f"unknown destination {n!r} (declared: {known})"
            )
    return list(names)


def _switch(value: Any, where: str, keys: tuple[str, ...], shape: str) -> dict | None:
    """A dedup/throttle mapping with only ``keys``, or None when it is left out or false."""
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise RoutesError(where, f"expected a mapping with {shape}")
    unknown = set(value) - set(keys)
    if unknown:
        raise RoutesError(f"{where}.{sorted(unknown)[0]}", f"unknown key (expected {', '.join(keys)})")
    return value


def _parse_dedup(value: Any, where: str) -> Dedup | None:
    value = _switch(value, where, ("window", "key"), "'window' and optional 'key'")
    if value is None:
        return None
    if "window" not in value:
        raise RoutesError(where, "'window' is required (e.g. 5m)")
    window = parse_duration(value["window"], f"{where}.window")
    if window <= 0:
        raise RoutesError(f"{where}.window", "must be greater than zero")
    key = value.get("key", list(DEFAULT_DEDUP_KEY))
    if not isinstance(key, list) or not key or not all(isinstance(k, str) and k for k in key):
        raise RoutesError(f"{where}.key", "expected a non-empty list of field names")
    for i, k in enumerate(key):
        if k not in _ALERT_KEYS and k != "tags" and not k.startswith("output_fields."):
            raise RoutesError(
                f"{where}.key[{i}]",
                f"unknown key field {k!r} (use one of {', '.join(_ALERT_KEYS)}, tags or output_fields.<name>)",
            )
    return Dedup(window=window, key=tuple(key))


def _parse_throttle(value: Any, where: str) -> Throttle | None:
    value = _switch(value, where, ("max", "window"), "'max' and 'window'")
    if value is None:
        return None
    for key in ("max", "window"):
        if key not in value:
            raise RoutesError(where, f"'{key}' is required (e.g. max: 20, window: 1m)")
    mx = value["max"]
    if not isinstance(mx, int) or isinstance(mx, bool) or mx < 1:
        raise RoutesError(f"{where}.max", f"expected an integer >= 1, got {mx!r}")
    window = parse_duration(value["window"], f"{where}.window")
    if window <= 0:
        raise RoutesError(f"{where}.window", "must be greater than zero")
    return Throttle(max=mx, window=window)


def _parse_route(spec: Any, where: str, destinations: dict) -> Route:
    if not isinstance(spec, dict):
        raise RoutesError(where, f"a route must be a mapping, got {type(spec).__name__}")
    unknown = set(spec) - _ROUTE_KEYS
    if unknown:
        raise RoutesError(
            f"{where}.{sorted(unknown)[0]}", f"unknown key (expected one of {', '.join(sorted(_ROUTE_KEYS))})"
        )
    matchers_spec = spec.get("matchers", [])
    if not isinstance(matchers_spec, list):
        raise RoutesError(f"{where}.matchers", "expected a list of matchers")
    matchers = [parse_matcher(m, f"{where}.matchers[{i}]") for i, m in enumerate(matchers_spec)]
    children_spec = spec.get("routes", [])
    if not isinstance(children_spec, list):
        raise RoutesError(f"{where}.routes", "expected a list of routes")
    children = [_parse_route(c, f"{where}.routes[{i}]", destinations) for i, c in enumerate(children_spec)]
    to = _parse_to(spec.get("to"), f"{where}.to", destinations)
    if not to and not children:
        raise RoutesError(where, "a route needs 'to' (destinations) or child 'routes'")
    cont = spec.get("continue", False)
    if not isinstance(cont, bool):
        raise RoutesError(f"{where}.continue", f"expected true or false, got {cont!r}")
    name = spec.get("name", where)
    if not isinstance(name, str) or not name:
        raise RoutesError(f"{where}.name", "expected a non-empty string")
    return Route(
        name=name,
        where=where,
        matchers=matchers,
        to=to,
        cont=cont,
        dedup=_parse_dedup(spec.get("dedup"), f"{where}.dedup"),
        routes=children,
        throttle=_parse_throttle(spec.get("throttle"), f"{where}.throttle"),
    )


def parse_routes(doc: Any) -> RouteTable:
    """Validate a decoded routes document; raise RoutesError naming the first problem's place."""
    if doc is None:
        raise RoutesError("", "the routes document is empty")
    if not isinstance(doc, dict):
        raise RoutesError("", f"the routes document must be a mapping, got {type(doc).__name__}")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise RoutesError(sorted(unknown)[0], f"unknown top-level key (expected one of {', '.join(sorted(_TOP_KEYS))})")
    raw_dest = doc.get("destinations") or {}
    if not isinstance(raw_dest, dict):
        raise RoutesError("destinations", "expected a mapping of destination name to settings")
    destinations = {}
    for name, spec in raw_dest.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]*", name):
            raise RoutesError(f"destinations.{name}", "destination names use letters, digits, '-', '_' and '.'")
        destinations[name] = parse_destination(name, spec, f"destinations.{name}")
    min_priority = doc.get("min_priority", "Debug")
    try:
        min_priority = PRIORITIES[priority_number(min_priority)]
    except ValueError:
        raise RoutesError(
            "min_priority", f"unknown priority {min_priority!r} (expected one of {', '.join(PRIORITIES)})"
        ) from None
    routes_spec = doc.get("routes", [])
    if not isinstance(routes_spec, list):
        raise RoutesError("routes", "expected a list of routes")
    routes = [_parse_route(r, f"routes[{i}]", destinations) for i, r in enumerate(routes_spec)]
    default_spec = doc.get("default", {"to": []})
    if isinstance(default_spec, (str, list)):
        default_spec = {"to": default_spec}
    if not isinstance(default_spec, dict):
        raise RoutesError(
            "default", "expected a destination list or a mapping with 'to' (and optional 'dedup', 'throttle')"
        )
    unknown = set(default_spec) - {"to", "dedup", "throttle", "name"}
    if unknown:
        raise RoutesError(f"default.{sorted(unknown)[0]}", "unknown key (expected to, dedup, throttle)")
    default = Route(
        name=default_spec.get("name", "default"),
        where="default",
        matchers=[],
        to=_parse_to(default_spec.get("to"), "default.to", destinations),
        cont=False,
        dedup=_parse_dedup(default_spec.get("dedup"), "default.dedup"),
        routes=[],
        throttle=_parse_throttle(default_spec.get("throttle"), "default.throttle"),
    )
    names: dict[str, str] = {}
    for r in RouteTable(min_priority, routes, default, destinations).all_routes():
        if r.name in names:
            raise RoutesError(f"{r.where}.name", f"route name {r.name!r} is already used by {names[r.name]}")
        names[r.name] = r.where
    return RouteTable(min_priority=min_priority, routes=routes, default=default, destinations=destinations)


def load_routes_text(text: str, source: str = "routes.yaml") -> RouteTable:
    doc = load_yaml(text, source)
    try:
        return parse_routes(doc)
    except RoutesError as exc:
        raise RoutesError(f"{source}: {exc.where}" if exc.where else source, exc.problem) from None
