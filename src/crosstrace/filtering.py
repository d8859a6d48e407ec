"""Known-t2t (and later Known-s2t): keep the facts the model actually produces under greedy decoding.

A continuation is *exact* when, after normalisation, it starts with the attribute, and *partial* when
the attribute occurs as whole words somewhere in it ("the city of Rome"). Everything else is excluded,
with the decoded text kept so a reader can audit the decision.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

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


@_no_grad
def greedy_continuations(model, tokenizer, prompts: Sequence, max_new_tokens: int = 10, batch_size: int = 32,
                         bad_words_ids: list[list[int]] | None = None, progress: bool = True) -> list[list[int]]:
    """Greedy new-token ids for each prompt (left-padded batches; same result as one by one).

    A prompt is its token ids, or its (T, hidden) input embeddings (a continuous-input speech family, whose
    audio positions are not token rows); the prompts of one call are all of one kind."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[list[int]] = [None] * len(prompts)  # type: ignore[list-item]
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
        )
        # from embeddings generate returns the new tokens only; from ids, the prompt and then the new tokens
        start = 0 if embeds else width
        for row, i in enumerate(batch):
            new = gen[row, start:].tolist()
            eos = tokenizer.eos_token_id
            out[i] = new[: new.index(eos)] if eos is not None and eos in new else new
    return out


FILTER_COLUMNS = ["known_id", "subject", "attribute", "prompt", "n_tokens", "continuation", "first_token_id",
                  "first_token", "label", "known", "reason"]


def filter_known(model, tokenizer, records, encode, max_new_tokens: int = 10, batch_size: int = 32,
                 bad_words_ids: list[list[int]] | None = None, progress: bool = True):
    """Label every record exact / partial / none from the model's greedy continuation.

    ``encode(record)`` builds the clean prompt for the modality under study: its ids (T→T: the tokenized
    text), or its (T, hidden) input embeddings (S→T of a continuous-input family). Returns a DataFrame with one row per record (none are dropped): ``known`` is True
    for exact and partial matches, ``reason`` says why a record was excluded.
    """
    import pandas as pd

    prompts = [encode(r) for r in records]
    new = greedy_continuations(model, tokenizer, prompts, max_new_tokens, batch_size, bad_words_ids, progress)
    rows = []
    for r, p, ids in zip(records, prompts, new, strict=True):
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        m = match_attribute(text, r.attribute) if ids else Match("none", "the model produced no new token")
        rows.append({
            "known_id": r.known_id, "subject": r.subject, "attribute": r.attribute, "prompt": r.prompt,
            "n_tokens": len(p), "continuation": text,
            "first_token_id": ids[0] if ids else -1,
            "first_token": tokenizer.decode(ids[:1]) if ids else "",
            "label": m.label, "known": m.label != "none", "reason": m.reason,
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
