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
* ``destinations`` declares named destinations and their non-secret options;
  URLs, tokens and keys come from the ``alert-forwarder-destinations`` secret,
  never from this file (a secret-looking key here is an error).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from . import config
from .falco.alert import PRIORITIES, priority_number

DESTINATION_TYPES = ("console", "slack", "teams", "discord", "webhook", "openfaas")

# Keys that hold secret material: only the destinations secret may carry them.
SECRET_KEYS = ("url", "webhook_url", "token", "hmac_key", "password", "ca_cert", "client_cert", "client_key",
               "secret_headers")

# Options each destination type accepts in routes.yaml (besides `type`, `enabled`, delivery tuning).
_COMMON_OPTS = {"type", "enabled", "timeout", "retries", "backoff", "backoff_max", "budget", "concurrency",
                "min_priority"}
_TYPE_OPTS = {
    "console": set(),
    "slack": {"channel", "username", "icon_url", "fields", "insecure_http"},
    "teams": {"format", "fields", "insecure_http"},
    "discord": {"username", "fields", "insecure_http"},
    "webhook": {"method", "body", "template", "headers", "signature_header", "ca_file", "insecure_http"},
    "openfaas": {"function", "async", "token_secret", "callback_url", "path"},
}

DEFAULT_DEDUP_KEY = ("rule", "hostname", "output_fields.k8s.ns.name", "output_fields.k8s.pod.name",
                     "output_fields.container.id", "output_fields.proc.cmdline", "output_fields.ka.user.name",
                     "output_fields.ka.target.namespace", "output_fields.ka.target.resource",
                     "output_fields.ka.target.name")

_ALERT_KEYS = ("rule", "priority", "source", "hostname", "output", "time")


class RoutesError(ValueError):
    """A routes document is unusable; the message starts with the exact place."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


# ----------------------------------------------------------------------------- durations

def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` (edgeguard's one parser)."""
    try:
        return config.parse_duration(value, where)
    except config.ConfigError:
        raise RoutesError(where, f"expected a duration like 30s, 5m or 1h30m, got {value!r}") from None


# ----------------------------------------------------------------------------- matchers

def alert_value(alert: dict, path: str) -> Any:
    """Value of ``rule``/``priority``/... or ``output_fields.<key>`` (the key may contain dots)."""
    if path.startswith("output_fields."):
        fields = alert.get("output_fields") or {}
        return fields.get(path[len("output_fields."):])
    if path == "tags":
        return alert.get("tags") or []
    return alert.get(path)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        # Falco renders list fields as "(a,b)" in output; match on that same text.
        return "(" + ",".join(str(v) for v in value) + ")"
    return str(value)


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
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                           for v in value):
        raise RoutesError(where, f"{what} must be a string or a non-empty list of strings")
    return [str(v) for v in value]


def _value_predicate(spec: Any, where: str, subject: str) -> tuple[Callable[[Any], bool], str]:
    """A predicate over one alert value from a scalar (exact) or ``{op: arg}`` mapping."""
    if isinstance(spec, (str, int, float)) and not isinstance(spec, bool):
        want = str(spec)
        return (lambda v: _as_text(v) == want), f"{subject} = {want!r}"
    if isinstance(spec, bool):
        want = "true" if spec else "false"
        return (lambda v: _as_text(v) == want), f"{subject} = {want}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise RoutesError(where, f"{subject}: expected a value or a mapping with one of {', '.join(_VALUE_OPS)}")
    (op, arg), = spec.items()
    if op == "equals":
        return _value_predicate(arg, where, subject)
    if op == "not_equals":
        pred, _ = _value_predicate(arg, where, subject)
        return (lambda v: not pred(v)), f"{subject} != {arg!r}"
    if op in ("regex", "not_regex"):
        rx = _compile_regex(arg, f"{where}")
        if op == "regex":
            return (lambda v: (t := _as_text(v)) is not None and rx.fullmatch(t) is not None), f"{subject} =~ {arg!r}"
        return (lambda v: (t := _as_text(v)) is None or rx.fullmatch(t) is None), f"{subject} !~ {arg!r}"
    if op in ("in", "not_in"):
        items = set(_string_list(arg, where, f"{subject}: '{op}'"))
        if op == "in":
            return (lambda v: _as_text(v) in items), f"{subject} in {sorted(items)}"
        return (lambda v: _as_text(v) not in items), f"{subject} not in {sorted(items)}"
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
    cmp = {">=": lambda n: n <= want, "<=": lambda n: n >= want, ">": lambda n: n < want,
           "<": lambda n: n > want, "=": lambda n: n == want, "!=": lambda n: n != want}[op]

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
    (mode, arg), = spec.items()
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
    (subject, arg), = spec.items()
    if subject == "priority":
        pred, text = _priority_predicate(arg, where)
        return Matcher(text, pred)
    if subject == "tags":
        pred, text = _tags_predicate(arg, where)
        return Matcher(text, pred)
    if subject in ("rule", "source", "hostname", "output"):
        vp, text = _value_predicate(arg, where, subject)
        return Matcher(text, lambda a, vp=vp, s=subject: vp(a.get(s)))
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
    routes: list["Route"]
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
            raise RoutesError(f"{where}[{i}]" if isinstance(value, list) else where,
                              f"unknown destination {n!r} (declared: {known})")
    return list(names)


def _parse_dedup(value: Any, where: str) -> Dedup | None:
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise RoutesError(where, "expected a mapping with 'window' and optional 'key'")
    unknown = set(value) - {"window", "key"}
    if unknown:
        raise RoutesError(f"{where}.{sorted(unknown)[0]}", "unknown key (expected window, key)")
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
            raise RoutesError(f"{where}.key[{i}]", f"unknown key field {k!r} (use one of {', '.join(_ALERT_KEYS)}, "
                                                   "tags or output_fields.<name>)")
    return Dedup(window=window, key=tuple(key))


def _parse_throttle(value: Any, where: str) -> Throttle | None:
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        raise RoutesError(where, "expected a mapping with 'max' and 'window'")
    unknown = set(value) - {"max", "window"}
    if unknown:
        raise RoutesError(f"{where}.{sorted(unknown)[0]}", "unknown key (expected max, window)")
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
        raise RoutesError(f"{where}.{sorted(unknown)[0]}", f"unknown key (expected one of {', '.join(sorted(_ROUTE_KEYS))})")
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
    return Route(name=name, where=where, matchers=matchers, to=to, cont=cont,
                 dedup=_parse_dedup(spec.get("dedup"), f"{where}.dedup"), routes=children,
                 throttle=_parse_throttle(spec.get("throttle"), f"{where}.throttle"))


def parse_destination(name: str, spec: Any, where: str) -> dict:
    if not isinstance(spec, dict):
        raise RoutesError(where, "a destination must be a mapping with at least 'type'")
    dtype = spec.get("type")
    if dtype not in DESTINATION_TYPES:
        raise RoutesError(f"{where}.type", f"unknown destination type {dtype!r} (expected one of {', '.join(DESTINATION_TYPES)})")
    for key in spec:
        if key in SECRET_KEYS:
            raise RoutesError(f"{where}.{key}", "secret values (URLs, tokens, keys, certificates) belong in the "
                                                "OpenFaaS secret 'alert-forwarder-destinations', not in the routes file")
        if key not in _COMMON_OPTS and key not in _TYPE_OPTS[dtype]:
            allowed = sorted((_COMMON_OPTS | _TYPE_OPTS[dtype]) - {"type"})
            raise RoutesError(f"{where}.{key}", f"unknown option for a {dtype} destination (allowed: {', '.join(allowed)})")
    out = dict(spec)
    for key in ("timeout", "backoff", "backoff_max", "budget"):
        if key in out:
            out[key] = parse_duration(out[key], f"{where}.{key}")
    for key, lo in (("retries", 0), ("concurrency", 1)):
        if key in out and (not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < lo):
            raise RoutesError(f"{where}.{key}", f"expected an integer >= {lo}, got {out[key]!r}")
    if "min_priority" in out:
        try:
            out["min_priority"] = PRIORITIES[priority_number(out["min_priority"])]
        except ValueError:
            raise RoutesError(f"{where}.min_priority", f"unknown priority {out['min_priority']!r}") from None
    for key in ("enabled", "async", "insecure_http"):
        if key in out and not isinstance(out[key], bool):
            raise RoutesError(f"{where}.{key}", f"expected true or false, got {out[key]!r}")
    if dtype == "openfaas":
        fn = out.get("function")
        if not isinstance(fn, str) or not re.fullmatch(r"[-a-zA-Z_0-9.]+", fn or ""):
            raise RoutesError(f"{where}.function", "an openfaas destination needs a valid 'function' name")
    if dtype == "webhook":
        method = str(out.get("method", "POST")).upper()
        if method not in ("POST", "PUT", "PATCH"):
            raise RoutesError(f"{where}.method", f"expected POST, PUT or PATCH, got {out.get('method')!r}")
        out["method"] = method
        body = out.get("body", "alert")
        if body not in ("alert", "template"):
            raise RoutesError(f"{where}.body", f"expected 'alert' or 'template', got {body!r}")
        if body == "template" and "template" not in out:
            raise RoutesError(where, "body: template needs a 'template'")
        if "template" in out:
            validate_template(out["template"], f"{where}.template")
    if dtype in ("webhook",) and "headers" in out:
        h = out["headers"]
        if not isinstance(h, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in h.items()):
            raise RoutesError(f"{where}.headers", "expected a mapping of header name to string value")
    if dtype == "teams" and out.get("format", "adaptive") not in ("adaptive", "messagecard"):
        raise RoutesError(f"{where}.format", "expected 'adaptive' or 'messagecard'")
    if "fields" in out and (not isinstance(out["fields"], list) or not all(isinstance(f, str) for f in out["fields"])):
        raise RoutesError(f"{where}.fields", "expected a list of output field names")
    out["name"] = name
    return out


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
TEMPLATE_VARS = ("alert", "rule", "priority", "priority_number", "source", "hostname", "output", "time", "tags",
                 "output_fields", "idempotency_key")


def validate_template(tpl: Any, where: str) -> None:
    if isinstance(tpl, dict):
        for k, v in tpl.items():
            validate_template(v, f"{where}.{k}")
    elif isinstance(tpl, list):
        for i, v in enumerate(tpl):
            validate_template(v, f"{where}[{i}]")
    elif isinstance(tpl, str):
        for m in _PLACEHOLDER.finditer(tpl):
            var = m.group(1)
            if var not in TEMPLATE_VARS and not var.startswith("output_fields."):
                raise RoutesError(where, f"unknown template variable {var!r} (expected one of "
                                         f"{', '.join(TEMPLATE_VARS)} or output_fields.<name>)")


def render_template(tpl: Any, alert: dict, extra: dict) -> Any:
    """Fill ``{{ var }}`` placeholders; a string that is only a placeholder keeps the value's JSON type."""
    if isinstance(tpl, dict):
        return {k: render_template(v, alert, extra) for k, v in tpl.items()}
    if isinstance(tpl, list):
        return [render_template(v, alert, extra) for v in tpl]
    if not isinstance(tpl, str):
        return tpl

    def value(var: str) -> Any:
        if var == "alert":
            return alert
        if var in extra:
            return extra[var]
        return alert_value(alert, var)

    whole = _PLACEHOLDER.fullmatch(tpl.strip())
    if whole:
        return value(whole.group(1))

    def sub(m):
        v = value(m.group(1))
        if v is None:
            return ""
        if isinstance(v, dict):
            return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return _as_text(v)

    return _PLACEHOLDER.sub(sub, tpl)


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
        raise RoutesError("min_priority", f"unknown priority {min_priority!r} (expected one of "
                                          f"{', '.join(PRIORITIES)})") from None
    routes_spec = doc.get("routes", [])
    if not isinstance(routes_spec, list):
        raise RoutesError("routes", "expected a list of routes")
    routes = [_parse_route(r, f"routes[{i}]", destinations) for i, r in enumerate(routes_spec)]
    default_spec = doc.get("default", {"to": []})
    if isinstance(default_spec, (str, list)):
        default_spec = {"to": default_spec}
    if not isinstance(default_spec, dict):
        raise RoutesError("default", "expected a destination list or a mapping with 'to' (and optional 'dedup', "
                                     "'throttle')")
    unknown = set(default_spec) - {"to", "dedup", "throttle", "name"}
    if unknown:
        raise RoutesError(f"default.{sorted(unknown)[0]}", "unknown key (expected to, dedup, throttle)")
    default = Route(name=default_spec.get("name", "default"), where="default", matchers=[],
                    to=_parse_to(default_spec.get("to"), "default.to", destinations), cont=False,
                    dedup=_parse_dedup(default_spec.get("dedup"), "default.dedup"), routes=[],
                    throttle=_parse_throttle(default_spec.get("throttle"), "default.throttle"))
    names = {}
    for r in RouteTable(min_priority, routes, default, destinations).all_routes():
        if r.name in names:
            raise RoutesError(f"{r.where}.name", f"route name {r.name!r} is already used by {names[r.name]}")
        names[r.name] = r.where
    return RouteTable(min_priority=min_priority, routes=routes, default=default, destinations=destinations)


def load_routes_text(text: str, source: str = "routes.yaml") -> RouteTable:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise RoutesError(source, f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    try:
        return parse_routes(doc)
    except RoutesError as exc:
        raise RoutesError(f"{source}: {exc.where}" if exc.where else source, exc.problem) from None


# ----------------------------------------------------------------------------- destination secrets

_SECRET_ENTRY_KEYS = {"url", "token", "hmac_key", "headers", "ca_cert", "client_cert", "client_key", "insecure_http"}
_NEEDS_URL = ("slack", "teams", "discord", "webhook")


def parse_destination_secrets(text: str | None, source: str = "alert-forwarder-destinations") -> dict[str, dict]:
    """The destinations secret: a YAML/JSON map of destination name to its secret values."""
    import yaml

    if text is None or not text.strip():
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The YAML error text can quote the secret content: report only the position.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RoutesError(source, f"not valid YAML/JSON{at}") from None
    if not isinstance(doc, dict):
        raise RoutesError(source, "expected a mapping of destination name to {url, token, hmac_key, headers, ...}")
    out = {}
    for name, entry in doc.items():
        where = f"{source}.{name}"
        if not isinstance(entry, dict):
            raise RoutesError(where, "expected a mapping (url, token, hmac_key, headers, ca_cert, client_cert, client_key)")
        for key, val in entry.items():
            if key not in _SECRET_ENTRY_KEYS:
                raise RoutesError(f"{where}.{key}", f"unknown key (allowed: {', '.join(sorted(_SECRET_ENTRY_KEYS))})")
            if key == "insecure_http":
                if not isinstance(val, bool):
                    raise RoutesError(f"{where}.insecure_http", "expected true or false")
            elif key == "headers":
                if not isinstance(val, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in val.items()):
                    raise RoutesError(f"{where}.headers", "expected a mapping of header name to string value")
            elif not isinstance(val, str) or not val.strip():
                raise RoutesError(f"{where}.{key}", "expected a non-empty string")
        if "url" in entry and not re.match(r"^https?://", entry["url"].strip()):
            raise RoutesError(f"{where}.url", "expected an http:// or https:// URL")
        if "url" in entry and "@" in urlsplit(entry["url"].strip()).netloc:
            # The client would not send them, and a URL is logged more readily than a header.
            raise RoutesError(f"{where}.url", "credentials in the URL (user:pass@) are not supported: put them in "
                                              "'token' or 'headers' of this secret entry")
        if ("client_cert" in entry) != ("client_key" in entry):
            raise RoutesError(where, "mTLS needs both client_cert and client_key")
        out[str(name)] = {k: (v.strip() if isinstance(v, str) else v) for k, v in entry.items()}
    return out


def resolve_destinations(table: RouteTable, secrets: dict[str, dict]) -> dict[str, dict]:
    """Merge each declared destination with its secret values and decide whether it is usable.

    A destination whose type needs a URL and has none is disabled (not an error):
    the shipped action-centre webhook waits like that until someone configures it.
    """
    out = {}
    for name, spec in table.destinations.items():
        d = dict(spec)
        sec = secrets.get(name, {})
        d.update(sec)
        if "headers" in spec and "headers" in sec:
            d["headers"] = {**spec["headers"], **sec["headers"]}
        enabled = d.get("enabled", True)
        reason = None
        if not enabled:
            reason = "disabled in routes"
        elif d["type"] in _NEEDS_URL and not d.get("url"):
            enabled, reason = False, f"no url in the alert-forwarder-destinations secret for '{name}'"
        if d["type"] in _NEEDS_URL and d.get("url") and insecure_url(d["url"]) and d.get("insecure_http") is not True:
            # Tokens, HMAC-signed bodies and the alerts themselves would cross the network in cleartext.
            raise RoutesError(f"{name}.url", "plain http:// sends the alert and any token or signature in "
                                             "cleartext; use https://, or set insecure_http: true on this "
                                             "destination to accept that")
        d["enabled"] = enabled
        d["disabled_reason"] = reason
        out[name] = d
    return out


def insecure_url(url: str) -> bool:
    return url.strip().lower().startswith("http://")


def unknown_secret_entries(table: RouteTable, secrets: dict[str, dict]) -> list[str]:
    return sorted(set(secrets) - set(table.destinations))
