"""Tuning / evaluation split of the labelled secret corpora, by origin group, never by line.

Decided before any detector rule was changed for issue 16, and committed as data
(``bench/data/secrets_split.csv``) so that it cannot drift with the rules.

* A *group* is the unit that holds near-duplicates together: CredData's ``repo_id`` (a repository's
  lines share style, key names and often values); for the rule-example corpora, the rule source file
  (examples of one provider are variations of one token); for detect-secrets' keyword cases, the
  setting name in the line (the same ``password = "..."`` is repeated in every file-type family);
  for the ConfigMap fixtures, the ConfigMap.
* Within each corpus the groups are ordered by ``sha256(SALT, corpus, group)`` and dealt alternately,
  evaluation first: a deterministic, label-blind split with half of the groups on each side (a plain
  hash threshold can put 6 of CredData's 8 repositories on one side).
* Groups not listed in the committed file (new data) are assigned by the hash alone
  (first byte < 128 -> evaluation), so that listed groups never move.
* One label-blind row rule, fixed with the split: an evaluation row whose text (stripped) also
  occurs in that corpus's tuning part is left out of the evaluation part (an exact copy is not
  unseen data).

CredData rows are restricted, before splitting, to the population the issue measures: config-like
files (``CONFIG_EXTENSIONS``) without UUID-category rows.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import yaml

SALT = "edgeguard-secrets-split-v1"
SPLIT_FILE = Path(__file__).resolve().parent / "data" / "secrets_split.csv"
TUNING, EVALUATION = "tuning", "evaluation"
CONFIG_EXTENSIONS = {".yml", ".yaml", ".json", ".conf", ".properties", ".env", ".ini", ".toml", ".cfg", ""}
CREDDATA_FILES = ("creddata_sample.csv", "creddata_test3.csv")
# corpus -> files it is read from
CORPUS_FILES = {
    "configmap_fixtures": ("configmap_fixtures.yaml", "configmap_labels.csv"),
    "noseyparker_examples": ("noseyparker_examples.csv",),
    "gitleaks_rule_cases": ("gitleaks_rule_cases.csv",),
    "detect_secrets_keyword_cases": ("detect_secrets_keyword_cases.csv",),
    "creddata": CREDDATA_FILES,
}

# the two values detect-secrets' cases reuse everywhere, and code words around the setting name
_DS_VALUES = ("m{{h}o)p${e]nob(ody[finds>-_$#thisone}}", "A,.:-¨@*¿?!", ",.:-¨@*¿?!", "value with quotes and spaces")
_DS_CODE_WORDS = {"if", "std", "string", "char", "assign"}


def _digest(corpus: str, group: str) -> bytes:
    return hashlib.sha256(f"{SALT}\0{corpus}\0{group}".encode()).digest()


def deal(corpus: str, groups) -> dict[str, str]:
    """Initial split of a corpus's groups: hash order, dealt alternately, evaluation first."""
    order = sorted(set(groups), key=lambda g: _digest(corpus, g))
    return {g: (EVALUATION if i % 2 == 0 else TUNING) for i, g in enumerate(order)}


def hash_part(corpus: str, group: str) -> str:
    return EVALUATION if _digest(corpus, group)[0] < 128 else TUNING


def load_split(path: Path = SPLIT_FILE) -> dict[tuple[str, str], str]:
    with path.open(newline="") as fh:
        return {(r["corpus"], r["group"]): r["part"] for r in csv.DictReader(fh)}


def part_of(split: dict, corpus: str, group: str) -> str:
    return split.get((corpus, group)) or hash_part(corpus, group)


def _ds_group(text: str) -> str:
    import re

    for v in _DS_VALUES:
        text = text.replace(v, " ")
    text = re.sub(r"\"[^\"]*\"|'[^']*'|`[^`]*`", " ", text)
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
        if word.lower() not in _DS_CODE_WORDS:
            return word.lower()
    return "(none)"


def creddata_keep(row: dict) -> bool:
    """The issue's population: config-like files, UUID rows dropped (a UUID is an id, not a secret)."""
    return row["file_ext"] in CONFIG_EXTENSIONS and "UUID" not in row["category"].split(":")


def read_rows(directory: Path, corpus: str) -> list[dict]:
    """Rows of a line corpus as dicts with ``group``, ``text``, ``label`` (bool), ``name`` (a key/file name).

    Not for configmap_fixtures (key level, see ``fixture_groups``).
    """
    out = []
    if corpus == "creddata":
        for fname in CREDDATA_FILES:
            p = directory / fname
            if not p.exists():
                continue
            with p.open(newline="") as fh:
                for r in csv.DictReader(fh):
                    if creddata_keep(r):
                        out.append(
                            {
                                "group": r["repo_id"],
                                "text": r["text"],
                                "label": r["ground_truth"] == "T",
                                "name": "file" + r["file_ext"],
                                "file": fname,
                            }
                        )
        return out
    (fname,) = CORPUS_FILES[corpus]
    p = directory / fname
    if not p.exists():
        return out
    with p.open(newline="") as fh:
        for r in csv.DictReader(fh):
            group = _ds_group(r["text"]) if corpus == "detect_secrets_keyword_cases" else r["source"]
            out.append({"group": group, "text": r["text"], "label": r["label"] == "1", "name": "config", "file": fname})
    return out


def fixture_groups(directory: Path) -> list[str]:
    doc = yaml.safe_load((directory / "configmap_fixtures.yaml").read_text())
    return [cm["metadata"]["name"] for cm in doc["items"]]


def available(directory: Path, corpus: str) -> bool:
    files = CORPUS_FILES[corpus]
    return (
        any((directory / f).exists() for f in files)
        if corpus == "creddata"
        else all((directory / f).exists() for f in files)
    )


def split_rows(rows: list[dict], corpus: str, split: dict | None = None) -> dict[str, list[dict]]:
    """{tuning: rows, evaluation: rows}, with evaluation rows that copy a tuning row's text left out."""
    split = load_split() if split is None else split
    parts: dict[str, list[dict]] = {TUNING: [], EVALUATION: []}
    for r in rows:
        parts[part_of(split, corpus, r["group"])].append(r)
    seen = {r["text"].strip() for r in parts[TUNING]}
    parts[EVALUATION] = [r for r in parts[EVALUATION] if r["text"].strip() not in seen]
    return parts


def build(directory: Path) -> list[dict]:
    """The split table for every corpus found in ``directory`` (how secrets_split.csv was made)."""
    table = []
    for corpus in CORPUS_FILES:
        if not available(directory, corpus):
            continue
        if corpus == "configmap_fixtures":
            counts = defaultdict(int)
            for g in fixture_groups(directory):
                counts[g] += 1
        else:
            counts = defaultdict(int)
            for r in read_rows(directory, corpus):
                counts[r["group"]] += 1
        for g, part in sorted(deal(corpus, counts).items()):
            table.append({"corpus": corpus, "group": g, "part": part, "rows": counts[g]})
    return table


def write(table: list[dict], path: Path = SPLIT_FILE) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["corpus", "group", "part", "rows"], lineterminator="\n")
        w.writeheader()
        w.writerows(table)


if __name__ == "__main__":  # regenerate: python -m bench.secret_split DIR
    import sys

    write(build(Path(sys.argv[1])))
