"""The Known facts dataset: loading, verification and per-record validation.

Records that cannot be traced (missing fields, wrong types, a subject that is not in its prompt) are
*quarantined* with a reason rather than dropped, so every one of the 1209 input records is accounted
for downstream. Problems that make the whole file ambiguous (not JSON, not a list, duplicate ids) are
hard errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path

from .io import atomic_path

log = logging.getLogger(__name__)

KNOWN_URL = "https://rome.baulab.info/data/dsets/known_1000.json"
KNOWN_SHA256 = "685ed2a0c3e8323921ea8a945b237cfe75e1f4948b9dda7a92aa6c2401f1d9df"
BUNDLED_KNOWN = Path(__file__).resolve().parents[2] / "resources" / "known_1000.json"

REQUIRED_FIELDS: dict[str, type] = {
    "known_id": int,
    "subject": str,
    "attribute": str,
    "prompt": str,
}
OPTIONAL_FIELDS: dict[str, type] = {"template": str, "prediction": str, "relation_id": str}


class DataError(ValueError):
    """The input file as a whole is unusable (names the file and the problem)."""


@dataclass(frozen=True)
class KnownRecord:
    known_id: int
    subject: str
    attribute: str
    prompt: str
    template: str = ""
    prediction: str = ""
    relation_id: str = ""
    # known_id of the first record with the same prompt, subject and attribute (:func:`mark_duplicates`);
    # None until marked, and a record's own id when its fact is unique.
    duplicate_group: int | None = dataclass_field(default=None, compare=False)

    @property
    def subject_chars(self) -> tuple[int, int]:
        """Character span [start, end) of the first occurrence of the subject in the prompt."""
        start = self.prompt.find(self.subject)
        return start, start + len(self.subject)


@dataclass(frozen=True)
class Quarantined:
    """A record kept out of the analysis, with the reason, so nothing disappears silently."""

    index: int
    known_id: object
    stage: str
    reason: str


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str = KNOWN_SHA256) -> None:
    got = sha256_file(path)
    if got != expected:
        raise DataError(f"{path}: sha256 {got} does not match the expected {expected}; the file is corrupt or not the Known dataset")


def fetch_known(dest: str | Path, url: str = KNOWN_URL, fallback: str | Path = BUNDLED_KNOWN, expected: str = KNOWN_SHA256,
                timeout: float = 10.0) -> str:
    """Download the dataset to ``dest`` and verify it; offline, copy the bundled copy (also verified).

    Returns "download" or "bundled" so the caller can log where the data came from. A hash mismatch of
    a downloaded file is an error, not a reason to fall back: it means the source changed.
    """
    dest = Path(dest)
    dest.with_suffix(dest.suffix + ".part").unlink(missing_ok=True)  # a leftover of versions before 2026-12
    with atomic_path(dest) as tmp:  # removed on any failure; a full disk is named as such
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                data = r.read()
            source = "download"
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            log.warning("could not download %s (%s); using the bundled copy %s", url, e, fallback)
            data, source = Path(fallback).read_bytes(), "bundled"
        tmp.write_bytes(data)
        verify_sha256(tmp, expected)
    return source


def validate_record(index: int, raw: object) -> KnownRecord | Quarantined:
    """Check one raw JSON record; return a KnownRecord or a Quarantined row naming the problem."""
    if not isinstance(raw, dict):
        return Quarantined(index, None, "load", f"record #{index} is a {type(raw).__name__}, not an object")
    kid = raw.get("known_id")
    for field, typ in REQUIRED_FIELDS.items():
        if field not in raw:
            return Quarantined(index, kid, "load", f"missing field '{field}'")
        value = raw[field]
        if not isinstance(value, typ) or isinstance(value, bool):
            return Quarantined(index, kid, "load", f"field '{field}' should be {typ.__name__}, got {type(value).__name__} {value!r}")
        if typ is str and not value.strip():
            return Quarantined(index, kid, "load", f"field '{field}' is empty")
    if kid < 0:
        return Quarantined(index, kid, "load", f"known_id must be non-negative, got {kid}")
    for field, typ in OPTIONAL_FIELDS.items():
        if field in raw and not isinstance(raw[field], typ):
            return Quarantined(index, kid, "load", f"field '{field}' should be {typ.__name__}, got {type(raw[field]).__name__}")
    if raw["subject"] not in raw["prompt"]:
        return Quarantined(index, kid, "load", f"subject {raw['subject']!r} does not occur in prompt {raw['prompt']!r}")
    fields = {k: raw[k] for k in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS) if k in raw}
    return KnownRecord(**fields)


def parse_known(raw: object, source: str = "<input>", limit: int | None = None, warn_duplicates: bool = True,
                ) -> tuple[list[KnownRecord], list[Quarantined]]:
    """Validate every record. ``limit``: only the first N input records, valid or not (``data.limit``),
    so that each of them is either kept or quarantined. Repeated facts are marked (:func:`mark_duplicates`)
    and, with ``warn_duplicates``, warned about."""
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a JSON list of records, got {type(raw).__name__}")
    if limit is not None:
        raw = raw[:limit]
    records: list[KnownRecord] = []
    quarantined: list[Quarantined] = []
    for i, item in enumerate(raw):
        r = validate_record(i, item)
        (records if isinstance(r, KnownRecord) else quarantined).append(r)
    seen: dict[int, int] = {}
    dups = []
    for r in records:
        if r.known_id in seen:
            dups.append(r.known_id)
        seen[r.known_id] = seen.get(r.known_id, 0) + 1
    if dups:
        raise DataError(f"{source}: duplicate known_id {sorted(set(dups))[:10]}; ids must be unique to join results")
    return mark_duplicates(records, source, warn_duplicates), quarantined


def mark_duplicates(records: list[KnownRecord], source: str = "<input>", warn: bool = True) -> list[KnownRecord]:
    """Set ``duplicate_group`` on every record: the known_id of the first record (in input order) with the
    same prompt, subject and attribute. A repeated fact is kept and traced like any other (ROME's Known has
    one pair: 446 and 762, two relations with the same text); a warning lists the repeats, and the column
    in ``records.parquet`` lets an analysis count each fact once."""
    first: dict[tuple[str, str, str], int] = {}
    out, repeats = [], []
    for r in records:
        group = first.setdefault((r.prompt, r.subject, r.attribute), r.known_id)
        if group != r.known_id:
            repeats.append(f"{r.known_id} repeats {group}")
        out.append(replace(r, duplicate_group=group))
    if repeats and warn:
        log.warning("%s: %d record(s) repeat an earlier record's prompt, subject and attribute (kept and traced; "
                    "records.parquet column duplicate_group): known_id %s", source, len(repeats),
                    ", ".join(repeats[:10]) + (", ..." if len(repeats) > 10 else ""), extra={"console": True})
    return out


def load_known(path: str | Path, limit: int | None = None, warn_duplicates: bool = True,
               ) -> tuple[list[KnownRecord], list[Quarantined]]:
    """Load and validate a Known-format JSON file (``limit``: its first N records, see :func:`parse_known`)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start})") from e
    return parse_known(raw, str(path), limit, warn_duplicates)


def records_to_rows(records: Iterable[KnownRecord]) -> list[dict]:
    """Rows of ``records.parquet``; an unmarked record is its own duplicate group."""
    return [{**asdict(r), "duplicate_group": r.known_id if r.duplicate_group is None else r.duplicate_group}
            for r in records]


def quarantine_rows(items: Iterable[Quarantined]) -> list[dict]:
    return [{"index": q.index, "known_id": None if q.known_id is None else str(q.known_id), "stage": q.stage, "reason": q.reason} for q in items]


# Column types of records.parquet and quarantine.parquet (io.write_parquet keeps them when a table is empty).
RECORD_TYPES: dict[str, type] = {**REQUIRED_FIELDS, **OPTIONAL_FIELDS, "duplicate_group": int}
QUARANTINE_TYPES: dict[str, type] = {"index": int, "known_id": str, "stage": str, "reason": str}


def no_records_left(quarantine_path: str | Path) -> DataError:
    """The error that ends a run when validation kept nothing (an empty dataset, or every record bad)."""
    return DataError(f"0 records left after validation: see {quarantine_path}")
