"""The results schema: round trips, NaN as null, older files, refusals, console output."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from results_factory import make_results, metric

from medprobe.results import (
    SCHEMA_VERSION,
    Predictions,
    Results,
    ResultsError,
    TrackerInfo,
    find_results,
    format_layer_curve,
    format_table,
    layer_curve,
    read_layer_curve,
    read_predictions,
    read_results,
    run_notes,
    write_layer_curve,
    write_predictions,
    write_results,
)

V1_DEMO = Path(__file__).parent / "fixtures" / "results_v1_demo.json"
TOP_LEVEL = [
    "schema_version", "task", "task_kind", "model", "model_kind", "model_id", "layer",
    "train_fraction", "seed", "primary_metric", "metrics", "bootstrap", "probe", "counts",
    "classes", "multilabel", "task_info", "cache", "extractor", "extractor_load", "prompt",
    "config", "versions", "output_dir", "overrides", "notes", "timings_s", "tracker",
    "predictions_sha256", "job_key", "data",
]  # fmt: skip


def test_round_trip_keys_in_order_and_nan_as_null(tmp_path: Path) -> None:
    res = make_results(model="plip", model_kind="clip", tracker=TrackerInfo(id="x", mode="offline"))
    path = write_results(tmp_path, res)
    assert path == tmp_path / "results.json" and not (tmp_path / "results.json.tmp").exists()
    raw = json.loads(path.read_text())
    assert list(raw) == TOP_LEVEL and raw["schema_version"] == SCHEMA_VERSION == 2
    assert (raw["model"], raw["model_kind"]) == ("plip", "clip")
    assert raw["metrics"]["absent_classes"] == [] and raw["tracker"]["id"] == "x"
    assert "resumed_from" not in raw["cache"] and "processes" not in raw["cache"]  # only when set
    back = read_results(tmp_path)
    assert back == res and back.run_dir == tmp_path
    assert read_results(path) == res  # the folder or the file

    nan = replace(
        res, metrics=replace(res.metrics, summaries={"auroc_macro": metric(0.5, sd=math.nan)})
    )
    write_results(tmp_path, nan)
    assert json.loads(path.read_text())["metrics"]["auroc_macro"]["sd"] is None
    assert math.isnan(read_results(tmp_path).metrics["auroc_macro"].sd)


def test_version_1_file_is_read_with_kinds_equal_to_names() -> None:
    """results.json of the demo as written before this module (no schema_version)."""
    raw = json.loads(V1_DEMO.read_text())
    assert "schema_version" not in raw
    res = read_results(V1_DEMO)
    assert res.schema_version == SCHEMA_VERSION
    assert (res.task, res.task_kind, res.model, res.model_kind) == (
        "demo", "demo", "effnet_lite0", "effnet_lite0")  # fmt: skip
    # every value of the old file survives; keys added since (boot_mean, ci_method,
    # resampling_unit) are written with their documented defaults
    out = res.to_json()["metrics"]
    for k, v in raw["metrics"].items():
        assert out[k] == v if not isinstance(v, dict) else {f: out[k][f] for f in v} == v
    assert out["resampling_unit"] == "image" and out["auroc_macro"]["ci_method"] == "percentile"
    assert res.primary.value == raw["metrics"]["auroc_macro"]["value"] == 0.9884710201385106
    assert res.counts.per_split["test"]["TUM"] == 24 and res.tracker is None
    # the oldest files lack the kinds and keys added later: read with the documented values
    old = {k: v for k, v in raw.items() if k not in ("task_kind", "model_kind", "extractor_load",
                                                       "overrides", "notes")}  # fmt: skip
    old["probe"] = {k: v for k, v in raw["probe"].items() if k != "backend"}
    old["counts"] = {k: v for k, v in raw["counts"].items() if k != "constant_features"}
    o = Results.from_json(old)
    assert (o.model_kind, o.task_kind, o.probe.backend, o.counts.constant_features) == (
        "effnet_lite0", "demo", "sklearn", False)  # fmt: skip
    assert (o.extractor_load, o.overrides, o.notes) == (None, [], [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 99}, r"results schema 99, newer than this medprobe reads \(2\)"),
        ({"schema_version": "2"}, r"schema_version '2' is not a version number"),
        ({"probe": None}, r"not a medprobe results file \(no 'probe'\)"),
        ({"counts": {"fit": 1}}, r"malformed 'counts' \(key 'val'\)"),
        ({"train_fraction": "half"}, r"malformed 'identity'"),
    ],
)
def test_bad_files_are_one_line_naming_file_and_key(
    tmp_path: Path, change: dict, message: str
) -> None:
    raw = make_results().to_json()
    for k, v in change.items():
        if v is None:
            del raw[k]
        else:
            raw[k] = v
    (tmp_path / "results.json").write_text(json.dumps(raw))
    with pytest.raises(ResultsError, match=message) as e:
        read_results(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "results.json")) and "\n" not in str(e.value)


def test_not_json_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text("{")
    with pytest.raises(ResultsError, match=r"a/results.json: not valid JSON"):
        read_results(tmp_path / "a")
    with pytest.raises(ResultsError, match=r"nope: no such directory"):
        find_results([tmp_path / "nope"])
    (tmp_path / "b").mkdir()
    with pytest.raises(ResultsError, match=r"b: no results.json at or below it"):
        find_results([tmp_path / "b"])


def test_find_results_sorts_numerically_by_layer(tmp_path: Path) -> None:
    for layer in (10, 2, "pooled"):
        d = tmp_path / f"layer_{layer}"
        d.mkdir()
        write_results(d, make_results(layer=layer))
    found = find_results([tmp_path])
    assert [r.layer for r in found] == [2, 10, "pooled"]
    assert [r.run_dir for r in found] == [tmp_path / "layer_2", tmp_path / "layer_10",
                                          tmp_path / "layer_pooled"]  # fmt: skip


@pytest.mark.parametrize("multilabel", [False, True])
def test_predictions_round_trip(tmp_path: Path, multilabel: bool) -> None:
    classes = ["a", "b", "c"]
    y = (np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool) if multilabel
         else np.array([2, 0, 1], dtype=np.int64))  # fmt: skip
    proba = np.array([[0.1, 0.2, 0.7], [0.3333333333, 0.3333333333, 0.3333333334], [0, 1, 0]])
    p = Predictions(["x/1.png", "y/1.png", "z.png"], ["test"] * 3, y, proba, classes, multilabel)
    write_predictions(tmp_path, p)
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,split,label,p_a,p_b,p_c"
    assert lines[1] == (
        "x/1.png,test,a|c,0.1,0.2,0.7" if multilabel else "x/1.png,test,c,0.1,0.2,0.7"
    )
    assert lines[2].split(",")[2:4] == (["", "0.333333"] if multilabel else ["a", "0.333333"])
    back = read_predictions(tmp_path, classes, multilabel)
    assert back.ids == p.ids and back.split == p.split and back.y.dtype == y.dtype
    np.testing.assert_array_equal(back.y, y)
    np.testing.assert_allclose(back.proba, proba, atol=5e-7)
    with pytest.raises(ResultsError, match=r"label 'a' not in \['b', 'c'\]"):
        read_predictions(tmp_path, ["b", "c"], multilabel)


def test_notes_flag_constant_features_few_positives_and_skips() -> None:
    res = make_results(classes=["a", "b"], bootstrap_n=100)
    res = replace(res, counts=replace(res.counts, skipped_images=2, constant_features=True),
                  probe=replace(res.probe, converged=False))  # fmt: skip
    notes = run_notes(res, np.array([0, 1, 1]))
    assert notes[0].startswith("2 unreadable image(s) left out")
    assert "did not converge" in notes[1]
    assert notes[2] == "fewer than 10 test positives, CI unreliable: a (1), b (2)"
    assert "identical for every image" in notes[3]
    assert notes[4] == "only 100 bootstrap replicates; CI bounds are rough"
    multi = run_notes(replace(res, multilabel=True), np.array([[1, 0], [1, 0], [0, 0]]))
    assert multi[2] == "fewer than 10 test positives, CI unreliable: a (2)"


def test_table_says_why_a_class_has_no_auroc() -> None:
    base = make_results(
        task="t7", model="clip", layer=12, bootstrap_n=200, classes=["effusion", "nodule"],
        metrics={"auroc_macro": metric(0.7, ci_low=0.6, ci_high=0.8)},
        absent_classes=["effusion"],
    )  # fmt: skip
    base = replace(base, counts=replace(base.counts, fit=10, val=5, test=8))
    table = format_table(replace(base, multilabel=True)).splitlines()
    assert (
        table[0]
        == "t7 | clip | layer 12 | train_fraction 1.0 | seed 0 | rows: fit 10, val 5, test 8"
    )
    assert table[1] == (
        f"{'metric':<28}{'value':>8}  {'95% CI':<18}  {'method':<20}"
        "boot mean +- SD (bootstrap n=200, resampling unit: image)"
    )
    assert table[2] == (
        f"{'auroc_macro':<28}  0.7000  [0.6000, 0.8000]    {'percentile':<20}0.7000 +- 0.0100"
    )
    assert table[-1] == "excluded, no positives or no negatives in test: effusion"
    single = format_table(replace(base, multilabel=False)).splitlines()[-1]
    assert single == "excluded, absent in test: effusion"
    assert format_table(replace(base, notes=["x"])).splitlines()[-1] == "note: x"


def test_layer_curve_file_round_trip_and_console(tmp_path: Path) -> None:
    runs = [make_results(task="knee", model="plip", model_kind="clip", layer=k, val_score=v,
                         output_dir=str(tmp_path / f"layer_{k}"),
                         metrics={"auroc_macro": metric(a, ci_low=a - 0.1, ci_high=a + 0.1)})
            for k, v, a in ((0, 0.5, 0.5), (1, 0.8, 0.75), (2, 0.8, 0.9))]  # fmt: skip
    curve = layer_curve(runs, "auroc_macro")
    assert curve.best_layer_by_validation == 1  # validation picks, ties to the first: never test
    assert (curve.model, curve.model_kind, curve.task) == ("plip", "clip", "knee")
    write_layer_curve(tmp_path, curve)
    raw = json.loads((tmp_path / "layers.json").read_text())
    assert raw["schema_version"] == 2 and [p["layer"] for p in raw["layers"]] == [0, 1, 2]
    assert raw["layers"][2]["value"] == 0.9 and raw["layers"][2]["dir"] == str(tmp_path / "layer_2")
    assert read_layer_curve(tmp_path) == curve
    assert format_layer_curve(curve).splitlines() == [
        "auroc_macro by layer (knee | plip):",
        "  layer       0  0.5000  [0.4000, 0.6000]",
        "  layer       1  0.7500  [0.6500, 0.8500]  <- best on validation",
        "  layer       2  0.9000  [0.8000, 1.0000]",
    ]
    with pytest.raises(ResultsError, match="mixes runs"):
        layer_curve([runs[0], replace(runs[1], model="clip")], "auroc_macro")


def test_version_1_layer_curve_takes_seed_and_fraction_from_its_first_layer(tmp_path: Path) -> None:
    """layers.json as written before this module: no schema_version, kinds, seed, fraction."""
    write_results(tmp_path / "layer_4", make_results(layer=4, seed=3, train_fraction=0.5))
    old = {"task": "toy", "model": "m", "metric": "auroc_macro", "best_layer_by_validation": 4,
           "layers": [{"layer": 4, "value": 0.8, "sd": None, "ci_low": 0.7, "ci_high": 0.9,
                       "val_score": 0.85, "dir": "/elsewhere/layer_4"}]}  # fmt: skip
    (tmp_path / "layers.json").write_text(json.dumps(old))
    curve = read_layer_curve(tmp_path)
    assert (curve.seed, curve.train_fraction, curve.model_kind, curve.task_kind) == (
        3, 0.5, "m", "toy")  # fmt: skip
    assert math.isnan(curve.layers[0].sd) and curve.best_layer_by_validation == 4
    (tmp_path / "layers.json").write_text(json.dumps({**old, "schema_version": 3}))
    with pytest.raises(ResultsError, match="results schema 3, newer"):
        read_layer_curve(tmp_path)
