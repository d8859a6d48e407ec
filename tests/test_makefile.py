"""The Makefile: it leaves the offline switch to the config, and `make venv` installs the CPU torch by
default, a CUDA build on request, and keeps a venv's build."""

from __future__ import annotations

import subprocess

from conftest import ROOT


def test_makefile_leaves_offline_to_the_config_and_offers_a_cuda_torch(tmp_path):
    text = (ROOT / "Makefile").read_text()
    assert "HF_HUB_OFFLINE ?= 1" not in text and "export HF_HUB_OFFLINE" not in text
    venv = tmp_path / "v"
    cuda = subprocess.run(["make", "-n", "venv", f"VENV={venv}", "TORCH=cuda"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert '"torch==2.13.0+cu128" --index-url https://download.pytorch.org/whl/cu128' in cuda
    cpu = subprocess.run(["make", "-n", "venv", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "pip install -q torch==2.13.0\n" in cpu and "download.pytorch.org" not in cpu
    (venv).mkdir()
    (venv / ".torch-cuda").touch()  # a venv remembers its build: later targets keep CUDA
    again = subprocess.run(["make", "-n", "venv", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    assert "pip install -q torch" not in again and "pip uninstall" not in again and '-e ".[' in again
