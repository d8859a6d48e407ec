"""The demo configuration's report shows what was traced, prompt by prompt; a run that traces nothing says so.

The shared finished run (conftest ``demo_run``: config.yaml with the tiny models in place of SmolLM2) and its
report, and two runs of their own whose model knows none of the facts (a minute on 2 cores).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_run import demo_config, report_file, report_results, snakemake, write_config

from crosstrace.report.prompts import TABLE_COLUMNS

pytestmark = pytest.mark.slow
RUN = Path("results/tiny/t2t")


@pytest.fixture(scope="module")
def demo(demo_run):
    cfg = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert cfg["figures"]["gallery"] == 24 and cfg["filter"]["expect_answer"] == "flag"  # the demo's settings
    return demo_run, (demo_run / "console.txt").read_text()


def test_every_traced_prompt_has_its_figure_and_row(demo):
    wd, _ = demo
    table = pd.read_parquet(wd / RUN / "traced_prompts.parquet")
    ie = pd.read_parquet(wd / RUN / "ie_per_prompt.parquet")
    assert table.columns.tolist() == TABLE_COLUMNS
    assert table["known_id"].tolist() == list(dict.fromkeys(ie["known_id"])) and len(table) == 4
    for kid in table["known_id"]:
        for ext in ("png", "pdf"):  # the demo's figures.formats
            assert (wd / RUN / "prompts" / f"{kid}.{ext}").stat().st_size > 5000
    first = ie[ie["known_id"] == table["known_id"].iloc[0]].iloc[0]
    assert table["p_clean"].iloc[0] == first["p_clean"] and table["answer"].iloc[0] == first["answer"]


def test_report_has_the_table_and_one_figure_per_traced_prompt(demo):
    wd, _ = demo
    results = report_results(wd / "report.html")
    entry = results[str(RUN / "traced_prompts.html")]
    assert "Every prompt traced for <strong>tiny t2t</strong>" in entry["caption"]
    page = report_file(entry).decode("utf-8")
    table = pd.read_parquet(wd / RUN / "traced_prompts.parquet")
    rows = re.findall(r"<tr(?: class=flag)?><td class=\"num\"><a href=\"#p(\d+)\">", page)
    assert [int(k) for k in rows] == table["known_id"].tolist()  # one row per traced prompt, linked
    figures = re.findall(r'<figure id="p(\d+)"><img src="data:image/png;base64,', page)
    assert [int(k) for k in figures] == table["known_id"].tolist()  # one figure per traced prompt
    for header in ("prompt (subject in bold)", "expected attribute", "greedy continuation", "label",
                   "traced answer o", "P_clean", "P_corrupted", "flags"):
        assert f"<th>{header}</th>" in page
    for row in table.itertuples():
        assert f"{row.p_clean:.3f}" in page and f"{row.p_corrupted:.3f}" in page


def test_flagged_prompts_are_counted_and_announced(demo):
    wd, console = demo
    summary = json.loads((wd / RUN / "summary.json").read_text())
    table = pd.read_parquet(wd / RUN / "traced_prompts.parquet")
    unexpected = table.loc[~table["answer_expected"], "known_id"].tolist()
    assert summary["expect_answer"] == "flag" and summary["unexpected_answer_ids"] == unexpected
    assert summary["corruption_not_lowering"] == int((~table["corruption_lowers_p"]).sum())
    assert unexpected, "a random model should not answer with the attribute"
    assert f"tiny t2t: {len(unexpected)} traced prompt(s) answer with a token that does not start" in console


def test_a_run_that_traces_nothing_fails_or_warns_loudly(tmp_path, tiny_model_dir):
    cfg = demo_config(tiny_model_dir, filter={"require_known": True})  # the random model knows no fact
    write_config(tmp_path / "config.yaml", cfg)
    r = snakemake(tmp_path, "--cores", "2", timeout=1800)
    assert r.returncode != 0
    msg = "no prompt was traced for tiny t2t: 0 of 6 records are known to the model"
    assert f"ERROR: {msg}" in r.stderr  # on the console, not only in the log
    assert "trace.on_empty: warn" in r.stderr

    write_config(tmp_path / "config.yaml", demo_config(tiny_model_dir, filter={"require_known": True},
                                                        trace={"on_empty": "warn"}))
    r = snakemake(tmp_path, "--cores", "2", timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"WARNING: {msg}" in r.stderr
    summary = json.loads((tmp_path / RUN / "summary.json").read_text())
    assert summary["traced"] == 0 and summary["warning"].startswith(msg)
    assert f"WARNING: {msg}" in (tmp_path / RUN / "traced_prompts.html").read_text()
    assert "WARNING: no prompt was traced" in (tmp_path / RUN / "qc.html").read_text()
    assert not list((tmp_path / RUN / "prompts").glob("*.png"))
