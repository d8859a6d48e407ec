"""trace.screen and trace.engine: atp through the real Snakefile on a tiny random model."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from workflow_run import planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


SCREENED = {"max_prompts": 3, "screen": {"enabled": True, "top_n": 1, "max_gap": None}}


@pytest.fixture(scope="module")
def screened_run(tmp_path_factory, model_dir):
    run = tmp_path_factory.mktemp("screen")
    write_config(run / "config.yaml", tiny_config(model_dir, trace=SCREENED))
    r = snakemake(run, "--cores", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return run / "results" / "tiny" / "t2t"


def test_screen_traces_every_prompt_with_atp_and_the_top_one_exactly(screened_run):
    atp = pd.read_parquet(screened_run / "atp" / "ie_per_prompt.parquet")
    assert sorted(atp["known_id"].unique()) == [0, 1, 2] and set(atp["engine"]) == {"atp"}
    table = pd.read_parquet(screened_run / "screen.parquet")
    assert len(table) == 3 and table["selected"].sum() == 1  # input = selected + not selected
    top = table.loc[table["selected"]].iloc[0]
    assert top["rank"] == 1 and top["total_effect"] == table["total_effect"].max() and "top_n 1" in top["reason"]
    assert (table.loc[~table["selected"], "reason"] != "").all()
    exact = pd.read_parquet(screened_run / "ie_per_prompt.parquet")
    assert list(exact["known_id"].unique()) == [top["known_id"]] and set(exact["engine"]) == {"fast"}
    # same prompt, same noise: both passes agree on the runs they share
    a = atp[atp["known_id"] == top["known_id"]].iloc[0]
    e = exact.iloc[0]
    assert (a["answer_id"], a["n_tokens"]) == (e["answer_id"], e["n_tokens"])
    assert a["p_corrupted"] == pytest.approx(e["p_corrupted"], abs=1e-5)
    assert json.loads((screened_run / "atp" / "summary.json").read_text())["engine"] == "atp"
    for kind in ("hidden", "mlp", "attn"):
        assert (screened_run / "atp" / "figures" / f"aie_{kind}.png").stat().st_size > 10_000


def test_the_atp_pass_is_one_job_by_default_and_logs_stay_under_results(screened_run):
    """trace.screen.shard_size null: every selected prompt in one AtP job (one model load), while the exact
    trace keeps trace.shard_size; each job logs under the results directory."""
    known = pd.read_parquet(screened_run / "known.parquet")["known_id"].tolist()[:3]
    ie = pd.read_parquet(screened_run / "atp" / "shards" / "0.parquet")
    q = pd.read_parquet(screened_run / "atp" / "shards" / "0.quarantine.parquet")
    assert sorted(ie["known_id"].unique().tolist() + q["known_id"].tolist()) == sorted(known)
    assert sorted(p.name for p in (screened_run / "atp" / "shards").iterdir()) == ["0.parquet", "0.quarantine.parquet"]
    logs = screened_run.parents[1] / "logs"
    assert sorted(p.name for p in (logs / "trace_atp").glob("*.log")) == ["tiny_t2t_0.log"]
    assert (logs / "screen" / "tiny_t2t.log").exists() and (logs / "merge_atp" / "tiny_t2t.log").exists()
    assert not (screened_run.parents[2] / "logs").exists()


def screened_dry_run(screened_run, model_dir, **trace):
    run = screened_run.parents[2]
    write_config(run / "changed.yaml", tiny_config(model_dir, trace={**SCREENED, **trace}))
    r = snakemake(run, "--dry-run", "--cores", "1", configfile="changed.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    return planned_jobs(r.stdout), r.stdout


def test_screen_settings_rerun_the_screen_not_the_atp_pass(screened_run, model_dir):
    jobs, out = screened_dry_run(screened_run, model_dir, screen={**SCREENED["screen"], "top_n": 2})
    assert jobs.get("screen") == 1, out[-3000:]
    assert not {"trace_atp", "merge_atp", "figures_atp", "filter_known", "noise_std"} & set(jobs), out[-3000:]


def test_screen_shard_size_splits_the_atp_pass_into_fixed_blocks(screened_run, model_dir):
    jobs, out = screened_dry_run(screened_run, model_dir, screen={**SCREENED["screen"], "shard_size": 1})
    assert jobs.get("trace_atp") == 3 and {"merge_atp", "figures_atp", "screen"} <= set(jobs), out[-3000:]
    assert sorted(int(i) for i in re.findall(r"rule trace_atp:.*?shard=(\d+)", out, re.S)) == [0, 1, 2]
    assert not {"filter_known", "noise_std", "trace"} & set(jobs), out[-3000:]


def test_exact_shard_size_leaves_the_atp_pass_alone(screened_run, model_dir):
    jobs, out = screened_dry_run(screened_run, model_dir, shard_size=2)
    assert not {"trace_atp", "merge_atp", "screen"} & set(jobs), out[-3000:]


def test_raising_max_prompts_reruns_the_one_atp_job(screened_run, model_dir):
    jobs, out = screened_dry_run(screened_run, model_dir, max_prompts=4)
    assert jobs.get("trace_atp") == 1 and "shard=0" in out, out[-3000:]


def test_speed_settings_rerun_nothing_in_a_screened_run(screened_run, model_dir):
    jobs, out = screened_dry_run(screened_run, model_dir, max_rows=7)
    assert jobs == {}, out[-3000:]


def test_engine_atp_alone_and_screen_needs_an_exact_engine(tmp_path, model_dir):
    write_config(tmp_path / "config.yaml", tiny_config(model_dir, trace={"engine": "atp"}))
    r = snakemake(tmp_path, "--dry-run", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout)
    # the checkpoint hides the trace jobs from a dry run; what matters is that no screen stage is planned
    assert "filter_known" in jobs and not {"trace_atp", "merge_atp", "screen"} & set(jobs)
    write_config(tmp_path / "config.yaml", tiny_config(model_dir, trace={"engine": "atp", "screen": {"enabled": True}}))
    r = snakemake(tmp_path, "--dry-run", "--cores", "1")
    assert r.returncode != 0 and "trace.screen needs an exact trace.engine" in r.stdout + r.stderr
