"""Credential detection for ConfigMap data: which keys hold a credential, and how sure we are.

Findings never carry the value: only key, line number, detector id, tier and a
keyed fingerprint. Two tiers:

* ``high``: provider token (gitleaks rule), PEM private key, password in a URL,
  ``Authorization`` header, or a credential-named setting whose value passes the
  shape checks (not empty, placeholder, template, reference, path, number, ...).
  Eligible for automatic moving.
* ``suspect``: a credential-named setting with a placeholder-looking value, a
  generic high-entropy token, or gitleaks' generic rule alone. Reported only.

Why our own key-name layer on top of gitleaks: ConfigMap leaks are mostly
env-style (the *key* says PASSWORD, the value is a bare string), which line
scanners cannot see without context; and K8s idioms (``secretName``, ``*_FILE``,
``*SecretKeyRef``) are references, not credentials.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from .gitleaks import default_ruleset, shannon

HIGH = "high"
SUSPECT = "suspect"
MAX_LISTED_FINDINGS = 20
_RANK = {None: 0, SUSPECT: 1, HIGH: 2}

# --- key names ------------------------------------------------------------------------------

# Single tokens that name a credential on their own.
_STRONG_TOKENS = {
    "password", "passwd", "pwd", "pass", "passphrase", "passwort", "secret", "token", "apikey",
    "credential", "credentials", "creds", "privatekey", "requirepass", "masterauth", "dsn",
    "accesskey", "secretkey", "authtoken", "accesstoken", "refreshtoken", "bearertoken",
    "clientsecret", "connectionstring", "sasl_password", "htpasswd", "psk",
}
# Two-token phrases that name a credential ("api key", "private key", ...).
_STRONG_PAIRS = {
    ("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("signing", "key"),
    ("encryption", "key"), ("master", "key"), ("account", "key"), ("auth", "key"), ("client", "secret"),
    ("session", "key"), ("shared", "key"), ("license", "key"), ("storage", "key"), ("app", "key"),
    ("connection", "string"), ("service", "key"), ("hmac", "key"), ("webhook", "key"), ("jwt", "key"),
}
# A trailing token that turns the name into metadata about a credential, not the credential.
_META_SUFFIX = {
    "name", "names", "file", "files", "path", "paths", "dir", "url", "uri", "urls", "ref", "reference",
    "ttl", "length", "len", "size", "min", "max", "minimum", "maximum", "header", "type", "expiry",
    "expires", "expiration", "timeout", "enabled", "enable", "disabled", "policy", "count", "format",
    "mount", "version", "rotation", "algorithm", "algo", "prefix", "suffix", "hint", "field", "regex",
    "pattern", "mode", "location", "endpoint", "host", "hosts", "port", "user", "username", "id", "ids",
    "kind", "provider", "source", "store", "keystore", "env", "var", "variable", "key_ref", "selector",
    "template", "label", "annotation", "secretref", "keyref", "required", "lifetime", "duration",
    "period", "interval", "strength", "complexity", "reset", "hash", "hashed", "salt_rounds", "rounds",
    "cost", "digest", "method", "scheme", "flow", "scope", "scopes", "audience", "issuer", "claims",
    "limit", "limits", "retries", "attempts", "storage", "cache", "backend", "class", "manager",
}
# Exact names that are credentials even though their last token is metadata-like.
_STRONG_NAMES = {"aws_access_key_id", "access_key_id", "aws_s3_access_key_id", "accesskeyid", "auth"}
# Kubernetes/Helm idioms that look like credential names but hold references.
_REFERENCE_NAMES = re.compile(
    r"(?i)(secret_?name|existing_?secret|secret_?key_?ref|secret_?ref|value_?from|secret_?provider|"
    r"secretname|secrets?_?(dir|path|file|mount)|use_?secret|secret_?store)")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def name_tokens(name: str) -> list[str]:
    name = _CAMEL.sub("_", name)
    # digits separate words too: token2, oauth2_secret, DB1_PASSWORD
    return [t for t in _SPLIT.split(re.sub(r"\d+", "_", name).lower()) if t]


def credential_name(name: str) -> bool:
    """True when a setting's name says it holds a credential (not a reference or metadata about one)."""
    if not name:
        return False
    toks = name_tokens(name)
    if not toks:
        return False
    norm = re.sub(r"[^a-z0-9]+", "_", _CAMEL.sub("_", name).lower()).strip("_")
    if norm in _STRONG_NAMES or norm.replace("_", "") in _STRONG_NAMES:
        return True
    if _REFERENCE_NAMES.search(name.replace("-", "_").replace(".", "_")):
        return False
    if toks[-1] in _META_SUFFIX:
        return False
    if {"public", "csrf", "xsrf", "pub"} & set(toks):
        return False  # public keys/tokens and CSRF tokens are not credentials
    joined = "".join(toks)
    for t in toks:
        if t in _STRONG_TOKENS:
            return True
    for a, b in zip(toks, toks[1:]):
        if (a, b) in _STRONG_PAIRS:
            return True
    # compounds written without separators: dbpassword, adminpass, apikey, clientsecret
    return bool(re.search(r"(passw(or)?d|passphrase|secret|apikey|accesskey|privatekey|authtoken|token)$", joined))


# --- values ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"""(?ix)^(
        \$\{[^}]*\}? | \$\([^)]*\)? | \$[A-Za-z_][A-Za-z0-9_]* |     # ${VAR} $(cmd) $VAR
        \{\{.*\}\} | \{%.*%\} | \(\(.*\)\) |                           # templating
        <[^<>]*> | \[[^\[\]]*\] | %[A-Za-z_]+% | @[A-Za-z_]+@ |         # <your-password> [..] %VAR% @VAR@
        [*xX#.?_-]{3,} | (.)\2{3,} |                                   # ***** xxxx
        (your|my|the|some|example|sample|dummy|fake|test|default)[-_ ]?\w*[-_ ]?(password|passwd|secret|token|key|here|value) |
        (password|passwd|secret|token|apikey|api[-_]key|redacted|removed|hidden|none|null|nil|undefined|
         true|false|yes|no|on|off|todo|tbd|fixme|replace[-_ ]?me|change[-_ ]?this|placeholder|
         example|sample|dummy|fake|xxx+|n/?a|empty|masked|secret[-_]?here|insert[-_ ].*|enter[-_ ].*)
    )$""")
_REFERENCE_VALUE = re.compile(
    r"""(?ix)^(
        (secretKeyRef|configMapKeyRef|valueFrom|secret|vault|ref|env|file|arn:aws:secretsmanager|
         arn:aws:ssm|projects/[^/]+/secrets|azurekeyvault|akv|gcp|sm|ssm|k8s|kubernetes)(:|://)\S* |
        (os\.)?(getenv|environ)\b.* | process\.env\..* | System\.getenv.* | ENV\[.* |   # code reading env
        [\w.]+\(.*\)                                                   # a function call
    )$""")
# a value that is rendered elsewhere: ${VAR}, ${VAR:-default}, {{ .Values.x }}, {{ env "X" }}
_TEMPLATED = re.compile(r"\$\{[A-Za-z_][\w.]*(:?[-=?+][^}]*)?\}|\{\{-?\s*[\w.$|\"' ()-]+\s*-?\}\}")
# filler and documentation values: xxxxxxxx, 11111111, AKIA...EXAMPLE, {Name}, ALL_CAPS_NAME, 12345678
_FILLER = re.compile(r"(.)\1{7,}|EXAMPLE$|^\{[A-Za-z_]\w*\}$|^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
_SEQUENTIAL = re.compile(r"(?i)12345678|abcdefgh")
# code, not configuration: obj.field (unquoted), type names
_CODE_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_TYPE_NAMES = {"string", "str", "bool", "boolean", "int", "integer", "number", "any", "object", "char", "byte",
               "bytes", "[]byte", "none", "string?", "optional[str]"}
_WORD = re.compile(r"\b[A-Za-z]{2,}\b")
# snake_case or camelCase words without digits: a variable name or a made-up example value
# ("root_user_password", "top_secret", "processToken"); reported, never moved
_IDENTIFIER = re.compile(r"^[a-z]+(_[a-z]+)+$|^[a-z]+([A-Z][a-z]+)+$")
_NUMERIC = re.compile(r"^[-+]?(0x[0-9a-f]+|\d+([.,]\d+)?\s*(ms|s|m|h|d|w|y|b|k|kb|mb|gb|ki|mi|gi|%)?)$", re.I)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_DIGEST = re.compile(r"^(sha1|sha256|sha384|sha512|md5):[0-9a-f]+$", re.I)
_PATH = re.compile(r"^(~|\.{1,2})?/[\w.@/+-]*$|^[A-Za-z]:\\")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.I)
_URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^\s:/@'\"]*):([^\s/'\"]*)@[^\s@/'\"]", re.I)
_WORDS = re.compile(r"^[A-Za-z][a-z]*( [A-Za-z][a-z]*){2,}[.!]?$")


def _strip_value(v: str) -> str:
    v = v.strip()
    if v.endswith((",", ";")):
        v = v[:-1].rstrip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"`":
        v = v[1:-1]
    return v.strip()


def value_kind(value: str) -> str:
    """Why a value is not a credential ('empty', 'placeholder', ...), or 'credential'."""
    raw = value.strip().rstrip(",;").strip()
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"`"
    v = _strip_value(value)
    if not v:
        return "empty"
    if not quoted and (_CODE_REF.match(v) or v.lower() in _TYPE_NAMES or v.endswith(("(", "{"))):
        return "reference"  # code: a member access, a type annotation, a function literal
    if v.startswith("$") or re.match(r"^\{[A-Za-z_][\w.]*\}$", v):
        return "placeholder"  # shell/env expansion, {props.x} / {Name} format references
    if v in ("|", ">", "|-", ">-", "|+", ">+", "{", "[", "{}", "[]"):
        return "structure"
    if _PLACEHOLDER.match(v):
        return "placeholder"
    if _TEMPLATED.search(v) or _FILLER.search(v) or _SEQUENTIAL.search(v):
        return "placeholder"
    if _REFERENCE_VALUE.match(v):
        return "reference"
    if _NUMERIC.match(v):
        return "number"
    if _UUID.match(v) or _DIGEST.match(v):
        return "identifier"
    if _PATH.match(v):
        return "path"
    if _URL.match(v) and not _URL_USERINFO.search(v):
        return "url"
    if _WORDS.match(v) or (v.count(" ") >= 3 and len(_WORD.findall(v)) >= 3):
        return "prose"
    if len(v) < 4:
        return "short"
    if _IDENTIFIER.match(v):
        return "identifier"
    return "credential"


# --- line parsing ------------------------------------------------------------------------------

# key = value | key: value | key := value | "key": "value" | key value (nginx/redis/ini directives)
_ASSIGN = re.compile(r"""^\s*(?:export\s+|-\s+)?["']?([A-Za-z_][\w.\-\[\]/]*)["']?\s*(?::=|=>|=|:)\s*(.*)$""")
_JSON_PAIR = re.compile(r""""([A-Za-z_][\w.\-]*)"\s*:\s*"((?:[^"\\]|\\.)*)\"""")
_DIRECTIVE = re.compile(r"""^\s*([A-Za-z_][\w.\-]*)\s+(\S+)\s*;?\s*$""")
# several name=value pairs on one line: ODBC/ADO connection strings, CLI env prefixes, k=v lists
_INLINE_PAIR = re.compile(r"""(?:^|[;\s"'&,])([A-Za-z_][\w.\-]*)\s*=\s*("[^"]*"|'[^']*'|[^;&\s"',]+)""")
_CLI_SECRET_FLAG = re.compile(r"""(?:^|\s)(?:-p|--password|--token|--secret|--api-key|--client-secret)(?:=|\s+)("[^"]*"|'[^']*'|\S+)""")
_AUTH_HEADER = re.compile(r"""(?i)authorization["']?\s*[:=]?\s*["']?\s*(basic|bearer|token|digest)\s+([A-Za-z0-9+/=._~-]{8,})""")
_URL_QUERY_CRED = re.compile(r"""(?i)[?&;](password|passwd|pwd|pass|secret|token|access_token|api_?key|sig|signature|client_secret|auth)=([^&\s'"#;]+)""")
_URL_TOKEN_USER = re.compile(r"""(?i)[a-z][a-z0-9+.-]*://([A-Za-z0-9_\-]{20,})@[^\s@/'"]""")
_PEM_PRIVATE = re.compile(r"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----")
_PEM_ANY = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")
_HEX = re.compile(r"^[0-9a-fA-F]+$")

_WEAK_URL_PASSWORDS = {"pass", "password", "passwd", "pwd", "secret", "pw", "xxx", "****", "changeit"}


@dataclass(frozen=True)
class Finding:
    key: str
    line: int          # 1-based line inside the value, 0 for the key name itself
    detector: str
    tier: str
    fingerprint: str   # keyed hash of the matched secret text, never the text

    def public(self) -> dict:
        return {"line": self.line, "detector": self.detector, "tier": self.tier, "fingerprint": self.fingerprint}


@dataclass
class KeyVerdict:
    key: str
    source: str                  # "data" | "binaryData"
    tier: str | None
    findings: list
    fingerprint: str             # of the whole value: lets a report say "same value as ..."

    @property
    def detectors(self) -> list[str]:
        return sorted({f.detector for f in self.findings})

    def public(self) -> dict:
        # high tier first; a 1 MiB file can hold thousands of hits, the answer stays readable
        shown = sorted(self.findings, key=lambda f: (f.tier != HIGH, f.line))[:MAX_LISTED_FINDINGS]
        out = {"key": self.key, "source": self.source, "tier": self.tier, "detectors": self.detectors,
               "fingerprint": self.fingerprint, "findings": [f.public() for f in shown]}
        if len(self.findings) > len(shown):
            out["more_findings"] = len(self.findings) - len(shown)
        return out


class Fingerprinter:
    """Short keyed hash: a plain sha256 of a weak password ('changeme') is reversible by lookup.

    The key must be secret and known only to this function (the handler reads it from its own
    OpenFaaS secret). With a public or shared key anyone holding a fingerprint could test
    password guesses offline, so there is no default: no key, no fingerprints.
    12 hex (48 bits) is enough for what a fingerprint is for, telling whether two keys or two
    runs saw the same value (collision odds ~n^2/2^49: 2e-7 for 10,000 values); it is not an
    identifier, and keeping it short gives a key-holder little to match against either.
    """

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a fingerprint key is required")
        self.key = bytes(key)

    def __call__(self, value: str | bytes) -> str:
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        return "hmac-sha256:" + hmac.new(self.key, data, hashlib.sha256).hexdigest()[:12]


class Detector:
    def __init__(self, fingerprint_key: bytes):
        self.rules = default_ruleset()
        self.fp = Fingerprinter(fingerprint_key)

    # public API ---------------------------------------------------------------------------
    def scan_configmap(self, cm: dict) -> list[KeyVerdict]:
        out = []
        for key, value in sorted((cm.get("data") or {}).items()):
            out.append(self.scan_key(key, value if isinstance(value, str) else str(value), "data"))
        for key, value in sorted((cm.get("binaryData") or {}).items()):
            out.append(self.scan_binary(key, value))
        return out

    def scan_binary(self, key: str, b64: str) -> KeyVerdict:
        try:
            raw = base64.b64decode(b64 or "", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\x00" not in text:
            v = self.scan_key(key, text, "binaryData")
            v.fingerprint = self.fp(raw)
            return v
        findings = []
        for rid in self.rules.path_hits(key):  # e.g. pkcs12-file: keystore by name
            findings.append(Finding(key, 0, f"gitleaks:{rid}", HIGH, self.fp(raw)))
        if re.search(r"(?i)\.(jks|keystore|p12|pfx|kdbx)$", key) and not findings:
            findings.append(Finding(key, 0, "keystore-file", HIGH, self.fp(raw)))
        if b"PRIVATE KEY" in raw:
            findings.append(Finding(key, 0, "pem-private-key", HIGH, self.fp(raw)))
        return self._verdict(key, "binaryData", findings, self.fp(raw))

    def scan_key(self, key: str, value: str, source: str = "data") -> KeyVerdict:
        findings: list[Finding] = []
        stripped = value.strip()
        single = "\n" not in stripped
        # env-style: the ConfigMap key is the setting name
        if single and credential_name(key):
            kind = value_kind(stripped)
            if kind == "credential":
                findings.append(Finding(key, 1, "keyname", HIGH, self.fp(stripped)))
            elif kind in ("short", "prose", "identifier"):
                findings.append(Finding(key, 1, f"keyname-{kind}-value", SUSPECT, self.fp(stripped)))
        findings.extend(self.scan_text(key, value))
        return self._verdict(key, source, findings, self.fp(value))

    def scan_text(self, key: str, text: str) -> list[Finding]:
        """Line-aware scan of a value (env line, or an embedded file of any common config format)."""
        findings: list[Finding] = []
        lines = text.split("\n")
        starts = []
        pos = 0
        for ln in lines:
            starts.append(pos)
            pos += len(ln) + 1

        def line_no(offset: int) -> int:
            lo, hi = 0, len(starts) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if starts[mid] <= offset:
                    lo = mid
                else:
                    hi = mid - 1
            return lo + 1

        in_cert = False
        for i, line in enumerate(lines, 1):
            if "-----BEGIN" in line:
                if _PEM_PRIVATE.search(line) and _pem_body_len(lines, i) >= 64:
                    findings.append(Finding(key, i, "pem-private-key", HIGH, self.fp(line.strip())))
                in_cert = True  # key bodies and certificates are base64 noise for line checks
            if "-----END" in line:
                in_cert = False
                continue
            if in_cert or _PEM_ANY.search(line):
                continue
            for piece in _pieces(line):
                findings.extend(self._scan_line(key, i, piece))
        for hit in self.rules.scan(text, key):
            if hit.rule_id == "private-key":
                continue  # covered line-exactly above
            tier = SUSPECT if hit.rule_id.startswith("generic-") else HIGH
            if tier == SUSPECT and value_kind(hit.secret) != "credential":
                continue
            findings.append(Finding(key, line_no(hit.start), f"gitleaks:{hit.rule_id}", tier, self.fp(hit.secret)))
        return _dedup(findings)

    # internals ------------------------------------------------------------------------------
    def _scan_line(self, key: str, i: int, line: str) -> list[Finding]:
        out: list[Finding] = []
        for m in _URL_USERINFO.finditer(line):
            user, pw = m.group(1), m.group(2)
            if pw and pw.lower() not in _WEAK_URL_PASSWORDS and value_kind(pw) in ("credential", "short"):
                out.append(Finding(key, i, "url-userinfo", HIGH, self.fp(pw)))
        for m in _URL_TOKEN_USER.finditer(line):
            if shannon(m.group(1)) > 3.0:
                out.append(Finding(key, i, "url-token-userinfo", HIGH, self.fp(m.group(1))))
        for m in _URL_QUERY_CRED.finditer(line):
            if value_kind(m.group(2)) == "credential":
                out.append(Finding(key, i, "url-query-credential", HIGH, self.fp(m.group(2))))
        for m in _AUTH_HEADER.finditer(line):
            if value_kind(m.group(2)) == "credential":
                out.append(Finding(key, i, "authorization-header", HIGH, self.fp(m.group(2))))
        pairs = [(m.group(1), m.group(2)) for m in _JSON_PAIR.finditer(line)]
        if not pairs:
            m = _ASSIGN.match(line)
            if m:
                pairs.append((m.group(1), m.group(2)))
            else:
                m = _DIRECTIVE.match(line)
                if m and not m.group(2).endswith("."):  # "password combination." is prose
                    pairs.append((m.group(1), m.group(2)))
        if ";" in line or line.count("=") > 1:
            seen = {n for n, _ in pairs}
            pairs.extend((m.group(1), m.group(2)) for m in _INLINE_PAIR.finditer(line) if m.group(1) not in seen)
        for m in _CLI_SECRET_FLAG.finditer(line):
            if value_kind(m.group(1)) == "credential":
                out.append(Finding(key, i, "cli-secret-flag", HIGH, self.fp(_strip_value(m.group(1)))))
        for name, value in pairs:
            if not credential_name(name.split(".")[-1]) and not credential_name(name):
                continue
            kind = value_kind(value)
            if kind == "credential":
                out.append(Finding(key, i, "keyname", HIGH, self.fp(_strip_value(value))))
            elif kind in ("short", "prose", "identifier"):
                out.append(Finding(key, i, f"keyname-{kind}-value", SUSPECT, self.fp(_strip_value(value))))
        if not out:
            for m in _TOKEN.finditer(line):
                tok = m.group(0).strip("=")
                if len(tok) < 24 or _UUID.match(tok) or re.search(r"(?i)(sha\d+|md5|digest)[:=@]$", line[:m.start()]):
                    continue
                limit = 3.0 if _HEX.match(tok) else 4.2
                if len(tok) >= 32 and shannon(tok) > limit and re.search(r"\d", tok) and re.search(r"[A-Za-z]", tok):
                    out.append(Finding(key, i, "high-entropy", SUSPECT, self.fp(tok)))
        return out

    def _verdict(self, key, source, findings, fp) -> KeyVerdict:
        tier = None
        for f in findings:
            if _RANK[f.tier] > _RANK[tier]:
                tier = f.tier
        return KeyVerdict(key, source, tier, findings, fp)


def _pieces(line: str, size: int = 2048):
    """A minified file on one line, cut after separators into pieces the line checks can handle."""
    if len(line) <= 4096:
        yield line
        return
    buf = ""
    for part in re.split(r"(?<=[,;{}\[\]])", line):
        if buf and len(buf) + len(part) > size:
            yield buf
            buf = ""
        buf += part
        while len(buf) > 4 * size:  # no separators at all: plain cut
            yield buf[: 2 * size]
            buf = buf[2 * size:]
    if buf:
        yield buf


def _pem_body_len(lines: list[str], begin_line: int) -> int:
    """Base64 characters between a BEGIN line (1-based) and its END: a header alone is not a key."""
    n = 0
    for line in lines[begin_line:]:
        if "-----END" in line:
            break
        n += len(re.sub(r"[^A-Za-z0-9+/=]", "", line)) if ":" not in line else 0
    return n


def _dedup(findings: list[Finding]) -> list[Finding]:
    seen = set()
    out = []
    for f in findings:
        k = (f.line, f.detector, f.fingerprint)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out
