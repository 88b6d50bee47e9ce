"""W&B sink: mode resolution, stable summary names, deterministic run ids, failure isolation."""

from __future__ import annotations

from pathlib import Path

import pytest

from medprobe import tracking

RESULTS = {
    "task": "demo",
    "model": "effnet_lite0",
    "layer": 8,
    "train_fraction": 1.0,
    "seed": 0,
    "metrics": {
        "auroc_macro": {"value": 0.9, "mean": 0.9, "sd": 0.01, "ci_low": 0.88, "ci_high": 0.92,
                        "n_replicates": 1000},
        "auroc/ADI": {"value": 1.0, "mean": 1.0, "sd": 0.0, "ci_low": 1.0, "ci_high": 1.0,
                      "n_replicates": 1000},
        "absent_classes": [],
    },
    "probe": {"C": 0.01, "val_score": 0.95},
    "counts": {"test": 144, "fit": 502},
}  # fmt: skip


def test_auto_mode_is_offline_without_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tracking.resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode("auto") == "online"
    assert tracking.resolve_mode("disabled") == "disabled"


def test_summary_names_are_stable() -> None:
    s = tracking.summary_metrics(RESULTS)
    assert s["test/auroc_macro"] == 0.9
    assert s["test/auroc_macro_ci_low"] == 0.88 and s["test/auroc_macro_ci_high"] == 0.92
    assert s["test/auroc/ADI_sd"] == 0.0
    assert s["probe/C"] == 0.01 and s["counts/test"] == 144
    assert not any("absent" in k for k in s)
