"""Per run and kind: the (category, layer) cell with the largest AIE, with its CI."""


from crosstrace.io import read_parquets, setup_logging, write_parquet
from crosstrace.report import html
from crosstrace.report.stats import peak_summary

log = setup_logging(snakemake.log[0])
aie = read_parquets(snakemake.input.aie)
peaks = peak_summary(aie)
write_parquet(peaks, snakemake.output.table)
sections = [("", html.table(peaks)),
            ("", html.note("peak_aie: largest AIE over the cells of a kind (category_mean: how the category's "
                           "tokens were averaged, stats.category_mean); n: prompts with that category, n_positions: "
                           "their tokens; ci_low / ci_high: percentile bootstrap over prompts."))]
with open(snakemake.output.html, "w", encoding="utf-8") as f:
    f.write(html.page("Peak AIE per run and kind", sections))
log.info("peaks:\n%s", peaks.to_string())
