"""The paper-like DAG on tiny fixtures: the shared finished run (conftest ``demo_run``) traces the tiny SpiritLM
T→T and S→T (speech by piper, checked by Whisper base) beside a tiny HF Llama (T→T), then `snakemake --report`."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from crosstrace.report.similarity import SIMILARITY_COLUMNS
from crosstrace.vocabulary import CATEGORIES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(demo_run):
    return demo_run / "results"


def test_aie_for_all_three_runs(run):
    for model, mod in [("spirit", "t2t"), ("spirit", "s2t"), ("tiny", "t2t")]:
        aie = pd.read_parquet(run / model / mod / "aie.parquet")
        assert len(aie) and set(aie["modality"]) == {mod}, (model, mod)
        assert (run / model / mod / "figures" / "aie_hidden.png").exists()


def test_s2t_rows_are_text_tokens_and_six_categories(run):
    """S→T traces are aggregated by text tokens: ie_per_prompt has one row per text token plus [Text], the
    subject in text-token indices, and the AIE rows are the six text-token categories (as T→T)."""
    known = pd.read_parquet(run / "spirit" / "s2t" / "known.parquet")
    assert len(known) == 6  # every validated record, none dropped
    q = known[known["status"] != "ok"]
    assert (q["stage"] == "speech").all() and q["reason"].str.startswith("known_id=").all()
    ok = known[known["status"] == "ok"].set_index("known_id")
    ie = pd.read_parquet(run / "spirit" / "s2t" / "ie_per_prompt.parquet")
    assert ie["known_id"].nunique() >= 1
    t2t_ie = pd.read_parquet(run / "spirit" / "t2t" / "ie_per_prompt.parquet")
    for kid, g in ie.groupby("known_id"):
        r = ok.loc[kid].to_dict()  # integer columns are floats here: quarantined rows hold None
        for c in ("subject_token_start", "subject_token_end", "unit_offset", "n_units", "lead_silence_units",
                  "trail_silence_units", "pause_units", "pos_start", "pos_end"):
            r[c] = int(r[c])
        assert (r["token_rows"], r["pause_owner"]) == ("spoken", "none")  # the paper's rows and pauses by default
        toks = g.drop_duplicates("token_index").sort_values("token_index")
        assert toks["token"].tolist() == [*r["text_tokens"], "[Text]"] and (g["token_rows"] == "spoken").all()
        assert (g["subject_start"] == r["subject_token_start"]).all() and (g["subject_end"] == r["subject_token_end"]).all()
        # every text token owns its own units: ordered, disjoint LM ranges inside [unit_offset, unit_offset + n_units);
        # the units between them are the pause units, which no token owns
        spans = list(zip(toks["pos_start"], toks["pos_end"], strict=True))[:-1]
        assert spans[0][0] == r["unit_offset"] + r["lead_silence_units"]
        assert all(a < b for a, b in spans) and all(b <= c for (_, b), (c, _) in zip(spans, spans[1:], strict=False))
        assert sum(c - b for (_, b), (c, _) in zip(spans, spans[1:], strict=False)) == r["pause_units"]
        assert spans[-1][1] == r["unit_offset"] + r["n_units"] - r["trail_silence_units"]
        assert (r["pos_start"], r["pos_end"]) == (spans[r["subject_token_start"]][0], spans[r["subject_token_end"] - 1][1])
        # the spoken text tokens; these prompts have no digit, symbol or punctuation, so they are the T→T prompt's
        # text tokens after [BOS, ▁, [Text]]
        assert "".join(r["text_tokens"]).replace("▁", " ") == r["spoken_text"] == r["prompt"]
        if kid in set(t2t_ie["known_id"]):
            assert t2t_ie[t2t_ie["known_id"] == kid]["n_tokens"].iloc[0] == 3 + len(r["text_tokens"])
    aie = pd.read_parquet(run / "spirit" / "s2t" / "aie.parquet")
    assert set(aie["category"]) <= set(CATEGORIES) and {"first_subject", "last_subject", "last"} <= set(aie["category"])
    summary = pd.read_json(run / "spirit" / "s2t" / "summary.json", typ="series")
    assert summary["units_in_prompts"] > 0 and summary["lead_silence_units"] >= 0
    assert summary["pause_units"] == int(ok.loc[list(ie["known_id"].unique()), "pause_units"].sum())
    assert (summary["token_rows"], summary["pause_owner"]) == ("spoken", "none")
    noise = pd.read_json(run / "spirit" / "s2t" / "noise.json", typ="series")
    assert noise["std"] > 0 and noise["n_tokens"] == int(ok["subject_units"].sum())  # pause units excluded
    units = pd.read_parquet(run / "spirit" / "s2t" / "units" / "0.parquet")
    assert (units["status"] == "ok").all() and (units["n_frames"] == units["run_lengths"].map(sum)).all()
    # the per-unit view: the raw unit positions, each with the text token that owns it
    view = pd.read_parquet(run / "spirit" / "s2t" / "ie_per_unit.parquet")
    one = view[(view["kind"] == "hidden") & (view["layer"] == 0)]
    assert set(one["region"]) <= {"marker", "silence", "pause", "token", "last"} and (one["region"] == "token").sum() > 0
    assert set(view["known_id"]) == set(ie["known_id"])
    png = run / "spirit" / "s2t" / "figures" / "ie_per_unit_hidden.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_similarity_table_figure_and_report(run):
    """SpiritLM (t2t + s2t) gets the text-vs-speech similarity; the t2t-only tiny Llama does not."""
    sim = pd.read_parquet(run / "spirit" / "similarity" / "similarity.parquet")
    t2t = pd.read_parquet(run / "spirit" / "t2t" / "known.parquet")
    s2t = pd.read_parquet(run / "spirit" / "s2t" / "known.parquet")
    both = set(t2t["known_id"]) & set(s2t.loc[s2t["status"] == "ok", "known_id"])  # require_known: false
    assert len(both) == 2  # 6 records, 2 spoken
    n_layers = pd.read_parquet(run / "spirit" / "t2t" / "ie_per_prompt.parquet")["layer"].nunique()
    assert list(sim.columns) == ["model", "token_rows", *SIMILARITY_COLUMNS] and (sim["token_rows"] == "spoken").all()
    assert len(sim) == n_layers * 2 * 2 and not sim.duplicated(["layer", "position", "metric"]).any()
    assert set(sim["position"]) == {"subject", "last"} and set(sim["metric"]) == {"cos", "l2"}
    assert set(sim["layer"]) == set(range(n_layers)) and (sim["model"] == "spirit").all()
    assert (sim["n"] == len(both)).all()
    tol, cos = 1e-9, sim["metric"] == "cos"
    for cols in (["mean", "ci_low", "ci_high"], ["baseline_mean", "baseline_ci_low", "baseline_ci_high"]):
        mid, lo, hi = (sim[c].to_numpy(float) for c in cols)
        assert np.isfinite(mid).all() and (lo <= mid + tol).all() and (mid <= hi + tol).all()
        assert (np.abs(sim.loc[cos, cols].to_numpy(float)) <= 1 + tol).all()
        assert (sim.loc[~cos, cols].to_numpy(float) >= 0).all()
    np.testing.assert_allclose(sim["diff_mean"], sim["mean"] - sim["baseline_mean"], atol=1e-12)
    d = run / "spirit" / "similarity"
    assert (d / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (d / "similarity.png").stat().st_size > 5000
    assert "last subject token" in (d / "similarity.html").read_text()
    assert not (run / "tiny" / "similarity").exists()
    raw = (run.parent / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), raw.replace("\\n", " "))
    assert "similarity.png" in raw and "similarity.html" in raw
    assert "Text vs speech representations of <strong>spirit</strong>" in text


def test_every_speech_rule_keeps_or_quarantines_its_input(run):
    """input = kept + quarantined for the rules that read records on the speech side (the text side:
    tests/test_ops_accounting.py). One speech shard here (speech.shard_size 2, 2 prompts selected)."""
    records = pd.read_parquet(run / "data" / "records.parquet")["known_id"].tolist()
    selected = pd.read_parquet(run / "speech" / "records.parquet")["known_id"].tolist()
    assert selected == records[:2], "speech_select: the first speech.max_prompts records"
    manifest = pd.read_parquet(run / "speech" / "manifest" / "0.parquet")
    qc = pd.read_parquet(run / "speech" / "qc" / "0.parquet")
    align = pd.read_parquet(run / "speech" / "align" / "0.parquet")
    units = pd.read_parquet(run / "spirit" / "s2t" / "units" / "0.parquet")
    assert sorted(manifest["known_id"]) == sorted(selected)  # synthesize: ok or quarantined (status), one row each
    assert set(manifest["status"]) <= {"ok", "quarantined"}
    assert sorted(qc["known_id"]) == sorted(selected)  # speech_qc: passes or fails with a reason
    assert (qc["passes_qc"] | (qc["reason"].fillna("") != "")).all()
    for aligner, g in align.groupby("aligner"):  # align: one row per prompt and aligner
        assert sorted(g["known_id"]) == sorted(selected), aligner
    assert sorted(units["known_id"]) == sorted(manifest["known_id"])  # speech_units: one row per clip
    known = pd.read_parquet(run / "spirit" / "s2t" / "known.parquet")
    assert sorted(known["known_id"]) == sorted(records)  # filter_known s2t: every record, ok or quarantined
    assert (known.loc[known["status"] != "ok", "reason"] != "").all()
    ie = pd.read_parquet(run / "spirit" / "s2t" / "ie_per_prompt.parquet")
    q = pd.read_parquet(run / "spirit" / "s2t" / "quarantine.parquet")
    traceable = known.loc[known["status"] == "ok", "known_id"].tolist()[:4]  # require_known false, trace.max_prompts 4
    assert sorted(ie["known_id"].unique().tolist() + q["known_id"].tolist()) == sorted(traceable)
