"""The study's vocabulary: kinds, token categories, modalities and their display labels.

The bottom of the package: it imports nothing, not even numpy, so the Snakefile, the report and the
tracer all read the same names from here. Every other spelling of these names is a bug.
"""

#: What is restored in a corrupted run (paper §2.3): the residual stream after a block ("hidden"), or the
#: output of its MLP or attention sublayer.
KINDS: tuple[str, ...] = ("hidden", "mlp", "attn")
KIND_TITLES = {"hidden": "hidden states", "mlp": "MLP", "attn": "attention"}

#: Prompt and answer modalities: text→text, speech→text.
MODALITIES: tuple[str, ...] = ("t2t", "s2t")
MODALITY_LABELS = {"t2t": "T→T", "s2t": "S→T"}

#: The paper's six token categories, in display order; the positions each covers are defined in
#: :func:`crosstrace.spans.category_positions`.
CATEGORIES: tuple[str, ...] = (
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)
CATEGORY_LABELS = {
    "first_subject": "first subject",
    "middle_subject": "middle subject",
    "last_subject": "last subject",
    "first_subsequent": "first subsequent",
    "further": "further tokens",
    "last": "last token",
}


def wildcard_pattern(names: tuple[str, ...]) -> str:
    """A Snakemake wildcard constraint matching exactly these names."""
    return "|".join(names)
