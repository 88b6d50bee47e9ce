"""Model and task identity, not extractor or adapter kind, name everything downstream.

In tests/pipeline/: the pipeline records identity and kind (results, output folders, W&B
runs); report and compare read them back.

Two models over one extractor kind (``model=clip`` and ``model=plip``, both built by the
``clip`` extractor; here two tiny random CLIPs with different weights) on real knee X-rays
(``task=csv``): the report draws two bars, two layer curves and two fraction curves (never one
averaged curve), W&B run names and ids differ, the default output folders differ, and
``compare`` labels them apart. Two ``task=csv`` data roots are two tasks, and ``task.name``
renames one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import run_medprobe
from hydra import compose, initialize_config_dir

from medprobe import report, tracking
from medprobe.compare import compare_runs, load_run
from medprobe.config import TrackerConfig, conf_dir, register_configs, to_typed
from medprobe.pipeline.job import default_output_dir
from medprobe.results import find_results, read_layer_curve, read_results

METRIC = "auroc_macro"
KNEE = "T8_knee_kl"


@dataclass(frozen=True)
class Runs:
    tmp: Path
    weights: dict[str, Path]  # model name -> tiny weights folder
    sweeps: dict[str, Path]  # model name -> sweep folder: layer=all x train_fraction=0.5,1.0
    mydata: Path  # a task=csv run on T3_ham10000 with task.name=mydata


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    shared_data: Path,
    tiny_clip: Path,
    tiny_clip_seed1: Path,
) -> Runs:
    """Three processes: per model one sweep (job 0: fraction 0.5, job 1: fraction 1.0; each
    job probes every layer and logs its layer curve to an offline W&B run), and one run on a
    second data root."""
    tmp = tmp_path_factory.mktemp("identity")
    weights = {"clip": tiny_clip, "plip": tiny_clip_seed1}
    sweeps = {}
    for name, w in weights.items():
        sweeps[name] = tmp / f"sweep_{name}"
        run_medprobe(tmp, "--multirun", "task=csv", f"data_root={shared_data / KNEE}",
                     f"model={name}", f"model.hf_id={w}", "layer=all", "train_fraction=0.5,1.0",
                     "bootstrap.n=50", "progress=false", f"output_dir={sweeps[name]}")  # fmt: skip
    run_medprobe(tmp, "task=csv", f"data_root={shared_data / 'T3_ham10000'}", "task.name=mydata",
                 "model=clip", f"model.hf_id={weights['clip']}", "layer=2", "bootstrap.n=50",
                 "progress=false", "tracker=none", f"output_dir={tmp / 'mydata'}")  # fmt: skip
    return Runs(tmp, weights, sweeps, tmp / "mydata")


def test_results_record_identity_and_kind(runs: Runs) -> None:
    for name in ("clip", "plip"):
        found = find_results([runs.sweeps[name]])
        assert len(found) == 10  # layers 0, 1, 2, embeds, pooled x fractions 0.5, 1.0
        assert {(r.task, r.task_kind, r.model, r.model_kind, r.model_id) for r in found} == {
            (KNEE, "csv", name, "clip", str(runs.weights[name]))
        }
        assert {r.layer for r in found} == {0, 1, 2, "embeds", "pooled"}
        assert {r.train_fraction for r in found} == {0.5, 1.0}


def test_report_draws_two_bars_two_layer_curves_two_fraction_curves(runs: Runs) -> None:
    results = report.load_results([runs.sweeps["clip"], runs.sweeps["plip"]])
    assert len(results) == 20
    bars = report.bar_runs(results)
    assert list(bars) == [KNEE]
    assert [r.model for r in bars[KNEE]] == ["clip", "plip"]
    assert [r.train_fraction for r in bars[KNEE]] == [1.0, 1.0]
    labels = [report.bar_label(r) for r in bars[KNEE]]
    assert labels[0].startswith("clip\n") and labels[1].startswith("plip\n")

    lc = report.layer_curves(results, KNEE, METRIC)
    assert list(lc) == ["clip", "plip"]
    for name, pts in lc.items():
        own = {r.layer: r.metrics[METRIC] for r in results
               if r.model == name and r.train_fraction == 1.0}  # fmt: skip
        assert [p[0] for p in pts] == [0, 1, 2]
        assert [p[1:] for p in pts] == [(own[k].value, own[k].ci_low, own[k].ci_high)
                                        for k in (0, 1, 2)]  # fmt: skip
    assert lc["clip"] != lc["plip"]

    fc = report.fraction_curves(results, KNEE, METRIC)
    assert sorted(fc) == sorted(f"{m} L{k}" for m in ("clip", "plip")
                                for k in (0, 1, 2, "embeds", "pooled"))  # fmt: skip
    for key, pts in fc.items():
        name, layer = key.split(" L")
        own = {r.train_fraction: r.metrics[METRIC] for r in results
               if r.model == name and str(r.layer) == layer}  # fmt: skip
        # one run per point: that model's own value and bootstrap CI, never a mean of models
        assert pts == [(f, own[f].value, own[f].ci_low, own[f].ci_high, 1) for f in (0.5, 1.0)]
    assert fc["clip L2"] != fc["plip L2"]

    out = runs.tmp / "report"
    rep = report.make_report([runs.sweeps["clip"], runs.sweeps["plip"]], out)
    assert {p.name for p in rep["files"] if p.suffix == ".png"} == {
        f"bars_{KNEE}.png", f"per_class_{KNEE}.png", f"layers_{KNEE}.png",
        f"fractions_{KNEE}.png"}  # fmt: skip
    macro = [c for c in rep["comparisons"] if c["metric"] == METRIC]
    assert len(macro) == 1 and macro[0]["run_a"].startswith("clip ")
    assert macro[0]["run_b"].startswith("plip ")
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["model"], r["model_kind"]) for r in rows} == {("clip", "clip"), ("plip", "clip")}


def test_compare_labels_them_apart(runs: Runs) -> None:
    a = load_run(runs.sweeps["clip"] / "1" / "layer_2")  # job 1: train_fraction 1.0
    b = load_run(runs.sweeps["plip"] / "1" / "layer_2")
    assert (a.label, b.label) == ("clip L2 frac1 s0", "plip L2 frac1 s0")
    rows = compare_runs([a, b])
    assert {(r["run_a"], r["run_b"]) for r in rows} == {("clip L2 frac1 s0", "plip L2 frac1 s0")}
    assert next(r for r in rows if r["metric"] == METRIC)["diff"] != 0.0


def test_wandb_run_names_and_ids_differ(runs: Runs) -> None:
    cfg = TrackerConfig()
    a = tracking.run_identity(cfg, read_results(runs.sweeps["clip"] / "1" / "layer_2"))
    b = tracking.run_identity(cfg, read_results(runs.sweeps["plip"] / "1" / "layer_2"))
    assert a.name.startswith(f"{KNEE}-clip-") and b.name.startswith(f"{KNEE}-plip-")
    assert a.id != b.id and "model=clip" in a.tags and "model=plip" in b.tags
    # each layer=all job logged its curve to one offline W&B run
    ids = set()
    for name, sweep in runs.sweeps.items():
        for job in ("0", "1"):
            curve = read_layer_curve(sweep / job)
            assert (curve.model, curve.model_kind, curve.task) == (name, "clip", KNEE)
            assert curve.tracker is not None and curve.tracker.mode == "offline"
            assert curve.tracker.name == f"{KNEE}-{name}-layer=all"
            ids.add(curve.tracker.id)
            (blob,) = [
                p.read_bytes() for p in (sweep / job).glob("wandb/offline-run-*/run-*.wandb")
            ]
            assert f"{KNEE}-{name}-layer=all".encode() in blob and curve.tracker.id.encode() in blob
    assert len(ids) == 4  # two models x two fractions


def test_default_output_folders_differ() -> None:
    """Hydra's job folder and run(cfg) outside Hydra: ``outputs/<task>/<model>/<time>``."""
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfgs = [compose(config_name="config", return_hydra_config=True,
                        overrides=["task=csv", "data_root=/data/knee_kl/", f"model={m}"])
                for m in ("clip", "plip")]  # fmt: skip
    hydra_dirs = [Path(c.hydra.run.dir).parts[:3] for c in cfgs]
    assert hydra_dirs == [("outputs", "knee_kl", "clip"), ("outputs", "knee_kl", "plip")]
    del cfgs[0].hydra, cfgs[1].hydra
    plain = [default_output_dir(to_typed(c)).parts[:3] for c in cfgs]
    assert plain == hydra_dirs


def test_two_data_roots_are_two_tasks_and_task_name_renames(runs: Runs) -> None:
    mine = read_results(runs.mydata)
    assert (mine.task, mine.task_kind) == ("mydata", "csv")
    out = runs.tmp / "report_tasks"
    rep = report.make_report([runs.sweeps["clip"], runs.mydata], out)
    assert sorted({r.task for r in rep["results"]}) == [KNEE, "mydata"]
    names = {p.name for p in rep["files"]}
    assert {f"bars_{KNEE}.png", "bars_mydata.png", f"layers_{KNEE}.png"} <= names
    assert "layers_mydata.png" not in names  # one layer there: no merged, meaningless curve
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["task"], r["task_kind"]) for r in rows} == {(KNEE, "csv"), ("mydata", "csv")}
    md = (out / "summary.md").read_text()
    assert f"## {KNEE}: {METRIC}" in md and f"## mydata: {METRIC}" in md
    assert not rep["comparisons"]  # one model per task: nothing to pair across data sets
