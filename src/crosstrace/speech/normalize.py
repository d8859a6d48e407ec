"""Text normalisation for a character-level CTC vocabulary (paper, Appendix A, "Text preprocessing").

A prompt such as ``"Apple's 3rd iPhone, sold in the 1990s in Zürich"`` becomes the *spoken words*
``APPLE'S THIRD IPHONE SOLD IN THE NINETEEN NINETIES IN ZURICH`` and the CTC string
``APPLE'S|THIRD|IPHONE|...`` (``|`` is the word boundary of wav2vec2/HuBERT CTC vocabularies).

Every spoken word keeps the index and character span of the whitespace token of the prompt it came
from, so a subject's character span maps to a contiguous range of spoken words
(:func:`subject_word_range`). The rules, in order, per whitespace token:

1. typographic apostrophes -> ``'``; ``$N`` -> ``N dollars``;
2. numbers: ``3rd``/``21st`` -> ordinals, ``1990s`` -> ``nineteen nineties``, a bare 4-digit number
   1100-2099 -> year reading, ``1,000``/``3.5``/``42`` -> cardinals (all via ``num2words``);
3. symbols: ``%`` percent, ``&`` and, ``+`` plus, ``@`` at, ``=`` equals, ``°`` degrees;
4. accented Latin letters -> ASCII via ``unidecode`` (``Zürich`` -> ``ZURICH``, ``ß`` -> ``SS``);
5. upper-case; any character outside the vocabulary splits words (hyphens, slashes) or is dropped.
   Punctuation and symbols are dropped silently (listed in ``dropped``); letters or digits that cannot
   be spelled in the vocabulary (non-Latin scripts, other digit systems) are listed in ``unmappable``
   and the caller should quarantine the prompt.

A possessive stays attached (``Apple's`` -> ``APPLE'S``) when the vocabulary has ``'``, so a subject
that ends in a possessive token ends at the end of that spoken word, ``'S`` included.

The *spoken text* (:attr:`Normalized.spoken_text`, the paper's preprocessed transcript as the language model
reads it) is the spoken words joined by spaces, each written as the prompt writes it where it spells the
prompt letter for letter (case and accents kept: ``Zürich``, ``Apple's``) and in lower case where digits or
symbols were written out (``nineteen nineties``). Its tokens are the paper's *spoken text tokens*; the
subject is found in it by :func:`spoken_subject_span`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from num2words import num2words
from unidecode import unidecode

WORD_BOUNDARY = "|"
#: The character vocabulary of facebook/hubert-large-ls960-ft and wav2vec2-*-960h (minus specials).
DEFAULT_VOCAB: frozenset[str] = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'|")

_SYMBOLS = {"%": "percent", "&": "and", "+": "plus", "@": "at", "=": "equals", "°": "degrees"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_ORDINAL = re.compile(r"(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_DECADE = re.compile(r"(\d{4}|\d0)'?s\b")
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_DOLLAR = re.compile(r"\$(\d+(?:,\d{3})*(?:\.\d+)?)")


@dataclass(frozen=True)
class Normalized:
    """Spoken words of one prompt and their provenance.

    ``word_to_orig[i]`` is the index of the whitespace token of ``original`` that spoken word ``i``
    came from; ``orig_spans[k]`` is the character span ``(start, end)`` of token ``k`` in ``original``.
    """

    original: str
    words: list[str]
    word_to_orig: list[int]
    orig_spans: list[tuple[int, int]]
    dropped: list[str] = field(default_factory=list)
    unmappable: list[str] = field(default_factory=list)
    #: per spoken word, per character: index of the character of ``original`` it spells, or None when
    #: the token was rewritten (numbers, symbols), so characters no longer correspond
    char_to_orig: list[list[int | None]] = field(default_factory=list)
    #: per spoken word: how the spoken text writes it (the prompt's characters, or the written-out words)
    written: list[str] = field(default_factory=list)
    #: per spoken word, per character of ``written[i]``: index in ``words[i]`` of the first letter it became
    #: (``ß`` becomes ``SS``: one written character, two letters)
    written_to_letter: list[list[int]] = field(default_factory=list)

    @property
    def ctc_string(self) -> str:
        return WORD_BOUNDARY.join(self.words)

    def word_char_span(self, i: int) -> tuple[int, int]:
        """Character span in ``original`` of the token that spoken word ``i`` came from."""
        return self.orig_spans[self.word_to_orig[i]]

    @property
    def spoken_text(self) -> str:
        """The spoken words as the language model reads them, joined by single spaces (see module doc)."""
        return " ".join(self.written)

    @property
    def spoken_spans(self) -> list[tuple[int, int]]:
        """Character span ``(start, end)`` of each spoken word in :attr:`spoken_text`."""
        out, c = [], 0
        for w in self.written:
            out.append((c, c + len(w)))
            c += len(w) + 1
        return out


def _year_words(n: int) -> str:
    if 1100 <= n <= 2099:
        return num2words(n, to="year")
    return num2words(n)


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def _number_words(num: str) -> str:
    digits = num.replace(",", "")
    if "." in digits:
        return num2words(float(digits))
    n = int(digits)
    if len(digits) == 4 and "," not in num and 1100 <= n <= 2099:
        return _year_words(n)
    return num2words(n)


def _spell_token(token: str) -> str:
    """Rules 1-3 on one whitespace token; returns lower-case-ish text with spaces."""
    t = token.translate(_APOSTROPHES)
    t = _DOLLAR.sub(lambda m: f" {m.group(1)} dollars ", t)
    t = _ORDINAL.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal')} ", t)
    t = _DECADE.sub(lambda m: f" {_plural(_year_words(int(m.group(1))))} ", t)
    t = _NUMBER.sub(lambda m: f" {_number_words(m.group(0))} ", t)
    for sym, word in _SYMBOLS.items():
        t = t.replace(sym, f" {word} ")
    return t


def _is_latin_letter(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN")


def normalize_for_ctc(text: str, vocab: Iterable[str] = DEFAULT_VOCAB) -> Normalized:
    """Normalise ``text`` to spoken words written only with characters of ``vocab`` (see module doc)."""
    vocab = frozenset(vocab)
    letters = {c for c in vocab if c != WORD_BOUNDARY}
    words: list[str] = []
    word_to_orig: list[int] = []
    spans: list[tuple[int, int]] = []
    dropped: list[str] = []
    unmappable: list[str] = []
    char_to_orig: list[list[int | None]] = []
    written: list[str] = []
    written_to_letter: list[list[int]] = []
    for k, m in enumerate(re.finditer(r"\S+", text)):
        spans.append((m.start(), m.end()))
        spelled = _spell_token(m.group(0))
        verbatim = spelled == m.group(0).translate(_APOSTROPHES)  # 1:1 with the original characters
        current: list[str] = []
        origin: list[int | None] = []
        shown: list[str] = []  # the written form of the current word
        first_letter: list[int] = []

        def flush(current: list[str] = current, origin: list[int | None] = origin, shown: list[str] = shown,
                  first_letter: list[int] = first_letter, k: int = k) -> None:
            if current:
                words.append("".join(current))
                word_to_orig.append(k)
                char_to_orig.append(list(origin))
                written.append("".join(shown))
                written_to_letter.append(list(first_letter))
            for part in (current, origin, shown, first_letter):
                part.clear()

        for pos, ch in enumerate(spelled):
            if ch.isspace():
                flush()
                continue
            if ch.isalpha() and not ch.isascii():
                if not _is_latin_letter(ch):
                    unmappable.append(ch)
                    flush()
                    continue
                ascii_form = unidecode(ch)
            else:
                ascii_form = ch
            shown_here = False
            for a in ascii_form.upper():
                if a in letters:
                    if not shown_here:  # the written form keeps the character itself, once
                        shown.append(ch)
                        first_letter.append(len(current))
                        shown_here = True
                    current.append(a)
                    origin.append(m.start() + pos if verbatim else None)
                elif a.isalnum():
                    unmappable.append(ch)
                else:
                    # hyphens, slashes, dots, commas, quotes: word break, character dropped
                    dropped.append(ch)
                    flush()
                    shown_here = False
        flush()
    return Normalized(text, words, word_to_orig, spans, dropped, unmappable, char_to_orig, written, written_to_letter)


def subject_char_cut(normalized: Normalized, word: int, start: int, end: int) -> tuple[int, int] | None:
    """Characters ``[c0, c1)`` of spoken word ``word`` that spell original characters in
    ``[start, end)`` (e.g. ``APPLE`` of ``APPLE'S`` for the subject "Apple"), or None when the word
    was rewritten or none of its characters is inside."""
    origin = normalized.char_to_orig[word]
    if not origin or any(o is None for o in origin):
        return None
    inside = [i for i, o in enumerate(origin) if start <= o < end]
    return (inside[0], inside[-1] + 1) if inside else None


def subject_char_span(prompt: str, subject: str) -> tuple[int, int]:
    """Character span of the subject's first occurrence in the prompt (exact, then case-insensitive)."""
    start = prompt.find(subject)
    if start < 0:
        start = prompt.lower().find(subject.lower())
    if start < 0 or not subject.strip():
        raise ValueError(f"subject {subject!r} not found in prompt {prompt!r}")
    return start, start + len(subject)


def subject_word_range(normalized: Normalized, prompt: str, subject: str) -> tuple[int, int]:
    """Half-open range ``(w0, w1)`` of spoken words that carry the subject's characters.

    The subject is located in ``prompt`` (first occurrence, exact, then case-insensitive); every spoken
    word whose source token overlaps the subject's character span belongs to the range. Raises
    ``ValueError`` when the subject is not in the prompt or has no spoken word.
    """
    if prompt != normalized.original:
        raise ValueError("prompt differs from the text that was normalised")
    start, end = subject_char_span(prompt, subject)
    hit = [i for i in range(len(normalized.words)) if _overlaps(normalized.word_char_span(i), (start, end))]
    if not hit:
        raise ValueError(f"subject {subject!r} has no spoken word in {normalized.words!r}")
    return hit[0], hit[-1] + 1


def spoken_subject_span(normalized: Normalized, prompt: str, subject: str) -> tuple[int, int]:
    """Characters ``[c0, c1)`` of :attr:`Normalized.spoken_text` that speak the subject.

    A word that spells the prompt letter for letter contributes the characters that spell the subject's own
    characters ("Apple" of ``Apple's``, as T→T finds the subject on characters); a rewritten word (digits,
    symbols) contributes all of its characters when its prompt token overlaps the subject ("1960s" →
    ``nineteen sixties``). Raises ``ValueError`` when the subject is not in the prompt or has no spoken word.
    """
    if prompt != normalized.original:
        raise ValueError("prompt differs from the text that was normalised")
    start, end = subject_char_span(prompt, subject)
    hit: list[int] = []
    for i, (c0, _) in enumerate(normalized.spoken_spans):
        origin = normalized.char_to_orig[i]
        rewritten = any(o is None for o in origin)
        if rewritten and not _overlaps(normalized.word_char_span(i), (start, end)):
            continue
        for w, letter in enumerate(normalized.written_to_letter[i]):
            o = origin[letter]
            if rewritten or start <= o < end:
                hit.append(c0 + w)
    if not hit:
        raise ValueError(f"subject {subject!r} has no spoken word in {normalized.words!r}")
    return hit[0], hit[-1] + 1


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]
