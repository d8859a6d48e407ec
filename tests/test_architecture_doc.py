"""docs/architecture.md's layer table says what the code does: every module of the package is in it once, at the
layer that tests/test_import_graph.py gives it (and that the import graph is checked against)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT
from test_import_graph import LAYERS, MODULES, layer

DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\s{2}(\d)\s{2}(\S[^·]*?)\s{2,}(.+)$")


def doc_layers(text: str) -> dict[str, int]:
    """Module → layer, read from the diagram's rows ``  N  heading   name (note) · name · …``. A heading that
    is a package (report, models, trace, speech) lists that package's modules, any other heading top-level
    modules."""
    block = text.split("src/crosstrace/ (layers", 1)[1].split("```", 1)[0]
    out: dict[str, int] = {}
    for line in block.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        number, heading, names = int(m.group(1)), m.group(2).strip(), m.group(3)
        package = f"crosstrace.{heading}"
        prefix = package if (ROOT / "src" / "crosstrace" / heading).is_dir() else "crosstrace"
        if prefix != "crosstrace":
            out[package] = number
        for name in re.sub(r"\([^)]*\)", "", names).split("·"):
            module = f"{prefix}.{name.strip()}"
            if module in out:
                raise AssertionError(f"{module} is listed twice in docs/architecture.md")
            out[module] = number
    return out


@pytest.fixture(scope="module")
def documented():
    return doc_layers(DOC.read_text(encoding="utf-8"))


def test_the_table_is_read():
    rows = doc_layers("src/crosstrace/ (layers\n\n  2  report         stats · figures (x · y)   (tables in)\n"
                      "  1  foundations    config (ModelSpec, check) · spans\n```")
    assert rows == {"crosstrace.report": 2, "crosstrace.report.stats": 2, "crosstrace.report.figures": 2,
                    "crosstrace.config": 1, "crosstrace.spans": 1}


def test_every_documented_module_exists_at_its_layer(documented):
    assert len(documented) > 40
    known = set(MODULES) | set(LAYERS)  # LAYERS also places the namespace package crosstrace.models
    wrong = {m: (n, layer(m) if m in known else "no such module") for m, n in documented.items()
             if m not in known or layer(m) != n}
    assert not wrong, f"docs/architecture.md layer (doc, code): {wrong}"


def test_every_module_is_documented(documented):
    missing = sorted(m for m in MODULES if m != "crosstrace" and m not in documented)
    assert not missing, f"modules missing from docs/architecture.md's layer table: {missing}"


def test_the_doc_and_the_import_test_place_the_same_top_level_modules(documented):
    assert {m for m in LAYERS if m != "crosstrace"} <= set(documented)
