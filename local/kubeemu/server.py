"""HTTP front of the emulator: a kmock KubernetesScaffold whose resource requests go to our Store.

kmock gives the aiohttp handler protocol, /version, /api, /apis and /apis/<group> discovery, its DSL (used for
the health probes) and Status rendering. Resource URLs are routed here instead of kmock's object store because
that store merges on PUT, has no resourceVersion/uid, and its path parser cannot parse `/api/v1/namespaces`;
per-version resource lists are ours too (kmock repeats short names on subresources, which confuses kubectl).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import aiohttp.web
import attrs
from kmock import KubernetesScaffold, ResourceInfo

from . import audit
from .errors import ApiError
from .resources import Resource

if TYPE_CHECKING:  # pragma: no cover
    from .emulator import KubeEmulator


@dataclass
class _Ctx:
    """One request on its way through the handler (what the request log and the audit event need)."""

    raw: aiohttp.web.BaseRequest
    received: Any
    route: Route | None = None
    user: Any = None
    data: Any = None
    allowed: bool = True


@dataclass
class Route:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None
    verb: str

    @property
    def rbac_resource(self) -> str:
        return self.res.plural + (f"/{self.subresource}" if self.subresource else "")


_SUBRESOURCE_INFO: dict[str, tuple[str | None, list[str], dict]] = {
    "status": (None, ["get", "patch", "update"], {}),
    "scale": ("Scale", ["get", "patch", "update"], {"group": "autoscaling", "version": "v1"}),
    "eviction": ("Eviction", ["create"], {"group": "policy", "version": "v1"}),
    "binding": ("Binding", ["create"], {}),
    "log": ("Pod", ["get"], {}),
    "finalize": ("Namespace", ["update"], {}),
    "token": ("TokenRequest", ["create"], {"group": "authentication.k8s.io", "version": "v1"}),
    "approval": (None, ["get", "patch", "update"], {}),
}
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
)
_NOT_FOUND = ApiError(404, "the server could not find the requested resource", "NotFound", {})
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1")


@attrs.define(kw_only=True)
class ApiHandler(KubernetesScaffold):
    emu: Any = None
    stopping: asyncio.Event | None = None
    watch_queues: set = attrs.field(factory=set)

    def register_discovery(self) -> None:
        # Health probes, declared with kmock's own DSL (they are plain, non-resource endpoints).
        for probe in ("/healthz", "/readyz", "/livez"):
            self[f"get {probe}"] << b"ok"
        for r in self.emu.store.registry.resources:
            self.declare(r)

    def declare(self, r: Resource) -> None:
        """Make a type visible in kmock's group discovery (/apis, /apis/<group>)."""
        self.resources[f"{r.group}/{r.version}/{r.plural}" if r.group else f"v1/{r.plural}"] = ResourceInfo(
            namespaced=r.namespaced,
            kind=r.kind,
            singular=r.singular,
            verbs=set(r.verbs),
            shortnames=set(r.short_names),
            subresources=set(r.subresources),
        )

    async def _serve_version(self, request) -> dict:
        # kmock repeats a resource's short names and verbs on its subresources, which makes kubectl refuse
        # short names ("ns could also match namespaces/status"); list them as the apiserver does instead.
        group, version = request.resource.group, request.resource.version
        resources = [r for r in self.emu.store.registry.resources if r.group == group and r.version == version]
        if not resources:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        out: list[dict] = []
        for r in resources:
            entry = {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
            }
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            out.append(entry)
            for sub in r.subresources:
                kind, verbs, extra = _SUBRESOURCE_INFO.get(sub, (None, ["get"], {}))
                out.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": kind or r.kind,
                        "verbs": verbs,
                        **extra,
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": out,
        }

    # -- routing -------------------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict) -> Route | None:
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        if not rest:
            return None  # group/version discovery
        watch = _truthy(query.get("watch"))
        if rest[0] == "watch":  # legacy /watch/ prefix
            watch, rest = True, rest[1:]
        registry = self.emu.store.registry
        namespace = None
        if rest[0] == "namespaces" and group == "" and (len(rest) <= 2 or rest[2] in _NAMESPACE_SUBRESOURCES):
            res = registry.by_path("", version, "namespaces")
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            if len(rest) > 3:
                raise _NOT_FOUND
        else:
            if rest[0] == "namespaces":
                if len(rest) < 3:
                    raise _NOT_FOUND
                namespace, rest = rest[1], rest[2:]
            res = registry.by_path(group, version, rest[0])
            if res is None or len(rest) > 3 or (namespace is not None and not res.namespaced):
                raise _NOT_FOUND
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            if name is not None and res.namespaced and namespace is None:
                raise _NOT_FOUND
        if res is None:
            raise _NOT_FOUND
        if sub is not None and sub not in res.subresources:
            raise _NOT_FOUND
        m = method.upper()
        if m == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        elif m == "POST":
            verb = "create"
            if name and not sub:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
        elif m == "PUT" and name:
            verb = "update"
        elif m == "PATCH" and name:
            verb = "patch"
        elif m == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        return Route(res, namespace, name, sub, verb)

    # -- entry point ---------------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        emu: KubeEmulator = self.emu
        ctx = _Ctx(raw, audit.utcnow())
        try:
            body = await raw.read()
        except aiohttp.web.HTTPRequestEntityTooLarge:
            return self._fail(ctx, ApiError(413, "Request entity too large: limit is 3145728"))
        query = dict(raw.query)
        try:
            ctx.route = self.route(raw.method, raw.path, query)
        except ApiError as e:
            return self._fail(ctx, e)
        ctx.user = emu._authenticate(raw.headers.get("Authorization"))
        route = ctx.route
        if route is None:
            if raw.path != "/" and raw.path.endswith("/"):
                raw = raw.clone(rel_url=raw.rel_url.with_path(raw.path.rstrip("/")))
            response = await super().__call__(raw)  # kmock: discovery, /version, unknown endpoints
            self._done(ctx, response.status, None)
            return response
        try:
            if ctx.user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            try:
                emu._authorize(ctx.user, route)
            except ApiError:
                ctx.allowed = False
                raise
            ctx.data = _decode(body, raw.headers.get("Content-Type"), route.verb)
            emu._run_hooks(route, ctx.data)
            fault = emu._take_fault(route)
            if fault is not None:
                return await self._faulted(ctx, query, body, fault)
            if route.verb == "watch":
                return await self._watch(ctx, query)
            status, payload = emu._dispatch(route, query, body, ctx.data, raw.headers.get("Content-Type", ""), ctx.user)
        except ApiError as e:
            return self._fail(ctx, e)
        except Exception as e:  # an emulator bug must still look like an apiserver 500 to the client
            logging.getLogger(__name__).exception("kubeemu failed on %s %s", raw.method, raw.path)
            return self._fail(ctx, ApiError(500, f"Internal error occurred: {type(e).__name__}"))
        self._done(ctx, status, payload)
        return aiohttp.web.json_response(payload, status=status)

    def _done(self, ctx: _Ctx, status: int, payload: Any, stage: str = "ResponseComplete") -> None:
        """Every served request ends here: the request log and the audit trail."""
        route, raw = ctx.route, ctx.raw
        verb = route.verb if route is not None else raw.method.lower()
        if stage == "ResponseComplete":
            self.emu._record(verb, raw.path, status, route, ctx.user)
        self.emu._audit(ctx, verb, status, payload, stage)

    def _fail(self, ctx: _Ctx, err: ApiError) -> aiohttp.web.Response:
        body = err.status()
        self._done(ctx, err.code, body)
        return _status_response(err)

    async def _faulted(self, ctx: _Ctx, query: dict, body: bytes, fault) -> aiohttp.web.StreamResponse:
        emu: KubeEmulator = self.emu
        raw, route, data, user = ctx.raw, ctx.route, ctx.data, ctx.user
        assert route is not None  # a fault is taken for a routed request only
        if fault.applied and route.verb not in ("watch",):
            try:
                emu._dispatch(route, query, body, data, raw.headers.get("Content-Type", ""), user)
            except ApiError:
                pass  # the injected answer replaces whatever the real one was
        if fault.delay or fault.status == "timeout":
            await self.sleep(fault.delay if fault.delay is not None else 30.0)
        if fault.status == "reset":
            # The connection drops with no answer at all (crashed apiserver, broken proxy).
            self._done(ctx, 0, None)
            if raw.transport is not None:
                raw.transport.abort()
            raise asyncio.CancelledError
        code = 504 if fault.status == "timeout" else int(fault.status)
        name = (
            route.name or ((data or {}).get("metadata") or {}).get("name") or ""
            if isinstance(data, dict)
            else (route.name or "")
        )
        if code == 409 and route.verb == "create" and not route.subresource and fault.message is None:
            # A conflict on create is the apiserver's AlreadyExists.
            return self._fail(
                ctx,
                ApiError(
                    409,
                    f'{route.res} "{name}" already exists',
                    "AlreadyExists",
                    {"name": name, "kind": route.res.plural, **({"group": route.res.group} if route.res.group else {})},
                ),
            )
        messages = {
            409: f'Operation cannot be fulfilled on {route.res} "{name}": the object has been modified; '
            f"please apply your changes to the latest version and try again",
            429: "Too many requests, please try again later.",
            500: "Internal error occurred: injected fault",
            503: "the server is currently unable to handle the request",
            504: "the server was unable to return a response in the time allotted, but may still be "
            "processing the request",
        }
        err = ApiError(
            code,
            fault.message or messages.get(code, f"injected fault {code}"),
            details={"name": name, "kind": route.res.plural, **({"group": route.res.group} if route.res.group else {})},
            headers={"Retry-After": "1"} if code in (429, 503) else None,
        )
        return self._fail(ctx, err)

    async def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the emulator stops (so stop() never waits on a hung request)."""
        assert self.stopping is not None
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock puts a server traceback into Status.details; a real apiserver never does.
        code = getattr(exc, "status", 500) if isinstance(getattr(exc, "status", None), int) else 500
        message = getattr(exc, "message", None) or "the server could not find the requested resource"
        return _status_response(ApiError(code, message if code != 500 else "Internal error occurred"))

    # -- watch ---------------------------------------------------------------------------------------------

    async def _watch(self, ctx: _Ctx, query: dict) -> aiohttp.web.StreamResponse:
        emu: KubeEmulator = self.emu
        raw, route = ctx.raw, ctx.route
        assert route is not None  # watches are routed requests
        store = emu.store
        field_selector = query.get("fieldSelector")
        if route.name:  # a watch on a named URL is a watch on metadata.name
            field_selector = ",".join(x for x in (field_selector, f"metadata.name={route.name}") if x)
        match = store.matcher(route.res, route.namespace, query.get("labelSelector"), field_selector)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        res = route.res

        def listener(r: Resource, kind: str, obj: dict) -> None:
            if r.group == res.group and r.plural == res.plural:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, obj))
                except RuntimeError:  # the loop is closing; the watch is ending anyway
                    pass

        rv = query.get("resourceVersion") or ""
        initial: list[tuple[str, dict]] = []
        gone: dict | None = None
        with store.lock:
            if rv in ("", "0"):
                items, _ = store.list(res)
                initial = [("ADDED", o) for o in items]
            else:
                try:
                    since = int(rv)
                except ValueError:
                    raise ApiError(400, f'invalid resourceVersion "{rv}"') from None
                if since < store.oldest_log_rv() - 1:
                    gone = ApiError(
                        410, f"too old resource version: {since} ({store.oldest_log_rv()})", "Expired"
                    ).status()
                else:
                    initial = [
                        (k, o)
                        for (erv, r, k, o) in store.log
                        if erv > since and r.group == res.group and r.plural == res.plural
                    ]
            store.add_listener(listener)
        self.watch_queues.add(queue)
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        emu._record("watch", raw.path, 200, route, ctx.user)
        emu._audit(ctx, "watch", 200, None, "ResponseStarted")
        try:
            await response.prepare(raw)
            if gone is not None:
                await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                return response
            matched: set = set()
            for kind, obj in initial:
                await self._send(response, kind, obj, match, matched)
            timeout = query.get("timeoutSeconds")
            deadline = loop.time() + float(timeout) if timeout else None
            while True:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    break
                if item is None:  # emulator stopping
                    break
                await self._send(response, item[0], item[1], match, matched)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            store.remove_listener(listener)
            self.watch_queues.discard(queue)
        emu._audit(ctx, "watch", 200, None, "ResponseComplete")
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    @staticmethod
    async def _send(response, kind: str, obj: dict, match, matched: set) -> None:
        # A watch with selectors reports objects entering/leaving the selection as ADDED/DELETED (as the
        # apiserver's watch cache does).
        key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        now_match = match(obj) and kind != "DELETED"
        was = key in matched
        if kind == "DELETED":
            if not (was or match(obj)):
                return
            matched.discard(key)
        elif now_match and not was:
            kind = "ADDED"
            matched.add(key)
        elif now_match:
            kind = "MODIFIED"
        elif was:
            kind = "DELETED"
            matched.discard(key)
        else:
            return
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def _decode(body: bytes, content_type: str | None, verb: str) -> Any:
    if verb not in ("create", "update", "patch", "delete", "deletecollection") or not body:
        return None
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if ctype == "application/vnd.kubernetes.protobuf" and verb in ("create", "update"):
        from .protobuf import ProtobufError, decode

        try:
            return decode(body)
        except ProtobufError as e:
            raise ApiError(415, str(e), "UnsupportedMediaType") from None
    if verb == "patch" and ctype not in _PATCH_TYPES:
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(_PATCH_TYPES),
        )
    if ctype in ("application/yaml", "application/apply-patch+yaml"):
        import yaml

        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as e:
            raise ApiError(400, f"the request body is not valid YAML: {e}") from None
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml, application/vnd.kubernetes.protobuf (ConfigMap, "
            "Secret, Namespace, ServiceAccount only)",
        )
    try:
        return json.loads(body)
    except ValueError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None


def _status_response(err: ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(err.status(), status=err.code, headers=err.headers or None)
