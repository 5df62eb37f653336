"""Client certificates for the kube.connection() tests: signed by a CA folder's ca.crt/ca.key (local.localca's
test CA, or the real cluster's pki), or self-signed for "a CA the server does not trust"."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path


def client_cert(out: Path, cn: str, ca_dir: Path | None) -> tuple[Path, Path]:
    """(certificate, key) files for CN=``cn``, for client authentication only."""
    key, csr, crt, ext = (out / f"{cn}.{x}" for x in ("key", "csr", "crt", "ext"))
    ext.write_text("extendedKeyUsage=clientAuth\n")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={cn}",
    )
    signer = (
        ["-signkey", str(key)]
        if ca_dir is None
        else [
            "-CA",
            str(ca_dir / "ca.crt"),
            "-CAkey",
            str(ca_dir / "ca.key"),
            "-CAcreateserial",
            "-CAserial",
            str(out / f"{cn}.srl"),
        ]
    )
    run("x509", "-req", "-in", str(csr), *signer, "-days", "1", "-extfile", str(ext), "-out", str(crt))
    return crt, key


def as_user_data(crt: Path, key: Path) -> dict:
    """The kubeconfig user entry holding them inline."""
    return {
        "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }
