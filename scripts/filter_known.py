"""Known-t2t / Known-s2t: label every record exact / partial / none by greedy decoding (nothing dropped).

S→T: the prompt table (speech, QC, alignment, units, span) is built first; quarantined rows keep their
reason and are not decoded."""

import pandas as pd
import torch

from crosstrace.data import no_records_left
from crosstrace.io import read_json, read_parquets, setup_logging, write_parquet
from crosstrace.modality import label_known_s2t, label_known_t2t, load_any, s2t_table

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, inp, modality = snakemake.params, snakemake.input, snakemake.wildcards.modality
df = pd.read_parquet(inp.records)
if df.empty:
    raise no_records_left(inp.validation)
# Speed only, hence read from the config and not a rule param (a param change would rerun the filter):
# batch shape can still flip a near-tie greedy decode, so keep it fixed within a study.
batch_size = snakemake.config["filter"]["batch_size"]
log.info("greedy decoding: %d new tokens, batches of %d prompts", p.max_new_tokens, batch_size)
m = read_json(inp.model)
lm = load_any(m)
if modality == "s2t":
    prompts = s2t_table(df, pd.read_parquet(inp.speech_records), read_parquets(inp.manifest), read_parquets(inp.qc),
                        pd.read_parquet(inp.alignment), read_parquets(inp.units), p.aligner, m, lm.tokenizer)
    table = label_known_s2t(lm.model, lm.tokenizer, m, prompts, p.max_new_tokens, batch_size)
    bad = table["status"] != "ok"
    log.info("%s s2t: %d records, %d with a traceable S→T prompt, %d quarantined by stage %s", m["name"],
             len(table), int((~bad).sum()), int(bad.sum()), table.loc[bad, "stage"].value_counts().to_dict())
else:
    table = label_known_t2t(lm.model, lm.tokenizer, m, df, p.max_new_tokens, batch_size)
counts = table["label"].value_counts().to_dict()
log.info("%s %s: %d of %d known (exact %d, partial %d)", m["name"], modality,
         int(table["known"].sum()), len(table), counts.get("exact", 0), counts.get("partial", 0))
write_parquet(table, snakemake.output.table)
