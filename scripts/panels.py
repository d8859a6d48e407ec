"""All runs in one figure: rows = (model, modality), columns = kinds, one colour scale per column."""


from crosstrace.io import read_json, read_parquets, setup_logging
from crosstrace.report.figures import panel_figure, panel_title, save

log = setup_logging(snakemake.log[0])
p = snakemake.params
aie = read_parquets(snakemake.input.aie)
runs = [tuple(r) for r in p.runs]
meta = {tuple(r): read_json(f) for r, f in zip(runs, snakemake.input.summaries, strict=True)}
fig = panel_figure(aie, runs, p.kinds, shared_scale=True, meta=meta, mask_ci_zero=p.mask_ci_zero)
fig.suptitle(panel_title(meta))
save(fig, list(snakemake.output))
log.info("wrote %s", list(snakemake.output))
