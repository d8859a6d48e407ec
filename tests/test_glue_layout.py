"""The workflow's glue stays glue: every script is at most 45 lines of code, and no script, step or rule file
asks which modality it holds (the modality objects answer; only common.smk's input functions, which choose a
rule's files, may name one)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

MAX_SCRIPT_LINES = 45
# a comparison with, or a membership test in, a modality name: `modality == "s2t"`, `"t2t" != m`,
# `m in ("s2t", ...)`, `self.name == "t2t"`
MODALITY_TEST = re.compile(r"""(?:==|!=)\s*["'](?:s2t|t2t)["']|["'](?:s2t|t2t)["']\s*(?:==|!=)"""
                           r"""|\bin\s*[(\[{]\s*["'](?:s2t|t2t)["']""")


def code_lines(text: str) -> int:
    """Lines that are neither blank nor comments (``grep -cvE '^\\s*(#|$)'``)."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_the_pattern_finds_modality_tests():
    hits = ['if w.modality == "s2t":', "x if wc.modality == 's2t' else None", 'if "t2t" != m:',
            'if modality in ("s2t", "t2t"):', 'if self.name == "t2t":']
    misses = ['f"{R}/{{model}}/s2t/known.parquet"', 'for_run(spec, "s2t", tok)', '"t2t": T2T']
    assert all(MODALITY_TEST.search(h) for h in hits)
    assert not any(MODALITY_TEST.search(m) for m in misses)
    assert code_lines("# a\n\nx = 1\n  # b\ny = 2  # c\n") == 2


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_thin(script):
    n = code_lines(script.read_text(encoding="utf-8"))
    assert n <= MAX_SCRIPT_LINES, f"{script.name}: {n} lines of code (at most {MAX_SCRIPT_LINES}: move logic to a step)"


def test_no_modality_tests_outside_the_modality_objects():
    files = [*sorted((ROOT / "scripts").glob("*.py")), ROOT / "src/crosstrace/steps.py",
             ROOT / "src/crosstrace/modality.py",
             *[p for p in sorted((ROOT / "workflow/rules").glob("*.smk")) if p.name != "common.smk"]]
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if MODALITY_TEST.search(line)]
    assert not found, "modality tests outside the modality objects and common.smk's input functions:\n" + "\n".join(found)
