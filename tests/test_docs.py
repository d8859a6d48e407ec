"""The docs stand on their own: every repository path that the README, docs/ and the config comments
mention exists, nothing points outside the repository, and the citation, licence and config guide are
complete."""

from __future__ import annotations

import glob
import re

import yaml
from conftest import ROOT

# A path of this repository, as the docs write it: under a top-level folder, or a top-level file.
TOP_FILES = ("Snakefile", "Makefile", "config.yaml", "LICENSE", "CITATION.cff", "pyproject.toml", "constraints.txt",
             "README.md")
_FOLDERS = r"(?:\.test|\.ci|config|docs|envs|resources|scripts|src|tests|workflow)/"
PATH = re.compile(rf"(?<![\w./$~{{<-])((?:{_FOLDERS})[\w.*/{{}},-]*[\w*/}}]|(?:{'|'.join(map(re.escape, TOP_FILES))})(?![\w.-]))")
BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")  # docs/scaling.{md,png}: one path per alternative
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
# Pointers to files a user of the repository does not have (the project's private working notes).
OUTSIDE = re.compile(r"\.\./shared|paper\.txt|spiritlm-format\.md|/work/(?:shared|helpers|main|wt)\b")

def doc_files() -> list:
    return [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def config_files() -> list:
    return [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml")), ROOT / ".test" / "config.yaml",
            *sorted((ROOT / "workflow" / "profiles").glob("*/config.yaml"))]


def config_comments(path) -> str:
    """The prose of a YAML file: its comments, and for the schema its descriptions."""
    text = path.read_text(encoding="utf-8")
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    return "\n".join(comments + re.findall(r"description: (.*)", text))


def _expand(p: str) -> list[str]:
    m = BRACES.search(p)
    if not m:
        return [p]
    return [q for alt in m.group(1).split(",") for q in _expand(p[:m.start()] + alt + p[m.end():])]


def mentioned_paths(text: str) -> set[str]:
    """Repository paths in ``text``; templates such as ``results/{model}`` or ``<run>/`` are not paths."""
    out = set()
    for p in PATH.findall(text):
        for q in _expand(p.rstrip("/.,")):
            if "{" not in q and "}" not in q and "<" not in q:
                out.add(q.rstrip("/."))
    return out


def exists(p: str) -> bool:
    return bool(glob.glob(str(ROOT / p))) if "*" in p else (ROOT / p).exists()


def code_files() -> list:
    files = [ROOT / "Snakefile", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder, pattern in (("src", "**/*.py"), ("scripts", "*.py"), ("tests", "*.py"), ("workflow", "**/*")):
        files += [p for p in (ROOT / folder).glob(pattern) if p.is_file() and p.suffix in ("", ".py", ".smk", ".yaml", ".rst")]
    return [p for p in files if p.name != "test_docs.py"]


def test_the_path_pattern_finds_what_a_reader_would():
    text = ("see `docs/paper-run.md`, config/paper.yaml, `scripts/speech_*.py`, docs/scaling.{md,png} and Snakefile; "
            "not `results/{model}/known.parquet`, `workflow/rules/{stage}.smk`, ../docs/x.md, https://x.org/docs/a.md "
            "or my_config.yaml")
    assert mentioned_paths(text) == {"docs/paper-run.md", "config/paper.yaml", "scripts/speech_*.py", "Snakefile",
                                     "docs/scaling.md", "docs/scaling.png"}


def test_every_mentioned_path_exists():
    missing = []
    sources = [(f, f.read_text(encoding="utf-8")) for f in doc_files()]
    sources += [(f, config_comments(f)) for f in config_files()]
    sources.append((ROOT / "workflow/schemas/config.schema.yaml", config_comments(ROOT / "workflow/schemas/config.schema.yaml")))
    sources += [(f, f.read_text(encoding="utf-8")) for f in code_files()]  # docstrings and comments name docs too
    for f, text in sources:
        paths = mentioned_paths(text) if f.suffix in (".md", ".yaml") or f.name == "config.yaml" else {
            p for p in mentioned_paths(text) if p.startswith("docs/")}
        for p in sorted(paths):
            if not exists(p):
                missing.append(f"{f.relative_to(ROOT)}: {p}")
        if f.suffix == ".md":
            for target in MD_LINK.findall(text):
                if re.match(r"[a-z]+:|#", target):
                    continue
                if not (f.parent / target.split("#")[0]).exists():
                    missing.append(f"{f.relative_to(ROOT)}: link {target}")
    assert not missing, "\n".join(missing)


def test_nothing_points_outside_the_repository():
    hits = []
    for f in [*doc_files(), *config_files(), ROOT / "workflow/schemas/config.schema.yaml", *code_files(),
              ROOT / "docs" / "example.ipynb"]:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def test_citation_and_licence():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Do Factual Recall Mechanisms Carry over from Text to Speech in Multimodal Language Models?"
    assert [a["family-names"] for a in paper["authors"]] == ["Modica", "Landin", "Farahani", "Qian", "Skantze", "Johansson"]
    assert paper["year"] == 2026 and "*SEM 2026" in paper["collection-title"]
    assert paper["url"] == "https://aclanthology.org/2026.starsem-conference.28/"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for fragment in ("Modica", "Johansson", "SEM 2026", "401–409", paper["url"], "@inproceedings"):
        assert fragment in readme, fragment
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib needs Python 3.11)
    assert 'license = { text = "MIT" }' in pyproject and f'version = "{cff["version"]}"' in pyproject
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_config_guide_covers_every_file_and_section():
    guide = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    for f in config_files():
        assert f"`{f.relative_to(ROOT)}`" in guide, f
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    for key, spec in schema["properties"].items():
        if spec.get("type") == "object":
            for sub in spec.get("properties", {}):
                assert f"`{key}.{sub}" in guide or f"`{key}.*`" in guide, f"{key}.{sub}"
        else:
            assert f"`{key}`" in guide or f"`{key}[]`" in guide, key
