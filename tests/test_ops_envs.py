"""Conda environments: every `conda:` directive names an existing file whose pins agree with pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
CONDA_DIRECTIVE = re.compile(r"^\s*conda:\s*\n\s*\"([^\"]+)\"", re.M)


def pyproject_pins() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    pins: dict[str, SpecifierSet] = {}
    for r in map(Requirement, reqs):
        pins[canonicalize_name(r.name)] = r.specifier
    return pins


def agrees(env_spec: SpecifierSet, project_spec: SpecifierSet) -> bool:
    """An exact pin inside the project's range (or the same pin), else the very same specifier."""
    pins = [sp for sp in env_spec if sp.operator == "=="]
    if len(env_spec) == 1 and pins:
        return project_spec.contains(pins[0].version, prereleases=True)
    return env_spec == project_spec


def pip_lines(env: dict) -> list[str]:
    return [line for dep in env["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]


def env_requirements(env: dict) -> list[Requirement]:
    return [Requirement(line) for line in pip_lines(env)]


def post_deploy_requirements(env_file: Path) -> list[Requirement]:
    """`pip install ... name==version` lines of the environment's post-deploy script, if it has one."""
    script = env_file.with_suffix(".post-deploy.sh")
    if not script.exists():
        return []
    reqs = []
    for line in script.read_text().splitlines():
        if re.search(r"\bpip install\b", line) and not line.lstrip().startswith("#"):
            reqs += [Requirement(w) for w in line.split("pip install", 1)[1].split() if not w.startswith("-")]
    return reqs


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pip_lines_are_plain_requirements(env_file):
    """Snakemake copies the env file to .snakemake/conda/ before `conda env create`: relative paths and
    editable installs break there, and pip requirement lines cannot carry options such as --no-deps."""
    for line in pip_lines(yaml.safe_load(env_file.read_text())):
        assert not line.lstrip().startswith("-"), f"{env_file.name}: pip line {line!r} has an option (use a post-deploy script)"
        assert not re.search(r"(^|\s)(\.{1,2}/|file:)", line), f"{env_file.name}: pip line {line!r} is a relative path"
        Requirement(line)


def conda_directives() -> list[tuple[Path, str]]:
    return [(f, m) for f in RULE_FILES for m in CONDA_DIRECTIVE.findall(f.read_text())]


def test_rules_have_conda_directives():
    assert conda_directives(), "no conda: directive found (did the rule syntax change?)"


@pytest.mark.parametrize("rule_file,env", conda_directives(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_conda_directive_points_to_existing_file(rule_file, env):
    path = (rule_file.parent / env).resolve()
    assert path.is_file(), f"{rule_file.name}: conda: {env!r} -> {path} does not exist"
    assert path.parent == ROOT / "envs"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_file_parses_and_agrees_with_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert isinstance(env, dict) and env.get("channels") and env.get("dependencies"), f"{env_file.name}: needs channels and dependencies"
    pins = pyproject_pins()
    for dep in env["dependencies"]:
        if isinstance(dep, str) and dep.startswith("python"):
            version = dep.split("=", 1)[1].lstrip("=")
            requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
            assert requires.contains(version + ".0"), f"{env_file.name}: {dep} outside requires-python {requires}"
    reqs = env_requirements(env) + post_deploy_requirements(env_file)
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{env_file.name}: {r.name} is not declared in pyproject.toml"
        assert agrees(r.specifier, pins[name]), f"{env_file.name}: {r} disagrees with pyproject.toml ({r.name}{pins[name]})"
    torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    assert all(str(r.specifier) == "==2.13.0" for r in torch)


def test_torch_pinned_to_one_version_everywhere():
    assert pyproject_pins()["torch"] == SpecifierSet("==2.13.0")
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
    for f in ENV_FILES:
        for m in re.finditer(r"(?<![\w-])torch(?![\w-])\s*([=<>!~]=?\s*[\w.]+)", f.read_text()):
            assert m.group(1).replace(" ", "") == "==2.13.0", f"{f.name}: torch{m.group(1)}"
