"""Aggregates of the speech tables: corpus WER summary and the WER histogram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .asr import corpus_wer


def wer_summary(qc: pd.DataFrame, records: pd.DataFrame, max_wer: float) -> dict:
    """Corpus WER (errors over reference words) of the transcribed prompts, mean/median per-prompt
    WER and the QC pass rate. ``qc`` rows without a transcript (quarantined audio) count as not
    transcribed."""
    done = qc[qc["wer"].notna()].merge(records[["known_id", "prompt"]], on="known_id")
    n = len(qc)
    return {
        "n_prompts": int(n),
        "n_transcribed": int(len(done)),
        "n_pass": int(qc["passes_qc"].sum()),
        "pass_rate": float(qc["passes_qc"].mean()) if n else math.nan,
        "max_wer": max_wer,
        "corpus_wer": corpus_wer(done["prompt"].tolist(), done["transcript"].tolist()) if len(done) else math.nan,
        "mean_wer": float(done["wer"].mean()) if len(done) else math.nan,
        "median_wer": float(done["wer"].median()) if len(done) else math.nan,
    }


def plot_wer_histogram(wers, path: str | Path, max_wer: float | None = None, title: str = "",
                       audio: str = "synthetic") -> None:
    """Histogram of per-prompt WER (bins of 0.05 from 0 to max(1, max WER)) with the QC threshold;
    ``audio`` (synthetic, recorded) goes into the default title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray([x for x in wers if x == x], dtype=float)
    top = max(1.0, float(w.max()) if w.size else 1.0)
    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    ax.hist(w, bins=np.arange(0, top + 0.05, 0.05), color="#4C72B0", edgecolor="white")
    if max_wer is not None:
        ax.axvline(max_wer, color="#C44E52", ls="--", lw=1, label=f"QC threshold {max_wer:g}")
        ax.legend(frameon=False)
    ax.set_xlabel("per-prompt WER")
    ax.set_ylabel("prompts")
    ax.set_title(title or f"Whisper WER on {audio} prompts (n={w.size}, mean {w.mean() if w.size else float('nan'):.3f})", fontsize=9)
    ax.yaxis.get_major_locator().set_params(integer=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
