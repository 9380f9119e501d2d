"""Shared fixtures: composed configs, the tiny random pair saved through save_pretrained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from specattn.config import register_resolvers
from specattn.models.pair import load_pair

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_resolvers()
torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_config(*overrides: str):
    """The config ``run.py`` would get for these overrides (with the Hydra node)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python run.py *args`` in a subprocess; outputs go wherever ``paths.outputs`` points."""
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The ``tiny_random`` verifier, saved with ``save_pretrained`` (model + tokenizer)."""
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    pair = load_pair(cfg, torch.device("cpu"), torch.float32, seed=0)
    folder = tmp_path_factory.mktemp("tiny_random")
    pair.verifier.save_pretrained(folder)
    pair.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pair(tiny_model_dir):
    """The tiny pair loaded back through the real loading path (a local folder)."""
    cfg = OmegaConf.load(CONF / "model" / "tiny_random.yaml")
    cfg.verifier.path = str(tiny_model_dir)
    return load_pair(cfg, torch.device("cpu"), torch.float32)
