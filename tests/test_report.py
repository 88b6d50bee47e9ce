"""A small real sweep (T8 knee images, EfficientNet-Lite0 + tiny CLIP) -> report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import REPO, run_medprobe
from results_factory import make_results, metric

from medprobe.report import bar_runs, fraction_curves, layer_curves, load_results, make_report
from medprobe.results import Results


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tiny_clip: Path) -> Path:
    """``<tmp>/effnet`` (layers 4, 8 x fractions 0.5, 1.0) and ``<tmp>/clip`` (one run)."""
    tmp = tmp_path_factory.mktemp("sweep")
    common = ["task=csv", f"data_root={shared_data / 'T8_knee_kl'}", "tracker=none",
              "bootstrap.n=200", "progress=false"]  # fmt: skip
    run_medprobe(tmp, "--multirun", *common, "layer=4,8", "train_fraction=0.5,1.0",
                 f"output_dir={tmp / 'effnet'}")  # fmt: skip
    run_medprobe(tmp, *common, "model=clip", f"model.hf_id={tiny_clip}", "layer=2",
                 f"output_dir={tmp / 'clip'}")  # fmt: skip
    return tmp


def test_report_cli_writes_tables_figures_and_comparison(sweep: Path) -> None:
    out = sweep / "report"
    proc = run_medprobe(
        sweep, "report", str(sweep / "effnet"), str(sweep / "clip"), "--out", str(out)
    )
    assert "5 run(s) read" in proc.stdout
    names = {p.name for p in out.iterdir()}
    assert names == {
        "summary.csv", "summary.md", "comparison.csv", "comparison.json", "bars_T8_knee_kl.png",
        "per_class_T8_knee_kl.png", "layers_T8_knee_kl.png", "fractions_T8_knee_kl.png",
        "index.html",
    }  # fmt: skip
    # fractions 0.5 and 1.0 only: no retained-at-10% number; no paper run: no paper.csv
    for png in (
        "bars_T8_knee_kl.png",
        "per_class_T8_knee_kl.png",
        "layers_T8_knee_kl.png",
        "fractions_T8_knee_kl.png",
    ):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / png).stat().st_size > 10_000

    # summary values are the results.json values
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    results = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/**/results.json")}
    assert len(results) == 5
    n_metrics = {
        d: 3 + sum(k.startswith("auroc/") for k in r["metrics"]) for d, r in results.items()
    }
    assert len(rows) == sum(n_metrics.values())
    for row in rows:
        m = results[Path(row["run_dir"])]["metrics"][row["metric"]]
        for f in ("value", "sd", "ci_low", "ci_high"):
            assert float(row[f]) == m[f]
    md = (out / "summary.md").read_text()
    r0 = results[sweep / "clip"]["metrics"]["auroc_macro"]
    assert (
        f"| clip | 2 | 1 | 0 | {r0['value']:.4f} | [{r0['ci_low']:.4f}, {r0['ci_high']:.4f}] | "
        f"{r0['ci_method']} | {r0['boot_mean']:.4f} ± {r0['sd']:.4f} | patient |"
    ) in md

    # the bar comparison is effnet (layer picked on validation) vs clip, on the same 20 ids
    cmp_rows = json.loads((out / "comparison.json").read_text())
    macro = [c for c in cmp_rows if c["metric"] == "auroc_macro"]
    assert len(macro) == 1 and macro[0]["n_test"] == 20
    a = results[Path(macro[0]["dir_a"])]["metrics"]["auroc_macro"]["value"]
    b = results[Path(macro[0]["dir_b"])]["metrics"]["auroc_macro"]["value"]
    assert macro[0]["diff"] == pytest.approx(a - b, abs=1e-5)  # predictions.csv has 6 digits
    acc = next(c for c in cmp_rows if c["metric"] == "accuracy")
    assert acc["mcnemar_p_exact"] is not None and 0 < acc["mcnemar_p_exact"] <= 1
    # T8 has patient ids: the runs' predictions.csv carry them and compare resamples patients
    assert {c["resampling_unit"] for c in cmp_rows} == {"patient"}
    assert acc["family"] == "holm over 1 accuracy test (mcnemar) of 1 model pair"


def test_selections_and_curves(sweep: Path) -> None:
    results = load_results([sweep / "effnet", sweep / "clip"])
    bars = bar_runs(results)["T8_knee_kl"]
    assert [r.model for r in bars] == ["clip", "effnet_lite0"]
    eff = [r for r in results if r.model == "effnet_lite0" and r.train_fraction == 1.0]
    assert bars[1].probe.val_score == max(r.probe.val_score for r in eff)
    lc = layer_curves(results, "T8_knee_kl", "auroc_macro")
    assert list(lc) == ["effnet_lite0"] and [p[0] for p in lc["effnet_lite0"]] == [4, 8]
    fc = fraction_curves(results, "T8_knee_kl", "auroc_macro")
    assert set(fc) == {"effnet_lite0 L4", "effnet_lite0 L8"}
    assert [p[0] for p in fc["effnet_lite0 L4"]] == [0.5, 1.0]


def test_notebook_runs_top_to_bottom(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute the notebook's code cells in order in one namespace (no Jupyter needed)."""
    nb = json.loads((REPO / "notebooks" / "sweep_report.ipynb").read_text())
    assert nb["nbformat"] == 4
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert cells
    monkeypatch.setenv("MEDPROBE_SWEEP_DIRS", f"{sweep / 'effnet'}:{sweep / 'clip'}")
    monkeypatch.setenv("MEDPROBE_REPORT_DIR", str(sweep / "nb_report"))
    ns: dict[str, object] = {"__name__": "__main__"}
    for cell in cells:
        exec(compile("".join(cell["source"]), "sweep_report.ipynb", "exec"), ns)
    assert (sweep / "nb_report" / "bars_T8_knee_kl.png").is_file()
    assert (sweep / "nb_report" / "summary.csv").is_file()


def test_layer_all_probes_every_cached_layer_in_one_job(sweep: Path, shared_data: Path) -> None:
    """``layer=all``: one job, cache hit (the sweep extracted all layers), nine probes."""
    import glob

    out = sweep / "all"
    run_medprobe(sweep, "task=csv", f"data_root={shared_data / 'T8_knee_kl'}",
                 "layer=all", "bootstrap.n=50", "progress=false", f"output_dir={out}")  # fmt: skip
    curve = json.loads((out / "layers.json").read_text())
    assert [r["layer"] for r in curve["layers"]] == list(range(9))
    for row in curve["layers"]:
        res = json.loads((out / f"layer_{row['layer']}" / "results.json").read_text())
        assert res["layer"] == row["layer"] and res["cache"]["cache_hit"] is True
        assert res["metrics"]["auroc_macro"]["value"] == row["value"]
    best = max(curve["layers"], key=lambda r: r["val_score"])
    assert curve["best_layer_by_validation"] == best["layer"]
    # one W&B run holds the curve (offline)
    files = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1 and b"layers/auroc_macro" in Path(files[0]).read_bytes()
    rep = make_report([out], sweep / "all_report")
    assert (sweep / "all_report" / "layers_T8_knee_kl.png").is_file()
    assert len(rep["results"]) == 9


def test_the_same_setup_twice_is_a_warning_not_a_layer_curve() -> None:
    """A copied run folder was silently a 'metric vs layer' figure of one layer (two points
    at L2) and, at two fractions, two 'seeds' of one seed."""
    from medprobe.report import same_setup_warnings

    a = make_results(task="t", model="m", layer=2, output_dir="/r/a")
    b = make_results(task="t", model="m", layer=2, output_dir="/r/b")
    other = make_results(task="t", model="m", layer=2, seed=1, output_dir="/r/c")
    assert layer_curves([a, b], "t", "auroc_macro") == {}
    assert same_setup_warnings([a, b, other]) == [
        "t: 2 runs of m L2 train_fraction 1 seed 0 (/r/a, /r/b): the same setup twice (a "
        "copied folder, a job run twice, or two datasets under one task.name?); the figures "
        "cannot tell them apart"
    ]
    c = make_results(task="t", model="m", layer=3, output_dir="/r/d")
    assert len(layer_curves([a, c], "t", "auroc_macro")["m"]) == 2


def test_fraction_curve_band_is_sd_over_seeds() -> None:
    def res(frac: float, seed: int, v: float) -> Results:
        m = metric(v, sd=0.01, ci_low=v - 0.02, ci_high=v + 0.02, n=9)
        return make_results(task="t", model="m", layer=3, train_fraction=frac, seed=seed,
                            metrics={"auroc_macro": m})  # fmt: skip

    rs = [res(0.1, 0, 0.70), res(0.1, 1, 0.74), res(0.1, 2, 0.78), res(1.0, 0, 0.9)]
    (pts,) = fraction_curves(rs, "t", "auroc_macro").values()
    f, mean, lo, hi, n = pts[0]
    assert (f, n) == (0.1, 3) and mean == pytest.approx(0.74)
    assert (lo, hi) == pytest.approx((0.70, 0.78))  # SD of 0.70, 0.74, 0.78 is 0.04
    assert pts[1] == (1.0, 0.9, 0.88, 0.92, 1)  # one seed: the bootstrap CI


def test_layer_sweep_in_depth_order_and_in_the_authors_file_order(tmp_path: Path) -> None:
    """One IDEFICS-shaped sweep (a tiny 12-block model, layers 0..12, metric rising with depth)
    -> ``medprobe report`` draws it twice: depth order and the authors' sorted(glob) order."""
    from medprobe.report import authors_order_curve, decoder_depth, plot_layers_authors_order
    from medprobe.results import write_results

    def run(layer: int) -> Results:
        v = 0.5 + layer / 100
        return make_results(task="t", model="tiny_idefics", model_kind="idefics", layer=layer,
                            metrics={"auroc_macro": metric(v, ci_low=v - 0.01, ci_high=v + 0.01)},
                            extractor_load={"loaded": True, "num_hidden_layers": 12})  # fmt: skip

    runs = [run(k) for k in range(13)]
    assert decoder_depth(runs[0]) == 12
    # the identity's known depth when the model was not loaded (a cache hit); none for effnet
    assert decoder_depth(make_results(model="idefics80b", model_kind="idefics")) == 80
    assert decoder_depth(make_results(model="effnet_lite0")) is None
    pts = layer_curves(runs, "t", "auroc_macro")["tiny_idefics"]
    assert [p[0] for p in pts] == list(range(13))
    # files .0 .1 .10 .11 .2 ... .9 hold hidden_states 1 2 11 12 3 ... 10; layer 0 never saved
    mapped = authors_order_curve(pts, 12)
    assert [i for i, *_ in mapped] == list(range(12))
    assert [round((v - 0.5) * 100) for _, v, _, _ in mapped] == [1, 2, 11, 12, 3, 4, 5, 6, 7,
                                                                 8, 9, 10]  # fmt: skip
    # 80B: the authors' layer 32 is hidden_states[39]
    assert authors_order_curve([(39, 0.9, 0.8, 1.0)], 80) == [(32, 0.9, 0.8, 1.0)]
    # effnet's 8 stages standing in: the depth is given explicitly
    eff = [(k, 0.6 + k / 50, 0.5, 0.9) for k in range(9)]
    png = plot_layers_authors_order({"effnet_lite0": eff}, {"effnet_lite0": 8}, "auroc_macro",
                                    tmp_path / "eff.png")  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in runs:
        write_results(tmp_path / "sweep" / f"layer_{r.layer}", r)
    rep = make_report([tmp_path / "sweep"], tmp_path / "report")
    names = {Path(f).name for f in rep["files"]}
    assert {"layers_t.png", "layers_authors_order_t.png"} <= names
    assert (tmp_path / "report" / "layers_authors_order_t.png").read_bytes()[:4] == b"\x89PNG"
