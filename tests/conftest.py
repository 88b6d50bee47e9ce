"""Shared fixtures: the real images in ../shared/data, offline W&B/HF for every test, the
composed config (``compose``) and tiny random models saved once per session. Plain helpers
(paths, ``compose_config``, ``isolated_env``, ``run_medprobe``) live in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Compose, compose_config, isolated_env, shared_data_dir
from tiny_models import save_tiny_clip, save_tiny_idefics


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "T1_crc").is_dir():
        pytest.skip(f"real sample data not found at {d} (set MEDPROBE_SHARED_DATA)")
    return d


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in isolated_env(tmp_path).items():
        if k.startswith(("WANDB", "HF_", "TRANSFORMERS")):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(scope="session")
def compose() -> Compose:
    """``compose(*overrides, hydra=False)``: conf/config.yaml composed as Hydra does
    (:func:`helpers.compose_config`)."""
    return compose_config


# Tiny random models (tests/tiny_models.py), written once per session. Tests only read them
# (load, hash, copy elsewhere); a test that must change weights saves its own copy.


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (seed 0) saved as a local Hugging Face folder."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "m0", seed=0)


@pytest.fixture(scope="session")
def tiny_clip_seed1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny random CLIP, same architecture, other weights (seed 1)."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "m1", seed=1)


@pytest.fixture(scope="session")
def tiny_idefics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random IDEFICS (seed 0, tokenizer and processor included), saved locally."""
    return save_tiny_idefics(tmp_path_factory.mktemp("tiny_idefics") / "m0", seed=0)


@pytest.fixture(scope="session")
def tiny_idefics_seed1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny random IDEFICS, same architecture, other weights (seed 1)."""
    return save_tiny_idefics(tmp_path_factory.mktemp("tiny_idefics") / "m1", seed=1)
