"""End to end: ``python -m medprobe`` as a user runs it, on real images, offline.

In tests/pipeline/: each run goes through medprobe.pipeline.run (job -> features -> probing ->
write -> track)."""

from __future__ import annotations

import csv
import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, Compose, run_medprobe

from medprobe.pipeline.run import run
from medprobe.results import Results, TrackerInfo

medprobe = run_medprobe


def test_main_job_on_demo_then_cache_hit(tmp_path: Path) -> None:
    p1 = medprobe(tmp_path, "output_dir=run1")
    r1 = json.loads((tmp_path / "run1" / "results.json").read_text())
    auc = r1["metrics"]["auroc_macro"]
    # real EfficientNet-Lite0 features separate the 9 tissue classes well (0.989 on 2026-11-29)
    assert 0.97 <= auc["value"] <= 1.0
    assert auc["ci_low"] < auc["value"] <= auc["ci_high"] <= 1.0
    assert auc["n_replicates"] == 1000
    assert r1["layer"] == 8 and r1["counts"]["feature_dim"] == 1280
    assert r1["counts"]["test"] == 144 and r1["counts"]["fit"] == 502
    assert r1["cache"]["cache_hit"] is False
    assert set(r1["probe"]["selection"][0]) == {"C", "score"}
    assert r1["probe"]["backend"] == "sklearn"
    assert "auroc/STR" in p1.stdout and "auroc_macro" in p1.stdout and "95% CI" in p1.stdout

    with open(tmp_path / "run1" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 144 and {r["split"] for r in rows} == {"test"}
    probs = np.array([[float(r[f"p_{c}"]) for c in r1["classes"]] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    # the offline W&B run holds the logged macro AUROC
    assert r1["tracker"]["mode"] == "offline"
    files = glob.glob(str(tmp_path / "run1" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    blob = Path(files[0]).read_bytes()
    assert b"test/auroc_macro_ci_low" in blob
    assert b"test/roc" in blob  # one-vs-rest ROC chart (tracking._roc_chart)
    assert json.dumps(auc["value"]).encode() in blob

    medprobe(tmp_path, "output_dir=run2")
    r2 = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert r2["cache"]["cache_hit"] is True
    assert r2["cache"]["cache_key"] == r1["cache"]["cache_key"]
    assert r2["metrics"] == r1["metrics"]
    assert r2["tracker"]["id"] == r1["tracker"]["id"]  # deterministic W&B run id: no duplicate


def test_multirun_over_layers_extracts_once(tmp_path: Path, shared_data: Path) -> None:
    medprobe(
        tmp_path,
        "--multirun",
        "task=csv",
        f"data_root={shared_data / 'T8_knee_kl'}",
        "layer=4,8",
        "bootstrap.n=200",
        "tracker=none",
        f"output_dir={tmp_path / 'mr'}",  # the sweep dir: one folder per job, never overwritten
    )
    assert sorted(p.name for p in (tmp_path / "mr").iterdir()) == ["0", "1", "multirun.yaml"]
    results = sorted(
        (json.loads(p.read_text()) for p in (tmp_path / "mr").glob("*/results.json")),
        key=lambda r: r["layer"],
    )
    assert [r["layer"] for r in results] == [4, 8]
    assert results[0]["cache"]["cache_key"] == results[1]["cache"]["cache_key"]
    assert [r["cache"]["cache_hit"] for r in results] == [False, True]
    assert [r["counts"]["feature_dim"] for r in results] == [80, 1280]
    assert results[0]["counts"]["per_split"]["test"] == {str(k): 4 for k in range(5)}


def _copy_tiles(shared: Path, dest: Path) -> Path:
    tiles = sorted((shared / "T1_crc" / "tiles").iterdir())
    (dest / "tiles").mkdir(parents=True)
    lines = ["path,label"]
    for t in tiles:
        shutil.copy(t, dest / "tiles" / t.name)
        lines.append(f"tiles/{t.name},{t.name.split('-')[0]}")
    (dest / "tiles" / "TUM-broken.png").write_bytes(
        (dest / "tiles" / tiles[-1].name).read_bytes()[:300]
    )
    (dest / "tiles" / "NORM-notes.png").write_text("not an image")
    lines += ["tiles/TUM-broken.png,TUM", "tiles/NORM-notes.png,NORM"]
    (dest / "labels.csv").write_text("\n".join(lines) + "\n")
    return dest


def test_bad_images_listed_before_extraction_or_skipped(tmp_path: Path, shared_data: Path) -> None:
    root = _copy_tiles(shared_data, tmp_path / "data")
    args = [
        "task=csv",
        f"data_root={root}",
        "tracker=none",
        "bootstrap.n=100",
        "task.test_fraction=0.3",
    ]
    p = medprobe(tmp_path, *args, "output_dir=stop", check=False)
    assert p.returncode == 2
    err = p.stderr[p.stderr.index("medprobe: error:") :].splitlines()  # after the progress bar
    assert err[0].startswith("medprobe: error: 2 unreadable image(s)")
    assert any("TUM-broken.png" in line for line in err) and any(
        "NORM-notes.png" in line for line in err
    )
    assert "Traceback" not in p.stderr
    assert not list((tmp_path / "cache").glob("*/meta.json"))  # nothing extracted

    medprobe(tmp_path, *args, "output_dir=skip", "data.on_error=skip")
    r = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert r["counts"]["skipped_images"] == 2
    assert sum(r["counts"][k] for k in ("fit", "val", "test")) == 45


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    p = medprobe(tmp_path, "task=csv", "tracker=none", check=False)
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "medprobe: error: task=csv needs an image root: set task.root=/path/to/images or data_root=..."
    )
    p = medprobe(tmp_path, "layer=12", "tracker=none", check=False)
    assert (
        p.returncode == 2
        and "unknown layer 12; valid layers: [0, 1, 2, 3, 4, 5, 6, 7, 8]" in p.stderr
    )


def test_clip_end_to_end_with_tiny_model(
    tmp_path: Path, shared_data: Path, tiny_clip: Path
) -> None:
    model_dir = tiny_clip
    medprobe(
        tmp_path,
        "model=clip",
        f"model.hf_id={model_dir}",
        "layer=pooled",
        "task=csv",
        f"data_root={shared_data / 'T8_knee_kl'}",
        "bootstrap.n=100",
        "output_dir=out",
    )
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert r["layer"] == "pooled" and r["counts"]["feature_dim"] == 32
    assert r["extractor"]["extractor"] == "clip"
    assert 0.0 <= r["metrics"]["auroc_macro"]["value"] <= 1.0


def test_c_is_never_chosen_with_test_labels(
    compose: Compose, tmp_path: Path, shared_data: Path
) -> None:
    """Permuting the test labels changes test metrics but not the chosen C or its val scores."""
    src = shared_data / "T8_knee_kl"
    with open(src / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    patients = sorted({r["patient_id"] for r in rows})
    test_patients = set(rng.choice(patients, 25, replace=False))
    for r in rows:
        r["split"] = "test" if r["patient_id"] in test_patients else "train"
    test_rows = [r for r in rows if r["split"] == "test"]
    perm = rng.permutation([r["label"] for r in test_rows])

    def write(name: str, labels: list[str] | None) -> Path:
        out = tmp_path / f"{name}.csv"
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, ["path", "label", "patient_id", "split"])
            w.writeheader()
            it = iter(labels or [])
            for r in rows:
                lab = next(it) if labels is not None and r["split"] == "test" else r["label"]
                w.writerow({**r, "label": lab})
        return out

    common = ["task=csv", f"task.root={src}", "tracker=none", "bootstrap.n=50", "progress=false",
              f"cache_dir={tmp_path / 'cache'}", "layer=7"]  # fmt: skip
    a = run(
        compose(*common, f"task.csv={write('orig', None)}", f"output_dir={tmp_path / 'a'}")
    ).result
    b = run(
        compose(*common, f"task.csv={write('perm', list(perm))}", f"output_dir={tmp_path / 'b'}")
    ).result
    assert isinstance(a, Results) and isinstance(b, Results)
    assert b.cache.cache_hit is True
    assert a.probe.C == b.probe.C
    assert a.probe.selection == b.probe.selection
    assert a.probe.validation_rows.startswith("carved from train")
    assert a.metrics["auroc_macro"].value != b.metrics["auroc_macro"].value


def test_repo_is_importable_from_tests() -> None:
    assert (REPO / "conf" / "config.yaml").is_file()


def test_wandb_failure_keeps_results_on_disk(
    compose: Compose, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken(*a: object, **k: object) -> None:
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken)
    out = tmp_path / "out"
    r = run(compose("task=csv", f"data_root={shared_data / 'T8_knee_kl'}", "bootstrap.n=50",
                    "progress=false", f"cache_dir={tmp_path / 'cache'}", f"output_dir={out}")).result  # fmt: skip
    assert isinstance(r, Results)
    assert r.tracker == TrackerInfo(error="ConnectionError: W&B is down")
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["metrics"]["auroc_macro"]["value"] == r.metrics["auroc_macro"].value
    assert on_disk["tracker"]["error"].startswith("ConnectionError")
