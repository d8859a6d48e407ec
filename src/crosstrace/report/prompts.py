"""What was traced, prompt by prompt: the traced-prompts table, one ROME-style figure per prompt, and the
report page that links each row of the table to its figure (a gallery of the first N).

Pure functions from the merged IE table (``ie_per_prompt.parquet``) and the Known-filter table
(``known.parquet``); the workflow's ``prompts`` rule writes what they return.
"""

from __future__ import annotations

import base64
import html as _html
import io
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..answers import answer_label
from ..filtering import greedy_answer_matches
from ..grids import ie_grid
from . import html
from .figures import prompt_trace_figure, run_label, token_label

TABLE_COLUMNS = ["known_id", "prompt", "subject", "attribute", "continuation", "label", "answer", "answer_mode",
                 "answer_tokens", "answer_expected", "p_clean", "p_corrupted", "corruption_lowers_p", "n_tokens", "figure"]


def traced_table(ie: pd.DataFrame, known: pd.DataFrame, figure_dir: str = "prompts", ext: str = "png") -> pd.DataFrame:
    """One row per traced prompt, in the order traced.

    ``answer`` is the traced answer o, ``answer_mode`` what it is (trace.answer: the clean run's greedy
    next token, the attribute's first token or all its tokens) and ``answer_tokens`` its length in
    tokens; ``continuation`` is the Known filter's greedy continuation and ``label`` its exact / partial /
    none match. ``answer_expected``: the model's own greedy token (o under top1, the Known filter's first
    token otherwise) starts the attribute (:func:`crosstrace.filtering.greedy_answer_matches`).
    ``corruption_lowers_p``: P_corrupted[o] < P_clean[o]; where it is False the subject corruption did
    not hide the fact and the prompt's IE says little.
    """
    if ie.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    ie = ie.assign(**{c: ie[c] if c in ie else d for c, d in (("answer_mode", "top1"), ("answer_tokens", 1))})
    per = ie.drop_duplicates("known_id")[["known_id", "answer", "answer_mode", "answer_tokens", "p_clean", "p_corrupted",
                                          "n_tokens"]]
    cols = [c for c in ("known_id", "prompt", "subject", "attribute", "continuation", "first_token", "label")
            if c in known.columns]
    t = per.merge(known[cols], on="known_id", how="left")
    first = t["first_token"] if "first_token" in t else [None] * len(t)
    t["answer_expected"] = [greedy_answer_matches(str(a), m, f, str(attr))
                            for a, m, f, attr in zip(t["answer"], t["answer_mode"], first, t["attribute"], strict=True)]
    t["corruption_lowers_p"] = t["p_corrupted"] < t["p_clean"]
    t["figure"] = [f"{figure_dir}/{int(k)}.{ext}" for k in t["known_id"]]
    return t.reindex(columns=TABLE_COLUMNS).reset_index(drop=True)


def prompt_arrays(ie: pd.DataFrame, known_id: int) -> tuple[list[str], tuple[int, int], dict[str, np.ndarray]]:
    """Tokens, subject span and P_restored (tokens × layers) per kind of one prompt, from the IE table."""
    g = ie[ie["known_id"] == known_id]
    tokens = g.drop_duplicates("token_index").sort_values("token_index")["token"].astype(str).tolist()
    span = (int(g["subject_start"].iloc[0]), int(g["subject_end"].iloc[0]))
    mats = {kind: ie_grid(g[g["kind"] == kind], "p_restored") for kind in dict.fromkeys(g["kind"])}  # traced order
    return tokens, span, mats


def prompt_figures(ie: pd.DataFrame, table: pd.DataFrame, model: str, modality: str,
                   window: int | None = None) -> Iterator[tuple[int, Figure]]:
    """(known_id, figure) for every traced prompt, titled with the run, the prompt and its flags."""
    for row in table.itertuples(index=False):
        tokens, span, mats = prompt_arrays(ie, row.known_id)
        yield int(row.known_id), prompt_trace_figure(
            tokens, span, mats, str(row.answer), float(row.p_clean), float(row.p_corrupted), window=window,
            title=f"{run_label(model, modality)} · known_id {row.known_id}: {row.prompt}",
            attribute=row.attribute, answer_ok=bool(row.answer_expected), answer_mode=str(row.answer_mode))


def png_data_uri(fig: Figure, dpi: int = 110) -> tuple[str, int]:
    """The figure as an embeddable PNG and the CSS width (px) that shows it at 100 px per inch, where
    10 pt text is 14 px tall, whatever the figure's size."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), int(fig.get_size_inches()[0] * 100)


_PAGE_CSS = """
tr.flag td{background:#fff4e5} td .f{color:#b00020;font-weight:bold} .gallery figure{margin:18px 0 28px}
.gallery img{max-width:100%;height:auto;border:1px solid #ddd} td.prompt{max-width:22em}
table.traced{font-size:13px} table.traced td,table.traced th{padding:3px 6px} td.nw{white-space:nowrap}
"""


def _highlight(prompt: str, subject: str) -> str:
    i = prompt.find(subject) if subject else -1
    if i < 0:
        return _html.escape(prompt)
    return (_html.escape(prompt[:i]) + "<b>" + _html.escape(subject) + "</b>"
            + _html.escape(prompt[i + len(subject):]))


def flags(row) -> list[str]:
    out = []
    if not row.answer_expected:
        out.append("answer ≠ attribute")
    if not row.corruption_lowers_p:
        out.append("P_corrupted ≥ P_clean")
    return out


def page(table: pd.DataFrame, summary: Mapping, gallery: Mapping[int, tuple[str, int]], n_gallery: int,
         expect_answer: str = "flag", skipped: pd.DataFrame | None = None) -> str:
    """The report page: a warning when nothing was traced, counts, the table (each row links to its figure:
    an anchor in the gallery below, or the figure file next to this page), and the gallery."""
    label = run_label(summary.get("model", "?"), summary.get("modality", "?"))
    parts = []
    if summary.get("warning"):
        parts.append(html.warning(summary["warning"]))
    n = len(table)
    mode = summary.get("answer") or "top1"
    n_unexp = int((~table["answer_expected"].astype(bool)).sum()) if n else 0
    n_nolower = int((~table["corruption_lowers_p"].astype(bool)).sum()) if n else 0
    counts = [f"{n} prompt(s) traced; answer o: {answer_label(mode)} (trace.answer: {mode})",
              f"{n_unexp} whose greedy answer token does not start the attribute (filter.expect_answer: {expect_answer})",
              f"{n_nolower} where corruption does not lower P(answer)"]
    if skipped is not None and len(skipped):
        counts.append(f"{len(skipped)} known prompt(s) skipped because the greedy answer does not start the attribute")
    parts.append(html.bullets(counts))
    if n > n_gallery:
        parts.append(html.note(f"The gallery shows the first {n_gallery} prompts (figures.gallery = {n_gallery}); "
                               f"rows after that link to the figure files next to this page in the results folder."))
    rows = []
    for row in table.itertuples(index=False):
        f = flags(row)
        kid = int(row.known_id)
        href = f"#p{kid}" if kid in gallery else _html.escape(str(row.figure))
        cells = [
            f'<td class="num"><a href="{href}">{kid}</a></td>',
            f'<td class="prompt">{_highlight(str(row.prompt), str(row.subject))}</td>',
            f'<td class="nw">{_html.escape(str(row.attribute))}</td>',
            f"<td>{_html.escape(token_label(str(row.continuation)))}</td>",
            f"<td>{_html.escape(str(row.label))}</td>",
            f'<td class="nw">{_html.escape(token_label(str(row.answer)))}'
            + (f" ({int(row.answer_tokens)} tokens)" if int(row.answer_tokens) > 1 else "") + "</td>",
            f'<td class="num">{row.p_clean:.3f}</td>',
            f'<td class="num">{row.p_corrupted:.3f}</td>',
            f'<td>{"<br>".join(f"<span class=f>{_html.escape(x)}</span>" for x in f)}</td>',
        ]
        rows.append(f'<tr{" class=flag" if f else ""}>' + "".join(cells) + "</tr>")
    head = ["known_id (→ figure)", "prompt (subject in bold)", "expected attribute", "greedy continuation", "label",
            "traced answer o", "P_clean", "P_corrupted", "flags"]
    if n:
        parts.append('<table class="traced"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table>")
        follows = ("Tracing follows the first greedy token o; 'answer ≠ attribute' marks an o that does not start "
                   "the attribute (ROME's expect check)." if mode == "top1" else
                   f"Tracing follows the attribute ({answer_label(mode)}); 'answer ≠ attribute' marks a prompt whose "
                   "first greedy token does not start the attribute (ROME's expect check).")
        parts.append(html.note("label: exact = the greedy continuation starts with the attribute, partial = the "
                               f"attribute appears later as whole words. {follows} P values are for o: clean run, "
                               "and corrupted run averaged over noise draws."))
    if skipped is not None and len(skipped):
        sk = skipped[[c for c in ("known_id", "prompt", "attribute", "continuation", "first_token") if c in skipped]]
        parts.append("<h2>Skipped: greedy answer does not start the attribute (filter.expect_answer: skip)</h2>"
                     + html.table(sk))
    if gallery:
        figs = [f'<figure id="p{kid}"><img src="{uri}" width="{w}" alt="known_id {kid}"></figure>'
                for kid, (uri, w) in gallery.items()]
        parts.append(f'<h2>Gallery: the first {len(gallery)} traced prompt(s)</h2><div class="gallery">'
                     + "".join(figs) + "</div>")
    title = f"Traced prompts: {label}"
    doc = html.page(title, [("", "".join(parts))])
    return doc.replace("</style>", _PAGE_CSS + "</style>", 1)


__all__ = ["TABLE_COLUMNS", "flags", "page", "png_data_uri", "prompt_arrays", "prompt_figures",
           "traced_table"]
