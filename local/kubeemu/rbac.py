"""RBAC evaluation over the Role/ClusterRole(Binding) objects stored in the emulator (rbac/v1 semantics).

Used only when the emulator runs with rbac=True, so tests can prove a function's manifests grant exactly the
verbs it uses. Aggregated ClusterRoles and non-resource URLs are not evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable


def _subject_matches(subject: dict, user: str, groups: Iterable[str], binding_ns: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in tuple(groups)
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


def _rule_allows(rule: dict, verb: str, group: str, resource: str, name: str | None) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and group not in groups:
        return False
    resources = rule.get("resources") or []
    base, _, sub = resource.partition("/")
    if not (
        "*" in resources or resource in resources or (sub and (f"{base}/*" in resources or f"*/{sub}" in resources))
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


# The bootstrap ClusterRole system:basic-user, bound to system:authenticated on every cluster.
_BASIC_USER = {
    "apiGroups": ["authorization.k8s.io"],
    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    "verbs": ["create"],
}


def allows(
    store,
    user: str,
    groups: Iterable[str],
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    name: str | None,
) -> bool:
    registry = store.registry
    groups = tuple(groups)
    if "system:authenticated" in groups and _rule_allows(_BASIC_USER, verb, group, resource, name):
        return True
    roles = registry.lookup("roles.rbac.authorization.k8s.io")
    croles = registry.lookup("clusterroles.rbac.authorization.k8s.io")
    crbs, _ = store.list(registry.lookup("clusterrolebindings.rbac.authorization.k8s.io"))
    rbs, _ = store.list(registry.lookup("rolebindings.rbac.authorization.k8s.io"), namespace) if namespace else ([], "")

    def rules_of(ref: dict, ns: str | None) -> list[dict]:
        if ref.get("kind") == "ClusterRole":
            obj = store.find(croles, None, ref.get("name", ""))
        elif ref.get("kind") == "Role" and ns:
            obj = store.find(roles, ns, ref.get("name", ""))
        else:
            obj = None
        return (obj or {}).get("rules") or []

    for b in crbs:
        if any(_subject_matches(s, user, groups, None) for s in b.get("subjects") or []):
            if any(_rule_allows(r, verb, group, resource, name) for r in rules_of(b.get("roleRef") or {}, None)):
                return True
    for b in rbs:
        if any(_subject_matches(s, user, groups, namespace) for s in b.get("subjects") or []):
            if any(_rule_allows(r, verb, group, resource, name) for r in rules_of(b.get("roleRef") or {}, namespace)):
                return True
    return False
