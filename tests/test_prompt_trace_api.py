"""The notebook API a new user meets first: trace_prompt's PromptTrace (repr, to_frame, categories, plot),
noise_std="dataset", and plotting from a plain script without touching matplotlib's backend or settings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import ROOT, assert_drawn_inside

from crosstrace.report import figures as F
from crosstrace.trace import NoiseConfig, TraceSettings, trace_prompt

FAST = TraceSettings(kinds=("hidden", "mlp"), window=2, noise=NoiseConfig(samples=2))
PROMPT, SUBJECT = "Apple's headquarters are in", "Apple"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def res(tiny):
    _, model, tok = tiny
    return trace_prompt(model, tok, PROMPT, SUBJECT, FAST, noise_std=0.05, known_id=11)


def test_repr_is_a_short_summary(res):
    text = repr(res)
    assert len(text.splitlines()) == 6 and "array(" not in text
    assert repr(PROMPT) in text and "subject 'Apple' = tokens 0..2 of 8" in text
    assert f"P_clean = {res.p_clean:.4f}, P_corrupted = {res.p_corrupted:.4f}" in text
    kt = res.kinds["mlp"]
    assert f"mlp    peak IE {kt.ie.max():+.4f}" in text


def test_to_frame_and_categories(res):
    df = res.to_frame()
    T, L = len(res.tokens), res.n_layers
    assert len(df) == 2 * T * L and set(df["kind"]) == {"hidden", "mlp"}
    row = df[(df["kind"] == "mlp") & (df["token_index"] == 1) & (df["layer"] == 1)].iloc[0]
    assert row["ie"] == res.kinds["mlp"].ie[1, 1] and row["p_restored"] == res.kinds["mlp"].p_restored[1, 1]
    assert row["token"] == res.tokens[1] and row["p_clean"] == res.p_clean and row["known_id"] == 11
    cats = res.categories()
    assert cats.index.names == ["kind", "category"] and list(cats.columns) == list(range(L))
    # the tiny tokenizer splits "Apple" into 'A' 'pp' 'le' (tokens 0..2), "'s" is the first subsequent
    np.testing.assert_allclose(cats.loc[("mlp", "middle_subject")], res.kinds["mlp"].ie[1])
    np.testing.assert_allclose(cats.loc[("hidden", "further")], res.kinds["hidden"].ie[4:T - 1].mean(axis=0))
    assert res.categories("mlp").index.tolist() == list(F.CATEGORIES)
    np.testing.assert_allclose(res.categories("mlp").loc["last"], res.kinds["mlp"].ie[T - 1])


def test_plot_returns_a_figure_per_kind(res):
    fig = res.plot()
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in heat] == ["restoring hidden states", "restoring MLP (window 2)"]
    assert f"P_clean = {res.p_clean:.3f}" in fig._suptitle.get_text()
    assert [t.get_text() for t in heat[0].get_yticklabels()][:4] == ["'A' *", "'pp' *", "'le' *", "''s'"]
    plt.close(fig)
    fig = res.plot(kinds="mlp", attribute="zzz")
    assert len([ax for ax in fig.axes if ax.get_images()]) == 1
    assert "does not start the attribute 'zzz'" in fig._supxlabel.get_text()
    assert_drawn_inside(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match=r"kinds \['attn'\] were not traced"):
        res.plot(kinds=("attn",))


def test_dataset_noise_std_is_the_workflows_and_cached(tiny, monkeypatch):
    from crosstrace import data
    from crosstrace.trace import api

    _, model, tok = tiny
    subjects = [r.subject for r in data.load_known(data.BUNDLED_KNOWN)[0]]
    want = api.subject_embedding_std(model, tok, subjects)
    assert api.dataset_noise_std(model, tok) == want
    calls = []
    monkeypatch.setattr(data, "load_known", lambda p: calls.append(p))  # a second computation would fail
    r = trace_prompt(model, tok, PROMPT, SUBJECT, FAST, noise_std="dataset")
    assert calls == [] and r.noise_scale == pytest.approx(3.0 * want)
    with pytest.raises(ValueError, match="'dataset'"):
        trace_prompt(model, tok, PROMPT, SUBJECT, FAST, noise_std="data")


def test_import_leaves_the_backend_and_rcparams_alone():
    code = ("import matplotlib; fs = matplotlib.rcParams['font.size']\n"
            "import crosstrace.trace, crosstrace.report.figures, crosstrace.report.prompts\n"
            "print(matplotlib.get_backend(), matplotlib.rcParams['font.size'] == fs)")
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["svg", "True"]


def test_plain_script_plots_with_the_default_backend(tiny, tmp_path):
    """The issue's one-liner: trace_prompt(...).plot() in a plain script, no backend chosen by anyone."""
    path = tiny[0]
    code = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from crosstrace.trace import trace_prompt, TraceSettings, NoiseConfig
        m, t = AutoModelForCausalLM.from_pretrained({str(path)!r}), AutoTokenizer.from_pretrained({str(path)!r})
        r = trace_prompt(m, t, {PROMPT!r}, {SUBJECT!r}, TraceSettings(window=2, noise=NoiseConfig(samples=2)))
        fig = r.plot()
        fig.savefig("trace.png")
        print(type(fig).__name__, len(fig.axes))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["Figure", "6"]  # 3 kinds, each with its colour bar
    assert (tmp_path / "trace.png").stat().st_size > 10_000
