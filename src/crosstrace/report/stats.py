"""Statistics for the causal-tracing report: AIE with bootstrap CIs, paired tests, peaks and peak ratios.

Input is the long table ``category_ie`` written by the tracer (:func:`crosstrace.trace.tables.category_table`),
one row per (model, modality, known_id, kind, category, layer) with ``ie`` = that prompt's indirect effect
(mean over the category's token positions), and, for ROME's averaging, ``n_positions`` (the category's
positions in the prompt), ``p_restored`` (their mean P_restored[o]) and ``p_corrupted`` (the prompt's
P_corrupted[o]). A missing row, or a NaN value, means the prompt lacks that category (e.g. no middle subject
token); such cells are left out of means and counts.

How a category's positions are averaged is ``category_mean`` (the config's ``stats.category_mean``):

- ``rome`` (the paper's, and ROME's ``notebooks/average_causal_effects.ipynb``, ``read_knowlege``): every
  position of the category, of every prompt, is one sample of a pooled mean of P_restored (``add_all``: a
  prompt with 5 middle tokens weighs 5×), and AIE = that pooled mean − the mean P_corrupted over all traced
  prompts (``avg_ls``, which every prompt enters once, with or without that category);
- ``per_prompt``: the mean IE over the category's positions within each prompt, then the mean over the
  prompts that have the category (every prompt weighs 1).

Both agree on categories with one position per prompt that every prompt has (first and last subject token,
last token, and first subsequent token whenever the subject does not end the prompt).

The sampling unit everywhere is the **prompt** (``known_id``): bootstraps resample prompts with
replacement and a resampled prompt brings all of its cells and all of their positions, so cells
(categories, layers, kinds) are resampled jointly, and the paired test swaps a whole prompt's two sides at once.

All randomness goes through :class:`numpy.random.Generator`; results are deterministic for a seed.
The module is pure numpy/pandas (no torch import), so reports can run without the tracing stack.
The representation-similarity statistics, which reuse this module's bootstrap, are in :mod:`.similarity`.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..vocabulary import CATEGORIES, KIND_TITLES, KINDS, MODALITIES, MODALITY_LABELS

__all__ = [
    "CATEGORY_COLUMNS",
    "CATEGORY_MEANS",
    "CATEGORY_ORDER",
    "KIND_ORDER",
    "MODALITY_ORDER",
    "aie_table",
    "bh_adjust",
    "bootstrap_cell_means",
    "paired_comparison",
    "peak_ratio",
    "peak_ratio_ci",
    "peak_summary",
    "percentile_ci",
    "quote_peak_ratio",
]

# Canonical order for sorting output. Unknown values sort after these, alphabetically.
CATEGORY_ORDER = CATEGORIES
KIND_ORDER = KINDS
MODALITY_ORDER = MODALITIES

GROUP_COLS = ["model", "modality"]
CELL_COLS = ["kind", "category", "layer"]
REQUIRED_COLS = GROUP_COLS + ["known_id"] + CELL_COLS + ["ie"]

#: stats.category_mean: how the positions of a category enter its AIE (module docstring; docs/method.md)
CATEGORY_MEANS = ("rome", "per_prompt")
#: what ROME's pooled mean reads besides the cell keys (written by crosstrace.trace.tables.category_table)
POOL_COLS = ["n_positions", "p_restored", "p_corrupted"]
#: the category table (``category_ie.parquet``), as crosstrace.trace.tables.category_table writes it
#: (``token_rows``: which text tokens an S→T run's rows are, ``speech.token_rows``; None for T→T)
CATEGORY_COLUMNS = GROUP_COLS + ["known_id"] + CELL_COLS + ["ie", "answer_mode"] + POOL_COLS + ["token_rows"]

# Draws are generated in fixed-size blocks to bound memory; the block size is part of the
# random stream's definition (changing it changes results for a given seed), so it is a constant.
_BLOCK = 512

Model = tuple[str, str]  # (model, modality)


# --------------------------------------------------------------------------------------------
# helpers


def _check_columns(df: pd.DataFrame, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"category_ie lacks columns {missing}; has {list(df.columns)}")


def _order_key(values: pd.Series, order: tuple[str, ...]) -> pd.Series:
    """Sort key: position in ``order``, unknown values after (then alphabetical via stable sort)."""
    pos = {v: i for i, v in enumerate(order)}
    return values.map(lambda v: pos.get(v, len(order)))


def _sort_cells(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by ``by`` using canonical modality/kind/category orders where those columns appear."""
    keys = {}
    for c in by:
        if c == "kind":
            keys[c] = _order_key(df[c], KIND_ORDER)
        elif c == "modality":
            keys[c] = _order_key(df[c], MODALITY_ORDER)
        elif c == "category":
            keys[c] = _order_key(df[c], CATEGORY_ORDER)
    tmp = df.assign(**{f"__k_{c}": k for c, k in keys.items()})
    sort_by = []
    for c in by:
        if c in keys:
            sort_by += [f"__k_{c}", c]
        else:
            sort_by.append(c)
    tmp = tmp.sort_values(sort_by, kind="mergesort")
    return tmp.drop(columns=[f"__k_{c}" for c in keys]).reset_index(drop=True)


def _group_rng(seed: int, key: Iterable[object]) -> np.random.Generator:
    """A generator for one group, derived from ``seed`` and a stable hash of the group key.

    Each (model, modality) gets its own stream, so adding or removing other groups from the
    table does not change a group's CIs.
    """
    h = zlib.crc32("\x1f".join(str(k) for k in key).encode("utf-8"))
    return np.random.default_rng([int(seed), h])


def _cell_matrix(g: pd.DataFrame, value: str = "ie") -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Prompts × cells matrix of ``value`` (NaN where a prompt lacks a cell).

    Returns (known_ids, cells, X) with ``cells`` a DataFrame of kind/category/layer whose row j
    describes column j of X (the same order for every ``value`` of one table). Raises on duplicate
    (known_id, cell) rows.
    """
    pid, prompts = pd.factorize(g["known_id"], sort=True)
    cell_idx = pd.MultiIndex.from_frame(g[CELL_COLS])
    cid, cells = cell_idx.factorize()
    n_p, n_c = len(prompts), len(cells)
    flat = pid.astype(np.int64) * n_c + cid
    if np.unique(flat).size != flat.size:
        dup = g[pd.Series(flat, index=g.index).duplicated(keep=False)]
        raise ValueError(
            "duplicate (known_id, kind, category, layer) rows within a (model, modality):\n"
            f"{dup.head()}"
        )
    X = np.full((n_p, n_c), np.nan)
    X[pid, cid] = g[value].to_numpy(dtype=float)
    cells = cells.set_names(CELL_COLS)
    return np.asarray(prompts), cells.to_frame(index=False, name=CELL_COLS), X


def _check_mode(category_mean: str) -> None:
    if category_mean not in CATEGORY_MEANS:
        raise ValueError(f"category_mean must be one of {CATEGORY_MEANS}, got {category_mean!r}")


def _ratio(num, den, c, k) -> np.ndarray:
    """num / den − c / k, NaN where den = 0 (no prompt with the cell), the second term 0 where k = 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        first = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return first - np.where(k > 0, c / np.where(k > 0, k, 1.0), 0.0)


@dataclass(frozen=True)
class _Pool:
    """A table's cells as sums over prompts. With a weight w_p per prompt (1 for the point estimate, the
    times it was drawn for a bootstrap resample), a cell's AIE is

        Σ_p w_p S[p] / Σ_p w_p N[p]  −  Σ_p w_p C[p] / Σ_p w_p K[p]

    ``rome``: S = n_positions · mean P_restored (the prompt's positions, summed), N = n_positions, and C =
    P_corrupted, K = 1 for every prompt traced for the cell's kind (ROME's ``avg_ee.avg() − avg_ls.avg()``).
    ``per_prompt``: S = the prompt's mean IE, N = 1, C = K = 0. Cells a prompt lacks have S = N = 0.
    """

    S: np.ndarray
    N: np.ndarray
    C: np.ndarray
    K: np.ndarray

    @classmethod
    def per_prompt(cls, X: np.ndarray) -> _Pool:
        M = np.isfinite(X)
        zero = np.zeros(X.shape)
        return cls(np.where(M, X, 0.0), M.astype(float), zero, zero)

    @property
    def present(self) -> np.ndarray:
        return self.N > 0

    def point(self) -> np.ndarray:
        return _ratio(self.S.sum(0), self.N.sum(0), self.C.sum(0), self.K.sum(0))

    def resampled(self, W: np.ndarray) -> np.ndarray:
        """B × cells AIE for the B weight vectors in the rows of W (NaN where no drawn prompt has the cell)."""
        return _ratio(W @ self.S, W @ self.N, W @ self.C, W @ self.K)

    def swapped(self, other: _Pool, s: np.ndarray) -> np.ndarray:
        """m × cells AIE of this side when the prompts marked 1 in the rows of ``s`` take ``other``'s values."""
        return _ratio(*(x.sum(0) + s @ (y - x) for x, y in
                        ((self.S, other.S), (self.N, other.N), (self.C, other.C), (self.K, other.K))))


def _pool(g: pd.DataFrame, category_mean: str) -> tuple[np.ndarray, pd.DataFrame, _Pool]:
    """(known_ids, cells, pool) of one table (one run, or two runs whose kinds are kept apart)."""
    _check_mode(category_mean)
    prompts, cells, X = _cell_matrix(g)
    if category_mean == "per_prompt":
        return prompts, cells, _Pool.per_prompt(X)
    missing = [c for c in POOL_COLS if c not in g.columns]
    if missing:
        raise ValueError(f"category_ie lacks columns {missing}, which ROME's pooled mean (stats.category_mean: rome) "
                         "needs; rerun the merge step to rewrite the table, or use category_mean: per_prompt")
    npos, pr = _cell_matrix(g, "n_positions")[2], _cell_matrix(g, "p_restored")[2]
    M = np.isfinite(pr) & np.isfinite(npos) & (np.nan_to_num(npos) > 0)
    S, N = np.where(M, npos * np.where(M, pr, 0.0), 0.0), np.where(M, npos, 0.0)
    # avg_ls: P_corrupted of every prompt traced for the kind, once, whichever categories it has
    per = g.groupby(["known_id", "kind"], sort=False)["p_corrupted"]
    varies = per.nunique() > 1
    if varies.any():
        bad = varies[varies].index[:5].tolist()
        raise ValueError(f"p_corrupted differs between the categories of one prompt and kind (known_id, kind): {bad}")
    pc = per.first().unstack("kind").reindex(prompts)
    C, K = np.zeros(S.shape), np.zeros(S.shape)
    kinds = cells["kind"].to_numpy()
    for kind in pd.unique(kinds):
        v = pc[kind].to_numpy(float)
        traced = np.isfinite(v)
        C[:, kinds == kind] = np.where(traced, v, 0.0)[:, None]
        K[:, kinds == kind] = traced[:, None]
    return prompts, cells, _Pool(S, N, C, K)


def _resample_counts(rng: np.random.Generator, n_draws: int, n_units: int) -> Iterable[np.ndarray]:
    """Yield blocks of bootstrap count matrices W (block × n_units): W[b, i] = times unit i drawn.

    Drawing indices with replacement and counting them is the ordinary nonparametric bootstrap;
    the count form lets a resampled mean be a matrix product (W @ values / W @ mask).
    """
    done = 0
    while done < n_draws:
        m = min(_BLOCK, n_draws - done)
        idx = rng.integers(0, n_units, size=(m, n_units))
        flat = idx + (np.arange(m)[:, None] * n_units)
        yield np.bincount(flat.ravel(), minlength=m * n_units).reshape(m, n_units).astype(float)
        done += m


def _bootstrap(pool: _Pool, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """B × cells matrix of the pool's AIE over ``n_boot`` resamples of its prompts (with replacement).

    A resample in which no drawn prompt has a cell gives NaN for that cell (excluded later by
    nanquantile: the CI is conditional on the category being present in the resample).
    """
    out = np.empty((n_boot, pool.S.shape[1]))
    row = 0
    for W in _resample_counts(rng, n_boot, pool.S.shape[0]):
        out[row : row + len(W)] = pool.resampled(W)
        row += len(W)
    return out


def bootstrap_cell_means(X: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """B × cells matrix of resampled nan-means of the columns of X (rows = prompts): the per-prompt mean's
    bootstrap (:func:`_bootstrap` of :meth:`_Pool.per_prompt`)."""
    return _bootstrap(_Pool.per_prompt(X), n_boot, rng)


def percentile_ci(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``boot`` (resamples × cells): the (1−level)/2 and (1+level)/2 percentiles, NaNs ignored."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns → NaN CI
        lo, hi = np.nanquantile(boot, q, axis=0)
    return lo, hi


# --------------------------------------------------------------------------------------------
# 1. AIE with bootstrap CIs


def aie_table(
    category_ie: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95, category_mean: str = "rome"
) -> pd.DataFrame:
    """AIE per (model, modality, kind, category, layer) with percentile bootstrap CIs over prompts.

    ``aie``: with ``category_mean="rome"`` (the paper's), the pooled mean of P_restored over every position
    of the category in every prompt minus the mean P_corrupted over all prompts traced for the kind; with
    ``"per_prompt"``, the mean of ``ie`` over the prompts that have the cell (module docstring). ``n``: the
    prompts that have the cell; ``n_positions`` (where the table has it): their positions in all.
    CI: within each (model, modality), known_ids are resampled with replacement ``n_boot`` times; each
    resample recomputes every cell's AIE from the drawn prompts (all cells and positions of a drawn prompt
    come together), and the CI is the (1−level)/2, (1+level)/2 percentiles of those AIEs. Each
    (model, modality) uses its own generator derived from ``seed`` and the group name, so the table is
    deterministic for a seed. ``n_boot=0``: point estimates only (NaN CIs).

    Returns columns model, modality, kind, category, layer, aie, n, [n_positions,] ci_low, ci_high
    [, answer_mode], category_mean: trace.answer when the category table has it (one per run) and the
    averaging, so every AIE table says what it averaged. Sorted by model, then modality t2t/s2t, kinds
    hidden/mlp/attn, categories in the paper's order, layer.
    """
    _check_columns(category_ie, REQUIRED_COLS)
    _check_mode(category_mean)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    positions = "n_positions" in category_ie.columns
    parts = []
    for (model, modality), g in category_ie.groupby(GROUP_COLS, sort=True):
        _, cells, pool = _pool(g, category_mean)
        n = pool.present.sum(axis=0)
        if n_boot:
            lo, hi = percentile_ci(_bootstrap(pool, n_boot, _group_rng(seed, (model, modality))), level)
        else:  # point estimates only
            lo = hi = np.full(len(cells), np.nan)
        part = cells.copy()
        part.insert(0, "modality", modality)
        part.insert(0, "model", model)
        part["aie"], part["n"], part["ci_low"], part["ci_high"] = pool.point(), n.astype(int), lo, hi
        if positions:
            npos = _cell_matrix(g, "n_positions")[2]
            part["n_positions"] = np.where(pool.present, np.nan_to_num(npos), 0).sum(axis=0).astype(int)
        if "answer_mode" in g.columns:
            modes = sorted(g["answer_mode"].dropna().unique())
            if len(modes) > 1:  # an AIE averages one quantity: P[o] for one definition of o
                raise ValueError(f"{model} {modality}: prompts traced with different trace.answer settings {modes}")
            part["answer_mode"] = modes[0] if modes else None
        part["category_mean"] = category_mean
        parts.append(part[n > 0])
    extra = ["answer_mode"] if "answer_mode" in category_ie.columns else []
    cols = (GROUP_COLS + CELL_COLS + ["aie", "n"] + (["n_positions"] if positions else []) + ["ci_low", "ci_high"]
            + extra + ["category_mean"])
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return _sort_cells(out, GROUP_COLS + CELL_COLS)


# --------------------------------------------------------------------------------------------
# 2. paired comparison: sign-flip permutation test + Benjamini–Hochberg


def bh_adjust(p: np.ndarray | Iterable[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same shape as ``p``; NaN stays NaN.

    q_(i) = min_{j ≥ i} min(1, m · p_(j) / j) over the m finite p-values sorted ascending.
    """
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    pf = p[ok]
    m = pf.size
    if m:
        order = np.argsort(pf, kind="mergesort")
        scaled = pf[order] * m / np.arange(1, m + 1)
        qs = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        qf = np.empty(m)
        qf[order] = qs
        q[ok] = qf
    return q


def paired_comparison(
    category_ie: pd.DataFrame,
    a: Model,
    b: Model,
    n_perm: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    category_mean: str = "rome",
) -> pd.DataFrame:
    """Paired comparison of ``a`` = (model, modality) against ``b`` per (kind, category, layer).

    Pairs are prompts present in both (inner join on known_id, kind, category, layer; pairs where either
    side lacks the cell are dropped), so ``n`` can differ between cells. Per cell, ``mean_a`` and ``mean_b``
    are both runs' AIEs over the paired prompts, averaged the same way (``category_mean``, as in
    :func:`aie_table`; ``rome``: positions pooled per side, minus the mean P_corrupted of the prompts traced
    in both runs), and ``diff`` = mean_a − mean_b. ``p``: two-sided permutation p-value
    (1 + #{|T*| ≥ |T_obs|}) / (1 + n_perm) of T = diff, where a permutation swaps the two sides of each
    prompt with probability 1/2, one draw per prompt shared by all cells (a prompt's cells and positions
    move together). Per prompt this is the sign-flip test of the mean paired difference. ``q`` =
    Benjamini–Hochberg across all cells of this comparison; ``significant`` = q < alpha.

    Returns columns a_model, a_modality, b_model, b_modality, kind, category, layer, n, mean_a,
    mean_b, diff, p, q, significant. Raises ValueError if no prompt is shared.
    """
    _check_columns(category_ie, REQUIRED_COLS)
    _check_mode(category_mean)
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    keys = ["known_id"] + CELL_COLS
    values = ["ie"] + (POOL_COLS if category_mean == "rome" else [])

    def side(m: Model) -> pd.DataFrame:
        sel = category_ie[(category_ie["model"] == m[0]) & (category_ie["modality"] == m[1])]
        if sel.duplicated(keys).any():
            raise ValueError(f"duplicate (known_id, kind, category, layer) rows for {m}")
        _check_columns(sel, values)
        return sel[keys + values]

    j = side(a).merge(side(b), on=keys, suffixes=("_a", "_b"), how="inner")
    need = ["p_restored", "n_positions"] if category_mean == "rome" else ["ie"]
    j = j[np.all([np.isfinite(j[f"{c}_{s}"].to_numpy(float)) for c in need for s in "ab"], axis=0)]
    if j.empty:
        raise ValueError(f"no prompts shared by {a} and {b}")
    _, cells, pa = _pool(j.rename(columns={f"{c}_a": c for c in values}), category_mean)
    _, _, pb = _pool(j.rename(columns={f"{c}_b": c for c in values}), category_mean)
    n = (pa.present & pb.present).sum(axis=0)
    mean_a, mean_b = pa.point(), pb.point()
    t_obs = mean_a - mean_b
    # Ties (the identity permutation, all-zero differences) must count as ≥ despite rounding.
    scale = sum(np.abs(x).sum(0) / np.maximum(y.sum(0), 1.0) for p in (pa, pb) for x, y in ((p.S, p.N), (p.C, p.K)))
    tol = 1e-9 * scale + 1e-300
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(cells), dtype=np.int64)
    done = 0
    while done < n_perm:
        m = min(_BLOCK, n_perm - done)
        swap = (rng.random((m, pa.S.shape[0])) < 0.5).astype(float)
        exceed += (np.abs(pa.swapped(pb, swap) - pb.swapped(pa, swap)) >= np.abs(t_obs) - tol).sum(axis=0)
        done += m
    p = (1.0 + exceed) / (1.0 + n_perm)
    q = bh_adjust(p)
    out = cells.assign(n=n.astype(int), mean_a=mean_a, mean_b=mean_b, diff=t_obs, p=p, q=q, significant=q < alpha)
    for i, (col, val) in enumerate(
        [("a_model", a[0]), ("a_modality", a[1]), ("b_model", b[0]), ("b_modality", b[1])]
    ):
        out.insert(i, col, val)
    return _sort_cells(out, CELL_COLS)


# --------------------------------------------------------------------------------------------
# 3. peaks


def peak_summary(aie: pd.DataFrame) -> pd.DataFrame:
    """Per (model, modality, kind): the cell with the largest AIE.

    ``aie`` is the output of :func:`aie_table` (needs model, modality, kind, category, layer, aie;
    n/n_positions/ci_low/ci_high/answer_mode/category_mean are carried along if present). Returns model,
    modality, kind, peak_aie, category, layer [, n, n_positions, ci_low, ci_high, answer_mode, category_mean].
    NaN AIEs are ignored; ties go to the first cell in category order then layer.
    """
    _check_columns(aie, GROUP_COLS + CELL_COLS + ["aie"])
    extra = [c for c in ("n", "n_positions", "ci_low", "ci_high", "answer_mode", "category_mean") if c in aie.columns]
    d = _sort_cells(aie[np.isfinite(aie["aie"].to_numpy(float))], GROUP_COLS + CELL_COLS)
    if d.empty:
        return pd.DataFrame(columns=GROUP_COLS + ["kind", "peak_aie", "category", "layer"] + extra)
    idx = d.groupby(GROUP_COLS + ["kind"], sort=False)["aie"].idxmax()
    out = d.loc[idx.to_numpy(), GROUP_COLS + ["kind", "aie", "category", "layer"] + extra]
    out = out.rename(columns={"aie": "peak_aie"})
    return _sort_cells(out, GROUP_COLS + ["kind"])


def _peak_of(summary: pd.DataFrame, m: Model, kind: str) -> float:
    row = summary[
        (summary["model"] == m[0]) & (summary["modality"] == m[1]) & (summary["kind"] == kind)
    ]
    if len(row) != 1:
        raise KeyError(f"no single peak for {m}, kind={kind!r} in summary")
    return float(row["peak_aie"].iloc[0])


def peak_ratio(summary: pd.DataFrame, a: Model, b: Model, kind: str = "mlp") -> float:
    """Peak AIE of ``a`` divided by peak AIE of ``b`` for one kind (point estimates).

    The peaks may sit at different cells. Raises ValueError if b's peak is not positive.
    """
    pa, pb = _peak_of(summary, a, kind), _peak_of(summary, b, kind)
    if not pb > 0:
        raise ValueError(f"peak AIE of {b} ({kind}) is {pb}; a ratio is not meaningful")
    return pa / pb


def quote_peak_ratio(
    summary: pd.DataFrame, a: Model, b: Model, kind: str = "mlp", digits: int = 1
) -> str:
    """A sentence for the report, e.g. ``"T→T peak AIE (MLP) is 6.3× S→T"``.

    The kind is named by its display title in parentheses (``KIND_TITLES``: hidden states, MLP,
    attention), which reads the same for all three kinds. Model names are included when a and b are
    different models.
    """

    def name(m: Model) -> str:
        mod = MODALITY_LABELS.get(m[1], m[1])
        return mod if a[0] == b[0] else f"{m[0]} {mod}"

    r = peak_ratio(summary, a, b, kind)
    return f"{name(a)} peak AIE ({KIND_TITLES.get(kind, kind)}) is {r:.{digits}f}× {name(b)}"


def peak_ratio_ci(
    category_ie: pd.DataFrame,
    a: Model,
    b: Model,
    kind: str = "mlp",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    category_mean: str = "rome",
) -> tuple[float, float, float]:
    """(ratio, ci_low, ci_high) for peak AIE of ``a`` over peak AIE of ``b`` (one kind), both averaged as
    ``category_mean`` says (:func:`aie_table`).

    Bootstrap over prompts, resampling known_ids from the union of both sides jointly (a prompt
    present in both brings its cells on both sides, so shared prompts stay paired); in each
    resample both peaks are re-taken as the max over that kind's cells, so the peak cell may move.
    Note the max of noisy means is biased upwards, more so for noisier (smaller-n) sides.
    """
    _check_columns(category_ie, REQUIRED_COLS)
    d = category_ie[category_ie["kind"] == kind]
    sel_a = (d["model"] == a[0]) & (d["modality"] == a[1])
    sel_b = (d["model"] == b[0]) & (d["modality"] == b[1])
    if not sel_a.any() or not sel_b.any():
        raise KeyError(f"no {kind!r} rows for {a if not sel_a.any() else b}")
    both = pd.concat([d[sel_a].assign(model="a", modality=""), d[sel_b].assign(model="b", modality="")])
    both = both.assign(kind=both["model"] + "|" + both["kind"])  # keep sides apart as cells
    _, cells, pool = _pool(both, category_mean)
    is_a = cells["kind"].str.startswith("a|").to_numpy()

    def peaks(means: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmax(means[..., is_a], axis=-1) / np.nanmax(means[..., ~is_a], axis=-1)

    ratio = float(peaks(pool.point()))
    boot = peaks(_bootstrap(pool, n_boot, _group_rng(seed, ("peak_ratio",) + a + b + (kind,))))
    lo, hi = percentile_ci(boot, level)
    return ratio, float(lo), float(hi)
