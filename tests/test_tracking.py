"""W&B sink: mode resolution, stable summary names, deterministic run ids, failure isolation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from results_factory import make_results

from medprobe import tracking
from medprobe.config import TrackerConfig, TrackerMode
from medprobe.results import MetricSummary, TrackerInfo

RESULTS = make_results(
    task="demo",
    model="effnet_lite0",
    layer=8,
    classes=["ADI", "BACK"],
    metrics={
        "auroc_macro": MetricSummary(value=0.9, mean=0.9, sd=0.01, ci_low=0.88, ci_high=0.92,
                                     n_replicates=1000),
        "auroc/ADI": MetricSummary(value=1.0, mean=1.0, sd=0.0, ci_low=1.0, ci_high=1.0,
                                   n_replicates=1000),
    },
    probe=replace(make_results().probe, C=0.01, val_score=0.95),
    counts=replace(make_results().counts, test=144, fit=502),
)  # fmt: skip


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


def _offline_files(d: Path) -> list[Path]:
    return sorted(d.glob("wandb/offline-run-*/run-*.wandb"))


def test_tracker_none_is_a_no_op_sink(tmp_path: Path) -> None:
    ident = tracking.RunIdentity("abc", "name")
    for cfg in (TrackerConfig(name="none"), TrackerConfig(mode=TrackerMode.disabled)):
        with tracking.tracker_sink(cfg, ident, tmp_path, config={"a": 1}) as sink:
            assert not sink.enabled and sink.info is None
            sink.log_summary({"x": 1.0})
            sink.log_table("t", ["a"], [[1]])
            sink.log_line("l", ["a", "b"], [[0, 1]], x="a", y="b")
            sink.log_image("i", tmp_path / "missing.png")
        assert tracking.log_run(cfg, RESULTS, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # nothing imported, nothing written


def test_offline_sink_logs_summary_table_chart_and_image(tmp_path: Path) -> None:
    """What every caller (single run, layer curve, MCQ) needs, in one offline W&B run."""
    from PIL import Image

    png = tmp_path / "fig.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png)
    ident = tracking.RunIdentity("mcq-0123456789abcdef", "mcq model cases", "g", ["mcq"])
    cfg = TrackerConfig(mode=TrackerMode.offline)
    with tracking.tracker_sink(cfg, ident, tmp_path, config={"cases": "c.jsonl"}) as sink:
        assert sink.enabled
        sink.log_summary({"mcq/zero_shot/accuracy": 0.625})
        sink.log_table("mcq/by_difficulty", ["mode", "n"], [["zero_shot", 8]])
        sink.log_line("mcq/curve", ["x", "y"], [[0, 1.0], [1, 2.0]], x="x", y="y")
        sink.log_image("mcq/by_difficulty_fig", png)
    assert sink.info is not None
    assert sink.info == TrackerInfo(id=ident.id, name=ident.name, group="g", mode="offline",
                                    dir=sink.info.dir)  # fmt: skip
    import wandb

    wandb.teardown()  # in-process, the offline file is completed by W&B's service: wait for it
    (f,) = _offline_files(tmp_path)
    blob = f.read_bytes()
    for key in (b"mcq/zero_shot/accuracy", b"mcq/by_difficulty", b"mcq/curve",
                b"mcq/by_difficulty_fig", b"0.625", ident.id.encode()):  # fmt: skip
        assert key in blob, key


def test_run_names_and_ids_key_on_identity_not_kind() -> None:
    """CLIP and PLIP share the clip extractor kind (and here even its fingerprint)."""
    cfg = TrackerConfig(name_prefix="p-", tags=["paper"])
    over = ["model=clip", "layer=2", "output_dir=/x", "tracker=wandb"]
    clip = make_results(task="knee", model="clip", model_kind="clip", layer=2, overrides=over)
    plip = replace(clip, model="plip", overrides=["model=plip", *over[1:]])
    a, b = tracking.run_identity(cfg, clip), tracking.run_identity(cfg, plip)
    assert (a.name, b.name) == ("p-knee-clip-layer=2,model=clip", "p-knee-plip-layer=2,model=plip")
    assert a.id != b.id and len(a.id) == 16
    assert a.tags[:2] == ["model=clip", "task=knee"] and b.tags[:2] == ["model=plip", "task=knee"]
    assert a.tags[-1] == "paper" and a.group is None
    assert tracking.run_identity(cfg, replace(clip, notes=["x"])) == a  # deterministic
    assert tracking.run_identity(cfg, replace(clip, task="skin")).id != a.id


def test_layer_curve_names_key_on_identity() -> None:
    from medprobe.results import layer_curve

    clip = [make_results(task="knee", model="clip", layer=k, val_score=v)
            for k, v in ((1, 0.7), (2, 0.9), (3, 0.9))]  # fmt: skip
    curve = layer_curve(clip, "auroc_macro")
    assert curve.best_layer_by_validation == 2  # first maximum of the validation score
    plip = layer_curve([replace(r, model="plip") for r in clip], "auroc_macro")
    cfg = TrackerConfig()
    a, b = tracking.layer_curve_identity(cfg, curve), tracking.layer_curve_identity(cfg, plip)
    assert (a.name, b.name) == ("knee-clip-layer=all", "knee-plip-layer=all")
    assert a.id != b.id


def test_wandb_failure_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken(*a: object, **k: object) -> None:
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = TrackerConfig(mode=TrackerMode.offline)
    assert tracking.log_run(cfg, RESULTS, tmp_path) == TrackerInfo(
        error="ConnectionError: W&B is down"
    )
