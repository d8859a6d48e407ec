"""Statistics for the causal-tracing report: AIE with bootstrap CIs, paired tests, peaks and peak ratios.

Input is the long table ``category_ie`` written by the tracer, one row per
(model, modality, known_id, kind, category, layer) with ``ie`` = that prompt's indirect effect
(mean over the category's token positions). A missing row, or ``ie`` = NaN, means the prompt lacks
that category (e.g. no middle subject token); such cells are left out of means and counts.

The sampling unit everywhere is the **prompt** (``known_id``): bootstraps resample prompts with
replacement and a resampled prompt brings all of its cells, so cells (categories, layers, kinds)
are resampled jointly, and the paired test flips the sign of a whole prompt's differences at once.

All randomness goes through :class:`numpy.random.Generator`; results are deterministic for a seed.
The module is pure numpy/pandas (no torch import), so reports can run without the tracing stack.
The representation-similarity statistics, which reuse this module's bootstrap, are in :mod:`.similarity`.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..vocabulary import CATEGORIES, KIND_TITLES, KINDS, MODALITIES, MODALITY_LABELS

__all__ = [
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


def _cell_matrix(g: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Prompts × cells matrix of ``ie`` (NaN where a prompt lacks a cell).

    Returns (known_ids, cells, X) with ``cells`` a DataFrame of kind/category/layer whose row j
    describes column j of X. Raises on duplicate (known_id, cell) rows.
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
    X[pid, cid] = g["ie"].to_numpy(dtype=float)
    cells = cells.set_names(CELL_COLS)
    return np.asarray(prompts), cells.to_frame(index=False, name=CELL_COLS), X


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


def bootstrap_cell_means(X: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """B × cells matrix of resampled nan-means of the columns of X (rows = prompts).

    A resample in which no drawn prompt has a cell gives NaN for that cell (excluded later by
    nanquantile: the CI is conditional on the category being present in the resample).
    """
    M = np.isfinite(X)
    Xz = np.where(M, X, 0.0)
    Mf = M.astype(float)
    out = np.empty((n_boot, X.shape[1]))
    row = 0
    for W in _resample_counts(rng, n_boot, X.shape[0]):
        num = W @ Xz
        den = W @ Mf
        with np.errstate(invalid="ignore", divide="ignore"):
            out[row : row + len(W)] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        row += len(W)
    return out


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
    category_ie: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """AIE per (model, modality, kind, category, layer) with percentile bootstrap CIs over prompts.

    ``aie`` = mean of ``ie`` over the prompts that have the cell (NaN ``ie`` counts as absent);
    ``n`` = that number of prompts. CI: within each (model, modality), known_ids are resampled
    with replacement ``n_boot`` times; each resample recomputes every cell's mean over the drawn
    prompts that have the cell (all cells of a drawn prompt come together), and the CI is the
    (1−level)/2, (1+level)/2 percentiles of those means. Each (model, modality) uses its own
    generator derived from ``seed`` and the group name, so the table is deterministic for a seed.

    Returns columns model, modality, kind, category, layer, aie, n, ci_low, ci_high (and answer_mode
    when the category table has it: trace.answer, one per run), sorted by model, then modality t2t/s2t,
    kinds hidden/mlp/attn, categories in the paper's order, layer.
    """
    _check_columns(category_ie, REQUIRED_COLS)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    parts = []
    for (model, modality), g in category_ie.groupby(GROUP_COLS, sort=True):
        _, cells, X = _cell_matrix(g)
        M = np.isfinite(X)
        n = M.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            aie = np.where(n > 0, np.where(M, X, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
        boot = bootstrap_cell_means(X, n_boot, _group_rng(seed, (model, modality)))
        lo, hi = percentile_ci(boot, level)
        part = cells.copy()
        part.insert(0, "modality", modality)
        part.insert(0, "model", model)
        part["aie"], part["n"], part["ci_low"], part["ci_high"] = aie, n.astype(int), lo, hi
        if "answer_mode" in g.columns:
            modes = sorted(g["answer_mode"].dropna().unique())
            if len(modes) > 1:  # an AIE averages one quantity: P[o] for one definition of o
                raise ValueError(f"{model} {modality}: prompts traced with different trace.answer settings {modes}")
            part["answer_mode"] = modes[0] if modes else None
        parts.append(part[n > 0])
    extra = ["answer_mode"] if "answer_mode" in category_ie.columns else []
    cols = GROUP_COLS + CELL_COLS + ["aie", "n", "ci_low", "ci_high"] + extra
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
) -> pd.DataFrame:
    """Paired comparison of ``a`` = (model, modality) against ``b`` per (kind, category, layer).

    Pairs are prompts present in both (inner join on known_id, kind, category, layer; pairs with a
    NaN ``ie`` on either side are dropped), so ``n`` can differ between cells. Per cell:
    ``diff`` = mean of (ie_a − ie_b); ``p`` = two-sided sign-flip permutation p-value
    (1 + #{|T*| ≥ |T_obs|}) / (1 + n_perm), T = mean paired difference, using one random sign
    per prompt per permutation shared across all cells (a prompt's differences flip together);
    ``q`` = Benjamini–Hochberg across all cells of this comparison; ``significant`` = q < alpha.

    Returns columns a_model, a_modality, b_model, b_modality, kind, category, layer, n, mean_a,
    mean_b, diff, p, q, significant. Raises ValueError if no prompt is shared.
    """
    _check_columns(category_ie, REQUIRED_COLS)
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    keys = ["known_id"] + CELL_COLS

    def side(m: Model) -> pd.DataFrame:
        sel = category_ie[(category_ie["model"] == m[0]) & (category_ie["modality"] == m[1])]
        if sel.duplicated(keys).any():
            raise ValueError(f"duplicate (known_id, kind, category, layer) rows for {m}")
        return sel[keys + ["ie"]]

    j = side(a).merge(side(b), on=keys, suffixes=("_a", "_b"), how="inner")
    j = j[np.isfinite(j["ie_a"].to_numpy(float)) & np.isfinite(j["ie_b"].to_numpy(float))]
    if j.empty:
        raise ValueError(f"no prompts shared by {a} and {b}")
    j = j.assign(ie=j["ie_a"] - j["ie_b"])
    _, cells, D = _cell_matrix(j)
    _, _, A = _cell_matrix(j.assign(ie=j["ie_a"]))
    _, _, B_ = _cell_matrix(j.assign(ie=j["ie_b"]))
    M = np.isfinite(D)
    n = M.sum(axis=0)
    Dz = np.where(M, D, 0.0)
    t_obs = Dz.sum(axis=0)  # sum ∝ mean within a cell (n fixed), so the test is the same
    # Ties (e.g. the identity sign vector, all-zero differences) must count as ≥ despite rounding.
    tol = 1e-9 * np.abs(Dz).sum(axis=0) + 1e-300
    rng = np.random.default_rng(seed)
    exceed = np.zeros(D.shape[1], dtype=np.int64)
    done = 0
    while done < n_perm:
        m = min(_BLOCK, n_perm - done)
        signs = np.where(rng.random((m, D.shape[0])) < 0.5, -1.0, 1.0)
        exceed += (np.abs(signs @ Dz) >= np.abs(t_obs) - tol).sum(axis=0)
        done += m
    p = (1.0 + exceed) / (1.0 + n_perm)
    q = bh_adjust(p)
    with np.errstate(invalid="ignore"):
        out = cells.assign(
            n=n.astype(int),
            mean_a=np.nanmean(A, axis=0),
            mean_b=np.nanmean(B_, axis=0),
            diff=t_obs / n,
            p=p,
            q=q,
            significant=q < alpha,
        )
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
    n/ci_low/ci_high/answer_mode are carried along if present). Returns model, modality, kind, peak_aie,
    category, layer [, n, ci_low, ci_high, answer_mode]. NaN AIEs are ignored; ties go to the first cell in
    category order then layer.
    """
    _check_columns(aie, GROUP_COLS + CELL_COLS + ["aie"])
    extra = [c for c in ("n", "ci_low", "ci_high", "answer_mode") if c in aie.columns]
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
) -> tuple[float, float, float]:
    """(ratio, ci_low, ci_high) for peak AIE of ``a`` over peak AIE of ``b`` (one kind).

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
    _, cells, X = _cell_matrix(both)
    is_a = cells["kind"].str.startswith("a|").to_numpy()
    M = np.isfinite(X)

    def peaks(means: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmax(means[..., is_a], axis=-1) / np.nanmax(means[..., ~is_a], axis=-1)

    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(M, X, 0.0).sum(0) / M.sum(0)
    ratio = float(peaks(point))
    boot = peaks(bootstrap_cell_means(X, n_boot, _group_rng(seed, ("peak_ratio",) + a + b + (kind,))))
    lo, hi = percentile_ci(boot, level)
    return ratio, float(lo), float(hi)
