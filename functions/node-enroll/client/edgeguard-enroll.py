#!/usr/bin/env python3
"""Node-side client for edgeguard node-enroll: sign POST /enroll with the fleet key.

Standard library only, so a fresh node can run it with its system python3:

    python3 edgeguard-enroll.py --url https://gw.example/function/node-enroll/enroll \\
        --key-file /etc/edgeguard/enroll.key --label node.edgeguard.io/site=north --script-out /root/join.sh
    sh /root/join.sh            # or pass --run

The signature scheme is documented in docs/node-enroll.md ("Request signing");
this file carries its own copy of it so it can be copied onto a node alone.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

SCHEME = "edgeguard-enroll-v1"
DEFAULT_KEY_FILE = "/etc/edgeguard/enroll.key"


def sign(key: str, timestamp: str, nonce: str, body: bytes) -> str:
    canonical = "\n".join((SCHEME, timestamp, nonce, hashlib.sha256(body).hexdigest())).encode("utf-8")
    return "v1=" + hmac.new(key.encode("utf-8"), canonical, hashlib.sha256).hexdigest()


def build_request(
    *,
    key: str,
    hostname: str,
    arch: str,
    machine_id: str,
    labels: dict,
    rotate: bool,
    now: float | None = None,
    nonce: str | None = None,
) -> tuple[bytes, dict]:
    doc: dict[str, object] = {"hostname": hostname, "arch": arch, "machine_id": machine_id}
    if labels:
        doc["labels"] = labels
    if rotate:
        doc["rotate"] = True
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    ts = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_urlsafe(24)
    headers = {
        "Content-Type": "application/json",
        "X-Enroll-Timestamp": ts,
        "X-Enroll-Nonce": nonce,
        "X-Enroll-Signature": sign(key, ts, nonce, body),
    }
    return body, headers


def mask(token: str) -> str:
    """K10<hash>::<id>.<secret> with the secret half hidden."""
    head, sep, creds = token.partition("::")
    tid = creds.split(".", 1)[0]
    return f"{head}{sep}{tid}.****************" if sep else "****"


def _parse_labels(items) -> dict:
    labels = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise SystemExit(f"--label wants key=value, got {item!r}")
        labels[k] = v
    return labels


class Refused(Exception):
    """A problem the operator fixes (a missing file, a plain-http URL): one line, no traceback."""


def _read(path: str, what: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise Refused(
            f"cannot read {what} {path} ({exc.strerror or type(exc).__name__}); give its path with {option}"
        ) from None
    except UnicodeDecodeError:
        raise Refused(f"{what} {path} is not UTF-8 text ({option})") from None
    if not value:
        raise Refused(f"{what} {path} is empty ({option})")
    return value


def _unreachable(url: str, exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}"


def post(url: str, body: bytes, headers: dict, *, as_script: bool, ca_file: str | None, timeout: float):
    req = urllib.request.Request(url + ("?format=sh" if as_script else ""), data=body, headers=headers, method="POST")
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="…/function/node-enroll/enroll")
    ap.add_argument(
        "--key-file",
        default=DEFAULT_KEY_FILE,
        help=f"file holding the fleet enrollment key (default {DEFAULT_KEY_FILE})",
    )
    ap.add_argument("--hostname", default=None, help="node name (default: this host's name, lowercased)")
    ap.add_argument("--arch", default=None, help="default: platform.machine()")
    ap.add_argument("--machine-id-file", default="/etc/machine-id", help="default /etc/machine-id")
    ap.add_argument(
        "--allow-http",
        action="store_true",
        help="allow a plain http:// URL (the answer carries a join token: only for a loopback test)",
    )
    ap.add_argument("--label", action="append", help="key=value, repeatable; must use an allowed prefix")
    ap.add_argument("--rotate", action="store_true", help="replace this machine's outstanding token")
    ap.add_argument("--script-out", help="write the join script here (mode 0700) instead of printing JSON")
    ap.add_argument("--run", action="store_true", help="run the join script with sh (implies fetching it)")
    ap.add_argument("--ca-file", help="CA bundle that signs the gateway's TLS certificate")
    ap.add_argument("--retries", type=int, default=3, help="retries on 429/503 and connection errors")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)

    try:
        return _enroll(args)
    except Refused as exc:
        print(f"edgeguard-enroll: {exc}", file=sys.stderr)
        return 2


def _enroll(args) -> int:
    if args.url.startswith("http://"):
        if not args.allow_http:
            raise Refused(
                f"refusing plain http ({args.url}): the answer carries a join token; use the gateway's "
                "https:// URL (or --allow-http for a loopback test)"
            )
        print("edgeguard-enroll: warning: plain http; the answer carries a join token", file=sys.stderr)
    elif not args.url.startswith("https://"):
        raise Refused(f"--url must be an https:// URL (got {args.url!r})")
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise Refused(f"--ca-file {args.ca_file}: no such file")
    key = _read(args.key_file, "the fleet key", "--key-file")
    hostname = (args.hostname or socket.gethostname()).lower()
    arch = args.arch or platform.machine()
    machine_id = _read(args.machine_id_file, "the machine id", "--machine-id-file")
    labels = _parse_labels(args.label)
    as_script = bool(args.script_out or args.run)

    for attempt in range(args.retries + 1):
        # Re-sign every attempt: a nonce is accepted once.
        body, headers = build_request(
            key=key, hostname=hostname, arch=arch, machine_id=machine_id, labels=labels, rotate=args.rotate
        )
        failure = None
        try:
            status, resp_headers, data = post(
                args.url, body, headers, as_script=as_script, ca_file=args.ca_file, timeout=args.timeout
            )
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, TLS, timeout: no HTTP answer
            status, resp_headers, data, failure = None, {}, b"", _unreachable(args.url, exc)
        if status in (200, 201):
            break
        if status in (None, 429, 503) and attempt < args.retries:
            try:
                delay = min(max(int(resp_headers.get("Retry-After", "5") or 5), 1), 300)
            except ValueError:
                delay = 5
            print(f"edgeguard-enroll: {failure or f'HTTP {status}'}; retrying in {delay}s", file=sys.stderr)
            time.sleep(delay)
            continue
        if failure:
            print(f"edgeguard-enroll: enrollment failed: {failure}", file=sys.stderr)
        else:
            print(
                f"edgeguard-enroll: enrollment failed: HTTP {status}: {data.decode('utf-8', 'replace')[:500]}",
                file=sys.stderr,
            )
        return 1

    if not as_script:
        try:
            doc = json.loads(data)
        except ValueError:
            print(f"edgeguard-enroll: the answer (HTTP {status}) is not JSON: is --url node-enroll's?", file=sys.stderr)
            return 1
        doc["token"] = mask(doc.get("token", ""))
        if doc.get("alert_token"):
            doc["alert_token"] = "****"
        print(json.dumps(doc, indent=2))
        return 0
    path = args.script_out or f"/root/edgeguard-join-{os.getpid()}.sh"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise Refused(f"cannot write the join script to {path} ({exc.strerror}); choose another --script-out") from None
    print(f"edgeguard-enroll: join script written to {path}", file=sys.stderr)
    if args.run:
        return subprocess.call(["sh", path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
