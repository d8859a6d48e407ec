"""Paired comparison of two runs: per-cell permutation test + BH, peaks and quotable peak ratios."""

from crosstrace.io import setup_logging
from crosstrace.report.compare import write_comparison

log = setup_logging(snakemake.log[0])
i, out, p = snakemake.input, snakemake.output, snakemake.params
write_comparison(i.cat_a, i.cat_b, i.aie_a, i.aie_b, p.pair, p.kinds, p.stats,
                 out.table, out.summary, out.figures, out.html, log)
log.info("wrote %s", list(out))
