"""Issue 13 wiring in compare, report, results and metrics, each against an independent
computation: Holm/BH families recomputed by a plain loop, patient-level comparisons against
the stats functions called with the groups, the ``group`` column round trip, the macro-F1
rule against scikit-learn with explicit labels, the bootstrap p-value by counting."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from results_factory import make_results
from scipy.stats import false_discovery_control
from sklearn.metrics import f1_score

from medprobe import metrics, stats
from medprobe.auroc_ci import delong_test
from medprobe.compare import adjust_rows, bootstrap_p, compare_runs, load_run
from medprobe.results import Predictions, read_predictions, write_predictions, write_results

CLASSES = ["a", "b", "c"]


def _run(d: Path, y: np.ndarray, p: np.ndarray, groups: list[str] | None, model: str) -> Path:
    write_results(d, make_results(task="toy", model=model, classes=CLASSES, bootstrap_n=200))
    ids = [f"id{i:03d}" for i in range(len(y))]
    write_predictions(d, Predictions(ids, ["test"] * len(y), y, p, CLASSES, False, groups))
    return d


def _toy(seed: int, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y]
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _holm_loop(p: list[float]) -> list[float]:
    """Holm by the textbook loop: sort, multiply by (m - rank), running max, cap at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (m - rank) * p[i]))
        out[i] = run
    return out


def test_patient_level_compare_equals_stats_with_groups(tmp_path: Path) -> None:
    y, pa = _toy(0)
    _, pb = _toy(1)
    groups = [f"p{i // 3}" for i in range(len(y))]  # 40 patients, 3 images each
    a = load_run(_run(tmp_path / "a", y, pa, groups, "m1"))
    b = load_run(_run(tmp_path / "b", y, pb, None, "m2"))  # ids belong to the examples
    assert a.predictions.groups == groups and b.predictions.groups is None
    rows = {r["metric"]: r for r in compare_runs([a, b])}
    g = np.array(groups)
    seed = stats.bootstrap_seed("toy", "test", 0)
    ra, rb = (stats.bootstrap_replicates(y, p, CLASSES, multilabel=False, n_boot=200, seed=seed,
                                         groups=g).metrics for p in (pa, pb))  # fmt: skip
    d = ra["auroc_macro"] - rb["auroc_macro"]
    s = stats.summarize("d", rows["auroc_macro"]["diff"], d)
    r = rows["auroc_macro"]
    assert (r["diff_ci_low"], r["diff_ci_high"], r["diff_sd"]) == pytest.approx(
        (s["ci_low"], s["ci_high"], s["sd"]))  # fmt: skip
    assert (r["resampling_unit"], r["n_resampling_units"]) == ("patient", 40)
    ref = delong_test(y == 1, pa[:, 1], pb[:, 1], groups=g)
    assert rows["auroc/b"]["delong_p"] == pytest.approx(ref["p"])
    assert rows["auroc/b"]["test"] == "delong" and rows["f1_macro"]["test"] == "bootstrap"
    ok_a, ok_b = pa.argmax(1) == y, pb.argmax(1) == y
    assert rows["accuracy"]["mcnemar_p"] == stats.mcnemar(ok_a, ok_b)["p"]
    # paper's t-test on the same paired series, under its own name
    tt = stats.ttest_on_replicates(ra["accuracy"], rb["accuracy"])
    assert rows["accuracy"]["paper_ttest_p"] == pytest.approx(tt["p"])
    indep = {r["metric"]: r for r in compare_runs([a, b], paper_ttest="independent")}
    ref_i = stats.paper_ttest_on_bootstrap_replicates(
        y, pa, pb, CLASSES, multilabel=False, seed=seed, metric="accuracy", n_boot=200,
        construction="independent", groups=g)  # fmt: skip
    assert indep["accuracy"]["paper_ttest_t"] == pytest.approx(ref_i["t"])
    assert indep["accuracy"]["paper_ttest_construction"] == "independent"


def test_image_level_when_no_run_has_groups(tmp_path: Path) -> None:
    y, pa = _toy(2)
    _, pb = _toy(3)
    rows = compare_runs([load_run(_run(tmp_path / "a", y, pa, None, "m1")),
                         load_run(_run(tmp_path / "b", y, pb, None, "m2"))])  # fmt: skip
    assert {(r["resampling_unit"], r["n_resampling_units"]) for r in rows} == {("image", 120)}
    ref = delong_test(y == 0, pa[:, 0], pb[:, 0])
    assert next(r for r in rows if r["metric"] == "auroc/a")["delong_p"] == pytest.approx(ref["p"])


def test_holm_and_bh_families_match_a_plain_loop(tmp_path: Path) -> None:
    y = _toy(0)[0]
    runs = [load_run(_run(tmp_path / f"r{k}", y, _toy(10 + k)[1], None, f"m{k}")) for k in range(3)]
    rows = compare_runs(runs)  # 3 pairs x (3 summary metrics + 3 classes)
    per_class = [r for r in rows if r["metric"].startswith("auroc/")]
    assert len(per_class) == 9
    assert [r["p_adj"] for r in per_class] == pytest.approx(_holm_loop([r["p"] for r in per_class]))
    assert per_class[0]["family"] == "holm over 9 per-class AUROC tests (delong) of 3 model pairs"
    acc = [r for r in rows if r["metric"] == "accuracy"]
    assert [r["p_adj"] for r in acc] == pytest.approx(_holm_loop([r["p"] for r in acc]))
    assert acc[0]["family"] == "holm over 3 accuracy tests (mcnemar) of 3 model pairs"
    for r in rows:
        assert r["significant"] == (r["p_adj"] < 0.05)
    bh = adjust_rows(rows, method="bh")
    bh_pc = [r for r in bh if r["metric"].startswith("auroc/")]
    assert [r["p_adj"] for r in bh_pc] == pytest.approx(
        false_discovery_control([r["p"] for r in per_class]))  # fmt: skip
    # a missing p-value is not part of the family
    gap = [dict(r) for r in per_class]
    gap[0]["p"] = None
    adj = adjust_rows(gap)
    assert adj[0]["p_adj"] is None and adj[0]["significant"] is None
    assert [r["p_adj"] for r in adj[1:]] == pytest.approx(_holm_loop([r["p"] for r in gap[1:]]))


def test_bootstrap_p_counts_both_tails() -> None:
    d = np.array([-0.1, 0.2, 0.3, 0.4, np.nan, 0.0])
    # valid 5: P(d <= 0) = (2 + 1) / 6, P(d >= 0) = (4 + 1) / 6
    assert bootstrap_p(d) == pytest.approx(2 * 3 / 6)
    assert bootstrap_p(np.zeros(5)) == 1.0 and math.isnan(bootstrap_p(np.array([np.nan])))
    assert bootstrap_p(np.full(99, 0.1)) == pytest.approx(2 / 100)


def test_predictions_group_column_round_trip_and_old_files(tmp_path: Path) -> None:
    y, p = _toy(0, n=6)
    pred = Predictions([f"i{k}" for k in range(6)], ["test"] * 6, y, p, CLASSES, False,
                       ["p1", "p1", "p2", "p2", "p3", "p3"])  # fmt: skip
    write_predictions(tmp_path / "g", pred)
    header = (tmp_path / "g" / "predictions.csv").read_text().splitlines()[0]
    assert header == "id,split,label,p_a,p_b,p_c,group"
    back = read_predictions(tmp_path / "g", CLASSES, False)
    assert back.groups == pred.groups and back.subset(np.array([4, 0])).groups == ["p3", "p1"]
    write_predictions(tmp_path / "n", Predictions(pred.ids, pred.split, y, p, CLASSES, False))
    assert (tmp_path / "n" / "predictions.csv").read_text().splitlines()[0].endswith("p_c")
    assert read_predictions(tmp_path / "n", CLASSES, False).groups is None


def test_macro_f1_drops_a_finding_positive_on_every_row_as_evaluate_does() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    y[:, 2] = 1  # positive everywhere: no negatives, no AUROC
    p = rng.random((40, 3))
    ref = f1_score(y, p >= 0.5, labels=[0, 1], average="macro", zero_division=0)
    assert metrics.f1_macro(y, p, multilabel=True) == pytest.approx(ref)
    ev = stats.evaluate(y, p, CLASSES, multilabel=True, n_boot=20, seed=0)
    assert ev["absent_classes"] == ["c"] and ev["f1_macro"]["value"] == pytest.approx(ref)
    # multiclass: a class present on every row cannot happen with two classes present; a
    # class without positives is left out
    yc = np.array([0, 1, 0, 1, 0, 1])
    pc = np.tile([0.2, 0.3, 0.5], (6, 1))
    assert metrics.f1_macro(yc, pc, multilabel=False) == pytest.approx(
        f1_score(yc, pc.argmax(1), labels=[0, 1], average="macro", zero_division=0))  # fmt: skip


def test_report_summary_gives_boot_mean_sd_method_and_unit(tmp_path: Path) -> None:
    from medprobe.report import summary_rows, write_summary

    res = make_results(task="toy", model="m", classes=CLASSES)
    row = next(r for r in summary_rows([res]) if r["metric"] == "auroc_macro")
    assert (row["boot_mean"], row["sd"], row["ci_method"], row["resampling_unit"]) == (
        0.8, 0.01, "percentile", "image")  # fmt: skip
    _, md = write_summary([res], tmp_path)
    text = md.read_text()
    assert "| bootstrap mean ± SD | resampling unit |" in text
    assert "| 0.8000 | [0.7800, 0.8200] | percentile | 0.8000 ± 0.0100 | image |" in text
