"""Credential detection for ConfigMap data: which keys hold a credential, and how sure we are.

Findings never carry the value: only key, line number, detector id, tier and a keyed
fingerprint. Two tiers, and the high one is precision-first by construction:

* ``high`` (moved automatically in ``move`` mode) needs evidence that stands on its own:
  a provider format matched on its own prefix (with its checksum where the format has one:
  GitHub and npm tokens; a decodable header for JWTs), a PEM private key with a body, a URL
  or ``Authorization: Basic`` header carrying a password, a bearer token, or a setting whose
  *name* announces a credential together with a *value* whose shape agrees with it
  (``shapes.agrees``).
* ``suspect`` (reported, never moved) is everything weaker: a credential name with a short,
  weak, example, prose or disagreeing value, a commented-out setting, a provider rule that
  only matched on a nearby word, a failed checksum, a test-mode key, gitleaks' generic rule,
  a long high-entropy token.

Placeholders, templates (``${X}``, ``{{ .Values.x }}``), references to other secrets
(``secretKeyRef:``, ``vault:``, ``secretName``), paths, plain URLs and numbers give no finding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from . import formats
from .gitleaks import default_ruleset, shannon
from .shapes import (  # noqa: F401
    NOT_A_VALUE,
    TOKEN,
    URL_USERINFO,
    agrees,
    credential_name,
    example_host,
    example_name,
    name_class,
    name_tokens,
    strip_value,
    token_like,
    url_password_kind,
    value_kind,
)

HIGH = "high"
SUSPECT = "suspect"
MAX_LISTED_FINDINGS = 20
_RANK = {None: 0, SUSPECT: 1, HIGH: 2}

# --- line parsing ------------------------------------------------------------------------------

# a commented-out line: documentation or a default, not the setting in use
_COMMENT = re.compile(r"^\s*(?:#+|//+|;+|<!--|--\s)\s*")
# key = value | key: value | key := value | "key": "value" | key value (nginx/redis/ini directives)
_ASSIGN = re.compile(r"""^\s*(?:export\s+|-\s+|\$|:)?["']?([A-Za-z_][\w.\-\[\]/>]*)["']?\s*(?::=|=>|=|:)\s*(.*)$""")
_JSON_PAIR = re.compile(r""""([A-Za-z_][\w.\-]*)"\s*:\s*"((?:[^"\\]|\\.)*)\"""")
_DIRECTIVE = re.compile(r"""^\s*([A-Za-z_][\w.\-]*)\s+(\S+)\s*;?\s*$""")
# <add key="DbPassword" value="..."/>, <password>...</password>
_XML_KEY_VALUE = re.compile(r"""(?i)\bkey\s*=\s*"([^"]+)"\s+value\s*=\s*"([^"]*)\"""")
_XML_ELEMENT = re.compile(r"""<([A-Za-z_][\w.\-]*)>([^<>\s][^<>]*)</\1>""")
# several name=value pairs on one line: ODBC/ADO connection strings, CLI env prefixes, k=v lists
_INLINE_PAIR = re.compile(r"""(?:^|[;\s"'&,])([A-Za-z_][\w.\-]*)\s*=\s*("[^"]*"|'[^']*'|[^;&\s"',]+)""")
_CLI_SECRET_FLAG = re.compile(
    r"""(?:^|\s)(-p|--password|--token|--secret|--api-key|--client-secret)(?:=|\s+)("[^"]*"|'[^']*'|\S+)"""
)
_CLI_FLAG_NAME = {
    "-p": "password",
    "--password": "password",
    "--token": "token",
    "--secret": "secret",
    "--api-key": "api_key",
    "--client-secret": "client_secret",
}
# curl and friends: -u user:password, -H "X-Api-Key: value"
_CLI_USER = re.compile(r"""(?:^|\s)(?:-u|--user)(?:=|\s+)("[^"]*"|'[^']*'|[^\s"']+)""")
_CLI_HEADER = re.compile(r"""(?:^|\s)(?:-H|--header)(?:=|\s+)["']([A-Za-z][\w-]*)\s*:\s*([^"']+)["']""")
_AUTH_HEADER = re.compile(
    r"""(?i)authorization["']?\s*[:=]?\s*["']?\s*(basic|bearer|token)\s+([A-Za-z0-9+/=._~-]{8,})"""
)
_URL_QUERY_CRED = re.compile(
    r"""(?i)[?&;](password|passwd|pwd|pass|secret|token|access_token|api_?key|sig|signature|client_secret|auth)"""
    r"""=([^&\s'"#;]+)"""
)
_URL_TOKEN_USER = re.compile(r"""(?i)[a-z][a-z0-9+.-]*://([A-Za-z0-9_\-]{20,})@([^\s@/'":?#]+)""")
_PEM_PRIVATE = re.compile(r"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----")
_PEM_ANY = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_HASH_CONTEXT = re.compile(r"(?i)(sha\d+|md5|digest|integrity|checksum|\.tgz|\.tar\.gz|\.zip)[:=@#-]?\s*[\"']?$")
# a ConfigMap key that is documentation: config.yaml.example, app.env.sample
_EXAMPLE_FILE = re.compile(r"(?i)[._-](example|sample|dist|template|tmpl)$")
# Name-value rule ids: high when the value agrees with the name, else "<rule>-<why>" at suspect.
KEYNAME, URL_QUERY, CLI_FLAG = "keyname", "url-query-credential", "cli-secret-flag"


@dataclass(frozen=True)
class Finding:
    key: str
    line: int  # 1-based line inside the value, 0 for the key name itself
    detector: str
    tier: str
    fingerprint: str  # keyed hash of the matched secret text, never the text

    def public(self) -> dict:
        return {"line": self.line, "detector": self.detector, "tier": self.tier, "fingerprint": self.fingerprint}


@dataclass
class KeyVerdict:
    key: str
    source: str  # "data" | "binaryData"
    tier: str | None
    findings: list
    fingerprint: str  # of the whole value: lets a report say "same value as ..."

    @property
    def detectors(self) -> list[str]:
        return sorted({f.detector for f in self.findings})

    def public(self) -> dict:
        # high tier first; a 1 MiB file can hold thousands of hits, the answer stays readable
        shown = sorted(self.findings, key=lambda f: (f.tier != HIGH, f.line))[:MAX_LISTED_FINDINGS]
        out: dict[str, object] = {
            "key": self.key,
            "source": self.source,
            "tier": self.tier,
            "detectors": self.detectors,
            "fingerprint": self.fingerprint,
            "findings": [f.public() for f in shown],
        }
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
        self._keywords = {r.id: r.keywords for r in self.rules.rules}
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
        return self._verdict(key, "binaryData", _cap_if(findings, _example_key(key)), self.fp(raw))

    def scan_key(self, key: str, value: str, source: str = "data") -> KeyVerdict:
        findings: list[Finding] = []
        stripped = value.strip()
        if "\n" not in stripped:
            # env-style: the ConfigMap key is the setting name
            f = self._name_value(key, 1, key, stripped, False, KEYNAME)
            if f:
                findings.append(f)
        findings.extend(self.scan_text(key, value))
        return self._verdict(key, source, _cap_if(findings, _example_key(key)), self.fp(value))

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

        in_pem = False
        commented_lines = set()
        for i, line in enumerate(lines, 1):
            m = _COMMENT.match(line)
            if m:
                commented_lines.add(i)
            if "-----BEGIN" in line:
                if _PEM_PRIVATE.search(line) and _pem_body_len(lines, i) >= 64:
                    tier, det = (SUSPECT, "pem-private-key-commented") if m else (HIGH, "pem-private-key")
                    findings.append(Finding(key, i, det, tier, self.fp(line.strip())))
                in_pem = True  # key bodies and certificates are base64 noise for line checks
            if "-----END" in line:
                in_pem = False
                continue
            if in_pem or _PEM_ANY.search(line):
                continue
            body = line[m.end() :] if m else line
            for piece in _pieces(body):
                findings.extend(self._scan_line(key, i, piece, bool(m)))
        for hit in self.rules.scan(text, key):
            if hit.rule_id == "private-key":
                continue  # covered line-exactly above
            f = self._provider(key, line_no(hit.start), hit)
            if f:
                findings.append(f)
        return _dedup(findings)

    # internals ------------------------------------------------------------------------------
    def _provider(self, key: str, line: int, hit) -> Finding | None:
        """Tier of a gitleaks hit: high only for a format matched on its own prefix that checks out."""
        secret = hit.secret
        kind = value_kind(secret)
        det = f"gitleaks:{hit.rule_id}"
        if hit.rule_id.startswith("generic-"):
            return Finding(key, line, det, SUSPECT, self.fp(secret)) if kind == "credential" else None
        # a provider secret may itself be a URL (Slack/Discord webhooks): "url" and "path" only mean
        # "not a credential" for the value of a credential-named setting
        kind = "credential" if kind in ("url", "path") else kind
        if kind in NOT_A_VALUE:
            return None
        strong = kind == "credential" and formats.prefixed(self._keywords.get(hit.rule_id, ()), secret)
        if strong and formats.CRC32_TOKEN.search(secret):
            strong = formats.crc32_token_ok(secret)
        if strong and hit.rule_id == "jwt":
            strong = formats.jwt_kind(secret) == "jwt"
        if strong and formats.test_mode(secret):
            strong = False
        return Finding(key, line, det, HIGH if strong else SUSPECT, self.fp(secret))

    def _name_value(self, key: str, i: int, name: str, value: str, commented: bool, rule: str) -> Finding | None:
        """A setting: high when the name announces a credential and the value's shape agrees."""
        last = re.split(r"\.|->", name)[-1]
        cls = name_class(last) or name_class(name)
        if cls is None:
            return None
        kind = value_kind(value)
        if kind in NOT_A_VALUE:
            return None
        v = strip_value(value)
        if kind != "credential":
            return Finding(key, i, f"{rule}-{kind}-value", SUSPECT, self.fp(v))
        if not agrees(cls, v):
            if cls == TOKEN and v.isalpha() and len(v) < 16:
                return None  # "key": "host": a token-named field holding a word is a label, not a weak token
            return Finding(key, i, f"{rule}-shape-disagrees", SUSPECT, self.fp(v))
        if commented:
            return Finding(key, i, f"{rule}-commented", SUSPECT, self.fp(v))
        if example_name(name):
            return Finding(key, i, f"{rule}-example-name", SUSPECT, self.fp(v))
        return Finding(key, i, rule, HIGH, self.fp(v))

    def _scan_line(self, key: str, i: int, line: str, commented: bool) -> list[Finding]:
        out: list[Finding] = []
        for m in URL_USERINFO.finditer(line):
            pw, host = m.group(2), m.group(3)
            kind = url_password_kind(pw)
            if kind == "credential":
                if commented or example_host(host):
                    out.append(
                        Finding(
                            key,
                            i,
                            "url-userinfo-example" if not commented else "url-userinfo-commented",
                            SUSPECT,
                            self.fp(pw),
                        )
                    )
                else:
                    out.append(Finding(key, i, "url-userinfo", HIGH, self.fp(pw)))
            elif kind in ("weak", "example", "hash"):
                out.append(Finding(key, i, f"url-userinfo-{kind}", SUSPECT, self.fp(pw)))
        for m in _URL_TOKEN_USER.finditer(line):
            tok, host = m.group(1), m.group(2)
            if token_like(tok) and shannon(tok) > 3.0:
                strong = not commented and not example_host(host)
                out.append(Finding(key, i, "url-token-userinfo", HIGH if strong else SUSPECT, self.fp(tok)))
        for m in _URL_QUERY_CRED.finditer(line):
            f = self._name_value(key, i, m.group(1), m.group(2), commented, URL_QUERY)
            if f:
                out.append(f)
        for m in _AUTH_HEADER.finditer(line):
            out.append(self._auth_header(key, i, m.group(1).lower(), m.group(2), commented))
        pairs = [(m.group(1), m.group(2)) for m in _JSON_PAIR.finditer(line)]
        pairs.extend((m.group(1), m.group(2)) for m in _XML_KEY_VALUE.finditer(line))
        if "</" in line:
            pairs.extend((m.group(1), m.group(2)) for m in _XML_ELEMENT.finditer(line))
        if not pairs:
            setting = _ASSIGN.match(line)
            if setting:
                pairs.append((setting.group(1), setting.group(2)))
            else:
                directive = _DIRECTIVE.match(line)
                if directive and not directive.group(2).endswith("."):  # "password combination." is prose
                    pairs.append((directive.group(1), directive.group(2)))
        if ";" in line or line.count("=") > 1:
            seen = {n for n, _ in pairs}
            pairs.extend((m.group(1), m.group(2)) for m in _INLINE_PAIR.finditer(line) if m.group(1) not in seen)
        if "-u" in line or "--user" in line:
            for m in _CLI_USER.finditer(line):
                f = self._cli_user(key, i, strip_value(m.group(1)), commented)
                if f:
                    out.append(f)
        if "-H" in line or "--header" in line:
            pairs.extend(
                (m.group(1), m.group(2)) for m in _CLI_HEADER.finditer(line) if m.group(1).lower() != "authorization"
            )  # that one is _AUTH_HEADER's
        for m in _CLI_SECRET_FLAG.finditer(line):
            f = self._name_value(key, i, _CLI_FLAG_NAME[m.group(1)], m.group(2), commented, CLI_FLAG)
            if f:
                out.append(f)
        for name, value in pairs:
            f = self._name_value(key, i, name, value, commented, KEYNAME)
            if f:
                out.append(f)
        if not out:
            for m in _TOKEN.finditer(line):
                tok = m.group(0).strip("=")
                if len(tok) < 24 or _UUID.match(tok) or _HASH_CONTEXT.search(line[: m.start()]):
                    continue
                limit = 3.0 if _HEX.match(tok) else 4.2
                if len(tok) >= 32 and shannon(tok) > limit and re.search(r"\d", tok) and re.search(r"[A-Za-z]", tok):
                    out.append(Finding(key, i, "high-entropy", SUSPECT, self.fp(tok)))
        return out

    def _cli_user(self, key: str, i: int, userpass: str, commented: bool) -> Finding | None:
        """``curl -u user:password``: the part after the colon is a password, judged like a password setting."""
        if ":" not in userpass or value_kind(userpass) in NOT_A_VALUE:
            return None
        return self._name_value(key, i, "password", userpass.split(":", 1)[1], commented, "cli-user-password")

    def _auth_header(self, key: str, i: int, scheme: str, cred: str, commented: bool) -> Finding:
        if scheme == "basic":
            pair = formats.basic_auth(cred)
            if pair is None:
                return Finding(key, i, "authorization-basic-undecodable", SUSPECT, self.fp(cred))
            kind = url_password_kind(pair[1])
            if kind != "credential":
                return Finding(key, i, f"authorization-basic-{kind}", SUSPECT, self.fp(cred))
            det = "authorization-basic"
        else:
            if not token_like(cred) or value_kind(cred) != "credential":
                return Finding(key, i, "authorization-bearer-shape-disagrees", SUSPECT, self.fp(cred))
            det = "authorization-bearer"
        if commented:
            return Finding(key, i, det + "-commented", SUSPECT, self.fp(cred))
        return Finding(key, i, det, HIGH, self.fp(cred))

    def _verdict(self, key, source, findings, fp) -> KeyVerdict:
        tier = None
        for f in findings:
            if _RANK[f.tier] > _RANK[tier]:
                tier = f.tier
        return KeyVerdict(key, source, tier, findings, fp)


def _example_key(key: str) -> bool:
    return bool(_EXAMPLE_FILE.search(key)) or example_name(key)


def _cap_if(findings: list[Finding], cap: bool) -> list[Finding]:
    """In a documentation key (``app.env.example``) nothing is moved: every finding is at most suspect."""
    if not cap:
        return findings
    return [
        Finding(f.key, f.line, f.detector + "-example-key", SUSPECT, f.fingerprint) if f.tier == HIGH else f
        for f in findings
    ]


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
            buf = buf[2 * size :]
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
