"""W&B unreachable or a wrong key: fail fast, keep the run offline (issue 14, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medprobe import tracking
from medprobe.config import TrackerConfig, TrackerMode, TrackerName


def test_online_failure_falls_back_to_offline_in_the_job_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    real = wandb.init
    seen: list[tuple[str, float | None]] = []

    def init(*a, mode=None, settings=None, **k):  # type: ignore[no-untyped-def]
        seen.append((mode, getattr(settings, "init_timeout", None)))
        if mode == "online":
            raise wandb.errors.CommError("401: user is not logged in")
        return real(*a, mode=mode, settings=settings, **k)

    monkeypatch.setattr(wandb, "init", init)
    settings = TrackerConfig(name=TrackerName.wandb, mode=TrackerMode.online, project="p")
    ident = tracking.RunIdentity("0123456789abcdef", "demo-plip")
    with tracking.tracker_sink(settings, ident, tmp_path) as sink:
        sink.log_summary({"test/auroc_macro": 0.9})
    wandb.teardown()
    assert seen[0] == ("online", tracking.INIT_TIMEOUT_S) and seen[1][0] == "offline"
    assert sink.info is not None and sink.info.mode == "offline"
    assert sink.info.note is not None and "CommError: 401" in sink.info.note
    assert "wandb sync" in sink.info.note
    assert list((tmp_path / "wandb").glob("offline-run-*0123456789abcdef"))


def test_rerunning_a_sweep_keeps_the_run_ids_an_explicit_group_does_not() -> None:
    """Issue 17.3: the same job in a new sweep folder (a rerun of the same --multirun) gets
    the same W&B id (resume updates it); the display group follows the sweep folder."""
    from results_factory import make_results

    res = make_results()
    settings = TrackerConfig(name=TrackerName.wandb, project="p")
    a = tracking.run_identity(settings, res, "2026-12-07_10-00-00")
    b = tracking.run_identity(settings, res, "2026-12-07_11-30-00")
    assert a.id == b.id and (a.group, b.group) == ("2026-12-07_10-00-00", "2026-12-07_11-30-00")
    mine = TrackerConfig(name=TrackerName.wandb, project="p", group="ablation")
    c = tracking.run_identity(mine, res, "2026-12-07_10-00-00")
    assert c.group == "ablation" and c.id != a.id
