"""Issue 23 §4, the rough edges a new-user probe found: each probe as a test with the exact message.

1 CounterFact with a bad first record · 2 a full disk as a job starts · 4 one bad byte in a CSV · 5 duplicate
facts · 6 leftover temporary files · 7 small things (JSONL reasons, known_id of unreadable rows, CLI --engine
atp, the CLI's P_corrupted warning, a free prompt's repr). 3 (recordings' reasons) is in
tests/test_recordings_reasons.py, 8 (the Known labels' margins) in tests/test_known_margin.py, 9 (MeloTTS) in
tests/test_melotts.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from crosstrace.data import BUNDLED_KNOWN, RECORD_TYPES, DataError, fetch_known, load_known, records_to_rows
from crosstrace.io import DiskFullError, write_json, write_parquet
from crosstrace.sources import read_facts

FACTS = [
    {"id": 3, "prompt": "Paris is the capital of", "subject": "Paris", "attribute": "France"},
    {"id": 5, "prompt": "The Eiffel Tower is located in the city of", "subject": "The Eiffel Tower", "attribute": "Paris"},
    {"id": 9, "prompt": "Toyota was founded in the country of", "subject": "Toyota", "attribute": "Japan"},
]
COUNTERFACT = [
    {"case_id": 0, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                                         "target_true": {"str": "French"}, "target_new": {"str": "English"}}},
    {"case_id": 1, "requested_rewrite": {"prompt": "{}, which is located in", "subject": "Autonomous University of Madrid",
                                         "target_true": {"str": "Italy"}, "target_new": {"str": "Germany"}}},
]
FREE = r"\d+(\.\d)? (bytes|KiB|MiB|GiB|TiB) free there"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> Path:
    """The session's tiny random Llama folder (read-only)."""
    return tiny_model_dir


def write_json_file(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


# ---------------------------------------------------------------------- 1. CounterFact, bad first record

def test_counterfact_with_a_bad_first_record_is_read_as_counterfact(tmp_path):
    """data.format: auto used to judge by the first record and stop with "no record has column 'prompt'"."""
    p = write_json_file(tmp_path / "cf.json", [{"case_id": 7, "pararel_idx": 1}, *COUNTERFACT])
    records, quarantined, layout = read_facts(p)
    assert layout == "counterfact" and [r.known_id for r in records] == [0, 1]
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (0, 7, "missing column 'requested_rewrite.prompt' (template)")]
    assert read_facts(p, "counterfact") == (records, quarantined, "counterfact"), "as with data.format: counterfact"


def test_auto_layout_quarantines_a_record_of_the_minority_layout(tmp_path):
    fact = {"prompt": "Paris is the capital of", "subject": "Paris", "attribute": "France"}
    records, quarantined, layout = read_facts(write_json_file(tmp_path / "mixed.json", [*COUNTERFACT, fact]))
    assert layout == "counterfact" and [r.known_id for r in records] == [0, 1]
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (2, None, "record #2 looks like the facts layout, the file is read as counterfact (data.format: auto, 2 of 3 "
                  "records look like counterfact); set data.format to choose")]


def test_auto_layout_tie_is_a_data_error_naming_data_format(tmp_path):
    fact = {"prompt": "Paris is the capital of", "subject": "Paris", "attribute": "France"}
    with pytest.raises(DataError) as e:
        read_facts(write_json_file(tmp_path / "tie.json", [COUNTERFACT[0], fact]))
    assert str(e.value) == ("data.format: auto cannot decide the layout (1 look like counterfact, 1 look like facts); "
                            "set data.format to one of ['facts', 'counterfact', 'popqa']")


def test_missing_column_error_names_the_layout_and_data_format(tmp_path):
    p = write_json_file(tmp_path / "f.json", [{k: v for k, v in r.items() if k != "subject"} for r in FACTS])
    with pytest.raises(DataError) as e:
        read_facts(p)
    assert str(e.value) == (f"{p}: no record has column 'subject' (subject; set data.columns.subject); the columns are "
                            "['attribute', 'id', 'prompt']; the file is read in the facts layout (data.format: auto, "
                            "3 of 3 records look like facts; data.format: counterfact or popqa reads it otherwise)")


# --------------------------------------------------------------------------- 4. one bad byte in a CSV

CSV = (b"id,prompt,subject,attribute\n"
       b"3,Paris is the capital of,Paris,France\n"
       b"4,Z\xfcrich liegt in,Z\xfcrich,der Schweiz\n"
       b"5,The Eiffel Tower is located in the city of,The Eiffel Tower,Paris\n")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_a_bad_byte_quarantines_its_row_naming_the_offset(tmp_path, bom):
    p = tmp_path / "facts.csv"
    p.write_bytes(bom + CSV)
    offset = (bom + CSV).index(b"\xfc")
    assert offset == 70 + len(bom)
    records, quarantined, _ = read_facts(p)
    assert [r.known_id for r in records] == [3, 5], "the rows around it are kept"
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (1, None, f"line 3 is not UTF-8 text (byte b'\\xfc' at offset {offset})")]


def test_a_bad_byte_in_a_quoted_multiline_field_names_its_row(tmp_path):
    p = tmp_path / "facts.csv"
    p.write_bytes(b'prompt,subject,attribute\n"Paris is\nthe capital of",Paris,Fr\xe9nce\nRome is in,Rome,Italy\n')
    records, quarantined, _ = read_facts(p)
    assert [r.prompt for r in records] == ["Rome is in"] and [r.known_id for r in records] == [1]
    assert p.read_bytes().index(b"\xe9") == 59
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [
        (0, 0, "line 3 is not UTF-8 text (byte b'\\xe9' at offset 59)")]


def test_a_bad_byte_in_a_jsonl_line_quarantines_that_line(tmp_path):
    p = tmp_path / "facts.jsonl"
    lines = [json.dumps(FACTS[0]).encode(), json.dumps(FACTS[1]).encode().replace(b"Eiffel", b"Eif\xfffel"),
             json.dumps(FACTS[2]).encode()]
    p.write_bytes(b"\n".join(lines) + b"\n")
    records, quarantined, _ = read_facts(p)
    offset = p.read_bytes().index(b"\xff")
    assert [r.known_id for r in records] == [3, 9]
    assert [(q.index, q.reason) for q in quarantined] == [(1, f"line 2 is not UTF-8 text (byte b'\\xff' at offset {offset})")]


def test_a_bad_byte_in_the_header_or_a_json_list_stops_the_run(tmp_path):
    """Whole-file errors, as the README lists them: without a header no row can be read, and a JSON list is
    one document."""
    p = tmp_path / "facts.csv"
    p.write_bytes(b"pr\xe9mpt,subject,attribute\nParis is the capital of,Paris,France\n")
    with pytest.raises(DataError) as e:
        read_facts(p)
    assert str(e.value) == f"{p}: the header row is not UTF-8 text (byte b'\\xe9' at offset 2)"
    j = tmp_path / "facts.json"
    j.write_bytes(json.dumps(FACTS).encode().replace(b"Toyota", b"Toy\xf6ta"))
    offset = j.read_bytes().index(b"\xf6")
    with pytest.raises(DataError) as e:
        read_facts(j)
    assert str(e.value) == f"{j}: not UTF-8 text (byte b'\\xf6' at offset {offset})"


# ------------------------------------------------------------------------------------ 5. duplicate facts

def test_duplicate_facts_are_kept_marked_and_warned_about(tmp_path, caplog):
    p = write_json_file(tmp_path / "f.json", [*FACTS, {**FACTS[0], "id": 7}, {**FACTS[2], "id": 8}])
    with caplog.at_level(logging.WARNING, logger="crosstrace.data"):
        records, quarantined, _ = read_facts(p)
    assert quarantined == [] and [r.known_id for r in records] == [3, 5, 9, 7, 8], "both copies are traced"
    assert [r.duplicate_group for r in records] == [3, 5, 9, 3, 9]
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}: 2 record(s) repeat an earlier record's prompt, subject and attribute (kept and traced; "
        "records.parquet column duplicate_group): known_id 7 repeats 3, 8 repeats 9"]
    assert caplog.records[0].console is True, "the warning reaches the console, not only the log"
    out = tmp_path / "records.parquet"
    write_parquet(pd.DataFrame(records_to_rows(records)), out, types=RECORD_TYPES)
    table = pd.read_parquet(out)
    assert table["duplicate_group"].tolist() == [3, 5, 9, 3, 9] and str(table["duplicate_group"].dtype) == "int64"
    assert table.groupby("duplicate_group").ngroups == 3, "one group per distinct fact"


def test_known_has_one_duplicate_pair_and_keeps_it():
    records, _ = load_known(BUNDLED_KNOWN)
    groups = {r.known_id: r.duplicate_group for r in records}
    assert len(records) == 1209 and groups[446] == groups[762] == 446
    assert [k for k, g in groups.items() if g != k] == [762]


# ------------------------------------------------------------------- 2 and 6. a full disk, temp files

def _fill_then_fail(self, path, **kwargs):
    Path(path).write_bytes(b"PAR1")  # a partial file, then the disk is full
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _fill_then_fail)
    out = tmp_path / "shards" / "0.quarantine.parquet"
    with pytest.raises(DiskFullError) as e:
        write_parquet(pd.DataFrame({"x": [1]}), out)
    assert re.fullmatch(rf"No space left on device: cannot write {re.escape(str(out))} \({FREE}\)", str(e.value))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out)
    assert list(out.parent.iterdir()) == [], "no hidden .0.quarantine.parquet.<pid>.tmp is left"


def test_a_temporary_file_of_a_killed_run_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "summary.json"
    stale = [tmp_path / ".summary.json.12345.tmp", tmp_path / ".summary.json.99.tmp"]
    other = tmp_path / ".other.json.12345.tmp"
    for f in (*stale, other):
        f.write_text("{")
    write_json({"ok": 1}, out)
    assert sorted(f.name for f in tmp_path.iterdir()) == [".other.json.12345.tmp", "summary.json"]


def test_fetch_known_on_a_full_disk_leaves_nothing_and_cleans_an_old_part_file(tmp_path, monkeypatch):
    dest = tmp_path / "data" / "known_1000.json"
    dest.parent.mkdir()
    (dest.parent / "known_1000.json.part").write_text("[")  # what a run before this fix left behind
    real = Path.write_bytes

    def full(self, data):
        real(self, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=rf"^No space left on device: cannot write {re.escape(str(dest))} \({FREE}\)$"):
        fetch_known(dest, url="http://127.0.0.1:9/known_1000.json", timeout=2)
    assert list(dest.parent.iterdir()) == []
    monkeypatch.setattr(Path, "write_bytes", real)
    assert fetch_known(dest, url="http://127.0.0.1:9/known_1000.json", timeout=2) == "bundled"
    assert [f.name for f in dest.parent.iterdir()] == ["known_1000.json"]


JOB = """
import numpy as np
import pandas as pd
from tqdm import tqdm
from crosstrace.io import setup_logging, write_parquet
log = setup_logging({log!r})
for _ in tqdm(range(3), desc="Loading weights"):  # what transformers draws while a model loads
    pass
log.info("shard 0: 1 prompts in = 1 traced + 0 quarantined")
{inject}
write_parquet(pd.DataFrame({{"x": np.random.default_rng(0).random(20000)}}), {out!r})  # 160 kB, incompressible
"""


def _job(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": os.environ.get("PATH", "")})


def test_a_job_whose_log_and_output_cannot_be_written(tmp_path):
    """The probe's trace job on a full disk: the log (here /dev/full, which refuses every write with ENOSPC)
    must not turn a progress bar into a model-loading error, and the output's failure is named as such."""
    log = tmp_path / "logs" / "trace" / "job.log"
    log.parent.mkdir(parents=True)
    log.symlink_to("/dev/full")
    out = tmp_path / "shards" / "0.parquet"
    inject = ("import errno\n"
              "def full(self, path, **kw):\n"
              "    open(path, 'wb').write(b'PAR1')\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "pd.DataFrame.to_parquet = full")
    p = _job(JOB.format(log=str(log), out=str(out), inject=inject))
    assert p.returncode == 1
    err = p.stderr
    assert "Error in sys.excepthook" not in err and "lost sys.stderr" not in err and "ModelLoadError" not in err
    first = err.splitlines()[0]
    assert re.fullmatch(rf"WARNING: cannot write the job log {re.escape(str(log))}: No space left on device: cannot write "
                        rf"{re.escape(str(log))} \({FREE}\); its lines follow here", first), first
    assert "Loading weights: 100%" in err and "shard 0: 1 prompts in = 1 traced + 0 quarantined" in err, "nothing lost"
    line = next(x for x in err.splitlines() if x.startswith("ERROR: "))
    assert re.fullmatch(rf"ERROR: DiskFullError: No space left on device: cannot write {re.escape(str(out))} \({FREE}\) "
                        rf"\(the log {re.escape(str(log))} could not be written; traceback:\)", line), line
    assert "Traceback (most recent call last)" in err
    assert list(out.parent.iterdir()) == [], "the partial temporary file is gone"


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_job_on_a_really_full_disk(tmp_path):
    """The same on a real 1 MiB filesystem, filled up: first with 8 KiB left (the log keeps the traceback),
    then with none (the console gets the log's lines); after space is freed the job reruns cleanly."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the /dev/full test covers the same paths")
    try:
        log, out = disk / "logs" / "job.log", disk / "shards" / "0.parquet"
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * (free - 8192))
        p = _job(JOB.format(log=str(log), out=str(out), inject=""))
        assert p.returncode == 1 and "Error in sys.excepthook" not in p.stderr
        assert re.fullmatch(rf"ERROR: DiskFullError: No space left on device: cannot write {re.escape(str(out))} "
                            rf"\(0 bytes free there\) \(traceback: {re.escape(str(log))}\)", p.stderr.strip()), p.stderr
        text = log.read_text()
        assert "Loading weights: 100%" in text and "DiskFullError: No space left on device" in text, "the log is not empty"
        assert list(out.parent.iterdir()) == []
        log.unlink()
        with open(filler, "ab") as f:  # now the disk is full to the last byte
            f.write(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize))
        p = _job(JOB.format(log=str(log), out=str(out), inject=""))
        assert p.returncode == 1 and "Error in sys.excepthook" not in p.stderr
        assert p.stderr.splitlines()[0] == (f"WARNING: cannot write the job log {log}: No space left on device: "
                                            f"cannot write {log} (0 bytes free there); its lines follow here")
        assert f"ERROR: DiskFullError: No space left on device: cannot write {out} (0 bytes free there)" in p.stderr
        assert [f.name for f in disk.rglob("*") if f.is_file()] == ["filler", "job.log"] and log.stat().st_size == 0
        filler.unlink()
        p = _job(JOB.format(log=str(log), out=str(out), inject=""))
        assert p.returncode == 0 and p.stderr == "" and len(pd.read_parquet(out)) == 20000
        assert [f.name for f in out.parent.iterdir()] == ["0.parquet"]
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # busy: detach it anyway


def test_a_full_disk_during_model_loading_is_not_a_model_error(tiny, monkeypatch):
    import transformers

    from crosstrace.models.loading import load_model


    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", full)
    with pytest.raises(OSError) as e:
        load_model(str(tiny))
    assert type(e.value) is OSError and e.value.errno == errno.ENOSPC


# ------------------------------------------------------------------------------------ 7. small things

@pytest.mark.parametrize("line,reason", [
    ('{"prompt": "Paris', "line 2 is not valid JSON (Unterminated string starting at column 12)"),
    ('{"prompt": "Paris\tis"}', "line 2 is not valid JSON (Invalid control character '\\t' at column 18)"),
    ('{"prompt": 1,', "line 2 is not valid JSON (Expecting property name enclosed in double quotes at column 14)"),
], ids=["unterminated", "control-character", "trailing-comma"])
def test_jsonl_reasons_read_once_and_quote_no_raw_newline(tmp_path, line, reason):
    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps(FACTS[0]) + "\n" + line + "\n" + json.dumps(FACTS[1]) + "\n")
    records, quarantined, _ = read_facts(p)
    assert [r.known_id for r in records] == [3, 5]
    assert [(q.index, q.known_id, q.reason) for q in quarantined] == [(1, None, reason)]
    assert "at at" not in reason and "\n" not in reason


def test_unreadable_rows_carry_their_position_as_known_id_when_ids_are_positions(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in FACTS]
    j = tmp_path / "f.jsonl"
    j.write_text(json.dumps(rows[0]) + "\n{not json}\n" + json.dumps(rows[2]) + "\n")
    c = tmp_path / "f.csv"
    c.write_text("prompt,subject,attribute\nParis is the capital of,Paris,France\nToo,few\n"
                 "Toyota was founded in the country of,Toyota,Japan\n")
    for path in (j, c):
        records, quarantined, _ = read_facts(path)
        assert [r.known_id for r in records] == [0, 2]
        assert [(q.index, q.known_id) for q in quarantined] == [(1, 1)], path.suffix
    rows = pd.DataFrame([{"index": 1, "known_id": "1"}])  # quarantine.parquet keeps it as text, like every id
    assert rows["known_id"].notna().all()


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "crosstrace.cli", *args], capture_output=True, text=True, env=env)


def test_cli_engine_atp_and_the_corruption_warning(tmp_path, tiny):
    base = ["trace", "--model", str(tiny), "--prompt", "Paris is in", "--subject", "Paris", "--kinds", "mlp",
            "--samples", "2", "--window", "2", "--threads", "1", "--formats", "png"]
    p = _cli(*base, "--engine", "atp", "--out", str(tmp_path / "atp"))
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["engine"] == "atp"
    assert re.search(r"^  mlp    peak IE [-+]\d\.\d{4} at token \d+ .*, layer \d+  \(approximate: attribution patching\)$",
                     p.stdout, re.M), p.stdout
    # no noise at all: P_corrupted = P_clean, which the workflow flags and the CLI now warns about
    p = _cli(*base, "--noise-abs", "0", "--out", str(tmp_path / "zero"))
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert s["p_corrupted"] == s["p_clean"]
    warning = [x for x in p.stderr.splitlines() if x.startswith("warning: corruption")]
    assert warning == [f"warning: corruption does not lower P(o): P_corrupted = {s['p_corrupted']:.4f} >= P_clean = "
                       f"{s['p_clean']:.4f}, so no restoration can show an effect; a larger noise scale "
                       "(--noise-multiple, now ν = 0.0000) or another subject span may"]
    from crosstrace.cli import build_parser

    engine = next(a for a in build_parser()._subparsers._group_actions[0].choices["trace"]._actions
                  if a.dest == "engine")
    assert engine.choices == ["auto", "fast", "reference", "atp"]


def test_free_prompt_repr_has_no_known_id(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crosstrace.trace import NoiseConfig, TraceSettings, trace_prompt

    model, tok = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    settings = TraceSettings(kinds=("mlp",), window=2, noise=NoiseConfig(samples=2))
    free = trace_prompt(model, tok, "Paris is in", "Paris", settings, noise_std=0.1)
    assert repr(free).splitlines()[0] == "PromptTrace(free prompt: 'Paris is in'"
    assert free.known_id is None and free.to_frame()["known_id"].isna().all()
    assert str(free.to_frame()["known_id"].dtype) == "Int64"
    zero = trace_prompt(model, tok, "Paris is in", "Paris", settings, noise_std=0.1, known_id=0)
    assert repr(zero).splitlines()[0] == "PromptTrace(known_id=0: 'Paris is in'"
    assert (zero.kinds["mlp"].ie == free.kinds["mlp"].ie).all(), "a free prompt draws the noise of id 0"
    assert zero.to_frame()["known_id"].tolist() == [0] * len(zero.to_frame())
