"""Prompt lengths of the Known facts at paper scale: resources/paper_scale/lengths.csv.

    python resources/paper_scale/make_lengths.py [--sample N] [--seed 0]

Columns, one row per Known record (1209):
- ``llama2_tokens``, ``subject_start``, ``subject_end``: the prompt under the Llama-2 tokenizer, BOS
  included (llama2_counts.json, written by llama2_counts.mjs beside this file, which says how).
- ``chars``, ``words``: of the prompt text.
- ``piper_s``: seconds of the prompt spoken by the offline TTS (piper, en_US-joe-medium, deterministic),
  measured on a seeded random sample of ``--sample`` records (empty elsewhere; all with --sample 0).

The paper-scale benchmark (``python -m crosstrace.bench --paper-scale``) reads this table: T→T lengths
are ``llama2_tokens`` (+2 for SpiritLM's stray ``▁`` and ``[Text]`` marker), S→T lengths are
25 × ``piper_s`` speech units + 4 (BOS, ``▁``, ``[Speech]``, ``[Text]``), an upper bound since SpiritLM
deduplicates repeated units.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
KNOWN = HERE.parent / "known_1000.json"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=300, help="records to synthesise (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "lengths.csv")
    a = ap.parse_args(argv)
    known = pd.DataFrame(json.loads(KNOWN.read_text()))
    counts = pd.DataFrame(json.loads((HERE / "llama2_counts.json").read_text()))
    t = known[["known_id", "prompt"]].merge(counts, on="known_id", validate="one_to_one")
    t["chars"] = t["prompt"].str.len()
    t["words"] = t["prompt"].str.split().str.len()
    ids = t["known_id"] if a.sample == 0 else t["known_id"].sample(a.sample, random_state=a.seed)
    from tqdm import tqdm

    from crosstrace.speech.tts import get_backend

    tts = get_backend("piper")
    seconds = {}
    for kid in tqdm(sorted(ids), desc="piper", unit="prompt"):
        seconds[kid] = round(tts.synthesize(t.loc[t["known_id"] == kid, "prompt"].iloc[0]).duration_s, 4)
    t["piper_s"] = t["known_id"].map(seconds)
    t = t.drop(columns="prompt")
    t.to_csv(a.out, index=False)
    s = t["piper_s"].dropna()
    print(f"{len(s)} prompts: piper seconds mean {s.mean():.3f}, quantiles "
          f"{np.round(s.quantile([0, 0.1, 0.5, 0.9, 1]).to_numpy(), 3).tolist()}")


if __name__ == "__main__":
    main()
