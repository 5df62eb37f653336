"""A throwaway certificate authority for loopback TLS: the in-memory API's https, the local audit front.

kubectl and the API server's webhook client (both client-go) send a kubeconfig's bearer token only over
https. So that ``make up`` shows what a cluster shows (kubectl's requests audited as the admin user, the
audit webhook authenticated), the in-memory API serves https with a certificate from this CA, and the
CA goes into its kubeconfig as ``certificate-authority-data``. Keys are made with ``openssl`` (EC P-256)
in the run's state folder, 0600, and never leave it.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
DAYS = "30"


class CAError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerCert:
    cert: Path
    key: Path
    ca: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()

    @property
    def ca_data(self) -> str:
        """The CA as a kubeconfig's ``certificate-authority-data``."""
        return base64.b64encode(self.ca_pem).decode("ascii")


def available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CAError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


class LocalCA:
    """``ca.crt``/``ca.key`` in ``directory`` (made on first use), and server certificates it signs."""

    def __init__(self, directory: Path):
        if not available():
            raise CAError("openssl is not on PATH (needed for the local CA)")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cert, self.key = self.dir / "ca.crt", self.dir / "ca.key"
        if not (self.cert.is_file() and self.key.is_file()):
            _openssl(
                [
                    "req",
                    "-x509",
                    "-new",
                    *_EC,
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    DAYS,
                    "-subj",
                    "/CN=edgeguard local CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
                self.dir,
            )
            os.chmod(self.key, 0o600)

    def issue(self, name: str, dns: tuple = ("localhost",), ips: tuple = ("127.0.0.1",)) -> ServerCert:
        """A server certificate ``<name>.crt``/``<name>.key`` for these DNS names and IP addresses."""
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
        ext = self.dir / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
        )
        _openssl(
            ["req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"], self.dir
        )
        os.chmod(self.dir / f"{name}.key", 0o600)
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.crt",
                "-days",
                DAYS,
                "-extfile",
                ext.name,
            ],
            self.dir,
        )
        for leftover in (f"{name}.csr", f"{name}.ext"):
            (self.dir / leftover).unlink(missing_ok=True)
        return ServerCert(self.dir / f"{name}.crt", self.dir / f"{name}.key", self.cert)
