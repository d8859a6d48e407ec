"""Five facts with prompts of about 220 tokens, the subject first, for the tests that stop a trace shard in the
middle of its third prompt (tests/test_shard_resume*.py, tests/test_cluster_slurm.py). The fast engine restores
every token from the subject on, so each prompt takes about 0.3-0.6 s on the tiny test model (several times
the tests' polling interval; more with a smaller trace.max_rows): long enough to signal the job while it
traces the third one. The tests wait for the checkpoint's second entry, never for a fixed time."""

from __future__ import annotations

import csv
from pathlib import Path

FILLER = "city of Paris is the capital of France and it is known for its museums, " * 7
SUBJECTS = ["Danielle Darrieux", "Edwin of Northumbria", "Toko Yasuda", "Autonomous University of Madrid",
            "Thomas Joannes Stieltjes"]
PROMPTS = [f"{s}, whose home {FILLER}speaks the language of" for s in SUBJECTS]


def write_facts_csv(path: Path) -> Path:
    """The five facts as an own-facts CSV (data.source): prompt, subject, attribute."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "subject", "attribute"])
        w.writerows([p, s, "French"] for p, s in zip(PROMPTS, SUBJECTS, strict=True))
    return path


def checkpoint_entries(shards: Path, shard: int = 0) -> list[str]:
    """The finished prompts in a shard's checkpoint (crosstrace.resume), by file name."""
    d = shards / f".{shard}.checkpoint"
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []
