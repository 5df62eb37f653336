"""The high tier needs evidence that stands on its own; everything weaker is at most suspect (issue 16).

Every value here is made up for the test (none is taken from a labelled corpus), so these cases
pin the design, not figures on a corpus.
"""

from __future__ import annotations

import base64
import json

import pytest

from bench.scrubber import load_detect

# a GitHub token whose last 6 characters are the base62 CRC32 of the 30 before them (a published
# test vector of a checksum validator), and the same token with its last character changed
GH_VALID = "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"
GH_BAD_CHECKSUM = "ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"


def _b64url(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


JWT = (
    _b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64url({"sub": "svc-orders", "iat": 1700000000})
    + ".Q2hWmA8k3XbT7n1pRz0vJ4sLyG6fDcE9uKoNiM5aHwY"
)
JWT_SAMPLE = (
    _b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64url({"sub": "1234567890", "name": "John Doe"})
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.fixture(scope="module")
def detect():
    return load_detect()


@pytest.fixture(scope="module")
def detector(detect):
    return detect.Detector(b"test-key")


def tier(detector, text, key="settings.conf"):
    return detector.scan_key(key, text).tier


def test_github_token_is_high_only_when_its_crc32_checksum_holds(detector, detect):
    formats = __import__(detect.__package__ + ".formats", fromlist=["x"])
    assert formats.crc32_token_ok(GH_VALID) and not formats.crc32_token_ok(GH_BAD_CHECKSUM)
    # in a line whose setting name says nothing, the format is the only evidence
    assert tier(detector, f"export GH={GH_VALID}") == "high"
    assert tier(detector, f"export GH={GH_BAD_CHECKSUM}") == "suspect"


def test_a_provider_secret_that_is_a_url_is_high(detector):
    # Slack webhooks are URLs: the "plain URL is not a credential" rule is for credential-named settings only
    assert (
        tier(detector, "alert_url: https://hooks.slack.com/services/T0FAKE1Q9/B0FAKE8H5/q8Zr2LmXw4Tn7Vb1Kc9Pd3Sy")
        == "high"
    )
    assert tier(detector, "docs_url: https://api.slack.com/messaging/webhooks") is None


def test_jwt_is_high_only_when_it_decodes_and_is_not_the_jwt_io_sample(detector):
    assert tier(detector, f"session: {JWT}") == "high"
    assert tier(detector, f"session: {JWT_SAMPLE}") == "suspect"
    # JWT-shaped but the header is not JSON: a made-up token
    assert (
        tier(detector, "session: eyJxxKlpZpTAQeO2HcQuIgE2fLT1Vh.eyJvpPgsFUnAhB2SSf2UqB9EBFiF.qmtsuA4CgO9pPfhnTezS")
        == "suspect"
    )


def test_basic_auth_header_is_high_only_when_it_decodes_to_a_real_password(detector):
    good = base64.b64encode(b"svc:Zq8wLm3nTr5vXy").decode()
    weak = base64.b64encode(b"svc:password").decode()
    assert tier(detector, f'proxy_set_header Authorization "Basic {good}";') == "high"
    assert tier(detector, f'proxy_set_header Authorization "Basic {weak}";') == "suspect"
    assert tier(detector, 'proxy_set_header Authorization "Basic bm90LWJhc2U2NCE";') == "suspect"


@pytest.mark.parametrize(
    "line",
    [
        "auth_token = hUn7Zq8wLm3nTr5vXy2kPq",  # token name, token-shaped value
        "db.password=Zq8wLm3nTr5v",  # password name, password-shaped value
        "requirepass Xk2pLq9wTz",
        "postgres://orders:Zq8wLm3nTr5v@db.internal:5432/orders",
        "curl -u deploy:Zq8wLm3nTr5v https://registry.internal/v2/",
        "<password>Zq8wLm3nTr5v</password>",
        '<add key="DbPassword" value="Zq8wLm3nTr5v"/>',
        "      password: hunter2hunter2   # rotated in May",
    ],
)
def test_credential_name_with_agreeing_value_and_urls_with_a_password_are_high(detector, line):
    assert tier(detector, line) == "high"


@pytest.mark.parametrize(
    "line,why",
    [
        ("# password = Zq8wLm3nTr5v", "commented-out setting"),
        ("// api_key: hUn7Zq8wLm3nTr5vXy2kPq", "commented-out setting"),
        ("password: admin123", "default word with digits"),
        ("password: P@ssw0rd", "leetspeak default"),
        ("password: rootpassword", "made of default words"),
        ("ADMIN_PASSWORD=changeme", "placeholder word"),
        ("password: test-password-1", "says it is a test value"),
        ("api_key: abcdef123456789xyz", "sequential filler"),
        ("password: qwerty", "keyboard run"),
        ("api_key: 12345", "too short for a key"),
        ("secret: not_a_real_secret", "an identifier, not a secret"),
        ('password: "$2b$12$KIXQJ1r8Hn1l9pYtWvJ0QeZk3m0zXJ3qgS4lM1q7p2hVvVd8y3G6a"', "a stored hash, not the password"),
        ("postgresql://user:secret@localhost/db", "placeholder password in a URL"),
        ("https://bob:Zq8wLm3nTr5v@example.com/docs", "documentation host"),
        ("STRIPE_KEY=sk_test_4eC39HqLyjWDarjtT1zdp7dc", "provider test-mode key"),
        ("sonar.login=5524bf449ca45fcace54698371466398321f3a82", "provider rule matched on a nearby word only"),
        ("checksum: 7f1e7c1c95f8f0a9d9f7a1b0c3e2d4f6a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3", "long hex, no credential name"),
    ],
)
def test_weaker_evidence_is_reported_but_never_high(detector, line, why):
    assert tier(detector, line) in ("suspect", None), why
    assert tier(detector, line) != "high", why


@pytest.mark.parametrize(
    "line",
    [
        "password: ${DB_PASSWORD}",
        "password: ${DB_PASSWORD:-Zq8wLm3nTr5v}",
        "token: {{ .Values.token }}",
        "password: <your-password>",
        "password: '********'",
        "secretKeyRef: db/password",
        "api_key: vault:secret/data/app#api_key",
        "IAMUserChangePassword: arn:aws:iam::aws:policy/IAMUserChangePassword",
        "password_file: /run/secrets/db",
        "password_encryption: scram-sha-256",
        'password: ""',
        "token: conf.Token",
        "curl -u $USER:$PASS https://registry.internal/v2/",
    ],
)
def test_placeholders_templates_and_references_give_no_finding(detector, line):
    assert tier(detector, line) is None


def test_a_documentation_key_is_never_moved(detector):
    body = "DB_PASSWORD=Zq8wLm3nTr5v\nAPI_TOKEN=hUn7Zq8wLm3nTr5vXy2kPq\n"
    assert tier(detector, body, key="app.env") == "high"
    for key in ("app.env.example", "app.env.sample", "settings.dist", "example-credentials"):
        assert tier(detector, body, key=key) == "suspect", key


def test_commented_private_key_is_suspect_and_a_real_one_high(detector):
    body = "\n".join(
        ["-----BEGIN RSA PRIVATE KEY-----"]
        + ["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"] * 3
        + ["-----END RSA PRIVATE KEY-----"]
    )
    assert tier(detector, body, key="tls.key") == "high"
    commented = "\n".join("#  " + ln for ln in body.split("\n"))
    assert tier(detector, commented, key="README") == "suspect"


def test_a_token_named_key_whose_value_embeds_a_token_is_high(detector):
    # a header value that is itself JSON holding a signature: the key name says token, the value carries one
    assert (
        tier(
            detector,
            '"api_token": "{\\"user\\":\\"svc\\",\\"sig\\":\\"9f2c7b41e8d05a6c3b19e74d2a8f60c5\\"}",',
            key="client.json",
        )
        == "high"
    )


@pytest.mark.parametrize(
    "name,cls",
    [
        ("DB_PASSWORD", "password"),
        ("dbPasswd", "password"),
        ("API_TOKEN", "token"),
        ("client_secret", "token"),
        ("STREAM_KEY", "token"),
        ("JWT_SECRET", "secret"),
        ("aws_access_key_id", "key-id"),
        ("SENTRY_DSN", "connection"),
        ("credentials", "credential"),
        ("key", None),
        ("sort_key", None),
        ("RECAPTCHA_SITE_KEY", None),
        ("password_min_length", None),
        ("secretName", None),
        ("publicToken", None),
    ],
)
def test_name_classes(detect, name, cls):
    shapes = __import__(detect.__package__ + ".shapes", fromlist=["x"])
    assert shapes.name_class(name) == cls
