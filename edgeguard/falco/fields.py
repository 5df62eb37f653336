"""Field extraction for the ``k8s_audit`` source: k8saudit plugin v0.18.0, json plugin v0.7.4, generic ``evt.*``.

Every extractor takes an :class:`AuditEvent` and returns ``None`` (absent) or a
value: a ``str`` for scalar fields, a non-empty ``tuple`` of ``str`` for list
fields, an ``int`` for numeric ``evt.*`` fields. An empty list is normalised to
``None`` because libsinsp treats an empty plugin list as "not extracted".
Values are cached per event, so a field used by twenty rules is computed once.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STR = "string"
U64 = "uint64"

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# field key -> extractor(evt); registered when a condition or output first uses the field.
EXTRACTORS: dict = {}


class AuditEvent(dict):
    """One audit event as the plugins see it: the decoded object and its timestamp. The event is also its own
    field cache: ``evt[key]`` extracts a field on first use only, so a field used by twenty rules costs one
    extraction, and a compiled check reads it with a C-level ``itemgetter``."""

    __slots__ = ("obj", "ts", "num", "_compact", "limit", "oversize")

    def __init__(self, obj: dict, ts: int, num: int = 0, compact: str | None = None, limit: int = 0):
        self.obj = obj
        self.ts = ts
        self.num = num
        self._compact = compact
        self.limit = limit  # max event size in bytes still to be checked (0: known to fit)
        self.oversize = False

    def __missing__(self, key):
        v = self[key] = EXTRACTORS[key](self)
        return v

    def __bool__(self):  # an event is never "empty", whatever is cached
        return True

    __hash__ = object.__hash__  # type: ignore[assignment]  # typeshed: dict is unhashable; events hash by identity
    __eq__ = object.__eq__

    @property
    def compact(self) -> str:
        # The plugins hand the rules a compact re-serialisation of the item.
        if self._compact is None:
            self._compact = _compact(self.obj)
        return self._compact


def _cstr(s: str) -> str:
    # libsinsp compares and prints C strings: a NUL ends the value.
    if "\x00" in s:
        s = s[: s.index("\x00")]
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate from a "\ud800" escape is not UTF-8: replace it with U+FFFD as Falco 0.44 does
            # (0.41 raised while serialising the alert), so an alert can always be sent.
            s = s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return s


def as_string(v: Any) -> str:
    """fastjson's view of a value: strings unquoted, anything else as compact JSON text."""
    if isinstance(v, str):
        return _cstr(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v.__class__ is int:
        return int.__repr__(v)  # what the JSON encoder writes for an int, without its machinery
    return _cstr(_compact(v))


_MISSING = object()


def _get(node: Any, keys: tuple) -> Any:
    for k in keys:
        if isinstance(node, dict):
            node = node.get(k, _MISSING)
            if node is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return node


@dataclass(frozen=True)
class FieldDef:
    name: str
    is_list: bool = False
    arg: str = ""  # "" none, "idx" optional index, "key" required key
    type: str = STR
    plugin: bool = True  # plugin fields follow the plugin's '[' parsing in output formats
    desc: str = ""


# name -> (FieldDef, factory(arg) -> extractor(evt))
FIELDS: dict[str, tuple[FieldDef, Callable[[Any], Callable[[AuditEvent], Any]]]] = {}


def _reg(name: str, factory, *, is_list=False, arg="", type=STR, plugin=True):
    FIELDS[name] = (FieldDef(name, is_list, arg, type, plugin), factory)


def _ka(fn):
    """Gate a k8saudit extractor on ``auditID``: without it every ka.* field is absent."""

    def gated(evt):
        o = evt.obj
        if "auditID" not in o:
            return None
        return fn(o)

    return gated


def _text(v) -> str:
    """as_string, with the common case (plain ASCII text without NUL) answered at once."""
    if v.__class__ is str and v.isascii() and "\x00" not in v:
        return v
    return as_string(v)


def _scalar_path(*keys):
    """A ka.* field at a fixed path. Most fields are one or two keys deep: those get a straight-line extractor,
    since field extraction is most of the engine's time."""

    def factory(arg):
        if len(keys) == 1:
            (k0,) = keys

            def ex1(evt):
                o = evt.obj
                if "auditID" not in o:
                    return None
                v = o.get(k0, _MISSING)
                return None if v is _MISSING else _text(v)

            return ex1
        if len(keys) == 2:
            k0, k1 = keys

            def ex2(evt):
                o = evt.obj
                if "auditID" not in o:
                    return None
                v = o.get(k0)
                if v.__class__ is not dict:
                    return None
                v = v.get(k1, _MISSING)
                return None if v is _MISSING else _text(v)

            return ex2

        def ex(o):
            v = _get(o, keys)
            return None if v is _MISSING else _text(v)

        return _ka(ex)

    return factory


def _annotation(key):
    return _scalar_path("annotations", key)


def _tuple_or_none(vals):
    return tuple(vals) if vals else None


def _values_recursive(node, keys, i, idx, out):
    """The plugin's getValuesRecursive: arrays met before the last key are expanded (or indexed)."""
    if i == len(keys):
        out.append(as_string(node))
        return
    if isinstance(node, list):
        if idx >= 0:
            if idx < len(node):
                _values_recursive(node[idx], keys, i, idx, out)
        else:
            for el in node:
                _values_recursive(el, keys, i, idx, out)
        return
    if isinstance(node, dict) and keys[i] in node:
        _values_recursive(node[keys[i]], keys, i + 1, idx, out)


def _idx(arg) -> int:
    return -1 if arg is None else int(arg)


def _recursive_field(*keys):
    def factory(arg):
        idx = _idx(arg)

        def ex(o):
            ro = o.get("requestObject", _MISSING)
            if ro is _MISSING:
                return None
            out: list = []
            _values_recursive(ro, keys, 0, idx, out)
            return _tuple_or_none(out)

        return _ka(ex)

    return factory


def _selected(arr, idx):
    if idx < 0:
        return arr
    return arr[idx : idx + 1]


def _containers(o, kind):
    spec = _get(o, ("requestObject", "spec"))
    if not isinstance(spec, dict):
        return None
    arr = spec.get(kind, _MISSING)
    if not isinstance(arr, list):
        return None
    return arr


def _repository(image: str) -> str:
    # The plugin cuts at the first ':' then at '@' (so "host:5000/app" gives "host").
    return image.split(":", 1)[0].split("@", 1)[0]


_ABSENT = object()


def _per_container(kind, collect):
    """The skeleton every ``containers[*]`` field shares: pick the ``[idx]`` container (or all), and let
    ``collect(container, obj, out)`` append its values; it returns ``_ABSENT`` when the whole field must
    be absent (the plugin's error path)."""

    def factory(arg):
        idx = _idx(arg)

        def ex(o):
            arr = _containers(o, kind)
            if arr is None:
                return None
            out: list[Any] = []
            for c in _selected(arr, idx):
                if collect(c, o, out) is _ABSENT:
                    return None
            return _tuple_or_none(out)

        return _ka(ex)

    return factory


def _strict_container_key(kind, key, transform=None):
    """name/image: every selected container must have the key, else the field errors (absent)."""

    def collect(c, o, out):
        if not isinstance(c, dict) or key not in c:
            return _ABSENT
        v = as_string(c[key])
        out.append(transform(v) if transform else v)

    return _per_container(kind, collect)


def _joined_container_key(kind, key):
    """command/args: each container's string array joined by single spaces; containers without it skipped."""

    def collect(c, o, out):
        if not isinstance(c, dict) or key not in c:
            return None
        parts = c[key]
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            return _ABSENT
        out.append(_cstr(" ".join(parts)))

    return _per_container(kind, collect)


def _container_path(kind, *keys):
    return _recursive_field("spec", kind, *keys)


def _eff_run_as(kind, key):
    """Quirk kept from the plugin: reads spec.<key> and containers[*].<key>, not securityContext."""

    def collect(c, o, out):
        if isinstance(c, dict) and key in c:
            out.append(as_string(c[key]))
        else:
            spec = o["requestObject"]["spec"]
            out.append(as_string(spec[key]) if key in spec else "0")

    return _per_container(kind, collect)


def _host_port(kind):
    def collect(c, o, out):
        ports = c.get("ports") if isinstance(c, dict) else None
        if not isinstance(ports, list):
            return None
        for p in ports:
            if not isinstance(p, dict):
                continue
            if "hostPort" in p:
                out.append(as_string(p["hostPort"]))
            elif "containerPort" in p:
                out.append(as_string(p["containerPort"]))

    return _per_container(kind, collect)


def _register_container_fields(kind, prefix, with_host_port=True):
    _reg(f"{prefix}.name", _strict_container_key(kind, "name"), is_list=True, arg="idx")
    _reg(f"{prefix}.image", _strict_container_key(kind, "image"), is_list=True, arg="idx")
    _reg(f"{prefix}.image.repository", _strict_container_key(kind, "image", _repository), is_list=True, arg="idx")
    _reg(f"{prefix}.command", _joined_container_key(kind, "command"), is_list=True, arg="idx")
    _reg(f"{prefix}.args", _joined_container_key(kind, "args"), is_list=True, arg="idx")
    for fname, key in (
        ("privileged", "privileged"),
        ("allow_privilege_escalation", "allowPrivilegeEscalation"),
        ("read_only_fs", "readOnlyRootFilesystem"),
        ("run_as_user", "runAsUser"),
        ("run_as_group", "runAsGroup"),
        ("proc_mount", "procMount"),
    ):
        _reg(f"{prefix}.{fname}", _container_path(kind, "securityContext", key), is_list=True, arg="idx")
    _reg(
        f"{prefix}.add_capabilities",
        _container_path(kind, "securityContext", "capabilities", "add"),
        is_list=True,
        arg="idx",
    )
    _reg(f"{prefix}.eff_run_as_user", _eff_run_as(kind, "runAsUser"), is_list=True, arg="idx")
    _reg(f"{prefix}.eff_run_as_group", _eff_run_as(kind, "runAsGroup"), is_list=True, arg="idx")
    if with_host_port:
        _reg(f"{prefix}.host_port", _host_port(kind), is_list=True, arg="idx")


def _list_of(*keys):
    """A JSON array whose elements each become one value; not an array means error (absent)."""

    def factory(arg):
        def ex(o):
            v = _get(o, keys)
            if not isinstance(v, list):
                return None
            return _tuple_or_none([as_string(x) for x in v])

        return _ka(ex)

    return factory


def _subject_names(kind, with_ns=False):
    def factory(arg):
        def ex(o):
            subjects = _get(o, ("requestObject", "subjects"))
            if not isinstance(subjects, list):
                return None
            out = []
            for s in subjects:
                if not isinstance(s, dict) or s.get("kind") != kind or "name" not in s:
                    continue
                if with_ns:
                    if "namespace" not in s:
                        continue
                    out.append(f"{as_string(s['namespace'])}:{as_string(s['name'])}")
                else:
                    out.append(as_string(s["name"]))
            return _tuple_or_none(out)

        return _ka(ex)

    return factory


def _rules_field(key):
    """Flatten requestObject.rules[*].<key>[*]; the index selects rule N."""

    def factory(arg):
        idx = _idx(arg)

        def ex(o):
            rules = _get(o, ("requestObject", "rules"))
            if not isinstance(rules, list):
                return None
            out: list[str] = []
            for r in _selected(rules, idx):
                if not isinstance(r, dict) or key not in r:
                    continue
                v = r[key]
                if isinstance(v, list):
                    out.extend(as_string(x) for x in v)
                else:
                    out.append(as_string(v))
            return _tuple_or_none(out)

        return _ka(ex)

    return factory


def _target_pod_name(arg):
    def ex(o):
        ref = o.get("objectRef")
        if not isinstance(ref, dict) or ref.get("resource") != "pods":
            return None
        if ref.get("subresource") not in (None, ""):
            return None
        v = _get(o, ("responseObject", "metadata", "name"))
        return None if v is _MISSING else as_string(v)

    return _ka(ex)


def _has_name(arg):
    return _ka(lambda o: "true")


def _container_privileged(arg):
    def ex(o):
        arr = _containers(o, "containers")
        if arr is None:
            return None
        for c in arr:
            if isinstance(c, dict) and _get(c, ("securityContext", "privileged")) is True:
                return "true"
        return "false"

    return _ka(ex)


def _first_container(key, transform=None):
    def factory(arg):
        def ex(o):
            arr = _containers(o, "containers")
            if not arr or not isinstance(arr[0], dict) or key not in arr[0]:
                return None
            v = as_string(arr[0][key])
            return transform(v) if transform else v

        return _ka(ex)

    return factory


def _volume_hostpath(arg):
    prefix = arg[:-1] if arg.endswith("*") else None

    def ex(o):
        vols = _get(o, ("requestObject", "spec", "volumes"))
        if vols is _MISSING:
            return None
        if isinstance(vols, list):
            for v in vols:
                p = _get(v, ("hostPath", "path"))
                if p is _MISSING:
                    continue
                p = as_string(p)
                if p.startswith(prefix) if prefix is not None else p == arg:
                    return "true"
        return "false"

    return _ka(ex)


def _volume_type(arg):
    idx = _idx(arg)

    def ex(o):
        vols = _get(o, ("requestObject", "spec", "volumes"))
        if not isinstance(vols, list):
            return None
        out: list[str] = []
        for v in _selected(vols, idx):
            if isinstance(v, dict):
                out.extend(k for k in v if k != "name")
        return _tuple_or_none(out)

    return _ka(ex)


def _go_unescape(s: str) -> str | None:
    """Go url.QueryUnescape: '+' is a space, '%XX' must be valid hex; None on error."""
    if "%" not in s:
        return s.replace("+", " ")
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "%":
            h = s[i + 1 : i + 3]
            if len(h) < 2 or any(c not in "0123456789abcdefABCDEF" for c in h):
                return None
            out.append(int(h, 16))
            i += 3
            continue
        out.extend(b" " if ch == "+" else ch.encode("utf-8"))
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _uri_param(arg):
    def ex(o):
        uri = o.get("requestURI", _MISSING)
        if not isinstance(uri, str):
            return None
        uri = uri.split("#", 1)[0]
        if "?" not in uri:
            return None
        raw_query = uri.split("?", 1)[1]
        found = None
        for part in raw_query.split("&"):
            if ";" in part:
                return None  # Go's ParseQuery rejects ';' and the whole query fails
            if not part:
                continue
            k, _, v = part.partition("=")
            k2 = _go_unescape(k)
            v2 = _go_unescape(v)
            if k2 is None or v2 is None:
                return None
            if found is None and k2 == arg:
                found = _cstr(v2)
        return found

    return _ka(ex)


# ---- k8saudit plugin fields, in fields.go order --------------------------------------------------------
_reg("ka.auditid", _scalar_path("auditID"))
_reg("ka.stage", _scalar_path("stage"))
_reg("ka.auth.decision", _annotation("authorization.k8s.io/decision"))
_reg("ka.auth.reason", _annotation("authorization.k8s.io/reason"))
_reg("ka.auth.openshift.decision", _annotation("authentication.openshift.io/decision"))
_reg("ka.validations.admission.policy.failure", _annotation("validation.policy.admission.k8s.io/validation_failure"))
_reg("ka.security.pod.violations", _annotation("pod-security.kubernetes.io/audit-violations"))
_reg("ka.auth.openshift.username", _annotation("authentication.openshift.io/username"))
_reg("ka.user.name", _scalar_path("user", "username"))
_reg("ka.user.groups", _list_of("user", "groups"), is_list=True)
_reg("ka.impuser.name", _scalar_path("impersonatedUser", "username"))
_reg("ka.verb", _scalar_path("verb"))
_reg("ka.uri", _scalar_path("requestURI"))
_reg("ka.uri.param", _uri_param, arg="key")
_reg("ka.target.name", _scalar_path("objectRef", "name"))
_reg("ka.target.namespace", _scalar_path("objectRef", "namespace"))
_reg("ka.target.resource", _scalar_path("objectRef", "resource"))
_reg("ka.target.subresource", _scalar_path("objectRef", "subresource"))
_reg("ka.target.pod.name", _target_pod_name)
_reg("ka.req.binding.subjects", _list_of("requestObject", "subjects"), is_list=True)
_reg("ka.req.binding.subjects.user_names", _subject_names("User"), is_list=True)
_reg("ka.req.binding.subjects.serviceaccount_names", _subject_names("ServiceAccount"), is_list=True)
_reg("ka.req.binding.subjects.serviceaccount_ns_names", _subject_names("ServiceAccount", True), is_list=True)
_reg("ka.req.binding.subjects.group_names", _subject_names("Group"), is_list=True)
_reg("ka.req.binding.role", _scalar_path("requestObject", "roleRef", "name"))
_reg("ka.req.binding.subject.has_name", _has_name, arg="key")
_reg("ka.req.configmap.name", _scalar_path("objectRef", "name"))
_reg("ka.req.configmap.obj", _scalar_path("requestObject", "data"))
_register_container_fields("containers", "ka.req.pod.containers")
_reg("ka.req.container.image", _first_container("image"))
_reg("ka.req.container.image.repository", _first_container("image", _repository))
_reg("ka.req.pod.host_ipc", _scalar_path("requestObject", "spec", "hostIPC"))
_reg("ka.req.pod.host_network", _scalar_path("requestObject", "spec", "hostNetwork"))
_reg("ka.req.container.host_network", _scalar_path("requestObject", "spec", "hostNetwork"))
_reg("ka.req.pod.host_pid", _scalar_path("requestObject", "spec", "hostPID"))
_reg("ka.req.container.privileged", _container_privileged)
_reg("ka.req.pod.run_as_user", _scalar_path("requestObject", "spec", "securityContext", "runAsUser"))
_reg("ka.req.pod.run_as_group", _scalar_path("requestObject", "spec", "securityContext", "runAsGroup"))
_reg("ka.req.role.rules", _list_of("requestObject", "rules"), is_list=True)
for _k in ("apiGroups", "nonResourceURLs", "verbs", "resources"):
    _reg(f"ka.req.role.rules.{_k}", _rules_field(_k), is_list=True, arg="idx")
_reg("ka.req.pod.fs_group", _scalar_path("requestObject", "spec", "securityContext", "fsGroup"))
_reg(
    "ka.req.pod.supplemental_groups",
    _list_of("requestObject", "spec", "securityContext", "supplementalGroups"),
    is_list=True,
)
_reg("ka.req.service.type", _scalar_path("requestObject", "spec", "type"))
# Quirk kept: the key path ends on the ports array, so this is ONE value holding the whole array.
_reg("ka.req.service.ports", _recursive_field("spec", "ports"), is_list=True, arg="idx")
_reg("ka.req.pod.volumes.hostpath", _recursive_field("spec", "volumes", "hostPath", "path"), is_list=True, arg="idx")
_reg("ka.req.volume.hostpath", _volume_hostpath, arg="key")
_reg(
    "ka.req.pod.volumes.flexvolume_driver",
    _recursive_field("spec", "volumes", "flexVolume", "driver"),
    is_list=True,
    arg="idx",
)
_reg("ka.req.pod.volumes.volume_type", _volume_type, is_list=True, arg="idx")
_reg("ka.resp.name", _scalar_path("responseObject", "metadata", "name"))
_reg("ka.response.code", _scalar_path("responseStatus", "code"))
_reg("ka.response.reason", _scalar_path("responseStatus", "reason"))
_reg("ka.useragent", _scalar_path("userAgent"))
# Quirk kept (falcosecurity/plugins#236): reads requestObject.rules[*].sourceIPs, so it is normally absent.
_reg("ka.sourceips", _rules_field("sourceIPs"), is_list=True, arg="idx")
_reg("ka.cluster.name", _annotation("cluster_name"))
_register_container_fields("initContainers", "ka.req.pod.initContainers")
_register_container_fields("ephemeralContainers", "ka.req.pod.ephemeralContainers", with_host_port=False)


# ---- json plugin ----------------------------------------------------------------------------------------
def _json_value(arg):
    ptr = arg[1:] if arg.startswith("/") else arg
    if ptr == "":
        return lambda evt: _cstr(evt.compact)
    tokens = tuple(t.replace("~1", "/").replace("~0", "~") for t in ptr.split("/"))

    if len(tokens) == 1 and not tokens[0].isdigit():
        (t0,) = tokens

        def ex1(evt):  # jevt.value[/stage] and the like: one key of the event
            v = evt.obj.get(t0, _MISSING)
            return None if v is _MISSING else _text(v)

        return ex1

    def ex(evt):
        node = evt.obj
        for t in tokens:
            if isinstance(node, dict):
                node = node.get(t, _MISSING)
                if node is _MISSING:
                    return None
            elif isinstance(node, list) and t.isascii() and t.isdigit():  # int() refuses '¹', isdigit() takes it
                i = int(t)
                if i >= len(node):
                    return None
                node = node[i]
            else:
                return None
        return _text(node)

    return ex


def _json_obj(arg):
    return lambda evt: _cstr(json.dumps(evt.obj, indent=2, ensure_ascii=False))


def _rawtime_str(arg):
    return lambda evt: str(evt.ts)


for _p in ("json", "jevt"):
    _reg(f"{_p}.value", _json_value, arg="key")
    _reg(f"{_p}.obj", _json_obj)
    _reg(f"{_p}.rawtime", _rawtime_str)


# ---- generic evt.* fields every plugin source has ----------------------------------------------------------
def _local_hms(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return _time.strftime("%H:%M:%S", _time.localtime(secs)) + f".{frac:09d}"


def _gen(fn, type=STR):
    return lambda arg: fn


_reg("evt.time", _gen(lambda e: _local_hms(e.ts)), plugin=False)
_reg("evt.time.s", _gen(lambda e: _time.strftime("%H:%M:%S", _time.localtime(e.ts // 1_000_000_000))), plugin=False)
_reg(
    "evt.time.iso8601",
    _gen(
        lambda e: (
            _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(e.ts // 1_000_000_000))
            + f".{e.ts % 1_000_000_000:09d}+0000"
        )
    ),
    plugin=False,
)
_reg(
    "evt.datetime",
    _gen(
        lambda e: (
            _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(e.ts // 1_000_000_000)) + f".{e.ts % 1_000_000_000:09d}"
        )
    ),
    plugin=False,
)
_reg(
    "evt.datetime.s",
    _gen(lambda e: _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(e.ts // 1_000_000_000))),
    plugin=False,
)
_reg("evt.rawtime", _gen(lambda e: e.ts), type=U64, plugin=False)
_reg("evt.rawtime.s", _gen(lambda e: e.ts // 1_000_000_000), type=U64, plugin=False)
_reg("evt.rawtime.ns", _gen(lambda e: e.ts % 1_000_000_000), type=U64, plugin=False)
_reg("evt.num", _gen(lambda e: e.num), type=U64, plugin=False)
_reg("evt.source", _gen(lambda e: "k8s_audit"), plugin=False)
_reg("evt.pluginname", _gen(lambda e: "k8saudit"), plugin=False)


class FieldError(ValueError):
    pass


def resolve(name: str, arg: str | None):
    """Validate ``name[arg]`` and return (FieldDef, cache key, extractor)."""
    entry = FIELDS.get(name)
    if entry is None:
        raise FieldError(f"filter_check called with nonexistent field {name}")
    fdef, factory = entry
    if fdef.arg == "" and arg is not None:
        raise FieldError(f"filter_check called with nonexistent field {name}[{arg}]: field '{name}' takes no argument")
    if fdef.arg == "key" and arg is None:
        raise FieldError(f"filter_check called with nonexistent field {name}: field '{name}' requires an argument")
    if fdef.arg == "idx" and arg is not None:
        if not arg.isdigit() or not arg.isascii() or (len(arg) > 1 and arg[0] == "0"):
            raise FieldError(f"index argument must be a non-negative number without leading zeros: {name}[{arg}]")
    if " " in (arg or "") or "]" in (arg or ""):
        # Falco rebuilds "name[arg]" and the plugin parser stops at the first space or ']'.
        raise FieldError(f"filter_check called with nonexistent field {name}[{arg}]")
    if name in ("json.value", "jevt.value"):
        assert arg is not None  # its FieldDef takes a key: refused above without one
        key = "jevt.value[" + (arg[1:] if arg.startswith("/") else arg) + "]" if arg != "" else "jevt.value[]"
    else:
        key = name if arg is None else f"{name}[{arg}]"
    return fdef, key, factory(arg)


def longest_field_prefix(text: str, pos: int) -> str | None:
    """Output formats take the longest known field name that prefixes the text (``%ka.verbose`` is ka.verb)."""
    best = None
    for name in _NAMES_BY_LEN:
        if text.startswith(name, pos):
            best = name
            break
    return best


_NAMES_BY_LEN = sorted(FIELDS, key=len, reverse=True)
