"""Readable figures: token labels (escaped bytes, quotes, control characters), titles and colour bars inside
the canvas, tick labels legible at the report's width, and an empty run's figure that says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_drawn_inside

from crosstrace.report import figures as F
from crosstrace.trace.tokens import token_strings


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_byte_tokens_are_shown_as_escaped_bytes(tok):
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
    assert_drawn_inside(fig)
    p = {"mlp": np.full((5, 30), 0.3)}
    fig = F.prompt_trace_figure([" a"] * 5, (0, 2), p, " Latin", 0.9, 0.1, window=10, title="The original "
                                "language of De finibus bonorum et malorum is the same as the")
    assert_drawn_inside(fig)


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
    assert_drawn_inside(fig)


def test_empty_aie_figure_says_no_prompts_traced():
    cols = ["model", "modality", "kind", "category", "layer", "aie", "n", "ci_low", "ci_high"]
    fig = F.heatmap_figure(pd.DataFrame(columns=cols), "mlp", {"model": "m", "modality": "t2t"}, ci_panel=True)
    assert any("NO PROMPTS TRACED" in t.get_text() for t in F._texts(fig))
