"""Which audit level a policy gives a request: kube-apiserver's first-match rule, modelled for tests.

Written from kubernetes staging/src/k8s.io/apiserver/pkg/audit/policy/checker.go (ruleMatches,
ruleMatchesResource, ruleMatchesNonResource, pathMatches). test_audit_policy.py checks this model
against the real API server's behaviour where the test cluster is available.
"""

from __future__ import annotations


def _path_matches(path: str, spec: str) -> bool:
    return spec == "*" or spec == path or (spec.endswith("*") and path.startswith(spec.rstrip("*")))


def _resource_matches(rule: dict, req: dict) -> bool:
    if not req["resource"]:
        return False
    if rule.get("namespaces") and req.get("namespace", "") not in rule["namespaces"]:
        return False
    if not rule.get("resources"):
        return True
    combined = req["resource"] + (f"/{req['subresource']}" if req.get("subresource") else "")
    for gr in rule["resources"]:
        if gr.get("group", "") != req.get("group", ""):
            continue
        if not gr.get("resources"):
            return True
        for res in gr["resources"]:
            if gr.get("resourceNames") and req.get("name", "") not in gr["resourceNames"]:
                continue
            if res in (combined, "*"):
                return True
            if req.get("subresource") and res.startswith("*/") and req["subresource"] == res[2:]:
                return True
            if res.endswith("/*") and req["resource"] == res[:-2]:
                return True
    return False


def rule_matches(rule: dict, req: dict) -> bool:
    if rule.get("users") and req["user"] not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(req.get("groups", ())) & set(rule["userGroups"]):
        return False
    if rule.get("verbs") and req["verb"] not in rule["verbs"]:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        return _resource_matches(rule, req)
    if rule.get("nonResourceURLs"):
        return not req["resource"] and any(_path_matches(req["path"], s) for s in rule["nonResourceURLs"])
    return True


def level(policy: dict, req: dict) -> str:
    """req: user, groups, verb, and either resource (+ group, subresource, namespace, name) or path."""
    for rule in policy["rules"]:
        if rule_matches(rule, req):
            return rule["level"]
    return "None"


def request_of(event: dict) -> dict:
    """The attributes the policy sees, from an audit.k8s.io/v1 Event."""
    ref = event.get("objectRef") or {}
    user = event.get("user") or {}
    return {
        "user": user.get("username", ""),
        "groups": user.get("groups") or [],
        "verb": event.get("verb", ""),
        "resource": ref.get("resource", ""),
        "group": ref.get("apiGroup", ""),
        "subresource": ref.get("subresource", ""),
        "namespace": ref.get("namespace", ""),
        "name": ref.get("name", ""),
        "path": (event.get("requestURI") or "").split("?", 1)[0],
    }
