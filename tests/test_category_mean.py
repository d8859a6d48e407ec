"""stats.category_mean: ROME's pooled category averages (the default) and the per-prompt mean, number for number.

Two hand-made prompts, one kind, two layers. Prompt 1 (P_corrupted 0.1): 7 tokens, subject [0, 3): one middle
subject token (1) and two further tokens (4, 5). Prompt 2 (P_corrupted 0.3): 8 tokens, subject [1, 6): three
middle subject tokens (2, 3, 4) and no further token (its first subsequent token 6 is followed by the last, 7).
The expected AIEs are worked out by hand below, following ROME's notebook (kmeng01/rome,
notebooks/average_causal_effects.ipynb, ``read_knowlege``), and that notebook's loop is also transcribed and run.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from crosstrace.report.stats import (
    _bootstrap,
    _pool,
    aie_table,
    paired_comparison,
    peak_ratio_ci,
    peak_summary,
)
from crosstrace.trace.tables import CATEGORY_COLUMNS, category_table

# P_restored[o] per position (rows) and layer (columns)
P1 = np.array([[0.2, 0.3], [0.5, 0.4], [0.6, 0.2], [0.3, 0.3], [0.2, 0.1], [0.4, 0.3], [0.7, 0.9]])
P2 = np.array([[0.3, 0.3], [0.4, 0.5], [0.6, 0.3], [0.9, 0.6], [0.3, 0.9], [0.8, 0.4], [0.5, 0.35], [0.9, 0.7]])
PROMPTS = {1: (P1, (0, 3), 0.1), 2: (P2, (1, 6), 0.3)}

# By hand. avg_ls = (0.1 + 0.3) / 2 = 0.2.
ROME = {
    # avg_fe: positions 0 (prompt 1) and 1 (prompt 2): layer 0 (0.2 + 0.4)/2 − 0.2, layer 1 (0.3 + 0.5)/2 − 0.2
    "first_subject": (0.1, 0.2),
    # avg_ee.add_all: 1 + 3 positions pooled. layer 0 (0.5 + 0.6 + 0.9 + 0.3)/4 = 0.575 − 0.2;
    # layer 1 (0.4 + 0.3 + 0.6 + 0.9)/4 = 0.55 − 0.2
    "middle_subject": (0.375, 0.35),
    "last_subject": (0.5, 0.1),  # (0.6 + 0.8)/2 − 0.2, (0.2 + 0.4)/2 − 0.2
    "first_subsequent": (0.2, 0.125),  # (0.3 + 0.5)/2 − 0.2, (0.3 + 0.35)/2 − 0.2
    # avg_ea.add_all: prompt 1's two positions only (prompt 2 adds an empty slice), but avg_ls still holds
    # both prompts: (0.2 + 0.4)/2 − 0.2, (0.1 + 0.3)/2 − 0.2
    "further": (0.1, 0.0),
    "last": (0.6, 0.6),  # (0.7 + 0.9)/2 − 0.2, (0.9 + 0.7)/2 − 0.2
}
PER_PROMPT = {
    **{c: ROME[c] for c in ("first_subject", "last_subject", "first_subsequent", "last")},  # one position each
    # prompt 1: 0.5 − 0.1 = 0.4, prompt 2: mean(0.6, 0.9, 0.3) − 0.3 = 0.3 → 0.35;
    # layer 1: 0.4 − 0.1 = 0.3 and mean(0.3, 0.6, 0.9) − 0.3 = 0.3 → 0.3
    "middle_subject": (0.35, 0.3),
    "further": (0.2, 0.1),  # prompt 1 only: mean(0.2, 0.4) − 0.1, mean(0.1, 0.3) − 0.1
}
N_POSITIONS = {"first_subject": 2, "middle_subject": 4, "last_subject": 2, "first_subsequent": 2, "further": 2,
               "last": 2}
N_PROMPTS = {**dict.fromkeys(N_POSITIONS, 2), "further": 1}


def ie_table(prompts=PROMPTS, model="m", modality="t2t", kinds=("mlp",)) -> pd.DataFrame:
    """The long IE table (as the merge step reads it) of hand-made prompts."""
    rows = []
    for kid, (pr, (b, e), pc) in prompts.items():
        for kind in kinds:
            for t in range(pr.shape[0]):
                for layer in range(pr.shape[1]):
                    rows.append({"model": model, "modality": modality, "known_id": kid, "kind": kind, "token_index": t,
                                 "layer": layer, "p_restored": pr[t, layer], "ie": pr[t, layer] - pc,
                                 "p_corrupted": pc, "subject_start": b, "subject_end": e, "n_tokens": pr.shape[0],
                                 "answer_mode": "top1"})
    return pd.DataFrame(rows)


def notebook_read_knowlege(prompts=PROMPTS) -> np.ndarray:
    """ROME's ``read_knowlege`` loop, transcribed (its ``Avg`` class and the six categories; ``scores`` are
    P_restored, ``low_score`` P_corrupted, ``subject_range`` the span): the 6 × layers AIE it plots."""

    class Avg:
        def __init__(self):
            self.d = []

        def add(self, v):
            self.d.append(v[None])

        def add_all(self, vv):
            self.d.append(vv)

        def avg(self):
            with warnings.catch_warnings():  # an empty category (no prompt has it): NaN, as numpy gives
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.concatenate(self.d).mean(axis=0)

    avg_fe, avg_ee, avg_le, avg_fa, avg_ea, avg_la, avg_ls = [Avg() for _ in range(7)]
    for scores, (first_e, first_a), low_score in prompts.values():
        last_e = first_a - 1
        last_a = len(scores) - 1
        avg_ls.add(np.array(low_score))
        avg_fe.add(scores[first_e])
        avg_ee.add_all(scores[first_e + 1 : last_e])
        avg_le.add(scores[last_e])
        avg_fa.add(scores[first_a])
        avg_ea.add_all(scores[first_a + 1 : last_a])
        avg_la.add(scores[last_a])
    result = np.stack([a.avg() for a in (avg_fe, avg_ee, avg_le, avg_fa, avg_ea, avg_la)])
    return result - avg_ls.avg()


def aie_by_category(aie: pd.DataFrame) -> dict[str, tuple[float, float]]:
    return {c: tuple(g.sort_values("layer")["aie"]) for c, g in aie.groupby("category")}


def test_category_table_carries_what_the_pooled_mean_needs():
    cats = category_table(ie_table())
    assert list(cats.columns) == CATEGORY_COLUMNS
    mid = cats[cats["category"] == "middle_subject"].set_index(["known_id", "layer"])
    assert mid["n_positions"].to_dict() == {(1, 0): 1, (1, 1): 1, (2, 0): 3, (2, 1): 3}
    assert mid.loc[(2, 0), "p_restored"] == pytest.approx(0.6) and mid.loc[(2, 1), "p_restored"] == pytest.approx(0.6)
    assert mid["p_corrupted"].to_dict() == {(1, 0): 0.1, (1, 1): 0.1, (2, 0): 0.3, (2, 1): 0.3}
    assert mid.loc[(2, 0), "ie"] == pytest.approx(0.3)
    assert set(cats.loc[cats["known_id"] == 2, "category"]) == set(N_POSITIONS) - {"further"}


def test_rome_mode_matches_the_hand_worked_notebook_numbers():
    aie = aie_table(category_table(ie_table()), n_boot=50)  # rome is the default
    got = aie_by_category(aie)
    assert set(got) == set(ROME)
    for cat, want in ROME.items():
        assert got[cat] == pytest.approx(want, abs=1e-12), cat
    # and the notebook's own loop, run on the same two prompts, gives the same numbers
    order = ["first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last"]
    np.testing.assert_allclose(notebook_read_knowlege(), [ROME[c] for c in order], atol=1e-12)
    by = aie.drop_duplicates("category").set_index("category")
    assert by["n"].to_dict() == N_PROMPTS and by["n_positions"].to_dict() == N_POSITIONS
    assert set(aie["category_mean"]) == {"rome"} and set(aie["answer_mode"]) == {"top1"}


def test_per_prompt_mode_matches_the_hand_worked_numbers():
    aie = aie_table(category_table(ie_table()), n_boot=50, category_mean="per_prompt")
    got = aie_by_category(aie)
    for cat, want in PER_PROMPT.items():
        assert got[cat] == pytest.approx(want, abs=1e-12), cat
    assert set(aie["category_mean"]) == {"per_prompt"}
    assert aie.drop_duplicates("category").set_index("category")["n_positions"].to_dict() == N_POSITIONS


def test_the_modes_differ_only_where_positions_are_pooled_or_missing():
    rome = aie_table(category_table(ie_table()), n_boot=20)
    per = aie_table(category_table(ie_table()), n_boot=20, category_mean="per_prompt")
    diff = (rome.set_index(["category", "layer"])["aie"] - per.set_index(["category", "layer"])["aie"]).abs()
    moved = diff[diff > 1e-12].index.get_level_values("category").unique()
    assert sorted(moved) == ["further", "middle_subject"]


def test_a_one_token_subject_at_the_end_of_the_prompt():
    # e == T − 1: the first subsequent token is the last token and there are no further tokens, as in the
    # notebook (scores[first_a] with first_a == last_a; scores[first_a + 1 : last_a] empty). One-token subject:
    # first and last subject token are the same position, no middle.
    pr = np.array([[0.2], [0.5], [0.7]])
    prompts = {**PROMPTS, 3: (np.c_[pr, pr], (1, 2), 0.2)}
    aie = aie_table(category_table(ie_table(prompts)), n_boot=20)
    np.testing.assert_allclose(notebook_read_knowlege(prompts)[[0, 1, 2, 3, 4, 5]],
                               np.stack([aie_by_category(aie)[c] for c in ["first_subject", "middle_subject",
                                         "last_subject", "first_subsequent", "further", "last"]]), atol=1e-12)


def test_rome_needs_the_pooled_columns():
    cats = category_table(ie_table()).drop(columns=["n_positions"])
    with pytest.raises(ValueError, match="lacks columns \\['n_positions'\\].*category_mean: per_prompt"):
        aie_table(cats, n_boot=10)
    with pytest.raises(ValueError, match="category_mean must be one of"):
        aie_table(category_table(ie_table()), n_boot=10, category_mean="pooled")


def test_bootstrap_resamples_prompts_with_all_their_positions():
    """The vectorised ROME bootstrap is the plain one: draw prompts with replacement, run the notebook's loop on
    the drawn prompts (a prompt drawn twice brings its positions twice, and its P_corrupted twice)."""
    rng = np.random.default_rng(0)
    prompts = {}
    for kid in range(6):
        T = int(rng.integers(4, 9))
        b = int(rng.integers(0, T - 3))
        e = int(rng.integers(b + 1, T - 1))
        prompts[kid] = (rng.uniform(size=(T, 3)), (b, e), float(rng.uniform(0, 0.3)))
    cats = category_table(ie_table(prompts))
    _, cells, pool = _pool(cats, "rome")
    boot = _bootstrap(pool, 40, np.random.default_rng(1))
    idx = np.random.default_rng(1).integers(0, 6, size=(40, 6))
    order = ["first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last"]
    col = {(c, layer): j for j, (c, layer) in enumerate(zip(cells["category"], cells["layer"], strict=True))}
    for r, draw in enumerate(idx):
        want = notebook_read_knowlege({i: prompts[int(k)] for i, k in enumerate(draw)})
        for i, c in enumerate(order):
            for layer in range(3):
                if (c, layer) in col:
                    np.testing.assert_allclose(boot[r, col[(c, layer)]], want[i, layer], atol=1e-12, equal_nan=True)


def test_paired_comparison_pools_each_side_over_the_shared_prompts():
    # b: the same prompts with every P_restored lowered by 0.05 and P_corrupted unchanged; prompt 2 lacks the
    # middle subject on b's side (a one-token subject there) and b has a prompt a lacks
    lower = {k: (pr - 0.05, span, pc) for k, (pr, span, pc) in PROMPTS.items()}
    lower[2] = (lower[2][0], (1, 2), lower[2][2])
    lower[9] = (P1, (0, 3), 0.1)
    cat = pd.concat([category_table(ie_table()), category_table(ie_table(lower, modality="s2t"))])
    res = paired_comparison(cat, ("m", "t2t"), ("m", "s2t"), n_perm=200, seed=0).set_index(["category", "layer"])
    # middle subject: only prompt 1 is paired; each side pools its positions (one) minus both prompts' mean
    # P_corrupted (0.2): a = 0.5 − 0.2, b = 0.45 − 0.2 at layer 0
    assert res.loc[("middle_subject", 0), ["n", "mean_a", "mean_b"]].tolist() == pytest.approx([1, 0.3, 0.25])
    assert res.loc[("last", 1), ["mean_a", "mean_b", "diff"]].tolist() == pytest.approx([0.6, 0.55, 0.05])
    # mean_a over all shared prompts is a's own AIE where every prompt is paired
    own = aie_table(category_table(ie_table()), n_boot=10).set_index(["category", "layer"])["aie"]
    assert res.loc[("last", 0), "mean_a"] == pytest.approx(own.loc[("last", 0)])
    per = paired_comparison(cat, ("m", "t2t"), ("m", "s2t"), n_perm=200, seed=0, category_mean="per_prompt")
    per = per.set_index(["category", "layer"])
    assert per.loc[("middle_subject", 0), ["n", "mean_a", "mean_b"]].tolist() == pytest.approx([1, 0.4, 0.35])


def test_paired_swap_test_matches_exact_enumeration():
    """Rome mode, 7 prompts with 1–3 middle positions each: the Monte-Carlo p-value approaches the exact one
    over all 2^7 swaps of the two sides."""
    import itertools

    rng = np.random.default_rng(3)
    a, b = {}, {}
    for k in range(7):
        n_mid = 1 + k % 3
        T = n_mid + 4
        span = (0, n_mid + 2)
        a[k] = (rng.uniform(0.3, 0.9, size=(T, 1)), span, float(rng.uniform(0, 0.2)))
        b[k] = (rng.uniform(0.1, 0.7, size=(T, 1)), span, float(rng.uniform(0, 0.2)))
    cat = pd.concat([category_table(ie_table(a)), category_table(ie_table(b, modality="s2t"))])
    res = paired_comparison(cat, ("m", "t2t"), ("m", "s2t"), n_perm=40000, seed=0).set_index("category")

    def middle(sides):
        pooled = np.concatenate([s[0][1 : s[1][1] - 1, 0] for s in sides])
        return pooled.mean() - np.mean([s[2] for s in sides])

    t_obs = middle(a.values()) - middle(b.values())
    stats = []
    for swap in itertools.product((0, 1), repeat=7):
        sa = [b[k] if s else a[k] for k, s in enumerate(swap)]
        sb = [a[k] if s else b[k] for k, s in enumerate(swap)]
        stats.append(middle(sa) - middle(sb))
    exact = np.mean(np.abs(stats) >= abs(t_obs) - 1e-12)
    assert res.loc["middle_subject", "diff"] == pytest.approx(t_obs)
    assert res.loc["middle_subject", "p"] == pytest.approx(exact, abs=0.006)


def test_peak_ratio_and_peaks_follow_the_mode():
    half = {k: (pr * 0.5, span, pc * 0.5) for k, (pr, span, pc) in PROMPTS.items()}
    cat = pd.concat([category_table(ie_table()), category_table(ie_table(half, modality="s2t"))])
    for mode in ("rome", "per_prompt"):
        aie = aie_table(cat, n_boot=20, category_mean=mode)
        peaks = peak_summary(aie)
        assert set(peaks["category_mean"]) == {mode} and "n_positions" in peaks
        r, lo, hi = peak_ratio_ci(cat, ("m", "t2t"), ("m", "s2t"), "mlp", n_boot=50, category_mean=mode)
        want = aie[aie.modality == "t2t"]["aie"].max() / aie[aie.modality == "s2t"]["aie"].max()
        assert r == pytest.approx(want) and lo <= r <= hi


# ---------------------------------------------------------------- the merge step (steps.merge_run)

TRACE = {"answer": "top1", "noise": {"samples": 10, "seed": 0}, "window": 10, "kinds": ["mlp"]}
SELECT = {"require_known": True, "expect_answer": "flag"}


def shard_table(ie: pd.DataFrame) -> pd.DataFrame:
    from crosstrace.trace.tables import IE_COLUMNS

    extra = {"token": "t", "p_clean": 0.9, "answer_id": 5, "answer": " Paris", "answer_tokens": 1, "noise_scale": 0.3,
             "samples": 10, "seed": 0, "window": 10, "engine": "fast"}
    return ie.assign(**extra)[IE_COLUMNS]


def known_table(ids) -> pd.DataFrame:
    return pd.DataFrame({"known_id": list(ids), "label": "exact", "known": True, "attribute": "Paris",
                         "first_token": " Paris", "status": "ok", "subject": "s", "prompt": "p"})


def run_merge(tmp_path, ie: pd.DataFrame, known: pd.DataFrame, modality: str, category_mean: str = "rome"):
    from crosstrace.steps import merge_run

    shards = []
    for i, ids in enumerate(([1], [2])):
        path = tmp_path / f"{modality}{i}.parquet"
        shard_table(ie[ie["known_id"].isin(ids)]).to_parquet(path)
        pd.DataFrame(columns=["model", "modality", "known_id", "stage", "reason"]).to_parquet(
            tmp_path / f"{modality}{i}.quarantine.parquet")
        shards.append(path)
    known.to_parquet(tmp_path / "known.parquet")
    (tmp_path / "noise.json").write_text('{"std": 0.1}')
    out = {k: tmp_path / f"{modality}_{k}.{'json' if k == 'summary' else 'parquet'}"
           for k in ("ie", "categories", "aie", "quarantine", "summary")}
    stats = {"n_boot": 20, "seed": 0, "level": 0.95, "category_mean": category_mean}
    summary = merge_run(shards, tmp_path / "known.parquet", tmp_path / "noise.json", "m", modality, TRACE, stats, SELECT,
                        "fail", out["ie"], out["categories"], out["aie"], out["quarantine"], out["summary"])
    return summary, pd.read_parquet(out["aie"]), pd.read_parquet(out["ie"])


def test_merge_step_writes_rome_aie_and_says_so(tmp_path):
    import json

    summary, aie, _ = run_merge(tmp_path, ie_table(), known_table([1, 2]), "t2t")
    for cat, want in ROME.items():
        assert aie_by_category(aie)[cat] == pytest.approx(want, abs=1e-12), cat
    assert set(aie["category_mean"]) == {"rome"} and summary["category_mean"] == "rome"
    assert summary["traced"] == 2 and summary["answer"] == "top1" and "category_mean" not in summary["ci"]
    assert json.loads((tmp_path / "t2t_summary.json").read_text()) == summary
    _, per, _ = run_merge(tmp_path, ie_table(), known_table([1, 2]), "t2t", "per_prompt")
    assert aie_by_category(per)["middle_subject"] == pytest.approx(PER_PROMPT["middle_subject"])


def test_merge_step_pools_s2t_text_tokens_not_units(tmp_path):
    """S→T: units are averaged per text token first (S2T.token_rows), then each text token is one position of
    the pooled mean. Each text token of the two prompts has two units with P1's / P2's values, so the S→T AIE
    equals the T→T one; [Text] plays the last token."""
    rows, known = [], []
    for kid, (pr, (b, e), pc) in PROMPTS.items():
        n_text = pr.shape[0] - 1  # the last row becomes [Text]
        off, n_units = 3, 2 * n_text  # BOS, ▁, [Speech], then two units per text token, then [Text]
        per_pos = [pr[0]] * off + [pr[k // 2] for k in range(n_units)] + [pr[-1]]
        grid = np.stack(per_pos)
        for t in range(grid.shape[0]):
            for layer in range(grid.shape[1]):
                rows.append({"model": "m", "modality": "s2t", "known_id": kid, "kind": "mlp", "token_index": t,
                             "layer": layer, "p_restored": grid[t, layer], "ie": grid[t, layer] - pc, "p_corrupted": pc,
                             "subject_start": off + 2 * b, "subject_end": off + 2 * e, "n_tokens": grid.shape[0],
                             "answer_mode": "top1"})
        known.append({"unit_offset": off, "n_units": n_units, "token_unit_start": [2 * k for k in range(n_text)],
                      "token_unit_end": [2 * k + 2 for k in range(n_text)],
                      "text_tokens": [f"w{k}" for k in range(n_text)], "subject_token_start": b, "subject_token_end": e,
                      "lead_silence_units": 0, "trail_silence_units": 0, "pause_units": 0,
                      "token_rows": "spoken", "pause_owner": "none"})
    known_t = pd.concat([known_table([1, 2]), pd.DataFrame(known)], axis=1)
    summary, aie, ie = run_merge(tmp_path, pd.DataFrame(rows), known_t, "s2t")
    for cat, want in ROME.items():
        assert aie_by_category(aie)[cat] == pytest.approx(want, abs=1e-12), cat
    assert aie.drop_duplicates("category").set_index("category")["n_positions"].to_dict() == N_POSITIONS
    assert ie.groupby("known_id")["token_index"].nunique().to_dict() == {1: 7, 2: 8}  # text tokens + [Text]
    assert summary["units_in_prompts"] == 26 and summary["lead_silence_units"] == 0
