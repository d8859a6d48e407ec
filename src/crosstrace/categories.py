"""The paper's six token categories, in display order (a torch-free module, shared by tracer and report)."""

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
