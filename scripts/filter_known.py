"""Known-t2t: label every record exact / partial / none by greedy decoding (nothing dropped)."""

import pandas as pd
import torch

from crosstrace.data import KnownRecord
from crosstrace.filtering import filter_known
from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.models.loading import load_model

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
m = read_json(snakemake.input.model)
lm = load_model(m["resolved"], m.get("device", "cpu"), m.get("dtype", "float32"), name=m["name"])
df = pd.read_parquet(snakemake.input.records)
records = [KnownRecord(**r) for r in df.to_dict("records")]
table = filter_known(lm.model, lm.tokenizer, records, lambda r: lm.tokenizer(r.prompt)["input_ids"],
                     snakemake.params.max_new_tokens, snakemake.params.batch_size)
counts = table["label"].value_counts().to_dict()
log.info("%s %s: %d of %d known (exact %d, partial %d)", m["name"], snakemake.wildcards.modality,
         int(table["known"].sum()), len(table), counts.get("exact", 0), counts.get("partial", 0))
write_parquet(table, snakemake.output.table)
