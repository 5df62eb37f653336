"""The tuning/evaluation split is by origin group, deterministic, label-blind and committed (issue 16)."""

from __future__ import annotations

from collections import defaultdict

import pytest

import bench.secret_split as split
from bench.scrubber import TEST_DATA

LINE_CORPORA = [c for c in split.CORPUS_FILES if c != "configmap_fixtures"]


def test_committed_split_is_what_the_rule_gives_on_the_shipped_corpora():
    committed = split.load_split()
    built = {(r["corpus"], r["group"]): r["part"] for r in split.build(TEST_DATA)}
    assert built == committed  # every group listed (no hash fallback for shipped data), none moved


def test_each_corpus_has_groups_on_both_sides():
    parts = defaultdict(set)
    for (corpus, _group), part in split.load_split().items():
        parts[corpus].add(part)
    assert set(parts) == set(split.CORPUS_FILES)
    assert all(p == {split.TUNING, split.EVALUATION} for p in parts.values())


def test_deal_does_not_depend_on_input_order_or_labels():
    groups = [f"g{i}" for i in range(9)]
    a = split.deal("c", groups)
    assert a == split.deal("c", list(reversed(groups))) == split.deal("c", groups + groups[:3])
    assert sum(p == split.EVALUATION for p in a.values()) == 5  # dealt alternately, evaluation first


@pytest.mark.parametrize("corpus", LINE_CORPORA)
def test_no_group_and_no_exact_copy_crosses_the_split(corpus):
    rows = split.read_rows(TEST_DATA, corpus)
    parts = split.split_rows(rows, corpus)
    tune_groups = {r["group"] for r in parts[split.TUNING]}
    eval_groups = {r["group"] for r in parts[split.EVALUATION]}
    assert tune_groups and eval_groups and not tune_groups & eval_groups
    assert not {r["text"].strip() for r in parts[split.TUNING]} & {r["text"].strip() for r in parts[split.EVALUATION]}


def test_creddata_is_split_by_repository_and_restricted_to_config_like_files():
    rows = split.read_rows(TEST_DATA, "creddata")
    assert {r["group"] for r in rows} == {
        "4a099ada",
        "cc268724",
        "cfdcc4f3",
        "f008dd40",  # creddata_sample
        "34cb4bc8",
        "54f6f35d",
        "71455799",
        "848ad017",
    }  # creddata_test3
    assert len(rows) == 639  # 435 + 204 config-like rows, UUID rows dropped


def test_an_evaluation_row_copying_a_tuning_row_is_left_out():
    rows = [
        {"group": "a", "text": "password: x1"},
        {"group": "b", "text": " password: x1 "},
        {"group": "b", "text": "password: y2"},
    ]
    table = {("t", "a"): split.TUNING, ("t", "b"): split.EVALUATION}
    parts = split.split_rows(rows, "t", table)
    assert [r["text"] for r in parts[split.EVALUATION]] == ["password: y2"]


def test_groups_missing_from_the_committed_file_are_placed_by_hash_alone():
    assert split.part_of({}, "creddata", "new-repo") == split.hash_part("creddata", "new-repo")
    assert split.part_of({("creddata", "new-repo"): split.TUNING}, "creddata", "new-repo") == split.TUNING
