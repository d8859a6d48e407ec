"""crosstrace.config: the model spec and the cross-field rules, on the default config and broken variants."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from crosstrace.config import ConfigError, ModelSpec, check, runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # fills the defaults
    return cfg


def broken(cfg, edit):
    c = copy.deepcopy(cfg)
    edit(c)
    with pytest.raises(ConfigError) as e:
        check(c)
    msg = str(e.value)
    assert msg.startswith("config: ") and "\n" not in msg
    return msg


def test_default_config_passes_and_gives_specs(default):
    specs = check(default)
    assert list(specs) == [m["name"] for m in default["models"]]
    s = next(iter(specs.values()))
    assert isinstance(s, ModelSpec) and s.family == "hf" and s.modalities == ("t2t",) and s.load_path == s.path
    assert runs(default) == [(m["name"], mod) for m in default["models"] for mod in m["modalities"]]


def test_spec_round_trip_and_frozen():
    s = ModelSpec.from_dict({"name": "slm", "path": "/ckpt", "family": "spiritlm", "modalities": ["t2t", "s2t"]})
    assert s.spiritlm and not s.cuda and s.stray_space is None
    assert ModelSpec.from_dict(s.to_dict()) == s and "stray_space" not in s.to_dict()
    with pytest.raises(AttributeError):
        s.family = "hf"


def test_unknown_key_and_family_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        ModelSpec.from_dict({"name": "a", "path": "p", "famly": "hf"})
    with pytest.raises(ConfigError, match="family must be one of"):
        ModelSpec.from_dict({"name": "a", "path": "p", "family": "gpt"})


def test_cross_field_rules(default):
    def model(**kw):
        return lambda c: c["models"][0].update(kw)

    assert "needs family: spiritlm" in broken(default, model(modalities=["t2t", "s2t"]))
    assert "stray_space applies to family spiritlm only" in broken(default, model(stray_space=False))
    assert "must be unique" in broken(default, lambda c: c["models"].append(dict(c["models"][0])))

    def s2t_without_speech(c):
        c["models"][0].update(family="spiritlm", modalities=["s2t"])
        c["speech"]["enabled"] = False

    assert "needs speech.enabled: true" in broken(default, s2t_without_speech)

    def screen_atp(c):
        c["trace"]["screen"]["enabled"] = True
        c["trace"]["engine"] = "atp"

    assert "needs an exact trace.engine" in broken(default, screen_atp)

    def compare_unknown(c):
        c["stats"]["compare"] = [{"a": {"model": "nope", "modality": "t2t"}, "b": {"model": "nope", "modality": "s2t"}}]

    assert "is not a configured run" in broken(default, compare_unknown)

    def recordings_without_manifest(c):
        c["speech"].update(enabled=True, source="recordings")
        c["speech"]["recordings"]["manifest"] = ""

    assert "needs speech.recordings.manifest" in broken(default, recordings_without_manifest)

    def recordings_with_tts(c):
        c["speech"].update(enabled=True, source="recordings")
        c["speech"]["recordings"]["manifest"] = "m.csv"
        c["speech"]["align"].update(aligners=["tts", "whisper"], reference="tts", use="whisper")

    msg = broken(default, recordings_with_tts)
    assert "speech.align.aligners, speech.align.reference name tts" in msg
