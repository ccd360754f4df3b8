"""The README's result sections are generated from the committed benchmark files (no hand-typed numbers)."""

from __future__ import annotations

from benchmarks import readme


def test_readme_sections_match_the_committed_benchmark_files():
    assert readme.main(["--check"]) == 0, "README.md is out of date: run python -m benchmarks.readme"


def test_every_generated_section_has_its_markers():
    text = readme.README.read_text()
    for name in readme.SECTIONS:
        assert f"<!-- generated:{name} -->" in text and f"<!-- /generated:{name} -->" in text
