"""What a node may ask for: request validation, the allowlist, label and taint rules.

Every rule returns a PolicyError with the HTTP status and a reason the node's
operator can act on; nothing here touches the cluster.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import yaml

# Always set at registration so GET /nodes finds joined nodes after their token is gone.
ENROLLED_LABEL = ("edgeguard.io/enrolled-by", "node-enroll")

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_MACHINE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# uname -m / dpkg / GOARCH spellings -> GOARCH, which is what the kubelet reports.
ARCHES = {
    "arm64": "arm64",
    "aarch64": "arm64",
    "amd64": "amd64",
    "x86_64": "amd64",
    "arm": "arm",
    "armhf": "arm",
    "armv7l": "arm",
    "armv7": "arm",
    "riscv64": "riscv64",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
}
REQUEST_FIELDS = {"hostname", "arch", "machine_id", "labels", "rotate"}
MAX_REQUESTED_LABELS = 32


class PolicyError(Exception):
    def __init__(self, status: int, reason: str, **extra):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


@dataclass(frozen=True)
class EnrollRequest:
    hostname: str
    arch: str
    machine_id: str
    labels: dict
    rotate: bool


@dataclass(frozen=True)
class AllowEntry:
    hostname: str | None
    machine_id: str | None
    labels: dict = field(default_factory=dict)
    taints: tuple = ()

    def matches(self, req: EnrollRequest) -> bool:
        if self.hostname is not None and not fnmatch.fnmatchcase(req.hostname, self.hostname):
            return False
        if self.machine_id is not None and req.machine_id != self.machine_id:
            return False
        return True


@dataclass(frozen=True)
class Decision:
    labels: dict
    taints: tuple
    matched: str | None  # a description of the allowlist entry that matched, for the audit log


# ---------------------------------------------------------------- labels, taints


def valid_node_name(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 253 and bool(_DNS_SUBDOMAIN_RE.fullmatch(name))


def _is_kubernetes_namespace(prefix: str) -> bool:
    prefix = prefix.lower()
    return any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label key, or None."""
    if not isinstance(key, str) or not key:
        return "label keys must be non-empty strings"
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"label key {key!r} has an invalid prefix (must be a lowercase DNS subdomain)"
    if not name or len(name) > 63 or not _LABEL_NAME_RE.fullmatch(name):
        return f"label key {key!r} has an invalid name (1-63 characters [A-Za-z0-9-_.], alphanumeric at both ends)"
    return None


def label_value_problem(key: str, value) -> str | None:
    if not isinstance(value, str):
        return f"label {key!r} must have a string value"
    if value and (len(value) > 63 or not _LABEL_NAME_RE.fullmatch(value)):
        return f"label {key!r} has an invalid value (at most 63 characters [A-Za-z0-9-_.], alphanumeric at both ends)"
    return None


def refused_label_reason(key: str) -> str | None:
    prefix = key.rpartition("/")[0]
    if prefix.lower() == "node-role.kubernetes.io":
        return (
            f"label {key!r} is refused: the kubelet rejects self-assigned node-role.kubernetes.io/* labels; "
            "use your own prefix (e.g. node.edgeguard.io/role=edge)"
        )
    if _is_kubernetes_namespace(prefix):
        return (
            f"label {key!r} is refused: the kubelet rejects unknown kubernetes.io / k8s.io labels set with "
            "--node-labels"
        )
    return None


def check_labels(labels: dict, *, allowed_prefixes: tuple | None, where: str) -> dict:
    if not isinstance(labels, dict):
        raise PolicyError(400, f"{where}: labels must be an object of key -> value")
    out = {}
    for key, value in labels.items():
        problem = label_key_problem(key) or label_value_problem(key, value) or refused_label_reason(key)
        if problem:
            raise PolicyError(422, f"{where}: {problem}", label=key if isinstance(key, str) else None)
        if allowed_prefixes is not None and not any(key.startswith(p) for p in allowed_prefixes):
            raise PolicyError(
                422,
                f"{where}: label {key!r} does not start with an allowed prefix "
                f"({', '.join(allowed_prefixes) or 'none configured'})",
                label=key,
                allowed_prefixes=list(allowed_prefixes),
            )
        out[key] = value
    return out


def parse_taint(spec) -> str:
    """Validate ``key[=value]:Effect`` and return it unchanged."""
    if not isinstance(spec, str):
        raise ValueError("taints must be strings of the form key[=value]:Effect")
    kv, colon, effect = spec.rpartition(":")
    if not colon or effect not in TAINT_EFFECTS:
        raise ValueError(f"taint {spec!r} must end with :NoSchedule, :PreferNoSchedule or :NoExecute")
    key, _, value = kv.partition("=")
    problem = label_key_problem(key) or label_value_problem(key, value)
    if problem:
        raise ValueError(f"taint {spec!r}: {problem.replace('label', 'taint')}")
    return spec


# ---------------------------------------------------------------- configuration


def parse_prefixes(raw: str | None) -> tuple:
    prefixes = tuple(p.strip() for p in (raw or "").split(",") if p.strip())
    for p in prefixes:
        domain = p.rstrip("/")
        if not p.endswith("/") or not _DNS_SUBDOMAIN_RE.fullmatch(domain):
            raise ValueError(f"allowed label prefix {p!r} must be a lowercase DNS subdomain ending in '/'")
        if _is_kubernetes_namespace(domain):
            raise ValueError(f"allowed label prefix {p!r} is in a namespace the kubelet refuses")
    return prefixes


def parse_allowlist(text: str | None) -> tuple:
    """Allowlist from YAML or JSON: a list of {hostname: glob, machine_id: exact, labels: {}, taints: []}."""
    if text is None or not text.strip():
        return ()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"allowlist is not valid YAML/JSON: {exc.__class__.__name__}") from None
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise ValueError("allowlist must be a list of entries")
    entries = []
    for i, item in enumerate(doc):
        where = f"allowlist entry {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be a mapping")
        unknown = set(item) - {"hostname", "machine_id", "labels", "taints"}
        if unknown:
            raise ValueError(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}")
        hostname, machine_id = item.get("hostname"), item.get("machine_id")
        if hostname is None and machine_id is None:
            raise ValueError(f"{where} needs a hostname pattern or a machine_id")
        for name, v in (("hostname", hostname), ("machine_id", machine_id)):
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{where}: {name} must be a non-empty string")
        try:
            labels = check_labels(item.get("labels") or {}, allowed_prefixes=None, where=where)
        except PolicyError as err:
            raise ValueError(err.reason) from None
        taints = item.get("taints") or []
        if not isinstance(taints, list):
            raise ValueError(f"{where}: taints must be a list")
        taints = tuple(parse_taint(t) for t in taints)
        entries.append(AllowEntry(hostname.lower() if hostname else None, machine_id, labels, taints))
    return tuple(entries)


# ---------------------------------------------------------------- requests


def parse_request(doc) -> EnrollRequest:
    if not isinstance(doc, dict):
        raise PolicyError(400, "request body must be a JSON object with hostname, arch and machine_id")
    unknown = set(doc) - REQUEST_FIELDS
    if unknown:
        raise PolicyError(
            400, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}", allowed_fields=sorted(REQUEST_FIELDS)
        )
    missing = [f for f in ("hostname", "arch", "machine_id") if not doc.get(f)]
    if missing:
        raise PolicyError(400, f"missing field(s): {', '.join(missing)}")
    hostname, arch, machine_id = doc["hostname"], doc["arch"], doc["machine_id"]
    if not all(isinstance(v, str) for v in (hostname, arch, machine_id)):
        raise PolicyError(400, "hostname, arch and machine_id must be strings")
    hostname = hostname.strip().lower()
    if not valid_node_name(hostname):
        raise PolicyError(
            400,
            "hostname must be a valid node name: lowercase letters, digits, '-' and '.', "
            "at most 253 characters, alphanumeric at both ends",
        )
    norm_arch = ARCHES.get(arch.strip().lower())
    if norm_arch is None:
        raise PolicyError(400, f"unsupported arch {arch[:32]!r}", supported=sorted(set(ARCHES)))
    machine_id = machine_id.strip()
    if not _MACHINE_ID_RE.fullmatch(machine_id):
        raise PolicyError(400, "machine_id must be 8-128 characters of [A-Za-z0-9._:-] (e.g. /etc/machine-id)")
    labels = doc.get("labels") or {}
    if not isinstance(labels, dict):
        raise PolicyError(400, "labels must be an object of key -> value")
    if len(labels) > MAX_REQUESTED_LABELS:
        raise PolicyError(400, f"at most {MAX_REQUESTED_LABELS} labels may be requested")
    rotate = doc.get("rotate", False)
    if not isinstance(rotate, bool):
        raise PolicyError(400, "rotate must be true or false")
    return EnrollRequest(hostname, norm_arch, machine_id, labels, rotate)


def decide(req: EnrollRequest, *, allowlist: tuple, allowed_prefixes: tuple) -> Decision:
    """Labels and taints for this node, or PolicyError (403 not allowlisted, 422 bad label)."""
    labels = check_labels(req.labels, allowed_prefixes=allowed_prefixes, where="labels")
    taints: tuple = ()
    matched = None
    if allowlist:
        for i, entry in enumerate(allowlist):
            if entry.matches(req):
                # Operator-assigned labels win: a node must not pick its own site or role.
                labels.update(entry.labels)
                taints = entry.taints
                matched = (
                    f"entry {i}"
                    + (f" hostname={entry.hostname}" if entry.hostname else "")
                    + (" machine_id" if entry.machine_id else "")
                )
                break
        else:
            raise PolicyError(403, f"node {req.hostname!r} is not in the enrollment allowlist")
    labels[ENROLLED_LABEL[0]] = ENROLLED_LABEL[1]
    return Decision(labels, taints, matched)
