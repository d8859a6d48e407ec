"""Your own facts: a local JSON list, JSONL, CSV or parquet file, read into the same records as Known.

The file type comes from the extension (``.json``, ``.jsonl``/``.ndjson``, ``.csv``/``.tsv``,
``.parquet``/``.pq``). Three record layouts, each a mapping from the record's columns (dotted paths reach
into nested records) to the fields of :class:`~crosstrace.data.KnownRecord`:

* ``facts``: ``prompt``, ``subject``, ``attribute`` and an optional id (``id`` or ``known_id``; without
  one a record's id is its 0-based position in the file). The Known dataset itself is such a file.
* ``counterfact``: CounterFact's nested records. The prompt is ``requested_rewrite.prompt`` with its
  ``{}`` replaced by ``requested_rewrite.subject``; the attribute is ``requested_rewrite.target_true.str``
  (the true fact, not the edit target); the id is ``case_id``.
* ``popqa``: a PopQA-style table (``id``, ``subj``, ``prop``, ``obj``, ``question``, ...). The prompt is the
  user's template for the row's ``prop`` (``data.templates``) with ``{}`` replaced by ``subj``; the
  attribute is ``obj``. The question is not used: the tracer needs a cloze prompt, not a question.

Every input record becomes a KnownRecord or a :class:`~crosstrace.data.Quarantined` row whose reason
names the file's column, then passes the same :func:`~crosstrace.data.validate_record` as Known
(non-empty text, subject in prompt). Problems of the whole file are :class:`~crosstrace.data.DataError`:
unknown type, unreadable, no records, a configured column that no record has (a mapping mistake would
otherwise quarantine everything), duplicate ids. ``limit`` keeps the first N input records before
validation, so input = kept + quarantined for those N.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from .data import DataError, KnownRecord, Quarantined, mark_duplicates, sha256_file, validate_record

log = logging.getLogger(__name__)

LAYOUTS = ("facts", "counterfact", "popqa")
# Default columns per layout (data.columns overrides any of them). None: no such column.
DEFAULT_COLUMNS: dict[str, dict[str, str | None]] = {
    "facts": {"id": None, "prompt": "prompt", "template": "template", "subject": "subject",
              "attribute": "attribute", "relation": "relation_id"},
    "counterfact": {"id": "case_id", "prompt": None, "template": "requested_rewrite.prompt",
                    "subject": "requested_rewrite.subject", "attribute": "requested_rewrite.target_true.str",
                    "relation": "requested_rewrite.relation_id"},
    "popqa": {"id": "id", "prompt": None, "template": None, "subject": "subj", "attribute": "obj",
              "relation": "prop"},
}
# facts without a configured id column: the first of these the file has, else the record's position.
FACTS_ID_COLUMNS = ("id", "known_id")
SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}
_MISSING = object()
_DIGITS = re.compile(r"\s*\d+\s*")


# ------------------------------------------------------------------------------------ reading files

def read_raw(path: str | Path, limit: int | None = None) -> tuple[list[object], str]:
    """The first ``limit`` input records of the file (dicts, or whatever a JSON list holds) and its type.

    A JSONL line that is not valid JSON, or a CSV row with the wrong number of fields, is kept as a
    string saying so; :func:`convert_record` quarantines it with that reason.
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(SUFFIXES))}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        if kind == "parquet":
            raw = _read_parquet(path, limit)
        else:
            raw = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv}[kind](path, limit)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start})") from e
    if not raw:
        raise DataError(f"{path}: no records")
    return raw, kind


def _read_json(path: Path, limit: int | None) -> list[object]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(raw).__name__} (one record per line: .jsonl)")
    return raw[:limit]


def _read_jsonl(path: Path, limit: int | None) -> list[object]:
    text = _Text(path, "utf-8")
    out: list[object] = []
    for lineno, (line, start) in enumerate(text.lines(), 1):
        if limit is not None and len(out) >= limit:
            break
        if not line.strip():
            continue  # blank lines are not records
        bad = text.bad_byte(start, start + len(line))
        if bad:
            out.append(_Unreadable(f"line {lineno} is not UTF-8 text ({bad})"))
            continue
        try:
            out.append(json.loads(line.rstrip("\r\n")))
        except json.JSONDecodeError as e:
            out.append(_Unreadable(f"line {lineno} is not valid JSON ({json_problem(e)})"))
    return out


def json_problem(e: json.JSONDecodeError) -> str:
    """json's message as one readable phrase: "Unterminated string starting at column 12", "invalid control
    character '\\t' at column 9" (json's own messages end in " at" when it adds the position itself)."""
    msg = e.msg.removesuffix(" at")
    if msg == "Invalid control character" and e.pos < len(e.doc):
        msg = f"{msg} {e.doc[e.pos]!r}"
    return f"{msg} at column {e.colno}"


class _Text:
    """A text file decoded so that one invalid UTF-8 byte spoils only its own record: each such byte becomes
    a lone surrogate (``surrogateescape``), found again by :meth:`bad_byte` with its offset in the file."""

    _BAD = re.compile("[\udc80-\udcff]")

    def __init__(self, path: Path, encoding: str):
        data = path.read_bytes()
        self.bom = 3 if encoding == "utf-8-sig" and data.startswith(b"\xef\xbb\xbf") else 0
        self.text = data.decode(encoding, errors="surrogateescape")

    def lines(self):
        """(line with its ending, offset of its first character) for each line, as csv wants them."""
        import io

        start = 0
        for line in io.StringIO(self.text, newline=""):
            yield line, start
            start += len(line)

    def bad_byte(self, start: int, end: int) -> str | None:
        """The first invalid byte in characters [start, end), as "byte b'\\xff' at offset N", or None."""
        m = self._BAD.search(self.text, start, end)
        if m is None:
            return None
        offset = self.bom + len(self.text[: m.start()].encode("utf-8", errors="surrogateescape"))
        return f"byte {bytes([ord(m.group()) - 0xDC00])!r} at offset {offset}"


def _read_csv(path: Path, limit: int | None) -> list[object]:
    text = _Text(path, "utf-8-sig")
    ends = [0]  # character offset after each line the reader has taken, so a row's text is known

    def lines():
        for line, start in text.lines():
            ends.append(start + len(line))
            yield line

    reader = csv.reader(lines(), "excel-tab" if path.suffix.lower() == ".tsv" else "excel")
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path}: no header row")
    bad = text.bad_byte(0, ends[-1])
    if bad:
        raise DataError(f"{path}: the header row is not UTF-8 text ({bad})")
    header = [h.strip() for h in header]
    dups = sorted({h for h in header if header.count(h) > 1})
    if dups:
        raise DataError(f"{path}: duplicate column names {dups} in the header")
    out: list[object] = []
    row_start = ends[-1]
    for row in reader:
        span, row_start = (row_start, ends[-1]), ends[-1]
        if limit is not None and len(out) >= limit:
            break
        if not row:
            continue  # blank lines are not records
        bad = text.bad_byte(*span)
        if bad:
            out.append(_Unreadable(f"line {reader.line_num} is not UTF-8 text ({bad})"))
        elif len(row) != len(header):
            out.append(_Unreadable(f"line {reader.line_num} has {len(row)} fields, the header has {len(header)}"))
        else:
            out.append(_CsvRow(zip(header, row, strict=True)))
    return out


def _read_parquet(path: Path, limit: int | None) -> list[object]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


class _Unreadable(str):
    """A record that could not be parsed; the text is the reason."""


class _CsvRow(dict):
    """A CSV row: every value is text, so ids are parsed from digits."""


# -------------------------------------------------------------------------------- layout and columns

def get_path(record: Mapping, column: str) -> object:
    """``record[column]``, or the value at a dotted path into nested records; ``_MISSING`` if absent."""
    if column in record:
        return record[column]
    value: object = record
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def record_layout(record: object) -> str | None:
    """The layout one record's columns point to: counterfact (``requested_rewrite``), popqa (``subj``,
    ``prop``, ``obj`` and no ``prompt``), facts (``prompt``), or None (none of these, or not an object)."""
    if not isinstance(record, Mapping):
        return None
    if "requested_rewrite" in record:
        return "counterfact"
    if {"subj", "prop", "obj"} <= record.keys() and "prompt" not in record:
        return "popqa"
    return "facts" if "prompt" in record else None


def detect_layout(raw: list[object]) -> tuple[str, str]:
    """``data.format: auto``: the layout most records point to (:func:`record_layout`), and a phrase saying
    how it was decided. No record points anywhere: facts. A tie is a DataError (set data.format)."""
    votes: dict[str, int] = {}
    for r in raw:
        layout = record_layout(r)
        if layout:
            votes[layout] = votes.get(layout, 0) + 1
    if not votes:
        return "facts", "data.format: auto; no record has a prompt, requested_rewrite or subj/prop/obj column"
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        counts = ", ".join(f"{n} look like {layout}" for layout, n in ranked)
        raise DataError(f"data.format: auto cannot decide the layout ({counts}); set data.format to one of {list(LAYOUTS)}")
    layout, n = ranked[0]
    return layout, f"data.format: auto, {n} of {len(raw)} records look like {layout}"


def resolve_columns(raw: list[object], layout: str, columns: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """The layout's default columns updated by the configured ones (None entries keep the default)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    cols = dict(DEFAULT_COLUMNS[layout])
    unknown = set(columns or {}) - cols.keys()
    if unknown:
        raise DataError(f"data.columns: unknown field(s) {sorted(unknown)}; the fields are {sorted(cols)}")
    cols.update({k: v for k, v in (columns or {}).items() if v is not None})
    if layout == "facts" and cols["id"] is None:
        dicts = [r for r in raw if isinstance(r, Mapping)]
        cols["id"] = next((c for c in FACTS_ID_COLUMNS if any(c in r for r in dicts)), None)
    return cols


def required_fields(layout: str) -> tuple[str, ...]:
    return {"facts": ("prompt", "subject", "attribute"), "counterfact": ("template", "subject", "attribute"),
            "popqa": ("relation", "subject", "attribute")}[layout]


def check_columns(raw: list[object], cols: Mapping[str, str | None], layout: str, source: str,
                  how: str | None = None) -> None:
    """A DataError if a column the layout needs (or a configured id) is in none of the records; it names the
    layout and ``how`` it was chosen, since a wrong layout is the other way to get there."""
    dicts = [r for r in raw if isinstance(r, Mapping)]
    if not dicts:
        return  # every record is quarantined on its own
    needed = [f for f in required_fields(layout)] + (["id"] if cols["id"] else [])
    for field in needed:
        col = cols[field]
        if all(get_path(r, col) is _MISSING for r in dicts):
            keys = sorted({k for r in dicts[:100] for k in r})
            others = " or ".join(x for x in LAYOUTS if x != layout)
            raise DataError(f"{source}: no record has column {col!r} ({field}; set data.columns.{field}); "
                            f"the columns are {keys}; the file is read in the {layout} layout "
                            f"({how or 'data.format: ' + layout}; data.format: {others} reads it otherwise)")


# ---------------------------------------------------------------------------------------- records

class _Bad(Exception):
    """One record's problem; the message is the quarantine reason."""


def _text(record: Mapping, col: str, field: str) -> str:
    value = get_path(record, col)
    if value is _MISSING:
        raise _Bad(f"missing column {col!r} ({field})")
    if not isinstance(value, str):
        raise _Bad(f"column {col!r} ({field}) should be text, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise _Bad(f"column {col!r} ({field}) is empty")
    return value


def _id(record: Mapping, col: str) -> int:
    value = get_path(record, col)
    if value is _MISSING:
        raise _Bad(f"missing column {col!r} (id)")
    if isinstance(record, _CsvRow) and isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Bad(f"column {col!r} (id) should be a non-negative integer, got {type(value).__name__} {value!r}")


def _fields(raw: Mapping, kid: int, layout: str, cols: Mapping[str, str | None],
            templates: Mapping[str, str] | None) -> dict[str, object]:
    """The KnownRecord fields of one record (before :func:`validate_record`)."""
    values = {field: _text(raw, cols[field], field) for field in required_fields(layout)}
    fields: dict[str, object] = {"known_id": kid, "subject": values["subject"], "attribute": values["attribute"]}
    if layout == "facts":
        fields["prompt"] = values["prompt"]
    else:
        if layout == "popqa":
            template = (templates or {}).get(values["relation"])
            if template is None:
                raise _Bad(f"no template for {cols['relation']} {values['relation']!r} (add it to data.templates)")
        else:
            template = values["template"]
        if template.count("{}") != 1:
            raise _Bad(f"template {template!r} should contain '{{}}' exactly once")
        fields["prompt"] = template.replace("{}", values["subject"])
        fields["template"] = template
    # Optional text fields the file may carry (Known has both); anything else is not kept.
    for field, name in (("template", "template"), ("relation", "relation_id")):
        value = get_path(raw, cols[field]) if cols[field] and name not in fields else None
        if isinstance(value, str):
            fields[name] = value
    return fields


def convert_record(index: int, raw: object, layout: str, cols: Mapping[str, str | None],
                   templates: Mapping[str, str] | None = None) -> KnownRecord | Quarantined:
    """One input record → a validated KnownRecord, or a Quarantined row (stage ``load``) with the reason."""
    position = None if cols["id"] else index  # without an id column the id is the position, known even here
    if isinstance(raw, _Unreadable):
        return Quarantined(index, position, "load", str(raw))
    if not isinstance(raw, Mapping):
        return Quarantined(index, position, "load", f"record #{index} is a {type(raw).__name__}, not an object")
    kid = None
    try:
        kid = _id(raw, cols["id"]) if cols["id"] else index
        fields = _fields(raw, kid, layout, cols, templates)
    except _Bad as e:
        return Quarantined(index, kid, "load", str(e))
    r = validate_record(index, fields)
    if isinstance(r, Quarantined):
        return Quarantined(index, kid, r.stage, r.reason)
    return r


def read_facts(path: str | Path, layout: str = "auto", columns: Mapping[str, str | None] | None = None,
               templates: Mapping[str, str] | None = None, limit: int | None = None,
               ) -> tuple[list[KnownRecord], list[Quarantined], str]:
    """Read, map and validate the first ``limit`` records of a local file; returns (records, quarantined,
    layout used). Every one of those input records is in exactly one of the two lists."""
    source = str(path)
    raw, _ = read_raw(path, limit)
    how = None
    if layout == "auto":
        layout, how = detect_layout(raw)
        log.info("%s: read as %s (%s)", source, layout, how)
    cols = resolve_columns(raw, layout, columns)
    if layout == "popqa" and not templates:
        props = sorted({str(get_path(r, cols["relation"])) for r in raw if isinstance(r, Mapping)})[:20]
        raise DataError(f"{source}: a PopQA-style table needs data.templates, a cloze template with {{}} for the "
                        f"subject per {cols['relation']!r}; values in the file: {props}")
    check_columns(raw, cols, layout, source, how)
    records: list[KnownRecord] = []
    quarantined: list[Quarantined] = []
    first: dict[int, int] = {}  # id -> input index of its first record
    dups: list[str] = []
    for i, item in enumerate(raw):
        other = record_layout(item) if how else None
        if other not in (None, layout):
            # auto: a record of another layout than most (a minority) is quarantined, not misread
            kid = i
            if cols["id"]:
                try:
                    kid = _id(item, cols["id"])
                except _Bad:
                    kid = None
            quarantined.append(Quarantined(i, kid, "load", f"record #{i} looks like the {other} layout, the file is "
                                                           f"read as {layout} ({how}); set data.format to choose"))
            continue
        r = convert_record(i, item, layout, cols, templates)
        if isinstance(r, Quarantined):
            quarantined.append(r)
            continue
        if r.known_id in first:
            dups.append(f"{r.known_id} (records #{first[r.known_id]} and #{i})")
        first.setdefault(r.known_id, i)
        records.append(r)
    if dups:
        raise DataError(f"{source}: duplicate id {', '.join(dups[:10])}; ids must be unique to join results")
    return mark_duplicates(records, source), quarantined, layout


def check_sha256(path: str | Path, expected: str | None) -> str:
    """The file's sha256; a DataError if ``expected`` is given and differs."""
    got = sha256_file(path)
    if expected is not None and got != expected.lower():
        raise DataError(f"{path}: sha256 {got} does not match data.file_sha256 {expected}; the file changed")
    return got
