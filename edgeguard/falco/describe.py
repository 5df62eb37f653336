"""The loaded ruleset described as ``falco -L`` does: Falco's ``describe_rule`` JSON, or its two-column text.

JSON (``falco -L`` with ``json_output: true``): ``required_engine_version``, ``required_plugin_versions``,
``lists``, ``macros`` and ``rules``, each entry an ``info`` object (the item as written, after appends and
overrides) and a ``details`` object (what the engine made of it). Text: a ``Rule``/``Description`` table,
the description wrapped as ``falco::utils::wrap_text`` wraps it.
"""

from __future__ import annotations

from .alert import PRIORITIES
from .parser import to_text

_PLUGIN_OF = (("ka.", "k8saudit"), ("jevt.", "json"), ("json.", "json"))


def describe(engine) -> dict:
    rs = engine.ruleset
    evaluated = {id(r): i for i, r in enumerate(engine.rules)}
    return {
        "required_engine_version": rs.required_engine_version or "0.0.0",
        "required_plugin_versions": [
            {
                "name": g["alternatives"][0]["name"],
                "version": g["alternatives"][0]["version"],
                "alternatives": g["alternatives"][1:],
            }
            for g in rs.required_plugin_versions
        ],
        "lists": [
            {"info": {"name": li["name"], "items": li["items"]}, "details": {"used": li["used"]}}
            for li in rs.list_infos
        ],
        "macros": [
            {"info": {"name": m["name"], "condition": m["condition"]}, "details": {"used": m["used"]}}
            for m in rs.macro_infos
        ],
        "rules": [_rule(r, evaluated.get(id(r))) for r in rs.rules],
    }


def _rule(r, position) -> dict:
    info = dict(r.info)
    info["priority"] = PRIORITIES[info["priority"]]
    fields: set[str] = set()
    ops: set[str] = set()
    _walk(r.ast, fields, ops)
    exc_fields = sorted({f for e in r.info["exceptions"] for f in _as_list(e.get("fields"))})
    exc_ops = sorted({c for e in r.info["exceptions"] for c in _as_list(e.get("comps"))})
    details = {
        "condition_compiled": to_text(r.ast) if r.ast is not None else r.condition,
        "output_compiled": r.output.fmt,
        "output_fields": sorted({t.key for t in r.output.tokens}),
        "extra_output_fields": {key: fmt.fmt for key, fmt, _ in r.extra_fields},
        "condition_fields": sorted(fields),
        "condition_operators": sorted(ops),
        "exception_names": [e["name"] for e in r.info["exceptions"]],
        "exception_fields": exc_fields,
        "exception_operators": exc_ops,
        "plugins": sorted({p for f in fields for prefix, p in _PLUGIN_OF if f.startswith(prefix)}),
        "evaluated": position is not None,  # enabled, at or above the priority threshold, after selection
        "evaluation_position": position,
    }
    return {"info": info, "details": details}


def _as_list(v):
    return v if isinstance(v, list) else [] if v is None else [v]


def _walk(node, fields, ops):
    if node is None:
        return
    kind = node[0]
    if kind in ("and", "or"):
        for c in node[1]:
            _walk(c, fields, ops)
    elif kind == "not":
        _walk(node[1], fields, ops)
    elif kind == "check":
        lhs = node[1]
        while lhs[0] == "xf":
            lhs = lhs[2]
        fields.add(to_text(lhs))
        ops.add(node[2])


def wrap_text(text: str, indent: int, line_len: int) -> str:
    """``falco::utils::wrap_text``: words filled to ``line_len - indent`` columns, continuation lines indented."""
    out, length = [], 0
    for word in text.split():
        if length + len(word) + 1 <= line_len - indent:
            length += len(word) + 1
        else:
            out.append("\n" + " " * indent)
            length = len(word) + 1
        out.append(word + " ")
    return "".join(out)


def as_text(desc: dict) -> str:
    """``format_described_rules_as_text``: ``%-50s %s`` rows of name and wrapped description."""
    rows = [f"{'Rule':<50} Description", f"{'----':<50} -----------"]
    for r in desc["rules"]:
        rows.append(f"{r['info']['name']:<50} {wrap_text(r['info']['description'], 51, 110)}\n")
    return "\n".join(rows) + "\n"
