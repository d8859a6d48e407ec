"""What a new user meets first: the notebook API (repr, plot, tables, noise_std="dataset"), readable
figures and token labels, ROME's expect check, the traced-prompts page and the offline switch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, make_tiny_model_dir

from crosstrace.filtering import answer_matches, select_for_trace, unexpected_answers
from crosstrace.report import figures as F
from crosstrace.report import prompts as P
from crosstrace.trace import NoiseConfig, TraceSettings, trace_prompt
from crosstrace.trace.tokens import token_strings

FAST = TraceSettings(kinds=("hidden", "mlp"), window=2, noise=NoiseConfig(samples=2))
PROMPT, SUBJECT = "Apple's headquarters are in", "Apple"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "m")
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def res(tiny):
    _, model, tok = tiny
    return trace_prompt(model, tok, PROMPT, SUBJECT, FAST, noise_std=0.05, known_id=11)


def _inside(fig) -> None:
    """Everything drawn (titles, labels, colour bars) lies inside the canvas: nothing is clipped."""
    fig.draw_without_rendering()
    bb, (w, h) = fig.get_tightbbox(), fig.get_size_inches()
    assert bb.x0 >= -0.01 and bb.y0 >= -0.01 and bb.x1 <= w + 0.01 and bb.y1 <= h + 0.01, (bb, w, h)


# --- the notebook API -------------------------------------------------------------------------------


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
    _inside(fig)
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


# --- readable figures and tokens --------------------------------------------------------------------


def test_byte_tokens_are_shown_as_escaped_bytes(tiny):
    tok = tiny[2]
    ids = tok("x 🙂 y")["input_ids"]
    assert "�" in "".join(tok.decode([i]) for i in ids)  # the emoji's 4 bytes are split over tokens
    shown = token_strings(tok, ids)
    assert "�" not in "".join(shown) and "\\xf0\\x9f" in "".join(shown)
    assert token_strings(tok, tok("Apple is")["input_ids"]) == [tok.decode([i]) for i in tok("Apple is")["input_ids"]]


def test_sentencepiece_byte_fallback_tokens():
    class SP:  # the two calls token_strings makes, as a Llama-2 tokenizer answers them
        def decode(self, ids):
            return "�"

        def convert_ids_to_tokens(self, i):
            return "<0xE2>"

    assert token_strings(SP(), [7]) == ["\\xe2"]


def test_token_label_quotes_and_escapes_control_characters():
    assert F.token_label(" the") == "' the'"
    assert F.token_label("a\nb\t") == "'a\\nb\\t'"
    assert F.token_label("é") == "'é'"


def test_one_kind_panel_title_is_not_clipped():
    rows = []
    for cat in F.CATEGORIES:
        for layer in range(30):
            rows.append(dict(model="a-model-with-a-long-name", modality="t2t", kind="hidden", category=cat,
                             layer=layer, aie=0.01 * (layer + 1), n=4))
    fig = F.panel_figure(pd.DataFrame(rows), [("a-model-with-a-long-name", "t2t")], ["hidden"],
                         meta={("a-model-with-a-long-name", "t2t"): {"noise_scale": 0.35}})
    fig.suptitle("log AIE per token category and layer; 10 noise draws, window 10")
    F.readable(fig)
    _inside(fig)
    p = {"mlp": np.full((5, 30), 0.3)}
    fig = F.prompt_trace_figure([" a"] * 5, (0, 2), p, " Latin", 0.9, 0.1, window=10, title="The original "
                                "language of De finibus bonorum et malorum is the same as the")
    _inside(fig)


def test_report_figures_are_readable_at_900_px():
    """The report shows a PNG about 900 px wide: tick labels must stay >= 12 px there."""
    rows = [dict(model=m, modality="t2t", kind=k, category=c, layer=layer, aie=0.01, n=4)
            for m in ("a", "b") for k in ("hidden", "mlp", "attn") for c in F.CATEGORIES for layer in range(32)]
    fig = F.panel_figure(pd.DataFrame(rows), [("a", "t2t"), ("b", "t2t")], ["hidden", "mlp", "attn"])
    width_in = fig.get_size_inches()[0]
    ticks = [t for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()]
    assert min(t.get_fontsize() for t in ticks) * F.REPORT_WIDTH_PX / (72 * width_in) >= 11.8
    tokens = [f" token{i}" for i in range(25)]
    p = {k: np.random.default_rng(0).random((25, 32)) for k in ("hidden", "mlp", "attn")}
    fig = F.prompt_trace_figure(tokens, (2, 5), p, " Paris", 0.9, 0.1, window=10, title="x " * 80)
    ticks = [t for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()]
    assert min(t.get_fontsize() for t in ticks) * F.REPORT_WIDTH_PX / (72 * fig.get_size_inches()[0]) >= 11.8
    _inside(fig)


# --- ROME's expect check and the traced-prompts page ------------------------------------------------


@pytest.mark.parametrize("answer,attribute,ok", [
    (" Latin", "Latin", True), (" Lat", "Latin", True), (" original", "Latin", False), (" the", "Microsoft", False),
    (" los", "Los Angeles", True), ("", "Latin", False), (" ", "Latin", False), (" Europe", "Europe", True),
])
def test_answer_matches(answer, attribute, ok):
    assert answer_matches(answer, attribute) is ok


def _known() -> pd.DataFrame:
    return pd.DataFrame({
        "known_id": [6, 9, 12, 20], "subject": ["Catalonia", "De finibus", "Il Gazzettino", "X"],
        "attribute": ["Europe", "Latin", "Italian", "Y"],
        "prompt": ["Catalonia belongs to the continent of", "The language of De finibus is the same as the",
                   "Il Gazzettino was written in the", "X is"],
        "continuation": [" Europe, and", " original language of the Latin", " Italian film", " nothing"],
        "first_token": [" Europe", " original", " Italian", " nothing"],
        "label": ["exact", "partial", "exact", "none"], "known": [True, True, True, False], "status": "ok",
    })


def test_expect_answer_selection():
    known = _known()
    assert unexpected_answers(known)["known_id"].tolist() == [9, 20]
    assert select_for_trace(known, None, expect_answer="flag")["known_id"].tolist() == [6, 9, 12]
    assert select_for_trace(known, None, expect_answer="trace")["known_id"].tolist() == [6, 9, 12]
    assert select_for_trace(known, 2, expect_answer="skip")["known_id"].tolist() == [6, 12]  # cap after skipping
    with pytest.raises(ValueError, match="expect_answer"):
        select_for_trace(known, None, expect_answer="maybe")


def _ie(known_ids, answers, p_clean, p_corrupted, T=4, L=3) -> pd.DataFrame:
    rows = []
    for kid, a, pc, pk in zip(known_ids, answers, p_clean, p_corrupted, strict=True):
        for kind in ("hidden", "mlp"):
            for t in range(T):
                for layer in range(L):
                    p = pk + 0.1 * t * layer
                    rows.append(dict(known_id=kid, kind=kind, token_index=t, token=f" t{t}", layer=layer, ie=p - pk,
                                     p_restored=p, p_clean=pc, p_corrupted=pk, answer=a, subject_start=0,
                                     subject_end=2, n_tokens=T))
    return pd.DataFrame(rows)


def test_traced_table_flags_and_page_links():
    ie = _ie([6, 9, 12], [" Europe", " original", " Italian"], [0.5, 0.251, 0.4], [0.1, 0.356, 0.05])
    table = P.traced_table(ie, _known())
    assert table.columns.tolist() == P.TABLE_COLUMNS and table["known_id"].tolist() == [6, 9, 12]
    assert table["answer_expected"].tolist() == [True, False, True]
    assert table["corruption_lowers_p"].tolist() == [True, False, True]
    assert table.loc[1, "label"] == "partial" and table.loc[1, "figure"] == "prompts/9.png"
    tokens, span, mats = P.prompt_arrays(ie, 9)
    assert tokens == [" t0", " t1", " t2", " t3"] and span == (0, 2) and mats["mlp"][3, 2] == pytest.approx(0.956)
    figs = dict(P.prompt_figures(ie, table, "m", "t2t", window=2))
    assert sorted(figs) == [6, 9, 12]
    title = figs[9]._suptitle.get_text()
    assert "known_id 9" in title and "P_clean = 0.251, P_corrupted = 0.356" in title
    assert "corruption does not lower P(o)" in figs[9]._supxlabel.get_text()
    assert "does not start the attribute 'Latin'" in figs[9]._supxlabel.get_text()
    gallery = {k: P.png_data_uri(figs[k]) for k in (6, 9)}  # a gallery of 2: row 12 links to its file
    for f in figs.values():
        plt.close(f)
    page = P.page(table, {"model": "m", "modality": "t2t"}, gallery, 2)
    assert page.count('<figure id="p') == 2 and page.count("data:image/png;base64,") == 2
    assert '<a href="#p9">9</a>' in page and '<a href="prompts/12.png">12</a>' in page
    assert page.count("<tr class=flag>") == 1 and "answer ≠ attribute" in page and "P_corrupted ≥ P_clean" in page
    assert "<b>De finibus</b>" in page and "WARNING" not in page
    assert "the first 2 prompts (figures.gallery = 2)" in page


def test_page_of_an_empty_run_warns():
    table = P.traced_table(_ie([], [], [], []), _known())
    assert table.empty
    page = P.page(table, {"model": "m", "modality": "t2t", "warning": "no prompt was traced for m t2t"}, {}, 24)
    assert "WARNING: no prompt was traced for m t2t" in page and "0 prompt(s) traced" in page


def test_empty_aie_figure_says_no_prompts_traced():
    cols = ["model", "modality", "kind", "category", "layer", "aie", "n", "ci_low", "ci_high"]
    fig = F.heatmap_figure(pd.DataFrame(columns=cols), "mlp", {"model": "m", "modality": "t2t"}, ci_panel=True)
    assert any("NO PROMPTS TRACED" in t.get_text() for t in F._texts(fig))


# --- the offline switch ------------------------------------------------------------------------------


def test_offline_switch_follows_the_models(tmp_path):
    from crosstrace.models.loading import OFFLINE_DEFAULT
    from crosstrace.offline import LOCAL_ALIASES, hub_models
    from crosstrace.speech.asr import OFFLINE_WHISPER

    assert LOCAL_ALIASES == {OFFLINE_DEFAULT, OFFLINE_WHISPER}
    demo = {"models": [{"name": "s", "path": "smollm2-135m-offline"}], "speech": {"enabled": True}}
    assert hub_models(demo) == []
    local = {"models": [{"name": "x", "path": str(tmp_path)},
                        {"name": "sp", "path": "/not/here", "family": "spiritlm"}], "speech": {"enabled": False}}
    assert hub_models(local) == []
    hub = {"models": [{"name": "l", "path": "meta-llama/Llama-2-7b-hf"}],
           "speech": {"asr": {"model": "small"}, "align": {"ctc_model": "facebook/hubert-large-ls960-ft"},
                      "tts": {"backend": "melotts"}}}
    assert hub_models(hub) == ["meta-llama/Llama-2-7b-hf", "small", "facebook/hubert-large-ls960-ft",
                               "melotts (TTS voices)"]


def test_makefile_leaves_offline_to_the_config_and_offers_a_cuda_torch(tmp_path):
    text = (ROOT / "Makefile").read_text()
    assert "HF_HUB_OFFLINE ?= 1" not in text and "export HF_HUB_OFFLINE" not in text
    venv = tmp_path / "v"
    cuda = subprocess.run(["make", "-n", "venv", f"VENV={venv}", "TORCH=cuda"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert '"torch==2.13.0+cu128" --index-url https://download.pytorch.org/whl/cu128' in cuda
    cpu = subprocess.run(["make", "-n", "venv", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "pip install -q torch==2.13.0\n" in cpu and "download.pytorch.org" not in cpu
    (venv).mkdir()
    (venv / ".torch-cuda").touch()  # a venv remembers its build: later targets keep CUDA
    again = subprocess.run(["make", "-n", "venv", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    assert "pip install -q torch" not in again and "pip uninstall" not in again and '-e ".[' in again
