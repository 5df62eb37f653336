"""Kubernetes `Status` failures, shaped like the apiserver's so the client raises ApiException faithfully."""

from __future__ import annotations

from typing import Any

from .resources import Resource

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        # reason="" means: no reason, as for errors the apiserver passes through unclassified.
        self.reason = _REASONS.get(code, "Unknown") if reason is None else reason
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str | None, kind: str | None = None) -> dict:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res} "{name}" not found', "NotFound", _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, f'{res} "{name}" already exists', "AlreadyExists", _details(res, name))


def conflict(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {res} "{name}": {why}', "Conflict", _details(res, name))


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(res: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason, message) as field.Error renders them, e.g. ("data", "FieldValueForbidden", ...)."""
    texts = [f"{f}: {m}" for f, _, m in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(res, name, kind=res.kind)
    details["causes"] = [{"reason": r, "message": m, "field": f} for f, r, m in causes]
    return ApiError(422, f'{res.kind} "{name}" is invalid: {joined}', "Invalid", details)


def forbidden(
    res: Resource | None,
    name: str | None,
    user: str,
    verb: str,
    namespace: str | None,
    subresource: str | None = None,
    why: str = "",
) -> ApiError:
    resource = (res.plural if res else "") + (f"/{subresource}" if subresource else "")
    group = res.group if res else ""
    subject = f"{res}" + (f' "{name}"' if name else "") if res else "resource"
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    msg = why or (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}"{scope}'
    )
    details: dict[str, Any] = {"kind": res.plural if res else ""}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return ApiError(403, msg, "Forbidden", details)
