"""Per traced prompt: a ROME-style figure (every prompt, every format), the traced-prompts table, and the
report page with the table and a gallery of the first figures.gallery figures."""

from pathlib import Path

import pandas as pd

from crosstrace.filtering import select_for_trace, unexpected_answers
from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.report import prompts
from crosstrace.report.figures import save

log = setup_logging(snakemake.log[0])
p, out, w = snakemake.params, snakemake.output, snakemake.wildcards
ie = pd.read_parquet(snakemake.input.ie)
known = pd.read_parquet(snakemake.input.known)
summary = read_json(snakemake.input.summary)
table = prompts.traced_table(ie, known, figure_dir=Path(out.figures).name, ext=p.formats[0])
Path(out.figures).mkdir(parents=True, exist_ok=True)
gallery = {}
for known_id, fig in prompts.prompt_figures(ie, table, w.model, w.modality, window=summary.get("window")):
    if len(gallery) < p.gallery:
        gallery[known_id] = prompts.png_data_uri(fig)
    save(fig, [Path(out.figures) / f"{known_id}.{ext}" for ext in p.formats])
log.info("%d prompt figure(s) in %s; %d in the gallery", len(table), out.figures, len(gallery))
skipped = None
if p.expect_answer == "skip":
    skipped = unexpected_answers(select_for_trace(known, None, require_known=p.require_known))
write_parquet(table, out.table)
Path(out.html).write_text(prompts.page(table, summary, gallery, p.gallery, p.expect_answer, skipped), encoding="utf-8")
log.info("wrote %s and %s", out.table, out.html)
