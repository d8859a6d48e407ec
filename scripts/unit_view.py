"""S→T IE per speech unit with the owning text token (ie_per_unit.parquet) and its figure per kind."""

from pathlib import Path

import pandas as pd

from crosstrace.answers import answer_label
from crosstrace.io import setup_logging, write_parquet
from crosstrace.report.figures import save, unit_figure
from crosstrace.speech.prompts import token_maps
from crosstrace.trace.tables import merge_shards, unit_view

log = setup_logging(snakemake.log[0])
model = snakemake.wildcards.model
ie, _ = merge_shards(snakemake.input.shards)
mode = str(ie["answer_mode"].iloc[0]) if len(ie) else None  # trace.answer, one per run (merge_shards checks)
view = unit_view(ie, token_maps(pd.read_parquet(snakemake.input.known)))
write_parquet(view, snakemake.output.ie)
log.info("%s: %d prompts, %d rows; regions %s", model, view["known_id"].nunique(), len(view),
         view.drop_duplicates(["known_id", "token_index"])["region"].value_counts().to_dict())
for kind in sorted({Path(f).stem.removeprefix("ie_per_unit_") for f in snakemake.output.figures}):
    paths = [f for f in snakemake.output.figures if Path(f).stem == f"ie_per_unit_{kind}"]
    save(unit_figure(view, kind, f"{model} S→T ({answer_label(mode)})", max_prompts=snakemake.params.max_prompts), paths)
    log.info("wrote %s", paths)
