"""Log-AIE heatmaps per kind (PNG/PDF), titled with model, modality, n prompts and noise."""

from pathlib import Path

import pandas as pd

from crosstrace.io import read_json, setup_logging
from crosstrace.report.figures import heatmap_figure, save

log = setup_logging(snakemake.log[0])
p = snakemake.params
aie = pd.read_parquet(snakemake.input.aie)
meta = read_json(snakemake.input.summary)
for kind in meta["kinds"]:
    paths = [o for o in snakemake.output if Path(o).stem == f"aie_{kind}"]
    save(heatmap_figure(aie, kind, meta, mask_ci_zero=p.mask_ci_zero, ci_panel=p.ci_panel), paths)
    log.info("wrote %s", paths)
