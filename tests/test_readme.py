"""The README's result sections are generated from the committed benchmark files (no hand-typed numbers)."""

from __future__ import annotations

from benchmarks import readme


def test_readme_sections_match_the_committed_benchmark_files():
    assert readme.main(["--check"]) == 0, "README.md is out of date: run python -m benchmarks.readme"


def test_every_generated_section_has_its_markers():
    text = readme.README.read_text()
    for name in readme.SECTIONS:
        assert f"<!-- generated:{name} -->" in text and f"<!-- /generated:{name} -->" in text


def _python_blocks() -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", readme.README.read_text(), re.S)


def test_readme_quick_starts_run(tmp_path, monkeypatch):
    """Every Python block of the README runs as written, with the budgets cut down."""
    import re
    import textwrap

    monkeypatch.chdir(tmp_path)
    shrink = {r"learn\((\d[\d_]*)": "learn(512", r"total_frames=\d[\d_]*": "total_frames=1_024", r">= 30_000": ">= 1_024"}
    blocks = _python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        block = textwrap.dedent(block)  # blocks inside list items are indented
        for pattern, replacement in shrink.items():
            block = re.sub(pattern, replacement, block)
        block = block.replace("n_envs=8,", "n_envs=2,")
        exec(compile(block, "README.md", "exec"), namespace)
