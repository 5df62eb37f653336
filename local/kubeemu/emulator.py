"""KubeEmulator: the public, thread-safe facade. Runs the HTTP server on its own asyncio loop in a thread."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp.web

from .errors import ApiError, forbidden
from .resources import Registry, Resource
from .server import ApiHandler, Route
from .store import Store

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
ADMIN_TOKEN = "kubeemu-admin-token"
REQUEST_LOG_LIMIT = 20000
MAX_BODY = 3 * 1024 * 1024


@dataclass
class User:
    name: str
    groups: tuple[str, ...] = ()
    token_hash: str = ""


@dataclass
class _Match:
    """What a deny rule or a fault applies to: verbs x resource (RBAC-style "plural[/sub]") x namespace x name."""

    verbs: frozenset[str]
    group: str | None  # None = any
    resource: str | None  # "plural" / "plural/sub" / "plural/*"; None = any
    namespace: str | None
    name: str | None

    def matches(self, route: Route) -> bool:
        if "*" not in self.verbs and route.verb not in self.verbs:
            return False
        if self.resource is not None:
            if self.group is not None and self.group != route.res.group:
                return False
            if self.resource.endswith("/*"):
                if route.res.plural != self.resource[:-2] or not route.subresource:
                    return False
            elif self.resource != route.rbac_resource:
                return False
        if self.namespace is not None and self.namespace != route.namespace:
            return False
        if self.name is not None and self.name != route.name:
            return False
        return True


@dataclass
class Deny:
    match: _Match
    user_hashes: frozenset[str] | None  # None = every user


@dataclass
class Fault:
    match: _Match
    status: int | str
    remaining: int | None
    delay: float | None
    applied: bool
    message: str | None = None
    hits: int = 0


@dataclass
class RequestRecord:
    verb: str
    path: str
    status: int
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    user: str | None = None


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class KubeEmulator:
    """An in-process Kubernetes API server for tests and the local demo. See docs/kubeemu.md."""

    def __init__(self, *, rbac: bool = False, strict_auth: bool = False, admin_token: str = ADMIN_TOKEN, tls=None):
        # tls: a local.localca.ServerCert (IP SAN 127.0.0.1): serve https, and put its CA in the kubeconfig,
        # so that kubectl (client-go) sends its token, which it sends only over https.
        self.tls = tls
        self.store = Store(Registry())
        self.store.on_register = self._declare
        self.store.on_token = lambda token, ns, sa: self.add_user(
            token, f"system:serviceaccount:{ns}:{sa}", groups=("system:serviceaccounts", f"system:serviceaccounts:{ns}")
        )
        self._lock = threading.RLock()
        self._tokens: dict[str, User] = {}
        self.add_user(admin_token, "system:admin", groups=("system:masters",))  # k3s's admin identity
        self.admin_token = admin_token
        self.rbac = rbac
        self.strict_auth = strict_auth
        self._denies: list[Deny] = []
        self._faults: list[Fault] = []
        self._hooks: list[Callable[..., Any]] = []
        self.request_log: list[RequestRecord] = []
        self._auditor: Any = None  # an audit.Auditor once enable_audit() ran
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: ApiHandler | None = None
        self._stop_async: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> KubeEmulator:
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="kubeemu", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._auditor is not None:
            self._auditor.flush(5.0)
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop_async
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(10)
        self._thread = None
        self.port = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # surfaced to start(); a crash after start is re-raised by nobody
            self._error = e
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop_async = asyncio.Event()
        handler = ApiHandler(emu=self, stopping=self._stop_async)
        handler.register_discovery()  # includes types registered before start()
        self._handler = handler
        async with handler:
            server = aiohttp.web.Server(handler, handler_cancellation=True)

            def make_request(message, payload, protocol, writer, task):
                # The apiserver accepts request bodies up to 3 MiB (aiohttp's default is 1 MiB).
                return aiohttp.web.BaseRequest(
                    message, payload, protocol, writer, task, server._loop, client_max_size=MAX_BODY
                )

            server.request_factory = make_request
            runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            ssl_context = None
            if self.tls is not None:
                ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
                ssl_context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            site = aiohttp.web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            self.port = sock.getsockname()[1]
            self._ready.set()
            try:
                await self._stop_async.wait()
            finally:
                for q in list(handler.watch_queues):
                    q.put_nowait(None)
                await asyncio.sleep(0)
                await runner.cleanup()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the emulator is not running")
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"

    # -- client configuration -------------------------------------------------------------------------------

    def kubeconfig_dict(self, user_token: str | None = None, namespace: str = "default") -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": "kubeemu",
                    "cluster": {
                        "server": self.url,
                        **({"certificate-authority-data": self.tls.ca_data} if self.tls is not None else {}),
                    },
                }
            ],
            "users": [{"name": "kubeemu-user", "user": {"token": user_token or self.admin_token}}],
            "contexts": [
                {"name": "kubeemu", "context": {"cluster": "kubeemu", "user": "kubeemu-user", "namespace": namespace}}
            ],
            "current-context": "kubeemu",
        }

    def write_kubeconfig(self, path: str | Path, user_token: str | None = None, namespace: str = "default") -> Path:
        import yaml

        p = Path(path)
        p.write_text(yaml.safe_dump(self.kubeconfig_dict(user_token, namespace), sort_keys=False))
        p.chmod(0o600)
        return p

    def api_client(self, user_token: str | None = None):
        from kubernetes import config

        return config.new_client_from_config_dict(self.kubeconfig_dict(user_token))

    # -- users and authorization ------------------------------------------------------------------------------

    def add_user(self, token: str, name: str, groups: Iterable[str] = ()) -> None:
        """Register a bearer token as user `name` (groups as the authenticator would report them)."""
        with self._lock:
            self._tokens[token] = User(name, tuple(groups) + ("system:authenticated",))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as ServiceAccount namespace/name (for RBAC-enforcing tests)."""
        token = f"sa-{namespace}-{name}-" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
        self.add_user(
            token,
            f"system:serviceaccount:{namespace}:{name}",
            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
        )
        return token

    def _authenticate(self, header: str | None) -> User | None:
        if not header:
            return None if self.strict_auth else User("system:anonymous", ("system:unauthenticated",))
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        with self._lock:
            for known, user in self._tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return User(user.name, user.groups, _h(token))
        if self.strict_auth:
            return None
        # Lenient mode: any token is accepted; its user is named after a digest so no token leaks in messages.
        return User(f"token-{_h(token)[:12]}", ("system:authenticated",), _h(token))

    def _authorize(self, user: User, route: Route) -> None:
        with self._lock:
            denies = list(self._denies)
        for d in denies:
            if d.match.matches(route) and (
                d.user_hashes is None or _h(user.name) in d.user_hashes or user.token_hash in d.user_hashes
            ):
                raise forbidden(route.res, route.name, user.name, route.verb, route.namespace, route.subresource)
        if self.rbac and "system:masters" not in user.groups and not self._rbac_allows(user, route):
            raise forbidden(route.res, route.name, user.name, route.verb, route.namespace, route.subresource)

    def _rbac_allows(self, user: User, route: Route) -> bool:
        from .rbac import allows

        return allows(
            self.store,
            user.name,
            user.groups,
            route.verb,
            route.res.group,
            route.rbac_resource,
            route.namespace,
            route.name,
        )

    # -- test controls --------------------------------------------------------------------------------------

    def _match(self, verb: str | Iterable[str], resource: str, namespace: str | None, name: str | None) -> _Match:
        verbs = {verb} if isinstance(verb, str) else set(verb)
        verbs = {"update" if v.lower() == "put" else v.lower() for v in verbs}
        bad = verbs - set(VERBS) - {"*"}
        if bad:
            raise ValueError(f"unknown verb(s) {sorted(bad)}; use {VERBS} or '*'")
        if resource in ("*", None):
            return _Match(frozenset(verbs), None, None, namespace, name)
        base, _, sub = resource.partition("/")
        res = self.store.registry.lookup(base)
        if sub and sub != "*" and sub not in res.subresources:
            raise ValueError(f"{res} has no subresource {sub!r}")
        return _Match(frozenset(verbs), res.group, res.plural + (f"/{sub}" if sub else ""), namespace, name)

    def deny(
        self,
        verb: str | Iterable[str],
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        user: str | Iterable[str] | None = None,
    ) -> Deny:
        """Answer matching requests 403 Forbidden. `user` is a user name or a bearer token (None = everyone)."""
        users = None if user is None else frozenset(_h(u) for u in ([user] if isinstance(user, str) else user))
        rule = Deny(self._match(verb, resource, namespace, name), users)
        with self._lock:
            self._denies.append(rule)
        return rule

    def fail(
        self,
        verb: str | Iterable[str],
        resource: str,
        status: int | str = 500,
        times: int | None = 1,
        name: str | None = None,
        namespace: str | None = None,
        delay: float | None = None,
        applied: bool = False,
        message: str | None = None,
    ) -> Fault:
        """Answer the next `times` matching requests with `status` (None = forever).

        status="timeout" hangs `delay` seconds (default 30, ended early by stop()) then answers 504;
        status="reset" drops the connection without an answer (recorded with status 0).
        applied=True applies the request first, then answers the fault (a write whose reply was lost).
        """
        if status not in ("timeout", "reset") and not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError("status must be an HTTP error code (400-599), 'timeout' or 'reset'")
        fault = Fault(self._match(verb, resource, namespace, name), status, times, delay, applied, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def before(self, callback: Callable[[str, str, str | None, str | None, Any], Any]) -> Callable:
        """callback(verb, resource, namespace, name, body) runs before each request; raising aborts it (500)."""
        with self._lock:
            self._hooks.append(callback)
        return callback

    def clear_faults(self) -> None:
        """Drop every injected fault, deny rule and before-callback."""
        with self._lock:
            self._faults.clear()
            self._denies.clear()
            self._hooks.clear()

    def hold_rollouts(self, hold: bool = True, namespace: str | None = None, name: str | None = None) -> None:
        """Freeze (True) or resume (False) the workload controller; resuming completes pending rollouts.

        With namespace and name only that workload is frozen (repeat to add more); hold_rollouts(False)
        releases everything.
        """
        if (namespace is None) != (name is None):
            raise ValueError("give both namespace and name, or neither")
        self.store.set_hold(hold, None if name is None else (namespace, name))

    def stall_rollout(self, namespace: str, name: str, kind: str = "deployments") -> None:
        """Mark a Deployment's rollout failed (Progressing=False, ProgressDeadlineExceeded)."""
        self.store.stall_rollout(self.store.registry.lookup(kind), namespace, name)

    def _take_fault(self, route: Route) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if (f.remaining is None or f.remaining > 0) and f.match.matches(route):
                    if f.remaining is not None:
                        f.remaining -= 1
                    f.hits += 1
                    return f
        return None

    def _run_hooks(self, route: Route, data: Any) -> None:
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook(route.verb, route.rbac_resource, route.namespace, route.name, copy.deepcopy(data))
            except Exception as e:
                raise ApiError(
                    500, f"Internal error occurred: request aborted by a before() hook: {type(e).__name__}"
                ) from None

    # -- audit ------------------------------------------------------------------------------------------------

    def enable_audit(
        self,
        policy: dict | str | Path | None = None,
        webhook: str | None = None,
        token: str | None = None,
        batch_max_size: int = 100,
        batch_max_wait: float = 0.5,
        ca_pem: bytes | None = None,
        server_name: str | None = None,
    ) -> None:
        """Emit audit.k8s.io/v1 events for served requests, as kube-apiserver with an audit policy does.

        policy: a Policy dict or YAML file (default: everything at RequestResponse, Secrets and tokens at
        Metadata). webhook: URL that gets EventList POSTs in batches, like --audit-webhook-config-file in batch
        mode; the bearer `token` goes only to an https webhook whose certificate `ca_pem` (else the system's
        CAs) verifies for `server_name` (default: the URL's host), as client-go sends it. Events are also kept
        in `audit_events`.
        """
        from . import audit

        old = self._auditor
        self._auditor = audit.Auditor(
            audit.Policy(policy), webhook, token, batch_max_size, batch_max_wait, ca_pem=ca_pem, server_name=server_name
        )
        if old is not None:
            old.close()

    def disable_audit(self) -> None:
        old, self._auditor = self._auditor, None
        if old is not None:
            old.close()

    @property
    def audit_events(self) -> list[dict]:
        return list(self._auditor.events) if self._auditor is not None else []

    @property
    def audit_errors(self) -> list[str]:
        return list(self._auditor.errors) if self._auditor is not None else []

    def flush_audit(self, timeout: float = 10.0) -> bool:
        """Block until queued audit events reached the webhook (True) or the timeout passed (False)."""
        return self._auditor.flush(timeout) if self._auditor is not None else True

    def _audit(self, ctx, verb: str, status: int, payload: Any, stage: str) -> None:
        auditor = self._auditor
        if auditor is None:
            return
        from . import audit

        route, raw = ctx.route, ctx.raw
        user = ctx.user or User("system:anonymous", ("system:unauthenticated",))
        rule = auditor.policy.rule_for(
            user=user.name,
            groups=user.groups,
            verb=verb,
            group=route.res.group if route else None,
            resource=route.res.plural if route else None,
            subresource=route.subresource if route else None,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            path=raw.path,
        )
        if rule is None or rule["level"] == "None":
            return
        if stage in auditor.policy.omit_stages or stage in (rule.get("omitStages") or []):
            return
        failed = status >= 400 or status == 0
        event = audit.build_event(
            level=rule["level"],
            stage=stage,
            method=raw.method,
            request_uri=str(raw.rel_url),
            verb=verb,
            user=user.name,
            groups=user.groups,
            source_ips=_source_ips(raw),
            user_agent=raw.headers.get("User-Agent"),
            route=route,
            code=status,
            status_body=payload if failed and isinstance(payload, dict) else None,
            request_object=ctx.data,
            response_object=None if failed or stage != "ResponseComplete" else payload,
            received=ctx.received,
            allowed=ctx.allowed,
        )
        auditor.emit(event)

    # -- observation ------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(r.verb, r.path, r.status) for r in self.request_log]

    def _record(self, verb: str, path: str, status: int, route: Route | None, user: User | None) -> None:
        rec = RequestRecord(
            verb,
            path,
            status,
            route.rbac_resource if route else None,
            route.namespace if route else None,
            route.name if route else None,
            user.name if user else None,
        )
        with self._lock:
            self.request_log.append(rec)
            if len(self.request_log) > REQUEST_LOG_LIMIT:
                del self.request_log[: REQUEST_LOG_LIMIT // 2]

    def wait_for_watchers(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until `count` watch streams are open (so a test's writes are not racing the watch start)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._handler is not None and len(self._handler.watch_queues) >= count:
                return
            time.sleep(0.01)
        raise TimeoutError(f"fewer than {count} watch streams opened within {timeout} s")

    def clear_requests(self) -> None:
        with self._lock:
            self.request_log.clear()

    # -- direct state access (no HTTP, no faults) ------------------------------------------------------------------

    def resource(self, kind_or_plural: str) -> Resource:
        return self.store.registry.lookup(kind_or_plural)

    def register_resource(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        namespaced: bool = True,
        short_names: Iterable[str] = (),
        subresources: Iterable[str] = ("status",),
    ) -> Resource:
        """Serve a custom type (as if its CRD were installed); creating a CRD object does the same."""
        res = Resource(
            group, version, plural, kind, namespaced, tuple(short_names), tuple(subresources), generation=True
        )
        self.store.register(res)
        return res

    def _declare(self, res: Resource) -> None:
        handler = self._handler
        if handler is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(handler.declare, res)

    def seed(self, obj: dict) -> dict:
        """Store an object directly (no HTTP, no faults, no content validation): uid, resourceVersion,
        creationTimestamp and generation are stamped, the namespace is created if missing, a given status kept."""
        return self.store.seed(obj)

    def load_manifests(self, source: str | Path) -> list[dict]:
        """Seed every object of a multi-document YAML file or text (e.g. deploy/rbac/<function>.yaml)."""
        import yaml

        text = (
            Path(source).read_text()
            if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).is_file())
            else str(source)
        )
        out = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            items = doc.get("items") if doc.get("kind", "").endswith("List") else [doc]
            for item in items or []:
                out.append(self.seed(item))
        return out

    def get(self, kind_or_plural: str, namespace: str | None, name: str) -> dict | None:
        return self.store.find(self.resource(kind_or_plural), namespace, name)

    def list(self, kind_or_plural: str, namespace: str | None = None) -> list[dict]:
        items, _ = self.store.list(self.resource(kind_or_plural), namespace)
        return items

    # -- request execution (loop thread) --------------------------------------------------------------------------

    def _dispatch(
        self, route: Route, query: dict, body: bytes, data: Any, content_type: str, user: User | None = None
    ) -> tuple[int, Any]:
        store = self.store
        # A route of these verbs names its object (and, for evictions and tokens, its namespace): server.py.
        res, ns, sub = route.res, route.namespace, route.subresource
        name = cast(str, route.name)
        dry = "All" in query.get("dryRun", "").split(",")
        if res.group == "authorization.k8s.io":
            return 201, self._review(route, data, user)
        if route.verb == "get":
            if sub == "scale":
                return 200, _scale_of(store.get(res, ns, name))
            if sub not in (None, "status"):
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return 200, store.get(res, ns, name)
        if route.verb == "list":
            return 200, self._list(res, ns, query)
        if route.verb == "create":
            if sub == "eviction":
                return 201, store.evict(cast(str, ns), name, data)
            if sub == "token" and res.plural == "serviceaccounts":
                return 201, store.token_request(cast(str, ns), name, data)
            if sub is not None:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return 201, store.create(res, ns, data, dry_run=dry)
        if route.verb in ("update", "patch") and sub == "scale":
            return 200, self._write_scale(route, query, body, data, content_type, dry)
        if route.verb == "update":
            return 200, store.update(res, ns, name, data, sub, dry_run=dry)
        if route.verb == "patch":
            return 200, store.patch(res, ns, name, content_type, body, sub, dry_run=dry)
        if route.verb == "delete":
            return store.delete(res, ns, name, _delete_options(data, query), dry_run=dry)
        if route.verb == "deletecollection":
            return 200, store.delete_collection(
                res,
                ns,
                query.get("labelSelector"),
                query.get("fieldSelector"),
                _delete_options(data, query),
                dry_run=dry,
            )
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    def _list(self, res: Resource, ns: str | None, query: dict) -> dict:
        items, rv = self.store.list(res, ns, query.get("labelSelector"), query.get("fieldSelector"))
        for item in items:
            # Typed list items carry no kind/apiVersion on the wire.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        meta: dict[str, Any] = {"resourceVersion": rv}
        limit = int(query.get("limit") or 0)
        start = 0
        if query.get("continue"):
            try:
                start = int(base64.urlsafe_b64decode(query["continue"].encode()).decode())
            except ValueError:
                raise ApiError(400, "continue key is not valid") from None
        if limit > 0:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
                meta["remainingItemCount"] = len(items) - start - limit
            items = page
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    def _write_scale(self, route: Route, query: dict, body: bytes, data: Any, content_type: str, dry: bool) -> dict:
        from . import patch as patching

        store = self.store
        with store.lock:
            obj = store.get(route.res, route.namespace, cast(str, route.name))
            scale = _scale_of(obj)
            if route.verb == "update":
                new_scale = data
            else:
                import json

                ctype = content_type.split(";")[0].strip()
                doc = json.loads(body or b"{}")
                new_scale = (
                    patching.json_patch(scale, doc)
                    if ctype == "application/json-patch+json"
                    else patching.merge_patch(scale, doc)
                )
            if not isinstance(new_scale, dict):
                raise ApiError(400, "a Scale must be a JSON object")
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, "spec.replicas: must be a non-negative integer", "Invalid")
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["resourceVersion"] = rv or obj["metadata"]["resourceVersion"]
            updated = store.update(route.res, route.namespace, cast(str, route.name), obj, dry_run=dry)
            return _scale_of(updated)

    def _review(self, route: Route, data: Any, requester: User | None) -> dict:
        """(Self)SubjectAccessReview answered from the deny rules and, with rbac=True, the stored RBAC objects."""
        if route.verb != "create" or not isinstance(data, dict):
            raise ApiError(400, "an access review must be created with a JSON body")
        spec = data.get("spec") or {}
        attrs_ = spec.get("resourceAttributes")
        if not isinstance(attrs_, dict):
            raise ApiError(
                422, "spec.resourceAttributes: Required value (nonResourceAttributes are not emulated)", "Invalid"
            )
        if route.res.plural == "selfsubjectaccessreviews":
            user = requester or User("system:anonymous", ("system:unauthenticated",))
        else:
            user = User(spec.get("user", ""), tuple(spec.get("groups") or ()) + ("system:authenticated",))
            with self._lock:
                for token, known in self._tokens.items():
                    if known.name == user.name:
                        user = User(known.name, known.groups, _h(token))
        try:
            group = attrs_.get("group") or ""
            res = self.store.registry.lookup(
                f"{group}/{attrs_.get('resource', '')}" if group else f"v1/{attrs_.get('resource', '')}"
            )
            probe = Route(
                res,
                attrs_.get("namespace") or None,
                attrs_.get("name") or None,
                attrs_.get("subresource") or None,
                attrs_.get("verb", ""),
            )
            self._authorize(user, probe)
            allowed = True
        except (ApiError, KeyError):
            allowed = False
        out = copy.deepcopy(data)
        out.setdefault("metadata", {})
        out["status"] = {"allowed": allowed}
        if not allowed:
            out["status"]["reason"] = "denied by the emulator's deny rules or RBAC objects"
        return out


def _source_ips(raw) -> list[str]:
    # The apiserver's order: X-Forwarded-For entries, X-Real-Ip, then the peer address (only that is trustworthy).
    ips = [ip.strip() for ip in raw.headers.get("X-Forwarded-For", "").split(",") if ip.strip()]
    real = raw.headers.get("X-Real-Ip", "").strip()
    if real and real not in ips:
        ips.append(real)
    if raw.remote and raw.remote not in ips:
        ips.append(raw.remote)
    return ips


def _delete_options(data: Any, query: dict) -> dict:
    opts = dict(data) if isinstance(data, dict) else {}
    for k in ("propagationPolicy", "gracePeriodSeconds"):
        if k in query and k not in opts:
            opts[k] = query[k]
    return opts


def _scale_of(obj: dict) -> dict:
    meta = obj["metadata"]
    sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(sel.items())),
        },
    }
