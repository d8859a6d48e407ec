"""Cross-modal representation similarity of one SpiritLM model: T→T vs S→T block outputs per layer."""

import torch

from crosstrace.io import read_json, setup_logging
from crosstrace.representations import similarity_run

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
i, out, p = snakemake.input, snakemake.output, snakemake.params
similarity_run(read_json(i.model), i.t2t, i.s2t, p.require_known, p.stats, out.table, out.html, out.figures, log)
log.info("wrote %s", list(out))
