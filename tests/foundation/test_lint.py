"""`make lint` reports what ruff finds, format included (issue 14 §6)."""

from __future__ import annotations

from local import lint


def test_a_file_ruff_format_would_change_is_a_finding(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.ruff]\nline-length = 120\n")
    (tmp_path / "tidy.py").write_text('x = {"a": 1}\n')
    (tmp_path / "untidy.py").write_text("x = {  'a':1 }\n")
    found = lint.ruff(tmp_path)
    assert ("untidy.py", "ruff format: would reformat") in found
    assert not [f for f in found if f[0] == "tidy.py"]


def test_a_lint_finding_names_its_file_and_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ruff]\nline-length = 120\n[tool.ruff.lint]\nselect = ["F"]\n')
    (tmp_path / "unused.py").write_text("import os\n")
    assert ("unused.py", "1: ruff F401 [*] `os` imported but unused") in lint.ruff(tmp_path)
