"""Helpers the tests import (``from helpers import ...``): where the repository and the real
sample images are, composing the Hydra config, and running ``python -m medprobe`` in an
isolated, offline subprocess. The fixtures built on them live in ``tests/conftest.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$MEDPROBE_SHARED_DATA`` or ``<repo>/../shared/data`` (the real images)."""
    env = os.environ.get("MEDPROBE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


#: The real sample data, or None when absent (tests that need it are skipped, reason shown).
SHARED_DATA: Path | None = shared_data_dir() if (shared_data_dir() / "T1_crc").is_dir() else None
needs_shared_data = pytest.mark.skipif(
    SHARED_DATA is None,
    reason="real sample data absent: neither ../shared/data nor $MEDPROBE_SHARED_DATA exists",
)


#: The type of the ``compose`` fixture (tests/conftest.py), i.e. of :func:`compose_config`.
Compose = Callable[..., DictConfig]


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """conf/config.yaml composed with ``overrides`` as Hydra composes it (the schemas and
    resolvers registered first); ``hydra=True`` keeps the ``hydra`` node (run/sweep dirs,
    launcher, callbacks). Tests take it as the ``compose`` fixture of conftest.py.

    Raises:
        hydra.errors.ConfigCompositionException: an unknown option, key or bad value.
    """
    from hydra import compose, initialize_config_dir

    from medprobe.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment for a subprocess run: offline W&B and HF hub, every cache inside ``tmp``."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp / "wandb_dir"),
        WANDB_CACHE_DIR=str(tmp / "wandb_cache"),
        WANDB_DATA_DIR=str(tmp / "wandb_data"),
        WANDB_CONFIG_DIR=str(tmp / "wandb_config"),
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp / "hf_datasets"),  # task=hf: what datasets converts
        TRANSFORMERS_OFFLINE="1",
        MEDPROBE_CACHE_DIR=str(tmp / "cache"),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("WANDB_API_KEY", None)
    return env


def run_medprobe(
    tmp: Path, *args: str, check: bool = True, module: str = "medprobe"
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> *args`` in ``tmp`` as a user runs it, offline and isolated.

    Raises:
        AssertionError: with ``check``, a non-zero exit (stdout and stderr in the message).
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp,
        env=isolated_env(tmp),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def small_demo(per_class: int = 3) -> Any:
    """A ``task=demo`` manifest builder that cuts the demo set to ``per_class`` images per class
    and split (81 images at 3), for in-process end-to-end runs: put it in place with
    ``monkeypatch.setitem(medprobe.registry.TASKS._loaded, "demo", small_demo())``."""
    from medprobe.data.tasks.demo import build_manifest

    def build(task_cfg: Any = None, data_root: str | None = None) -> Any:
        m = build_manifest(task_cfg, data_root)
        keep = [
            i
            for s in ("train", "val", "test")
            for c in range(len(m.classes))
            for i in np.flatnonzero((m.split == s) & (m.labels == c))[:per_class]
        ]
        return m.subset(np.array(sorted(keep), dtype=np.int64))

    return build
