"""The offline switch: HF_HUB_OFFLINE follows the configured models (crosstrace.offline.hub_models)."""

from __future__ import annotations


def test_offline_switch_follows_the_models(tmp_path):
    from crosstrace.models.loading import OFFLINE_DEFAULT
    from crosstrace.offline import LOCAL_ALIASES, hub_models
    from crosstrace.speech.asr import OFFLINE_WHISPER

    assert LOCAL_ALIASES == {OFFLINE_DEFAULT, OFFLINE_WHISPER}
    demo = {"models": [{"name": "s", "path": "smollm2-135m-offline"}], "speech": {"enabled": True}}
    assert hub_models(demo) == []
    local = {"models": [{"name": "x", "path": str(tmp_path)},
                        {"name": "sp", "path": "/not/here", "family": "spiritlm"}], "speech": {"enabled": False}}
    assert hub_models(local) == []
    hub = {"models": [{"name": "l", "path": "meta-llama/Llama-2-7b-hf"}],
           "speech": {"asr": {"model": "small"}, "align": {"ctc_model": "facebook/hubert-large-ls960-ft"},
                      "tts": {"backend": "melotts"}}}
    assert hub_models(hub) == ["meta-llama/Llama-2-7b-hf", "small", "facebook/hubert-large-ls960-ft",
                               "melotts (TTS voices)"]
