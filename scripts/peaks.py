"""Per run and kind: the (category, layer) cell with the largest AIE, with its CI."""


from crosstrace.io import read_parquets, setup_logging, write_parquet
from crosstrace.report import html
from crosstrace.report.stats import peak_summary

log = setup_logging(snakemake.log[0])
aie = read_parquets(snakemake.input.aie)
peaks = peak_summary(aie)
write_parquet(peaks, snakemake.output.table)
sections = [("", html.table(peaks)),
            ("", html.note("peak_aie: largest mean IE over the cells of a kind; n: prompts with that category; "
                           "ci_low / ci_high: percentile bootstrap over prompts."))]
with open(snakemake.output.html, "w", encoding="utf-8") as f:
    f.write(html.page("Peak AIE per run and kind", sections))
log.info("peaks:\n%s", peaks.to_string())
