"""Hidden states of the same prompt spoken and written, for the cross-modal representation analysis.

Why: the paper (§3) suggests that SpiritLM's text and speech representations may align in direction
(cosine similarity) over deeper layers while staying apart in magnitude (Euclidean distance), which would
explain why factual recall transfers only partly to speech. This module reads the states to test that;
:func:`similarity_run` reads them and hands them to :func:`crosstrace.report.similarity.write_similarity`,
which compares them.

For every prompt in both sets, one clean forward pass per modality, without noise, keeping the residual
stream after every block at two matched positions (``POSITIONS``):

- ``subject``: the last subject token (T→T) ↔ the last unit of the subject span (S→T), i.e. the last unit
  of the subject's last text token (the text-token mapping of :func:`crosstrace.speech.prompts.prompt_table`).
  With ``speech.token_rows: spoken`` (the paper) that token is the last spoken text token of the subject, the
  end of the same subject where the spoken text writes it differently ("Yakuza 2" → "Yakuza two"); with
  ``prompt`` it is the same text token as T→T's. The S→T known table records which (``token_rows``), and so
  do the similarity table and page;
- ``last``: the last prompt token (T→T) ↔ the last S→T token, the one the answer follows (SpiritLM's ``[Text]``
  marker; Qwen2-Audio's last template token, ``<|audio_eos|>`` by default).

Prompt ids and subject spans are built exactly as the tracer builds them: by the
:class:`~crosstrace.modality.T2T` and :class:`~crosstrace.modality.S2T` objects (S→T checks the span
against the known table's). Layer ``l`` (0-based) is the
tracer's ``hidden`` site ``resid.l``: the output of block ``l``, read by a forward hook on the block. With
transformers' ``output_hidden_states`` that is ``hidden_states[l + 1]`` for every block but the last,
whose entry there has the model's final norm applied. The input embeddings (``hidden_states[0]``) are not
included: the tracer has no layer for them, and text tokens and speech units have separate embedding rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import ModelSpec
from .filtering import select_for_trace
from .modality import for_run
from .models.adapter import get_adapter, hooks, site_name
from .models.family import load
from .report.similarity import write_similarity
from .spans import SpanError

POSITIONS = ("subject", "last")


def shared_prompts(
    t2t: pd.DataFrame, s2t: pd.DataFrame, require_known: bool = True
) -> list[tuple[dict, dict]]:
    """(T→T row, S→T row) of every prompt in both sets, in the T→T table's (dataset) order.

    A set is what the tracer would select from a known table, without the ``trace.max_prompts`` cap
    (:func:`crosstrace.filtering.select_for_trace`): the known prompts, or every valid record with
    ``require_known=False``; S→T rows also need ``status`` ok. Only the intersection (on ``known_id``)
    is returned: a prompt known in one modality only has no partner and is left out.
    """
    a = select_for_trace(t2t, None, require_known=require_known)
    b = select_for_trace(s2t, None, require_known=require_known)
    by_id = {int(r["known_id"]): r for r in b.to_dict("records")}
    return [(r, by_id[int(r["known_id"])]) for r in a.to_dict("records") if int(r["known_id"]) in by_id]


@torch.no_grad()
def block_states(model, input_ids: Sequence[int], positions: Sequence[int],
                 inputs_embeds: torch.Tensor | None = None) -> np.ndarray:
    """(len(positions), layers, hidden) float32: the output of every block at ``positions``, one clean pass
    (from ``inputs_embeds``, (T, hidden), when the input is not the ids' own embeddings: Qwen2-Audio's audio)."""
    adapter = get_adapter(model)
    n_layers = adapter.num_layers
    pos = [int(p) for p in positions]
    got: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(out: torch.Tensor) -> None:
            got[layer] = out[0, pos].float().cpu()

        return fn

    dev = adapter.embed.weight.device
    feed = ({"inputs_embeds": inputs_embeds.to(dev)[None]} if inputs_embeds is not None
            else {"input_ids": torch.tensor([list(input_ids)], device=dev)})
    with hooks(adapter, {site_name("hidden", layer): keep(layer) for layer in range(n_layers)}):
        model(**feed, use_cache=False)
    return torch.stack([got[layer] for layer in range(n_layers)], dim=1).numpy()


@dataclass
class MatchedStates:
    """Per position: text and speech states (prompts × layers × hidden), row i = ``known_ids[i]``."""

    known_ids: list[int]
    text: dict[str, np.ndarray]
    speech: dict[str, np.ndarray]
    positions: pd.DataFrame  # known_id, {t2t,s2t}_{subject,last}, n_{t2t,s2t}: token positions used
    # (known_id, reason) of the prompts without a subject span in one modality
    skipped: list[tuple[int, str]] = field(default_factory=list)
    token_rows: str | None = None  # the S→T rows the subject's units come from (speech.token_rows)


def matched_states(model, lm, spec: ModelSpec, pairs: Sequence[tuple[dict, dict]]) -> MatchedStates:
    """Block outputs at the matched positions of each (T→T row, S→T row) pair (see :func:`shared_prompts`).

    ``spec`` is the model entry, ``lm`` the loaded model (or, for SpiritLM, its tokenizer; :func:`for_run`).
    A prompt whose subject cannot be located in one of the modalities is listed in ``skipped`` with the
    reason, never silently dropped.
    """
    t2t, s2t = for_run(spec, "t2t", lm), for_run(spec, "s2t", lm)
    adapter = get_adapter(model)
    kept, rows, skipped = [], [], []
    text: list[np.ndarray] = []
    speech: list[np.ndarray] = []
    for t_row, s_row in pairs:
        kid = int(t_row["known_id"])
        try:
            t_inp, (_, t_end) = t2t.lm_input(t_row)
            s_inp, (_, s_end) = s2t.lm_input(s_row)
        except SpanError as e:  # as the tracer: a prompt without a subject span is quarantined
            skipped.append((kid, f"known_id={kid}: {e}"))
            continue
        t_ids, s_ids = t_inp.input_ids, s_inp.input_ids
        t_pos = {"subject": t_end - 1, "last": len(t_ids) - 1}
        s_pos = {"subject": s_end - 1, "last": len(s_ids) - 1}
        text.append(block_states(model, t_ids, [t_pos[p] for p in POSITIONS], t2t.inputs_embeds(t_inp)))
        speech.append(block_states(model, s_ids, [s_pos[p] for p in POSITIONS], s2t.inputs_embeds(s_inp)))
        kept.append(kid)
        rows.append(
            {
                "known_id": kid,
                **{f"t2t_{p}": t_pos[p] for p in POSITIONS},
                "n_t2t": len(t_ids),
                **{f"s2t_{p}": s_pos[p] for p in POSITIONS},
                "n_s2t": len(s_ids),
            }
        )
    hidden = adapter.embed.weight.shape[1]
    empty = np.empty((0, len(POSITIONS), adapter.num_layers, hidden), dtype=np.float32)
    t_all = np.stack(text) if text else empty
    s_all = np.stack(speech) if speech else empty
    cols = ["known_id", *(f"t2t_{p}" for p in POSITIONS), "n_t2t", *(f"s2t_{p}" for p in POSITIONS), "n_s2t"]
    modes = sorted({str(r["token_rows"]) for _, r in pairs if isinstance(r.get("token_rows"), str)})
    if len(modes) > 1:
        raise ValueError(f"the S→T known table mixes token rows {modes}")
    return MatchedStates(
        token_rows=modes[0] if modes else None,
        known_ids=kept,
        text={p: t_all[:, i] for i, p in enumerate(POSITIONS)},
        speech={p: s_all[:, i] for i, p in enumerate(POSITIONS)},
        positions=pd.DataFrame(rows, columns=cols),
        skipped=skipped,
    )


def similarity_run(spec: ModelSpec | dict, t2t: str | Path, s2t: str | Path, require_known: bool, stats: Mapping,
                   out_table: str | Path, out_html: str | Path, out_figures: Sequence[str | Path],
                   log: logging.Logger | None = None) -> pd.DataFrame:
    """The ``similarity`` step for one model: load it, read the matched states of the prompts in both known
    tables (``t2t``, ``s2t``: paths), and write the per-layer table, figure and page (:func:`write_similarity`).

    ``spec`` is the prepared model entry (a dict: the model JSON); ``stats`` holds seed, n_random, n_boot, level. Returns the table.
    """
    log = log or logging.getLogger("crosstrace")
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    lm = load(spec)
    pairs = shared_prompts(pd.read_parquet(t2t), pd.read_parquet(s2t), require_known)
    log.info("%s: %d prompts in both sets (require_known=%s)", spec.name, len(pairs), require_known)
    states = matched_states(lm.model, lm, spec, pairs)
    for _kid, reason in states.skipped:
        log.warning("skipped %s", reason)
    log.info("token positions used:\n%s", states.positions.to_string())
    return write_similarity(spec.name, states, len(pairs), stats, out_table, out_html, out_figures, log)
