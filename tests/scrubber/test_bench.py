"""bench/scrubber.py finds its corpora in a plain clone (no ../shared next to it) as well as in the project tree."""
from __future__ import annotations

from pathlib import Path

import bench.scrubber as bench


def test_bench_falls_back_to_tests_data_copies_when_shared_corpus_is_absent(tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    clone.mkdir()
    monkeypatch.delenv("EDGEGUARD_SECRETS_CORPUS", raising=False)
    monkeypatch.setattr(bench, "ROOT", clone)
    assert bench.corpus_dir() == bench.TEST_DATA
    assert (bench.TEST_DATA / "configmap_fixtures.yaml").exists()
    r = bench.evaluate_all(bench.corpus_dir())
    assert set(r) == {"configmap_fixtures (key level)", "gitleaks_rule_cases.csv"}


def test_bench_uses_shared_corpus_next_to_the_checkout_when_present(tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "data" / "secrets"
    shared.mkdir(parents=True)
    (shared / "configmap_fixtures.yaml").write_text("items: []\n")
    (tmp_path / "clone").mkdir()
    monkeypatch.delenv("EDGEGUARD_SECRETS_CORPUS", raising=False)
    monkeypatch.setattr(bench, "ROOT", tmp_path / "clone")
    assert bench.corpus_dir() == shared
    monkeypatch.setenv("EDGEGUARD_SECRETS_CORPUS", str(Path(tmp_path / "elsewhere")))
    assert bench.corpus_dir() == shared  # a wrong override does not hide the shared corpus
