"""Small self-contained HTML pages (tables, notes) for the Snakemake report; no external assets."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:14px;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px} h2{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:4px 0 10px} th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums}
p.note{color:#555;font-size:12px;margin:4px 0} pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
li{margin:2px 0}
"""


def _cell(v) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int | bool) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def table(df: pd.DataFrame, max_rows: int = 200) -> str:
    """An HTML table of ``df`` (first ``max_rows`` rows, with a note when cut)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.head(max_rows).itertuples(index=False):
        rows.append("<tr>" + "".join(_cell(v.item() if hasattr(v, "item") else v) for v in rec) + "</tr>")
    cut = f'<p class="note">first {max_rows} of {len(df)} rows</p>' if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{cut}"


def page(title: str, sections: Iterable[tuple[str, str]]) -> str:
    """A complete HTML document: ``sections`` are (heading, inner HTML) pairs ('' heading: none)."""
    body = "".join((f"<h2>{html.escape(h)}</h2>" if h else "") + s for h, s in sections)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def warning(text: str) -> str:
    """A loud box (e.g. a run that traced nothing)."""
    return ('<p style="border:3px solid #b00020;background:#fdecee;color:#7a0015;padding:10px 14px;'
            f'font-size:16px;font-weight:bold">WARNING: {html.escape(text)}</p>')


def bullets(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def stage_counts(summary: Mapping, validation_quarantined: int, trace_quarantine: pd.DataFrame,
                 require_known: bool = True) -> pd.DataFrame:
    """Prompts per filtering stage for one run (stage, count, note), from summary.json and quarantines."""
    known = int(summary.get("known", 0))
    traced = int(summary.get("traced", 0))
    q_trace = int(len(trace_quarantine))
    rows = [
        ("Known records read", int(summary.get("records", 0)) + validation_quarantined,
         "records in the dataset (after data.limit)"),
        ("quarantined at validation", validation_quarantined, "malformed records, see data/quarantine.parquet"),
        ("valid records", int(summary.get("records", 0)), "checked by the Known filter"),
        ("known (exact or partial)", known, "greedy continuation contains the attribute"),
        ("known: exact", int(summary.get("known_exact", 0)), "continuation starts with the attribute"),
        ("known: partial", int(summary.get("known_partial", 0)), "attribute as whole words later on"),
        *([("skipped: answer ≠ attribute", int(summary.get("skipped_unexpected", 0)),
             "greedy first token does not start the attribute (filter.expect_answer: skip)")]
          if summary.get("expect_answer") == "skip" else []),
        ("selected for tracing", traced + q_trace,
         ("known prompts" if require_known else "all valid records (filter.require_known: false)")
         + ", capped by trace.max_prompts"),
        ("quarantined in tracing", q_trace, "subject span, non-finite probabilities or over trace.max_prompt_tokens"),
        ("traced", traced, "prompts in the AIE"),
    ]
    return pd.DataFrame(rows, columns=["stage", "count", "note"])
