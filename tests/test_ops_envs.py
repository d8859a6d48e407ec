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


def env_requirements(env: dict) -> list[Requirement]:
    """The pip requirements of an environment (options such as --no-deps and editable installs skipped)."""
    out = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                words = [w for w in line.split() if not w.startswith("-")]
                if line.startswith(("-e", "--editable")) or not words:
                    continue
                out.append(Requirement(words[-1]))
    return out


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
    reqs = env_requirements(env)
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{env_file.name}: {r.name} is not declared in pyproject.toml"
        assert r.specifier == pins[name], f"{env_file.name}: {r} disagrees with pyproject.toml ({r.name}{pins[name]})"
    torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    assert all(str(r.specifier) == "==2.13.0" for r in torch)


def test_torch_pinned_to_one_version_everywhere():
    assert pyproject_pins()["torch"] == SpecifierSet("==2.13.0")
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().split()
    for f in ENV_FILES:
        for m in re.finditer(r"(?<![\w-])torch(?![\w-])\s*([=<>!~]=?\s*[\w.]+)", f.read_text()):
            assert m.group(1).replace(" ", "") == "==2.13.0", f"{f.name}: torch{m.group(1)}"
