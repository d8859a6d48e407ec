"""docs/example.ipynb runs from top to bottom in a fresh kernel and shows what its text promises."""

from __future__ import annotations

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_example_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(ROOT / "docs" / "example.ipynb", as_version=4)
    for cell in nb.cells:  # run what the reader reads, not the stored outputs
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "PromptTrace(free prompt: 'The capital of Roman Republic is'" in text
    assert "answer o = ' Rome'" in text  # the offline model knows this fact
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # res.plot() shown once, inline
    assert "first_subject" in text and "p_restored" in text  # res.categories(), res.to_frame()
