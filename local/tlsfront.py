"""A local stand-in for the TLS front a k3s node gives audit-ingest: Traefik serving bootstrap's Ingress.

It plays exactly the objects bootstrap applies (an Ingress and its kubernetes.io/tls Secret), the way
Traefik reads them:

* the certificate is chosen by SNI among the Ingress's ``tls[].hosts``. When the client sends no SNI or
  another name, Traefik falls back to its self-signed default certificate, which no webhook trusts; here
  the handshake is refused outright (same outcome for the client, and the reason is logged);
* only the Ingress's paths are proxied (``Exact`` or ``Prefix``, query strings ignored as Ingress matching
  ignores them) to their backend Service, which the caller maps to a URL (the local gateway); any other
  path answers Traefik's ``404 page not found``;
* request headers pass through, Authorization and Host included (Traefik's passHostHeader default);
  hop-by-hop headers are dropped and X-Forwarded-For/-Proto/-Host added.

The access log has client, method, path without its query, status, size, SNI and whether an
Authorization header came: never a header value or a query string (a query can hold a token).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml

from .httpbody import read_body

_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
}
NOT_FOUND = b"404 page not found\n"  # Traefik's body for a request no router matches


@dataclass(frozen=True)
class Route:
    path: str
    path_type: str  # Exact | Prefix (ImplementationSpecific is treated as Prefix, as Traefik does)
    service: str
    port: int

    def matches(self, path: str) -> bool:
        if self.path_type == "Exact":
            return path == self.path
        base = self.path.rstrip("/")
        return path == self.path or path == base or path.startswith(base + "/")


@dataclass(frozen=True)
class Site:
    """What one Ingress asks of the front: names and certificate for TLS, and its routes."""

    namespace: str
    server_names: tuple
    cert_pem: bytes
    key_pem: bytes
    routes: tuple

    @classmethod
    def from_objects(cls, ingress: dict, secrets: dict) -> Site:
        """From an Ingress and the Secrets (by name) of its namespace, as read from the API or a manifest."""
        meta, spec = ingress.get("metadata") or {}, ingress.get("spec") or {}
        tls = spec.get("tls") or []
        if len(tls) != 1 or not tls[0].get("hosts") or not tls[0].get("secretName"):
            raise ValueError("the Ingress needs exactly one tls entry with hosts and a secretName")
        secret = secrets.get(tls[0]["secretName"])
        if secret is None:
            raise ValueError(f"Secret {tls[0]['secretName']} (the Ingress's certificate) not found")
        if secret.get("type") != "kubernetes.io/tls":
            raise ValueError(f"Secret {tls[0]['secretName']} is not of type kubernetes.io/tls")
        data = secret.get("data") or {}
        routes = []
        for rule in spec.get("rules") or []:
            for p in (rule.get("http") or {}).get("paths") or []:
                svc = p["backend"]["service"]
                routes.append(Route(p["path"], p.get("pathType", "Prefix"), svc["name"], int(svc["port"]["number"])))
        return cls(
            meta.get("namespace", "default"),
            tuple(tls[0]["hosts"]),
            base64.b64decode(data["tls.crt"]),
            base64.b64decode(data["tls.key"]),
            tuple(routes),
        )

    @classmethod
    def from_manifests(cls, *paths: Path) -> Site:
        docs = [d for p in paths for d in yaml.safe_load_all(Path(p).read_text()) if d]
        ingresses = [d for d in docs if d.get("kind") == "Ingress"]
        if len(ingresses) != 1:
            raise ValueError("give exactly one Ingress")
        secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
        return cls.from_objects(ingresses[0], secrets)


SiteSource = Site | Callable[[], "Site | None"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: TLSFront

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread: a client that never finishes it
        # must not hold up the accept loop.
        request.settimeout(15)
        try:
            tls = self.front._context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.front._note_refused(client_address, exc)
            request.close()
            return
        self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]


class TLSFront:
    """Terminates TLS for one Site and proxies its routes to `upstreams[(service, port)]`."""

    def __init__(
        self,
        site: SiteSource,
        upstreams: dict,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        echo: bool = False,
    ):
        self._site_source = site
        self.echo = echo
        self.upstreams = dict(upstreams)
        self.host, self.port = host, port
        self.log_path = Path(log_path) if log_path else None
        self._lock = threading.Lock()
        self._contexts: dict = {}
        self.sni_seen: Counter = Counter()
        self.refused_handshakes = 0
        self.requests = 0
        self.with_authorization = 0
        self.without_authorization = 0
        self._server: _Server | None = None
        self._tmp = tempfile.mkdtemp(prefix="edgeguard-tlsfront-")
        self._context = self._base_context()

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> TLSFront:
        server = _Server((self.host, self.port), _Handler)
        server.front = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="tlsfront", daemon=True).start()
        self.log(f"listening on {self.url}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- TLS ---------------------------------------------------------------------------------------
    def site(self) -> Site | None:
        src = self._site_source
        return src if isinstance(src, Site) else src()

    def _base_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._sni
        return ctx

    def _site_context(self, site: Site) -> ssl.SSLContext:
        key = hashlib.sha256(site.cert_pem + b"\0" + site.key_pem).hexdigest()
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_alpn_protocols(["http/1.1"])
                d = tempfile.mkdtemp(dir=self._tmp)
                try:
                    for name, data in (("tls.crt", site.cert_pem), ("tls.key", site.key_pem)):
                        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o600)
                        with os.fdopen(fd, "wb") as f:
                            f.write(data)
                    ctx.load_cert_chain(os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
                self._contexts[key] = ctx
            return ctx

    def _sni(self, sslsock, server_name, _ctx):
        with self._lock:
            self.sni_seen[server_name] += 1
        site = self.site()
        sslsock.edgeguard_sni = server_name
        if site is None or server_name not in site.server_names:
            # Traefik would present its default certificate here, which the client cannot verify.
            self.log(
                f"tls: SNI {server_name!r} is not among the Ingress's tls hosts "
                f"{list(site.server_names) if site else []} (Traefik would present its default certificate)"
            )
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslsock.context = self._site_context(site)
        return None

    def _note_refused(self, client, exc) -> None:
        with self._lock:
            self.refused_handshakes += 1
        self.log(f"{client[0]} tls handshake refused: {type(exc).__name__}: {str(exc)[:160]}")

    # --- bookkeeping -------------------------------------------------------------------------------
    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.echo:
            print(f"{stamp} {line}", file=sys.stderr, flush=True)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, open(self.log_path, "a") as f:
                f.write(f"{stamp} {line}\n")

    def count(self, authorized: bool) -> None:
        with self._lock:
            self.requests += 1
            if authorized:
                self.with_authorization += 1
            else:
                self.without_authorization += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # client-go keeps its connection to the webhook open
    server_version = "edgeguard-tlsfront"

    def log_message(self, *args):  # the front writes its own access log, without query strings
        pass

    def _any(self):
        front: TLSFront = self.server.front  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        authorized = self.headers.get("Authorization") is not None
        front.count(authorized)
        body = self._read_body()
        site = front.site()
        route = next((r for r in (site.routes if site else ()) if r.matches(path)), None)
        if route is None:
            status, headers, data = 404, [("Content-Type", "text/plain; charset=utf-8")], NOT_FOUND
        else:
            status, headers, data = self._forward(front, route, body)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        sni = getattr(self.connection, "edgeguard_sni", None)
        front.log(
            f'{self.client_address[0]} "{self.command} {path} {self.request_version}" {status} {len(data)} '
            f"sni={sni} authorization={'present' if authorized else 'none'}"
            + (f" -> {route.service}:{route.port}" if route else "")
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

    def _read_body(self) -> bytes:
        return read_body(self)

    def _forward(self, front: TLSFront, route: Route, body: bytes):
        upstream = front.upstreams.get((route.service, route.port))
        if upstream is None:
            return 503, [("Content-Type", "text/plain")], b"no available server\n"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        prior = self.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {self.client_address[0]}" if prior else self.client_address[0]
        headers["X-Forwarded-Proto"] = "https"
        headers["X-Forwarded-Host"] = self.headers.get("Host", "")
        try:
            r = requests.request(
                self.command,
                upstream.rstrip("/") + self.path,
                headers=headers,
                data=body,
                timeout=65,
                allow_redirects=False,
                stream=False,
            )
        except requests.RequestException:
            return 502, [("Content-Type", "text/plain")], b"Bad Gateway\n"
        passed = [(k, v) for k, v in r.raw.headers.items() if k.lower() not in _HOP | {"date", "server"}]
        return r.status_code, passed, r.content


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Serve an Ingress and its TLS Secret (manifests) like Traefik, in front of a local gateway."
    )
    p.add_argument("manifests", nargs="+", type=Path, help="the Ingress and Secret manifests bootstrap wrote")
    p.add_argument("--upstream", default="http://127.0.0.1:8080", help="URL of the local gateway")
    p.add_argument("--port", type=int, default=8443)
    args = p.parse_args(argv)
    site = Site.from_manifests(*args.manifests)
    front = TLSFront(site, {(r.service, r.port): args.upstream for r in site.routes}, port=args.port, echo=True)
    front.start()
    print(
        f"TLS front on {front.url} for {', '.join(site.server_names)}; routes: "
        + ", ".join(f"{r.path} ({r.path_type}) -> {args.upstream}" for r in site.routes)
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        front.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
