"""Known-t2t (and later Known-s2t): keep the facts the model actually produces under greedy decoding.

A continuation is *exact* when, after normalisation, it starts with the attribute, and *partial* when
the attribute occurs as whole words somewhere in it ("the city of Rome"). Everything else is excluded,
with the decoded text kept so a reader can audit the decision.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

log = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—…"})


def normalize_answer(text: str) -> str:
    """Lowercase, drop accents-insensitive punctuation and articles, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


@dataclass(frozen=True)
class Match:
    label: str  # exact | partial | none
    reason: str


def match_attribute(continuation: str, attribute: str) -> Match:
    cont, attr = normalize_answer(continuation), normalize_answer(attribute)
    if not attr:
        return Match("none", f"attribute {attribute!r} is empty after normalisation")
    if cont == attr or cont.startswith(attr + " "):
        return Match("exact", "continuation starts with the attribute")
    if f" {attr} " in f" {cont} ":
        return Match("partial", "attribute occurs as whole words in the continuation")
    return Match("none", "attribute not in the greedy continuation")


def answer_matches(answer: str, attribute: str) -> bool:
    """ROME's ``expect`` check for one traced token: does the answer token o start the attribute?

    ROME compares the decoded greedy token with the whole attribute, which no multi-token attribute can
    pass; here the token must be a non-empty prefix of the attribute (case and surrounding space ignored),
    so " Lat" matches "Latin" and " original" does not (Known prompt 9 on SmolLM2-135M).
    """
    a, attr = answer.strip().lower(), attribute.strip().lower()
    return bool(a) and attr.startswith(a)


def greedy_answer_matches(answer: str, answer_mode: str | None, first_token: str | None, attribute: str) -> bool:
    """The expect check for one traced prompt: does the model's own greedy token start the attribute?

    Under ``trace.answer: top1`` that token is the traced answer o; under the attribute modes o is the
    attribute itself, so the check reads the Known filter's first greedy token (``first_token``) instead.
    """
    token = answer if answer_mode in (None, "top1") or not isinstance(answer_mode, str) else first_token
    return answer_matches(str(token if token is not None else ""), str(attribute))


#: filter.expect_answer: what happens to a prompt whose greedy first token does not start its attribute.
EXPECT_MODES = ("trace", "flag", "skip")


def _no_grad(fn):
    """torch.no_grad, importing torch on first call: the selection helpers here also run in the Snakefile
    (common.smk) and in report jobs, which should not pay for loading torch."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


#: A greedy step whose two best next tokens score closer than this (in logits) is a near-tie: float rounding
#: that depends on the batch's shape, the thread count or the CPU can flip it (SmolLM2, Known 550: " English"
#: and " original" 9e-8 apart, below float32's resolution at 12.6). Batch-shape noise in float32 is far
#: smaller than this; see docs/method.md, "Known: near-ties".
NEAR_TIE = 1e-3
#: Near-ties of a float32 model on the CPU are decided in float64 (a copy made for them) when it has at most
#: this many parameters; larger models (and GPUs) decide them alone in their own dtype.
FLOAT64_TIE_PARAMS = 1_000_000_000


@dataclass(frozen=True)
class Greedy:
    """One prompt's greedy continuation: the new token ids (up to the first EOS) and the smallest gap
    between the two best scores over the steps taken (``inf`` when no step was taken)."""

    ids: list[int]
    margin: float
    decided: str  # batch (decoded in a batch) | alone (near-tie, on its own) | float64 (near-tie, alone in float64)


def _gap(scores) -> torch.Tensor:  # noqa: F821 - torch is imported by the callers
    top = scores.topk(2, dim=-1).values.double()
    return top[..., 0] - top[..., 1]


@_no_grad
def greedy_decode(model, tokenizer, prompts: Sequence, max_new_tokens: int = 10, batch_size: int = 32,
                  bad_words_ids: list[list[int]] | None = None, progress: bool = True) -> list[Greedy]:
    """Greedy new-token ids for each prompt (left-padded batches of similar lengths) with the smallest top-2
    score gap of each, the margin by which its continuation was decided.

    A prompt is its token ids, or its (T, hidden) input embeddings (a continuous-input speech family, whose
    audio positions are not token rows); the prompts of one call are all of one kind."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos, stop = tokenizer.eos_token_id, _stop_tokens(model, tokenizer)
    device = next(model.parameters()).device
    out: list[Greedy] = [None] * len(prompts)  # type: ignore[list-item]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    embeds = bool(prompts) and isinstance(prompts[0], torch.Tensor)
    for batch in tqdm(batches, desc="greedy decoding", unit="batch", disable=not progress):
        width = max(len(prompts[i]) for i in batch)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        if embeds:  # padding rows are zeros, masked out like pad tokens
            first = prompts[batch[0]]
            x = torch.zeros((len(batch), width, first.shape[-1]), dtype=first.dtype)
        else:
            x = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, i in enumerate(batch):
            p = prompts[i]
            x[row, width - len(p) :] = p.detach().cpu() if embeds else torch.tensor(p)
            mask[row, width - len(p) :] = 1
        gen = model.generate(
            **({"inputs_embeds": x.to(device)} if embeds else {"input_ids": x.to(device)}),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad,
            bad_words_ids=bad_words_ids,
            output_scores=True,
            return_dict_in_generate=True,
        )
        gaps = torch.stack([_gap(s) for s in gen.scores], dim=1).cpu()  # (rows, steps): processed scores
        # from embeddings generate returns the new tokens only; from ids, the prompt and then the new tokens
        start = 0 if embeds else width
        for row, i in enumerate(batch):
            new = gen.sequences[row, start:].tolist()
            steps = next((k + 1 for k, t in enumerate(new) if t in stop), len(new))  # a stop token's step counts
            margin = float(gaps[row, :steps].min()) if steps else math.inf
            ids = new[:steps]
            out[i] = Greedy(ids[:-1] if ids and ids[-1] == eos else ids, margin, "batch")
    return out


def _stop_tokens(model, tokenizer) -> set[int]:
    """Where greedy decoding stops: the model's generation EOS ids (what ``generate`` stops at) and the
    tokenizer's EOS (which ends a continuation's text)."""
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(gen if isinstance(gen, list) else [] if gen is None else [gen])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def tie_model(model):
    """The model that decides near-ties, and how: a float64 copy of a float32 model on the CPU with at most
    :data:`FLOAT64_TIE_PARAMS` parameters ("float64"), else the model itself ("alone")."""
    import copy

    import torch

    device = next(model.parameters()).device
    n_params = sum(p.numel() for p in model.parameters())
    if device.type == "cpu" and model.dtype == torch.float32 and n_params <= FLOAT64_TIE_PARAMS:
        return copy.deepcopy(model).to(torch.float64), "float64"
    return model, "alone"


@_no_grad
def greedy_alone(model, tokenizer, prompt, max_new_tokens: int = 10,
                 bad_words_ids: list[list[int]] | None = None, decided: str = "alone") -> Greedy:
    """One prompt (ids, or (T, hidden) input embeddings) decoded on its own with full forward passes, without
    ``generate`` (which rounds scores to float32): how a near-tie is decided, by the model :func:`tie_model`
    gives, so that no batch, and in float64 no thread count, decides it. ``bad_words_ids``: single tokens only
    (what the models here ban)."""
    import torch

    device = next(model.parameters()).device
    banned = [w[0] for w in bad_words_ids or [] if len(w) == 1]
    if len(banned) != len(bad_words_ids or []):
        raise ValueError("greedy_alone bans single tokens only")
    stop = _stop_tokens(model, tokenizer)
    embed = model.get_input_embeddings()
    embeds = isinstance(prompt, torch.Tensor)  # in the judge's dtype; new tokens' rows from its own embeddings
    x = prompt.to(device, embed.weight.dtype) if embeds else torch.tensor(list(prompt), device=device)
    new, margin = [], math.inf
    for _ in range(max_new_tokens):
        scores = model(**({"inputs_embeds": x[None]} if embeds else {"input_ids": x[None]})).logits[0, -1].double()
        if banned:
            scores[banned] = -math.inf
        margin = min(margin, float(_gap(scores)))
        token = int(scores.argmax())
        if token == tokenizer.eos_token_id:
            break
        step = torch.tensor([token], device=device)
        x = torch.cat([x, embed(step) if embeds else step])
        new.append(token)
        if token in stop:
            break
    return Greedy(new, margin, decided)


def greedy_continuations(model, tokenizer, prompts: Sequence, max_new_tokens: int = 10, batch_size: int = 32,
                         bad_words_ids: list[list[int]] | None = None, progress: bool = True) -> list[list[int]]:
    """Greedy new-token ids for each prompt, ids or input embeddings (left-padded batches; same result as one
    by one)."""
    return [g.ids for g in greedy_decode(model, tokenizer, prompts, max_new_tokens, batch_size, bad_words_ids, progress)]


FILTER_COLUMNS = ["known_id", "subject", "attribute", "prompt", "n_tokens", "continuation", "first_token_id",
                  "first_token", "label", "known", "reason", "margin", "near_tie", "decided"]


def filter_known(model, tokenizer, records, encode, max_new_tokens: int = 10, batch_size: int = 32,
                 bad_words_ids: list[list[int]] | None = None, progress: bool = True):
    """Label every record exact / partial / none from the model's greedy continuation.

    ``encode(record)`` builds the clean prompt for the modality under study: its ids (T→T: the tokenized
    text), or its (T, hidden) input embeddings (S→T of a continuous-input family). Returns a DataFrame with one
    row per record (none are dropped): ``known`` is True for exact and partial matches, ``reason`` says why a
    record was excluded. ``margin`` is the smallest gap (in logits) between the two best next tokens over the
    greedy steps; a prompt with a margin under :data:`NEAR_TIE` (``near_tie``) is decoded again on its own
    (:func:`greedy_alone`; ``decided`` says how), so the label does not depend on ``batch_size`` or on what else
    was in its batch.
    """
    import pandas as pd

    prompts = [encode(r) for r in records]
    decoded = greedy_decode(model, tokenizer, prompts, max_new_tokens, batch_size, bad_words_ids, progress)
    ties = [i for i, g in enumerate(decoded) if g.margin < NEAR_TIE]
    if ties:
        judge, how = tie_model(model)
        for i in ties:
            decoded[i] = greedy_alone(judge, tokenizer, prompts[i], max_new_tokens, bad_words_ids, how)
    if ties:
        log.info("%d near-tie(s) (a greedy step decided by less than %g logits) decoded on their own: %s", len(ties),
                 NEAR_TIE, ", ".join(f"known_id {records[i].known_id} ({decoded[i].decided}, margin {decoded[i].margin:.2g})"
                                     for i in ties[:20]))
    rows = []
    for r, p, g in zip(records, prompts, decoded, strict=True):
        ids = g.ids
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        m = match_attribute(text, r.attribute) if ids else Match("none", "the model produced no new token")
        rows.append({
            "known_id": r.known_id, "subject": r.subject, "attribute": r.attribute, "prompt": r.prompt,
            "n_tokens": len(p), "continuation": text,
            "first_token_id": ids[0] if ids else -1,
            "first_token": tokenizer.decode(ids[:1]) if ids else "",
            "label": m.label, "known": m.label != "none", "reason": m.reason,
            "margin": g.margin, "near_tie": g.margin < NEAR_TIE, "decided": g.decided,
        })
    return pd.DataFrame(rows, columns=FILTER_COLUMNS)


def unexpected_answers(known):
    """Rows of a known table whose greedy first token does not start the attribute (see answer_matches)."""
    return known[[not answer_matches(str(t), str(a)) for t, a in zip(known["first_token"], known["attribute"], strict=True)]]


def select_for_trace(known, max_prompts: int | None, require_known: bool = True, expect_answer: str = "trace"):
    """The prompts to trace, in dataset order, capped at ``max_prompts``. The workflow cuts them into
    shards of fixed known_id blocks (:func:`crosstrace.shards.shard_blocks`).

    ``require_known=False`` traces every valid record whatever the model answered (a control, and how
    the tests run the DAG on tiny random models that know nothing). ``expect_answer="skip"`` leaves out
    prompts whose greedy first token does not start the attribute (before the cap); "trace" and "flag"
    keep them (the traced-prompts table marks them either way).
    """
    if expect_answer not in EXPECT_MODES:
        raise ValueError(f"expect_answer must be one of {EXPECT_MODES}, got {expect_answer!r}")
    known = known[known["status"] == "ok"]  # S→T: prompts without speech / alignment / units cannot be traced
    sel = known[known["known"].astype(bool)] if require_known else known
    if expect_answer == "skip":
        sel = sel.drop(unexpected_answers(sel).index)
    return sel if max_prompts is None else sel.iloc[:max_prompts]
