"""Shared test fixtures: the real images in ../shared/data, an isolated cache and W&B dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "T1_crc").is_dir():
        pytest.skip(f"real sample data not found at {d} (set MEDPROBE_SHARED_DATA)")
    return d


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


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in isolated_env(tmp_path).items():
        if k.startswith(("WANDB", "HF_", "TRANSFORMERS")):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
