"""What a setting's name and its value look like: the evidence the detector's tiers rest on.

A *name class* says which kind of credential a setting name announces (a password, a token, a
key id, ...). A *value kind* says why a value is not a credential (empty, template, reference,
path, example, weak word, ...) or that it may be one. ``agrees`` checks that a credential-shaped
value matches what its name announces: a password is long enough (8+ characters, or 6+ mixing classes), a
token has a long high-entropy run. Only name + agreeing value is strong evidence.
"""

from __future__ import annotations

import functools
import re

from .gitleaks import shannon

PASSWORD = "password"
TOKEN = "token"
SECRET = "secret"  # either a password or a token
KEY_ID = "key-id"  # aws_access_key_id and friends: an uppercase id
CREDENTIAL = "credential"  # credentials, creds, auth: either
CONNECTION = "connection"  # dsn, connection string: a credential only if one is embedded

# --- names -----------------------------------------------------------------------------------

_PASSWORD_TOKENS = {
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "passwort",
    "requirepass",
    "masterauth",
    "htpasswd",
    "psk",
    "pw",
    "passcode",
}
_TOKEN_TOKENS = {
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "bearertoken",
    "clientsecret",
    "privatekey",
    "bearer",
}
_CREDENTIAL_TOKENS = {"credential", "credentials", "creds", "authorization"}
_CONNECTION_TOKENS = {"dsn", "connectionstring"}
# two-token phrases naming a token-like credential
_TOKEN_PAIRS = {
    ("api", "key"),
    ("private", "key"),
    ("access", "key"),
    ("secret", "key"),
    ("signing", "key"),
    ("encryption", "key"),
    ("master", "key"),
    ("account", "key"),
    ("auth", "key"),
    ("client", "secret"),
    ("session", "key"),
    ("shared", "key"),
    ("storage", "key"),
    ("app", "key"),
    ("service", "key"),
    ("hmac", "key"),
    ("webhook", "key"),
    ("jwt", "key"),
    ("license", "key"),
}
# A trailing token that turns the name into metadata about a credential, not the credential.
_META_SUFFIX = {
    "name",
    "names",
    "file",
    "files",
    "path",
    "paths",
    "dir",
    "url",
    "uri",
    "urls",
    "ref",
    "reference",
    "ttl",
    "length",
    "len",
    "size",
    "min",
    "max",
    "minimum",
    "maximum",
    "header",
    "type",
    "expiry",
    "expires",
    "expiration",
    "timeout",
    "enabled",
    "enable",
    "disabled",
    "policy",
    "count",
    "format",
    "mount",
    "version",
    "rotation",
    "algorithm",
    "algo",
    "prefix",
    "suffix",
    "hint",
    "field",
    "regex",
    "pattern",
    "mode",
    "location",
    "endpoint",
    "host",
    "hosts",
    "port",
    "user",
    "username",
    "id",
    "ids",
    "kind",
    "provider",
    "source",
    "store",
    "keystore",
    "env",
    "var",
    "variable",
    "key_ref",
    "selector",
    "template",
    "label",
    "annotation",
    "secretref",
    "keyref",
    "required",
    "lifetime",
    "duration",
    "period",
    "interval",
    "strength",
    "complexity",
    "reset",
    "hash",
    "hashed",
    "salt_rounds",
    "rounds",
    "encryption",
    "encoding",
    "encoder",
    "hasher",
    "validator",
    "validation",
    "expire",
    "age",
    "history",
    "cost",
    "digest",
    "method",
    "scheme",
    "flow",
    "scope",
    "scopes",
    "audience",
    "issuer",
    "claims",
    "limit",
    "limits",
    "retries",
    "attempts",
    "storage",
    "cache",
    "backend",
    "class",
    "manager",
}
# Exact names that are key ids even though their last token is metadata-like.
_KEY_ID_NAMES = {"aws_access_key_id", "access_key_id", "aws_s3_access_key_id", "accesskeyid"}
# Kubernetes/Helm idioms that look like credential names but hold references.
_REFERENCE_NAMES = re.compile(
    r"(?i)(secret_?name|existing_?secret|secret_?key_?ref|secret_?ref|value_?from|secret_?provider|"
    r"secretname|secrets?_?(dir|path|file|mount)|use_?secret|secret_?store)"
)
# "<x>_key" names that are not credentials: public keys, data-structure keys
_NOT_SECRET_KEYS = {
    "public",
    "pub",
    "site",
    "publishable",
    "primary",
    "foreign",
    "sort",
    "cache",
    "partition",
    "routing",
    "idempotency",
    "object",
    "shard",
    "lookup",
    "cursor",
    "row",
    "column",
    "group",
    "map",
    "dedup",
    "dedupe",
    "hash",
    "index",
    "label",
    "metric",
    "s3",
    "bucket",
    "kms",
    "ssh",
}
# words in a name that make the setting documentation, not configuration
_EXAMPLE_NAME_TOKENS = {"example", "examples", "sample", "samples", "dummy", "fake", "mock", "placeholder"}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_COMPOUND = re.compile(r"(passw(or)?d|passphrase|(api|access|private|secret)key|authtoken|token|secret)$")


def name_tokens(name: str) -> list[str]:
    name = _CAMEL.sub("_", name)
    # digits separate words too: token2, oauth2_secret, DB1_PASSWORD
    return [t for t in _SPLIT.split(re.sub(r"\d+", "_", name).lower()) if t]


@functools.lru_cache(maxsize=4096)  # setting names repeat: every line of a file, every ConfigMap of a sweep
def name_class(name: str) -> str | None:
    """Which kind of credential a setting's name announces, or None (not a credential name)."""
    if not name:
        return None
    toks = name_tokens(name)
    if not toks:
        return None
    norm = re.sub(r"[^a-z0-9]+", "_", _CAMEL.sub("_", name).lower()).strip("_")
    if norm in _KEY_ID_NAMES or norm.replace("_", "") in _KEY_ID_NAMES:
        return KEY_ID
    if norm == "auth":
        return CREDENTIAL
    if _REFERENCE_NAMES.search(name.replace("-", "_").replace(".", "_")):
        return None
    if toks[-1] in _META_SUFFIX:
        return None
    if {"public", "csrf", "xsrf", "pub"} & set(toks):
        return None  # public keys/tokens and CSRF tokens are not credentials
    if any(t in _PASSWORD_TOKENS for t in toks):
        return PASSWORD
    if any(t in _TOKEN_TOKENS for t in toks) or any(p in _TOKEN_PAIRS for p in zip(toks, toks[1:])):
        return TOKEN
    if any(t in _CONNECTION_TOKENS for t in toks) or ("connection", "string") in set(zip(toks, toks[1:])):
        return CONNECTION
    if any(t in _CREDENTIAL_TOKENS for t in toks):
        return CREDENTIAL
    if "secret" in toks:
        return SECRET
    if len(toks) > 1 and toks[-1] == "key" and not _NOT_SECRET_KEYS & set(toks):
        return TOKEN  # IO_KEY, STREAM_KEY: a key of a service (the value must still look like a token)
    # compounds written without separators: dbpassword, adminpass, apikey, clientsecret
    m = _COMPOUND.search("".join(toks))
    if m:
        return PASSWORD if m.group(0).startswith("pass") else SECRET if m.group(0) == "secret" else TOKEN
    return None


def credential_name(name: str) -> bool:
    """True when a setting's name says it holds a credential (not a reference or metadata about one)."""
    return name_class(name) is not None


def example_name(name: str) -> bool:
    return bool(_EXAMPLE_NAME_TOKENS & set(name_tokens(name)))


# --- values ----------------------------------------------------------------------------------

# no finding at all: nothing is there, or it is rendered/fetched from elsewhere
NOT_A_VALUE = {"empty", "structure", "reference", "placeholder", "number", "path", "url"}

_PLACEHOLDER = re.compile(
    r"""(?ix)^(
        \$\{[^}]*\}? | \$\([^)]*\)? | \$[A-Za-z_][A-Za-z0-9_]* |     # ${VAR} $(cmd) $VAR
        \{\{.*\}\} | \{%.*%\} | \(\(.*\)\) |                           # templating
        <[^<>]*> | &lt;.*&gt;? | \[[^\[\]]*\] | %[A-Za-z_]+% | @[A-Za-z_]+@ |  # <your-password> [..] %VAR% @VAR@
        [*xX#.?_-]{3,} | (.)\2{3,} |                                   # ***** xxxx
        (redacted|removed|hidden|none|null|nil|undefined|true|false|yes|no|on|off|todo|tbd|fixme|
         replace[-_ ]?me|change[-_ ]?this|placeholder|xxx+|n/?a|empty|masked|insert[-_ ].*|enter[-_ ].*)
    )$"""
)
_REFERENCE_VALUE = re.compile(
    r"""(?ix)^(
        (secretKeyRef|configMapKeyRef|valueFrom|secret|vault|ref|env|file|arn|
         projects/[^/]+/secrets|azurekeyvault|akv|gcp|sm|ssm|k8s|kubernetes)(:|://)\S* |
        [#.][A-Za-z][\w-]* |                                          # a CSS selector or anchor: #add-password
        (os\.)?(getenv|environ)\b.* | process\.env\..* | System\.getenv.* | ENV\[.* |   # code reading env
        [\w.]+\(.*\)                                                   # a function call
    )$"""
)
# a value that is rendered elsewhere: ${VAR}, ${VAR:-default}, {{ .Values.x }}, {{ env "X" }}
_TEMPLATED = re.compile(r"\$\{[A-Za-z_][\w.]*(:?[-=?+][^}]*)?\}|\{\{-?\s*[\w.$|\"' ()-]+\s*-?\}\}")
# filler: xxxxxxxx, AKIA...EXAMPLE, {Name}, ALL_CAPS_NAME
_FILLER = re.compile(r"(.)\1{7,}|EXAMPLE(KEY)?$|^\{[A-Za-z_]\w*\}$|^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")
# documentation values: the words say so, or the characters are a keyboard run
_EXAMPLE_VALUE = re.compile(
    r"(?i)(^|[^a-z])(example|examples|sample|dummy|fake|placeholder|changeme|changeit|test|testing)([^a-z]|$)|"
    r"^(your|my)[-_ ]|qwerty|asdfgh"
)
_CODE_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_TYPE_NAMES = {
    "string",
    "str",
    "bool",
    "boolean",
    "int",
    "integer",
    "number",
    "any",
    "object",
    "char",
    "byte",
    "bytes",
    "[]byte",
    "none",
    "string?",
    "optional[str]",
}
_WORD = re.compile(r"\b[A-Za-z]{2,}\b")
# snake_case or camelCase words without digits: a variable name or a made-up example value
_IDENTIFIER = re.compile(r"^[a-z]+(_[a-z]+)+$|^[a-z]+([A-Z][a-z]+)+$|^[a-z]+(-[a-z]+){2,}$")
_NUMERIC = re.compile(r"^[-+]?(0x[0-9a-f]+|\d+([.,]\d+)?\s*(ms|s|m|h|d|w|y|b|k|kb|mb|gb|ki|mi|gi|%)?)$", re.I)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_DIGEST = re.compile(r"^(sha1|sha224|sha256|sha384|sha512|md5)[:-][0-9a-z+/=]+$", re.I)
# stored password hashes (crypt, bcrypt, argon2, LDAP, Django): a hash of a password, not the password
_PASSWORD_HASH = re.compile(
    r"^(\$(1|2[abxy]?|5|6|y|argon2(id|i|d)|scrypt|pbkdf2[-\w]*)\$|"
    r"\{(S?SHA\d*|MD5|CRYPT|SSHA512)\}|"
    r"(pbkdf2_sha\d+|bcrypt|argon2)\$)",
    re.I,
)
_PATH = re.compile(r"^(~|\.{1,2})?/[\w.@/+-]*$|^[A-Za-z]:\\")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.I)
URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^\s:/@'\"]*):([^\s/'\"]*)@([^\s@/'\":?#]+)", re.I)
_WORDS = re.compile(r"^[A-Za-z][a-z]*( [A-Za-z][a-z]*){2,}[.!]?$")
# Words a value is made of when it is a default or a made-up one ("rootpassword", "admin123", "P@ssw0rd").
# Generic defaults and credential nouns only: not words taken from any corpus.
_WEAK_WORDS = sorted(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "pw",
        "secret",
        "secrets",
        "token",
        "key",
        "api",
        "admin",
        "administrator",
        "root",
        "guest",
        "user",
        "username",
        "login",
        "demo",
        "default",
        "qwerty",
        "letmein",
        "welcome",
        "hello",
        "foo",
        "bar",
        "baz",
        "foobar",
        "changeme",
        "changeit",
        "test",
        "my",
        "super",
        "top",
        "the",
        "your",
        "private",
        "access",
        "master",
        "dev",
        "local",
        "abc",
        "xyz",
        "mysql",
        "postgres",
        "redis",
        "database",
        "db",
        "app",
        "service",
        "insecure",
        "unsecure",
        "very",
        "important",
        "s3cr3t",
    },
    key=len,
    reverse=True,
)
_WEAK = re.compile("^(?:" + "|".join(map(re.escape, _WEAK_WORDS)) + ")+$")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_WEAK_URL_PASSWORDS = {"pass", "password", "passwd", "pwd", "secret", "pw", "xxx", "****", "changeit", "changeme"}
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_.~-]{16,}")


_TRAILING_COMMENT = re.compile(r"\s+(#|//|;)\s.*$")
_QUOTED = re.compile(r"""^(["'`])((?:\\.|(?!\1).)*)\1""")


def _unquote(value: str) -> tuple[str, bool]:
    """(value without quotes, trailing separator and trailing comment; whether it was quoted)."""
    v = value.strip()
    m = _QUOTED.match(v)
    if m:
        v = m.group(0)  # "quoted"  # a note after it
    else:
        v = _TRAILING_COMMENT.sub("", v)  # value  # a YAML/shell/ini comment after an unquoted value
    if v.endswith((",", ";")):
        v = v[:-1].rstrip()
    quoted = len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"`"
    return (v[1:-1].strip() if quoted else v.strip()), quoted


def strip_value(v: str) -> str:
    return _unquote(v)[0]


def sequential(v: str, run: int = 6) -> bool:
    """A keyboard-free filler: 6+ consecutive letters or digits in order ('abcdef', '456789', 'klmnop')."""
    n = 1
    low = v.lower()
    for a, b in zip(low, low[1:]):
        n = n + 1 if a.isalnum() and ord(b) == ord(a) + 1 else 1
        if n >= run:
            return True
    return False


def weak(v: str) -> bool:
    """Made of default/credential words only, digits and symbols aside ('admin123', 'P@ssw0rd', 'rootpassword')."""
    low = v.lower()
    for letters in (re.sub(r"[^a-z]", "", low), re.sub(r"[^a-z]", "", low.translate(_LEET))):
        if letters and _WEAK.match(letters):
            return True
    return False


def value_kind(value: str) -> str:
    """Why a value is not a credential ('empty', 'placeholder', 'example', 'weak', ...), or 'credential'."""
    v, quoted = _unquote(value)
    if not v:
        return "empty"
    if not quoted and (
        (_CODE_REF.match(v) and not token_like(v)) or v.lower() in _TYPE_NAMES or v.endswith(("(", "{"))
    ):
        return "reference"  # code: a member access, a type annotation, a function literal
    if v.startswith("$") and not _PASSWORD_HASH.match(v):
        return "placeholder"  # shell/env expansion
    if re.match(r"^\{[A-Za-z_][\w.]*\}$", v):
        return "placeholder"  # {props.x} / {Name} format references
    if v in ("|", ">", "|-", ">-", "|+", ">+", "{", "[", "{}", "[]"):
        return "structure"
    if _PLACEHOLDER.match(v) or _TEMPLATED.search(v) or _FILLER.search(v):
        return "placeholder"
    if _REFERENCE_VALUE.match(v):
        return "reference"
    if _NUMERIC.match(v):
        return "number"
    if _PASSWORD_HASH.match(v) or _DIGEST.match(v):
        return "hash"
    if _UUID.match(v):
        return "uuid"
    if _PATH.match(v):
        return "path"
    if _URL.match(v) and not URL_USERINFO.search(v):
        return "url"
    if _WORDS.match(v) or (v.count(" ") >= 3 and len(_WORD.findall(v)) >= 3):
        return "prose"
    if _EXAMPLE_VALUE.search(v) or sequential(v):
        return "example"
    if weak(v):
        return "weak"
    if len(v) < 4:
        return "short"
    if _IDENTIFIER.match(v):
        return "identifier"
    return "credential"


def char_classes(v: str) -> int:
    return sum(bool(re.search(p, v)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))


def token_like(v: str) -> bool:
    """A run of 16+ token characters with letters and digits and real entropy: what keys and tokens look like."""
    for m in _TOKEN_RUN.finditer(v):
        run = m.group(0).strip("=.-_")
        if (
            len(run) >= 16
            and re.search(r"[A-Za-z]", run)
            and re.search(r"[0-9]", run)
            and shannon(run) > 3.0
            and not _UUID.match(run)
        ):
            return True
    return False


def password_like(v: str) -> bool:
    """Long enough to be a chosen password: 8+ characters, or 6+ mixing character classes.

    People pick lowercase words, so one class is enough at 8+; defaults and made-up words are
    caught before this by ``value_kind`` ('weak', 'example', 'identifier').
    """
    if re.search(r"\s", v):
        return False
    return len(v) >= 8 or (len(v) >= 6 and char_classes(v) >= 2)


def agrees(cls: str, v: str) -> bool:
    """Does a credential-shaped value (value_kind == 'credential') match what its name announces?"""
    if cls == PASSWORD:
        return password_like(v)
    if cls == TOKEN:
        return token_like(v)
    if cls == KEY_ID:
        return bool(
            re.fullmatch(r"[A-Z0-9]{10,}", v) and re.search(r"[0-9]", v) and re.search(r"[A-Z]", v)
        ) or token_like(v)
    if cls in (SECRET, CREDENTIAL):
        return password_like(v) or token_like(v)
    return False  # CONNECTION: only an embedded credential counts, and other rules see that


def url_password_kind(password: str) -> str:
    """'credential', or why a password inside a URL is not one.

    A URL with a password is evidence on its own: the password's strength does not matter
    (``amqp://guest:guest@rabbitmq`` is the password in use); placeholder words, templates and
    example values do.
    """
    if not password:
        return "empty"
    if password.lower() in _WEAK_URL_PASSWORDS:
        return "weak"
    kind = value_kind(password)
    return kind if kind in NOT_A_VALUE or kind in ("example", "hash") else "credential"


_EXAMPLE_HOST = re.compile(r"(?i)(^|\.)(example\.(com|org|net)|example|invalid|test)$")


def example_host(host: str) -> bool:
    return bool(_EXAMPLE_HOST.search(host.split(":")[0]))
