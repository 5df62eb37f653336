"""Bootstrap token material: ids, secrets, the K10 secure token, the CA hash, the Secret layout."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

import pytest

from tests.node_enroll.helpers import CA_HASH, CA_PEM, DATA, sub

# k3s pkg/clientaccess/token.go: K10 + 64 hex + "::" + <id>.<secret> for bootstrap credentials.
SECURE_TOKEN_RE = re.compile(r"^K10[0-9a-f]{64}::[a-z0-9]{6}\.[a-z0-9]{16}\Z")


@pytest.fixture
def tokens(enroll_fn):
    return sub(enroll_fn(), "tokens")


def test_ids_and_secrets_use_the_kubeadm_alphabet_and_lengths(tokens):
    ids = {tokens.new_token_id() for _ in range(200)}
    secrets = {tokens.new_token_secret() for _ in range(200)}
    assert all(re.fullmatch(r"[a-z0-9]{6}", i) for i in ids)
    assert all(re.fullmatch(r"[a-z0-9]{16}", s) for s in secrets)
    assert len(secrets) == 200 and len(ids) > 190  # random, not a counter


def test_secure_token_has_the_k10_format(tokens):
    t = tokens.secure_token(CA_HASH, "abc123", "0123456789abcdef")
    assert SECURE_TOKEN_RE.match(t)
    assert t == f"K10{CA_HASH}::abc123.0123456789abcdef"


def test_ca_hash_of_a_single_certificate_is_sha256_of_the_raw_pem_bytes(tokens):
    assert tokens.ca_hash(CA_PEM) == hashlib.sha256(CA_PEM).hexdigest() == CA_HASH
    # The exact bytes matter: a trailing newline change is a different hash, as for k3s.
    assert tokens.ca_hash(CA_PEM + b"\n") != CA_HASH


ROOT_PEM = (DATA / "root-ca.crt").read_bytes()
INTERMEDIATE_PEM = (DATA / "intermediate-ca.crt").read_bytes()


def der(pem: bytes) -> bytes:
    body = b"".join(pem.split(b"-----")[2].split())
    return base64.b64decode(body)


def test_bundle_hash_is_sha256_of_the_der_of_the_root_the_first_certificate_chains_to(tokens):
    root_hash = hashlib.sha256(der(ROOT_PEM)).hexdigest()
    assert tokens.ca_hash(INTERMEDIATE_PEM + ROOT_PEM) == root_hash
    assert tokens.ca_hash(ROOT_PEM + INTERMEDIATE_PEM) == root_hash  # first cert is itself the root
    # Two unrelated self-signed CAs: the first one is its own root.
    assert tokens.ca_hash(CA_PEM + ROOT_PEM) == hashlib.sha256(der(CA_PEM)).hexdigest()


def test_issuer_and_subject_are_read_from_the_certificate(enroll_fn):
    cab = sub(enroll_fn(), "cabundle")
    issuer, subject = cab.issuer_and_subject(der(INTERMEDIATE_PEM))
    r_issuer, r_subject = cab.issuer_and_subject(der(ROOT_PEM))
    assert issuer == r_subject == r_issuer and subject != issuer
    assert b"k3s-server-ca-intermediate" in subject and b"edgeguard-test-root" in issuer


def test_bundles_without_a_root_or_certificates_are_refused(tokens):
    with pytest.raises(tokens.CAError, match="does not chain to a self-signed root"):
        tokens.ca_hash(INTERMEDIATE_PEM + CA_PEM)
    with pytest.raises(tokens.CAError, match="no PEM"):
        tokens.ca_hash(b"not a cert")
    with pytest.raises(tokens.CAError):
        tokens.ca_hash(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" * 2)


def test_secret_round_trips_through_enrollment_parsing(tokens):
    now = datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC)
    body = tokens.build_secret(
        token_id="abc123",
        token_secret="0123456789abcdef",
        hostname="pi-1",
        arch="arm64",
        machine_id="m" * 32,
        labels={"a.example.com/x": "y"},
        taints=["k=v:NoSchedule"],
        expires_at=tokens.ttl_expiry(now, 3600),
        now=now,
        source="192.0.2.1",
    )
    e = tokens.enrollment_from_secret(body)
    assert (e.token_id, e.token_secret, e.hostname, e.arch) == ("abc123", "0123456789abcdef", "pi-1", "arm64")
    assert e.labels == {"a.example.com/x": "y"} and e.taints == ["k=v:NoSchedule"]
    assert e.expires_at == datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)
    assert e.machine_hash == hashlib.sha256(b"m" * 32).hexdigest()
    assert "m" * 32 not in str(body)  # only the digest of the machine id is stored
    assert base64.b64decode(body["data"]["expiration"]) == b"2026-11-26T15:00:00Z"


def test_foreign_or_malformed_secrets_are_not_taken_for_enrollments(tokens):
    now = datetime(2026, 11, 26, tzinfo=UTC)
    body = tokens.build_secret(
        token_id="abc123",
        token_secret="0123456789abcdef",
        hostname="pi-1",
        arch="arm64",
        machine_id="m" * 32,
        labels={},
        taints=[],
        expires_at=now,
        now=now,
        source=None,
    )
    assert tokens.enrollment_from_secret({**body, "type": "Opaque"}) is None
    renamed = {**body, "metadata": {**body["metadata"], "name": "bootstrap-token-zzzzzz"}}
    assert tokens.enrollment_from_secret(renamed) is None
