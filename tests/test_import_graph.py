"""The package's imports run one way: no module imports from a layer above its own, and there are no cycles.

The graph is read from the source (every ``import``/``from … import`` naming ``crosstrace``, including
imports inside functions), so a new module or a new import is checked without editing this file. Only the
layer of each top-level name is stated here; a module the table does not place fails the test, so the
layering is decided when a module is added, not discovered later. docs/architecture.md draws the same
layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "crosstrace"

#: Lower numbers sit lower: a module may import from its own layer or any layer below.
LAYERS = {
    "crosstrace": 0,  # the package root: version, thread policy and a GPU job's device slot
    "crosstrace.vocabulary": 0,  # kinds, categories, modalities, labels
    "crosstrace.answers": 0,  # what P[o] reads (trace.answer) and its labels
    "crosstrace.devices": 0,  # GPU slots of a local run's jobs (the package root claims one, before torch)
    "crosstrace.spans": 1,  # subject spans and token categories
    "crosstrace.grids": 1,  # the long IE table ↔ per-prompt grids
    "crosstrace.audio": 1,  # 16 kHz resampling, WAV I/O
    "crosstrace.io": 1,  # atomic writes, typed tables, the per-shard loop
    "crosstrace.shards": 1,  # shard blocks of known_ids (trace and speech alike)
    "crosstrace.resume": 1,  # a shard's checkpoint of finished prompts
    "crosstrace.data": 1,  # the Known dataset and its validation
    "crosstrace.sources": 1,  # the researcher's own fact files
    "crosstrace.filtering": 1,  # Known-t2t / Known-s2t labels and the traced selection
    "crosstrace.offline": 1,  # which models are local
    "crosstrace.config": 1,  # ModelSpec and the cross-field config check
    "crosstrace.report": 2,  # tables → statistics, figures, HTML; no model code
    "crosstrace.models": 3,  # loading, adapters (uniform hook names), SpiritLM, HuBERT
    "crosstrace.trace": 4,  # clean / corrupted / restored runs, IE tables
    "crosstrace.speech": 5,  # TTS, ASR QC, alignment, units
    "crosstrace.modality": 6,  # T→T and S→T prompts for a model entry
    "crosstrace.representations": 6,  # hidden states of paired T→T / S→T prompts
    "crosstrace.cli": 7,  # entry points
    "crosstrace.steps": 7,
    "crosstrace.bench": 7,
    "crosstrace.bench_paper": 7,
    "crosstrace.approximation": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """The crosstrace modules a file imports (``from pkg import name`` counts ``pkg.name`` when it is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "crosstrace"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "crosstrace":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: imported_modules(p) - {m} for m, p in MODULES.items()}


def layer(module: str) -> int:
    """A module's own entry, else its package's (``crosstrace.trace.fast`` → ``crosstrace.trace``). The root
    package places only itself, so a new top-level module fails until it is given a layer."""
    name = module
    while name not in LAYERS or (name == "crosstrace" and module != "crosstrace"):
        if name.count(".") < 2:
            raise KeyError(module)
        name = name.rpartition(".")[0]
    return LAYERS[name]


def test_every_module_has_a_layer():
    unplaced = []
    for m in MODULES:
        try:
            layer(m)
        except KeyError:
            unplaced.append(m)
    assert not unplaced, f"modules without a layer in LAYERS (tests/test_import_graph.py): {unplaced}"


def test_the_graph_is_read_from_the_code():
    # a check of the checker: known edges are found, including imports inside functions
    assert "crosstrace.vocabulary" in GRAPH["crosstrace.spans"] or "crosstrace.vocabulary" in GRAPH["crosstrace.report.figures"]
    assert "crosstrace.models.adapter" in GRAPH["crosstrace.trace.fast"]
    assert len(MODULES) > 30


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    up = sorted(d for d in GRAPH[module] if d in MODULES and layer(d) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports from higher layers: " + ", ".join(
        f"{d} (layer {layer(d)})" for d in up
    )


def test_no_cycles():
    # a package imports its own submodules (``trace/__init__`` re-exports), so the package node is left out
    # of its children's edges: ``trace.api`` importing ``trace`` would be a cycle, and is reported.
    color, stack, cycles = {}, [], []

    def visit(m):
        color[m] = "grey"
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if d not in MODULES:
                continue
            if color.get(d) == "grey":
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in color:
                visit(d)
        stack.pop()
        color[m] = "black"

    for m in sorted(MODULES):
        if m not in color:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)
