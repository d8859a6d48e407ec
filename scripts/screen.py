"""AtP scores per prompt → which prompts get an exact trace (trace.screen), each with its reason."""

import pandas as pd

from crosstrace.approximation import ScreenRule, prompt_scores, screen
from crosstrace.io import setup_logging, write_parquet

log = setup_logging(snakemake.log[0])
p = snakemake.params
table = screen(prompt_scores(pd.read_parquet(snakemake.input.ie)), ScreenRule(p.top_n, p.max_gap, p.rank_by))
write_parquet(table, snakemake.output.table)
log.info("screen: %d of %d prompts selected for exact tracing (%d by rank, %d where AtP is uncertain)",
         int(table["selected"].sum()), len(table), int(table["top"].sum()), int(table["uncertain"].sum()))
