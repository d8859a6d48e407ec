"""Known-t2t / Known-s2t: label every record exact / partial / none by greedy decoding (nothing dropped).

S→T: the prompt table (speech, QC, alignment, units, span) is built first; quarantined rows keep their
reason and are not decoded."""

import pandas as pd
import torch

from crosstrace.data import KnownRecord
from crosstrace.filtering import FILTER_COLUMNS, filter_known
from crosstrace.io import read_json, setup_logging, write_parquet
from crosstrace.modality import bad_words, encode_t2t, load_any, s2t_row_ids, s2t_table

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, inp, modality = snakemake.params, snakemake.input, snakemake.wildcards.modality
m = read_json(inp.model)
lm = load_any(m)
stray = bool(m.get("stray_space", False))
df = pd.read_parquet(inp.records)
cols = ["known_id", "subject", "attribute", "prompt"]
if modality == "s2t":
    qc = pd.concat([pd.read_parquet(f) for f in inp.qc], ignore_index=True) if inp.qc else None
    table = s2t_table(df, pd.read_parquet(inp.speech_records),
                      pd.concat([pd.read_parquet(f) for f in inp.manifest], ignore_index=True), qc,
                      pd.read_parquet(inp.alignment), pd.concat([pd.read_parquet(f) for f in inp.units], ignore_index=True),
                      p.aligner, stray)
    ok = table[table["status"] == "ok"]
    by_id = {int(r["known_id"]): r for r in ok.to_dict("records")}
    records = [KnownRecord(**{c: r[c] for c in cols}) for r in ok.to_dict("records")]
    if records:
        labels = filter_known(lm.model, lm.tokenizer, records, lambda r: s2t_row_ids(by_id[r.known_id], stray),
                              p.max_new_tokens, p.batch_size, bad_words_ids=bad_words(m, lm.model))
    else:
        labels = pd.DataFrame(columns=FILTER_COLUMNS)
    lab = labels.set_index("known_id")
    out = table.copy()
    for c in ["n_tokens", "continuation", "first_token_id", "first_token", "label", "known"]:
        out[c] = out["known_id"].map(lab[c])
    is_ok = out["status"] == "ok"
    out.loc[is_ok, "reason"] = out.loc[is_ok, "known_id"].map(lab["reason"])
    # quarantined rows are not decoded and not known; their reason names the stage
    out["label"] = out["label"].fillna("quarantined")
    out["known"] = out["known"].fillna(False).astype(bool)
    out = out[FILTER_COLUMNS + [c for c in out.columns if c not in FILTER_COLUMNS]]
    log.info("%s s2t: %d records, %d with a traceable S→T prompt, %d quarantined by stage %s", m["name"], len(out),
             len(ok), len(out) - len(ok), table.loc[table["status"] != "ok", "stage"].value_counts().to_dict())
    table = out
else:
    records = [KnownRecord(**r) for r in df[cols].to_dict("records")]
    table = filter_known(lm.model, lm.tokenizer, records, lambda r: encode_t2t(m, lm.tokenizer, r.prompt, None).input_ids,
                         p.max_new_tokens, p.batch_size, bad_words_ids=bad_words(m, lm.model))
counts = table["label"].value_counts().to_dict()
log.info("%s %s: %d of %d known (exact %d, partial %d)", m["name"], modality,
         int(table["known"].sum()), len(table), counts.get("exact", 0), counts.get("partial", 0))
write_parquet(table, snakemake.output.table)
