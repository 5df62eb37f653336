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
    assert set(r) == {
        "configmap_fixtures",
        "noseyparker_examples",
        "gitleaks_rule_cases",
        "detect_secrets_keyword_cases",
        "creddata",
    }


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


def test_report_gives_both_parts_per_corpus_never_pooled_and_marks_in_sample_figures():
    import io

    out = io.StringIO()
    bench.print_report(bench.evaluate_all(bench.TEST_DATA), out)
    text = out.getvalue()
    table = [ln.split() for ln in text.split("per-rule precision")[0].splitlines()[1:] if ln and not ln.startswith(" ")]
    parts = {}
    for row in table:
        parts.setdefault(row[0], []).append(row[1])
    for corpus in ("noseyparker_examples", "gitleaks_rule_cases", "detect_secrets_keyword_cases", "creddata"):
        assert parts[corpus] == ["tuning*", "evaluation"]  # no pooled row
    assert parts["configmap_fixtures"] == ["tuning*", "evaluation", "all*"]
    assert "* in-sample." in text
    # per-rule precision of the evaluation part, per corpus
    rules = text.split("per-rule precision on the evaluation part")[1]
    assert "  creddata:" in rules and "keyname" in rules and "high" in rules
