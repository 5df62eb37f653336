"""The https front of the audit webhook: bootstrap's own small CA, audit-ingest's serving certificate, and
the Traefik Ingress that exposes only /function/audit-ingest with it.

Why https at all: the kube-apiserver's webhook client is client-go, which reads a kubeconfig's user
credentials only when the server is https (clientcmd `ClientConfig`: "only try to read the auth information
if we are secure"). Over the gateway's plain-HTTP NodePort the API server posts every batch without a token
and audit-ingest answers 401 to all of them. k3s ships Traefik on ports 80/443 (ServiceLB), so the node
already has a TLS front; bootstrap gives it a certificate that only this webhook trusts. The CA is our own,
never k3s's cluster CA, and its certificate goes into the webhook kubeconfig as certificate-authority-data.

Why a server name: Traefik picks the certificate by SNI, and Go (so client-go) sends no SNI for an IP
address such as 127.0.0.1. `tls-server-name` in the kubeconfig makes the API server send SERVER_NAME as SNI
and verify the certificate against it, while the URL keeps the node's loopback address.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets as pysecrets
import shutil
import socket
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass

from . import yamlout
from .engine import BootstrapError, Check, Ctx

TLS_DIR = "/var/lib/edgeguard/audit-tls"
CA_CERT = f"{TLS_DIR}/ca.crt"
CA_KEY = f"{TLS_DIR}/ca.key"
CERT = f"{TLS_DIR}/tls.crt"
KEY = f"{TLS_DIR}/tls.key"
SECRET_MANIFEST = f"{TLS_DIR}/secret.yaml"
INGRESS_MANIFEST = f"{TLS_DIR}/ingress.yaml"

# Never resolved: the URL says where to connect, this name is only the SNI and the certificate's name.
SERVER_NAME = "audit-ingest.edgeguard.internal"
PATH = "/function/audit-ingest"
# Traefik's websecure entry point, published on the node's port 443 by ServiceLB.
DEFAULT_URL = f"https://127.0.0.1{PATH}"
NAMESPACE = "openfaas"  # the Ingress must live with its backend, the gateway Service
GATEWAY_SERVICE, GATEWAY_PORT = "gateway", 8080
SECRET_NAME = INGRESS_NAME = "edgeguard-audit-ingest"
INGRESS_CLASS = "traefik"
CA_DAYS, CERT_DAYS = 3650, 825
RENEW_BEFORE_DAYS = 30
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class Front:
    """Where the webhook posts and how it trusts the server; `managed` = bootstrap's CA and Ingress."""

    url: str
    ca_pem: bytes | None
    server_name: str | None
    managed: bool


def is_https(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme == "https"


def http_refusal(url: str) -> str:
    return (
        f"--audit-url {url} is plain http: the API server's webhook client (client-go) sends the "
        "kubeconfig's token only to an https server, so every batch would arrive without credentials "
        "and audit-ingest would answer 401. Use the default https front (Traefik, "
        f"{DEFAULT_URL}), or your own: --audit-url https://... --audit-ca <CA PEM file>"
    )


# ---- checks -------------------------------------------------------------------------------------------
def check_traefik(ctx: Ctx, status_if_missing: str = "fail") -> Check:
    """k3s's Traefik (its IngressClass) must be there for the default front; --disable traefik removes it."""
    if skipped := ctx.skip_in_image("audit https front"):
        return skipped
    proc = ctx.query(["kubectl", "get", "ingressclass", INGRESS_CLASS, "-o", "name"], timeout=30)
    if proc.returncode == 0 and proc.stdout.strip():
        return Check(
            "audit https front",
            "pass",
            f"IngressClass {INGRESS_CLASS} (k3s's Traefik) serves {DEFAULT_URL} for the audit webhook",
        )
    return Check(
        "audit https front",
        status_if_missing,
        f"no IngressClass {INGRESS_CLASS}: k3s runs without Traefik (--disable traefik), so bootstrap "
        "cannot expose audit-ingest over https by itself, and over http the API server sends no token.\n"
        "Put audit-ingest behind your own TLS endpoint and pass --audit-url "
        f"https://<host>[:port]{PATH} --audit-ca <CA PEM file> [--audit-tls-server-name <name in "
        "the certificate>]",
    )


# ---- certificate material -----------------------------------------------------------------------------
def _valid(ctx: Ctx) -> tuple[bool, bool]:
    """(CA usable, serving cert usable) from the files under --root, each valid RENEW_BEFORE_DAYS more."""

    def fine(argv):
        return ctx.query(argv, timeout=30).returncode == 0

    seconds = str(RENEW_BEFORE_DAYS * 86400)
    have = {p: ctx.read(p) is not None for p in (CA_CERT, CA_KEY, CERT, KEY)}
    ca_ok = (
        have[CA_CERT]
        and have[CA_KEY]
        and fine(["openssl", "x509", "-checkend", seconds, "-noout", "-in", str(ctx.host(CA_CERT))])
    )
    cert_ok = (
        ca_ok
        and have[CERT]
        and have[KEY]
        and fine(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(ctx.host(CA_CERT)),
                "-verify_hostname",
                SERVER_NAME,
                str(ctx.host(CERT)),
            ]
        )
        and fine(["openssl", "x509", "-checkend", seconds, "-noout", "-in", str(ctx.host(CERT))])
    )
    return ca_ok, cert_ok


def ensure_material(ctx: Ctx) -> bytes | None:
    """CA and serving certificate under TLS_DIR; returns the CA certificate (None in a dry run that would
    create it). Keys are written 0600 and never shown; a certificate close to expiry is renewed."""
    ctx.ensure_dir(TLS_DIR, 0o700, "audit-ingest's https front: bootstrap's own CA and serving certificate")
    if ctx.image:
        # No query runs with --image (it would describe this machine): files made by an earlier run stand.
        ca_ok = ctx.read(CA_CERT) is not None and ctx.read(CA_KEY) is not None
        cert_ok = ca_ok and ctx.read(CERT) is not None and ctx.read(KEY) is not None
    else:
        ca_ok, cert_ok = _valid(ctx)
    if ca_ok and cert_ok:
        for p in (CA_CERT, CA_KEY, CERT, KEY):
            ctx.unchanged(f"{p} unchanged")
        return ctx.read(CA_CERT)
    if ctx.dry_run:
        what = [CERT, KEY] if ca_ok else [CA_CERT, CA_KEY, CERT, KEY]
        for p in what:
            ctx.change(
                f"{'update' if ctx.read(p) is not None else 'create'} {p}"
                + (" (0600, secret)" if p.endswith(".key") else " (0644)")
                + ": generated with openssl"
            )
        return ctx.read(CA_CERT) if ca_ok else None
    work = tempfile.mkdtemp(prefix="edgeguard-audit-tls-")  # 0700: the keys exist here for a moment
    try:
        if ca_ok:
            for name, path in (("ca.crt", CA_CERT), ("ca.key", CA_KEY)):
                data = ctx.read(path)
                if data is None:  # checked a moment ago: removed while bootstrap runs
                    raise BootstrapError(f"{path} disappeared while bootstrap was using it; re-run")
                _put(os.path.join(work, name), data)
        else:
            ctx.tool(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-new",
                    *_EC,
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    str(CA_DAYS),
                    "-subj",
                    "/CN=edgeguard audit-ingest CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
                cwd=work,
                why="bootstrap's own CA, trusted only by the audit webhook kubeconfig",
            )
        ctx.tool(
            ["openssl", "req", "-new", *_EC, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={SERVER_NAME}"],
            cwd=work,
            why="audit-ingest's serving key",
        )
        _put(
            os.path.join(work, "ext.cnf"),
            (
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{SERVER_NAME}\n"
            ).encode(),
        )
        ctx.tool(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                "tls.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "0x" + pysecrets.token_hex(16),
                "-days",
                str(CERT_DAYS),
                "-extfile",
                "ext.cnf",
                "-out",
                "tls.crt",
            ],
            cwd=work,
            why=f"serving certificate for {SERVER_NAME}",
        )

        def read(name):
            with open(os.path.join(work, name), "rb") as f:
                return f.read()

        ca_pem, ca_key, cert, key = read("ca.crt"), read("ca.key"), read("tls.crt"), read("tls.key")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.write_file(
        CA_KEY, ca_key, secret=True, why="CA key (signs renewals of the serving certificate)", dir_mode=0o700
    )
    ctx.write_file(
        CA_CERT, ca_pem, mode=0o644, why="CA certificate (embedded in the webhook kubeconfig)", dir_mode=0o700
    )
    ctx.write_file(KEY, key, secret=True, why="serving key", dir_mode=0o700)
    ctx.write_file(CERT, cert, mode=0o644, why=f"serving certificate for {SERVER_NAME}", dir_mode=0o700)
    return ca_pem


def _put(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# ---- the Kubernetes objects ---------------------------------------------------------------------------
def secret_manifest(cert: bytes, key: bytes) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
        },
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
    }
    return yamlout.dump(doc, "audit-ingest's serving certificate for the Traefik Ingress (edgeguard-bootstrap)")


def ingress_manifest() -> str:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": INGRESS_NAME,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "edgeguard-bootstrap"},
            # https only: over Traefik's plain web entry point the token would not be sent anyway.
            "annotations": {
                "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
                "traefik.ingress.kubernetes.io/router.tls": "true",
            },
        },
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            # The certificate is chosen by SNI; no host rule, because the Host header is the URL's 127.0.0.1.
            "tls": [{"hosts": [SERVER_NAME], "secretName": SECRET_NAME}],
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": PATH,
                                "pathType": "Exact",
                                "backend": {"service": {"name": GATEWAY_SERVICE, "port": {"number": GATEWAY_PORT}}},
                            }
                        ]
                    }
                }
            ],
        },
    }
    return yamlout.dump(
        doc, f"Only {PATH}, over https, through k3s's Traefik to the OpenFaaS gateway (edgeguard-bootstrap)"
    )


def write_manifests(ctx: Ctx) -> list[str]:
    """The Secret and Ingress files; the paths to apply (none in a dry run without the certificate yet)."""
    cert, key = ctx.read(CERT), ctx.read(KEY)
    paths = []
    if cert is not None and key is not None:
        ctx.add_secret(key)
        ctx.add_secret(base64.b64encode(key).decode())
        ctx.write_file(
            SECRET_MANIFEST,
            secret_manifest(cert, key),
            secret=True,
            why=f"Secret {NAMESPACE}/{SECRET_NAME} (kubernetes.io/tls)",
            dir_mode=0o700,
        )
        paths.append(SECRET_MANIFEST)
    else:
        ctx.change(
            f"create {SECRET_MANIFEST} (0600, secret): Secret {NAMESPACE}/{SECRET_NAME} from the new certificate"
        )
    ctx.write_file(
        INGRESS_MANIFEST,
        ingress_manifest(),
        mode=0o600,
        why=f"Ingress {NAMESPACE}/{INGRESS_NAME}: only {PATH}, https",
        dir_mode=0o700,
    )
    paths.append(INGRESS_MANIFEST)
    return paths


# ---- the probe's own https client ---------------------------------------------------------------------
def https_get(
    url: str, headers: dict, ca_pem: bytes, server_name: str | None, timeout: float = 10
) -> tuple[int, bytes]:
    """GET over TLS verified against `ca_pem` and `server_name` (sent as SNI), as the webhook connects."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return 0, f"no host in {url!r}".encode()
    host = parts.hostname
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    name = server_name or host

    class Conn(http.client.HTTPSConnection):
        def connect(self):
            raw = socket.create_connection((self.host, self.port), self.timeout)
            self.sock = context.wrap_socket(raw, server_hostname=name)

    conn = Conn(host, parts.port or 443, timeout=timeout, context=context)
    try:
        conn.request("GET", parts.path or "/", headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return 0, str(exc).encode()
    finally:
        conn.close()


def read_ca(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BootstrapError(f"--audit-ca {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BootstrapError(f"--audit-ca {path} is not a PEM certificate (no BEGIN CERTIFICATE line)")
    return data
