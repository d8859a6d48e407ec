"""The validated config as code: a frozen :class:`ModelSpec` per model entry, and every cross-field rule.

``workflow/schemas/config.schema.yaml`` checks each key on its own (types, ranges, defaults); :func:`check`
holds every rule that relates two keys, so the Snakefile, the scripts and the notebook API reject the
same configs with the same one-line message. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from .vocabulary import MODALITIES

#: every model family: ``hf`` (any causal LM, text only) and the speech families, each a module
#: ``crosstrace.models.<family>`` (``-`` written ``_``; crosstrace.models.speech_family); the schema's enum
#: lists the same names
FAMILIES = ("hf", "spiritlm", "qwen2-audio")
SPEECH_FAMILIES = tuple(f for f in FAMILIES if f != "hf")  # the families that can run S→T
#: model-entry keys that only some families read
FAMILY_KEYS = {"stray_space": ("spiritlm",), "template": ("qwen2-audio",)}
TEMPLATE_SLOT = "{prompt}"


class ConfigError(ValueError):
    """A config that the schema accepts but that cannot run; the message starts with ``config:``."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models:`` after schema validation (defaults filled in).

    ``resolved`` is the loadable path that rule ``prepare_model`` writes (an HF folder, a hub id or the
    SpiritLM LM folder); before that step it is None and ``path`` is loaded as given.
    """

    name: str
    path: str
    family: str = "hf"
    modalities: tuple[str, ...] = ("t2t",)
    device: str = "cpu"
    dtype: str = "float32"
    stray_space: bool | None = None  # SpiritLM only; None = the reference's choice (models.spiritlm)
    # Qwen2-Audio only: {text, audio, chat} of crosstrace.models.qwen2_audio.Template; None = the base layout
    template: Mapping | None = field(default=None, hash=False)
    resolved: str | None = None

    @classmethod
    def from_dict(cls, entry: Mapping) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        name = entry.get("name", "?")
        if unknown:
            raise ConfigError(f"config: model {name!r}: unknown key(s) {unknown}")
        if "name" not in entry or "path" not in entry:
            raise ConfigError(f"config: model entry {dict(entry)!r} needs name and path")
        spec = cls(**{**entry, "modalities": tuple(entry.get("modalities", ("t2t",)))})
        if spec.family not in FAMILIES:
            raise ConfigError(f"config: model {name!r}: family must be one of {FAMILIES}, got {spec.family!r}")
        bad = [m for m in spec.modalities if m not in MODALITIES]
        if bad:
            raise ConfigError(f"config: model {name!r}: unknown modalities {bad} (choose from {MODALITIES})")
        return spec

    def to_dict(self) -> dict:
        """The entry as the config writes it (unset optional keys left out), e.g. for a rule's params."""
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return {k: v for k, v in d.items() if v is not None}

    @property
    def spiritlm(self) -> bool:
        return self.family == "spiritlm"

    @property
    def speech(self) -> bool:
        """A speech family: the entry can run S→T."""
        return self.family in SPEECH_FAMILIES

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def load_path(self) -> str:
        return self.resolved or self.path


def model_specs(config: Mapping) -> dict[str, ModelSpec]:
    """``models:`` as specs by name (names must be unique: they are output folders)."""
    specs = [ModelSpec.from_dict(m) for m in config["models"]]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config: model names must be unique; repeated: {dup}")
    return {s.name: s for s in specs}


def runs(config: Mapping) -> list[tuple[str, str]]:
    """Every traced (model, modality) pair, in config order."""
    return [(s.name, m) for s in model_specs(config).values() for m in s.modalities]


def check(config: Mapping) -> dict[str, ModelSpec]:
    """Every cross-field rule of the config; raises :class:`ConfigError` on the first broken one.

    Returns the model specs, so a caller validates and reads them in one step.
    """
    specs = model_specs(config)
    speech = config["speech"]
    align = speech["align"]
    for s in specs.values():
        if "s2t" in s.modalities and not s.speech:
            raise ConfigError(f"config: model {s.name!r} lists modality s2t, which needs "
                              f"{' or '.join(f'family: {f}' for f in SPEECH_FAMILIES)} (a speech family)")
        for key, families in FAMILY_KEYS.items():
            if getattr(s, key) is not None and s.family not in families:
                raise ConfigError(f"config: model {s.name!r}: {key} applies to family {' or '.join(families)} only")
        if s.template is not None:
            check_template(s.name, s.template)
        if "s2t" in s.modalities and not speech["enabled"]:
            raise ConfigError(f"config: model {s.name!r} lists modality s2t, which needs speech.enabled: true")
    if any("s2t" in s.modalities for s in specs.values()) and align["use"] not in align["aligners"]:
        raise ConfigError(
            f"config: speech.align.use {align['use']!r} is not among speech.align.aligners {align['aligners']}"
        )
    if speech["enabled"] and speech["source"] == "recordings":
        if not speech["recordings"]["manifest"]:
            raise ConfigError(
                "config: speech.source: recordings needs speech.recordings.manifest (a CSV: id, path, transcript)"
            )
        named = [("aligners", align["aligners"]), ("reference", [align["reference"]]), ("use", [align["use"]])]
        tts_keys = [f"speech.align.{k}" for k, names in named if "tts" in names]
        if tts_keys:
            raise ConfigError(
                "config: speech.source: recordings has no TTS word timings, so the tts aligner cannot run; "
                f"{', '.join(tts_keys)} name tts: use whisper (offline) or ctc (needs speech.align.ctc_model), "
                "e.g. speech.align: {aligners: [whisper], reference: whisper, use: whisper}"
            )
    trace = config["trace"]
    if trace["screen"]["enabled"] and trace["engine"] == "atp":
        raise ConfigError(
            "config: trace.screen needs an exact trace.engine (auto, fast or reference) for its second "
            "stage; engine: atp alone traces every prompt approximately"
        )
    configured = {(s.name, m) for s in specs.values() for m in s.modalities}
    for c in config["stats"]["compare"]:
        for side in (c["a"], c["b"]):
            if (side["model"], side["modality"]) not in configured:
                raise ConfigError(
                    f"config: stats.compare: {side['model']} {side['modality']} is not a configured run "
                    f"(models[].name + modalities); runs: {runs(config)}"
                )
    return specs


def check_template(model: str, template: Mapping) -> None:
    """A model entry's ``template``: one ``{prompt}`` slot in its text, and no audio block with ``chat: true``
    (the chat template writes the audio itself). The audio block's token is checked against the processor
    when the model loads (crosstrace.models.qwen2_audio.Template)."""
    text = template.get("text", TEMPLATE_SLOT)
    if text.count(TEMPLATE_SLOT) != 1:
        raise ConfigError(f"config: model {model!r}: template.text must hold {TEMPLATE_SLOT} exactly once (where the "
                          f"audio goes for S→T and the prompt text for T→T), got {text!r}")
    if template.get("chat") and template.get("audio") is not None:
        raise ConfigError(f"config: model {model!r}: template.chat: true writes the audio with the processor's chat "
                          "template; leave template.audio unset")


__all__ = ["FAMILIES", "FAMILY_KEYS", "SPEECH_FAMILIES", "ConfigError", "ModelSpec", "check", "check_template",
           "model_specs", "runs"]
