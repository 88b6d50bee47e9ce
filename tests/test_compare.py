"""Paired comparisons: DeLong against pROC's published values, McNemar by hand, alignment."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, isolated_env
from results_factory import make_results
from scipy import stats as sps

from medprobe.compare import (
    ComparisonError,
    ResultsError,
    align,
    compare_runs,
    delong,
    delong_from_placements,
    delong_placements,
    load_run,
    mcnemar,
)
from medprobe.results import write_results

ASAH = json.loads(
    (Path(__file__).parent / "fixtures" / "proc_asah_delong_placements.json").read_text()
)


def _placements(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    p = ASAH["placements"]
    return (
        np.array([p[a]["cases"], p[b]["cases"]]),
        np.array([p[a]["controls"], p[b]["controls"]]),
    )


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "lo", "hi"),
    [  # pROC tests/testthat/test-roc.test.R, roc.test(r.<a>, r.<b>) on the aSAH data
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)  # fmt: skip
def test_delong_matches_proc_on_asah(a: str, b: str, z: float, p: float, lo: float, hi: float):
    r = delong_from_placements(*_placements(a, b))
    assert r["z"] == pytest.approx(z, rel=1e-10)
    assert r["p"] == pytest.approx(p, rel=1e-9)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
    aucs = {"wfns": 0.823678861788618, "s100b": 0.731368563685637, "ndka": 0.611957994579946}
    assert (r["auc_a"], r["auc_b"]) == pytest.approx((aucs[a], aucs[b]), rel=1e-12)


def _brute_placements(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. 1988 structural components, pair by pair (O(n_pos * n_neg))."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_fast_placements_equal_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(157) < 0.3
    scores = np.round(rng.normal(size=(2, 157)) + y, 1)  # rounding makes many ties
    auc, v_pos, v_neg = delong_placements(y, scores)
    for m in range(2):
        bp, bn = _brute_placements(y, scores[m])
        np.testing.assert_allclose(v_pos[m], bp, atol=1e-12)
        np.testing.assert_allclose(v_neg[m], bn, atol=1e-12)
        from sklearn.metrics import roc_auc_score

        assert auc[m] == pytest.approx(roc_auc_score(y, scores[m]), abs=1e-12)


def test_delong_identical_scores_and_swap() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.5
    s = rng.random(60)
    r = delong(y, s, s)
    assert r["diff"] == 0.0 and r["z"] == 0.0 and r["p"] == 1.0
    s2 = s + rng.normal(0, 0.3, 60)
    ab, ba = delong(y, s, s2), delong(y, s2, s)
    assert ab["z"] == pytest.approx(-ba["z"]) and ab["p"] == pytest.approx(ba["p"])


def test_mcnemar_by_hand() -> None:
    # b = 10 (A right, B wrong), c = 3 (A wrong, B right), 20 concordant
    a = np.array([1] * 10 + [0] * 3 + [1] * 12 + [0] * 8, dtype=bool)
    b = np.array([0] * 10 + [1] * 3 + [1] * 12 + [0] * 8, dtype=bool)
    r = mcnemar(a, b)
    assert (r["b"], r["c"]) == (10, 3)
    # exact: 2 * P(X <= 3), X ~ Bin(13, 1/2) = 2 * (1 + 13 + 78 + 286) / 2^13
    assert r["p_exact"] == pytest.approx(2 * 378 / 8192, rel=1e-12)
    assert r["chi2"] == pytest.approx(36 / 13)  # (|10 - 3| - 1)^2 / 13
    assert r["p_chi2"] == pytest.approx(math.erfc(math.sqrt(36 / 13 / 2)), rel=1e-12)
    # Agresti (2002, Table 10.1, presidential approval): 150 vs 86 discordant pairs
    a = np.array([1] * 150 + [0] * 86 + [1] * 794 + [0] * 570, dtype=bool)
    b = np.array([0] * 150 + [1] * 86 + [1] * 794 + [0] * 570, dtype=bool)
    assert mcnemar(a, b)["chi2"] == pytest.approx(63**2 / 236)
    same = mcnemar(a, a)
    assert same["p_exact"] == 1.0 and same["chi2"] == 0.0


def test_paired_ttest_is_ttest_rel_and_identical_gives_p1() -> None:
    """The paper's t-test arithmetic lives in stats (compare's paired_ttest is gone)."""
    from medprobe.stats import ttest_on_replicates

    rng = np.random.default_rng(1)
    a, b = rng.random(200), rng.random(200)
    r = ttest_on_replicates(a, b)
    ref = sps.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    same = ttest_on_replicates(a, a)
    assert (same["t"], same["p"], same["n"]) == (0.0, 1.0, 200)


def _write_run(d: Path, ids: list[str], labels: list[str], proba: np.ndarray, **kw) -> Path:
    d.mkdir(parents=True)
    classes = ["a", "b", "c"]
    write_results(d, make_results(task="toy", model=kw.get("model", "m"), layer=1,
                                  classes=classes, bootstrap_n=300))  # fmt: skip
    with open(d / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "label", *[f"p_{c}" for c in classes]])
        for i, lab, p in zip(ids, labels, proba, strict=True):
            w.writerow([i, "test", lab, *p])
    return d


def _toy(rng: np.random.Generator, n: int = 90) -> tuple[list[str], list[str], np.ndarray]:
    y = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return [f"id{i:03d}" for i in range(n)], [["a", "b", "c"][k] for k in y], p


def test_identical_runs_give_zero_and_p1_even_when_shuffled(tmp_path: Path) -> None:
    ids, labels, p = _toy(np.random.default_rng(0))
    perm = np.random.default_rng(1).permutation(len(ids))
    a = _write_run(tmp_path / "a", ids, labels, p)
    b = _write_run(
        tmp_path / "b", [ids[i] for i in perm], [labels[i] for i in perm], p[perm], model="m2"
    )
    rows = compare_runs([load_run(a), load_run(b)])
    assert {r["metric"] for r in rows} == {"auroc_macro", "f1_macro", "accuracy"} | {
        f"auroc/{c}" for c in "abc"
    }
    for r in rows:
        assert r["diff"] == 0.0 and r["diff_ci_low"] == 0.0 and r["diff_ci_high"] == 0.0
        assert r["paper_ttest_p"] == 1.0
        assert r["p_adj"] in (None, 1.0) and not r["significant"]
        assert r["delong_p"] in (None, 1.0)
    acc = next(r for r in rows if r["metric"] == "accuracy")
    assert acc["mcnemar_p_exact"] == 1.0 and acc["mcnemar_b"] == 0 and acc["mcnemar_p"] == 1.0


def test_paired_bootstrap_uses_the_same_resamples(tmp_path: Path) -> None:
    """Difference replicates equal A's replicates minus B's, each from stats' own seed."""
    from medprobe.stats import bootstrap_replicates, bootstrap_seed, summarize

    rng = np.random.default_rng(5)
    ids, labels, pa = _toy(rng)
    _, _, pb = _toy(rng)
    a = load_run(_write_run(tmp_path / "a", ids, labels, pa))
    b = load_run(_write_run(tmp_path / "b", ids, labels, pb, model="m2"))
    row = next(r for r in compare_runs([a, b]) if r["metric"] == "auroc_macro")
    seed = bootstrap_seed("toy", "test", 0)
    ra, rb = (
        bootstrap_replicates(r.y, r.proba, r.classes, multilabel=False, n_boot=300, seed=seed)
        for r in (a, b)
    )
    d = ra.metrics["auroc_macro"] - rb.metrics["auroc_macro"]
    s = summarize("d", row["diff"], d)
    assert (row["diff_ci_low"], row["diff_ci_high"], row["diff_sd"]) == pytest.approx(
        (s["ci_low"], s["ci_high"], s["sd"])
    )
    assert row["n_replicates"] == 300


def test_different_ids_are_refused_in_one_line(tmp_path: Path) -> None:
    ids, labels, p = _toy(np.random.default_rng(0))
    a = load_run(_write_run(tmp_path / "a", ids, labels, p))
    b = load_run(_write_run(tmp_path / "b", ids[:-1] + ["other"], labels, p))
    with pytest.raises(ComparisonError) as e:
        align([a, b])
    msg = str(e.value)
    assert "\n" not in msg and "'id089'" in msg and "90 ids" in msg
    c = load_run(_write_run(tmp_path / "c", ids[:-1], labels[:-1], p[:-1]))
    with pytest.raises(ComparisonError, match=r"90 ids.*89 ids"):
        align([a, c])


def test_one_folder_given_twice_is_refused(tmp_path: Path) -> None:
    """``medprobe compare A A`` (or ``A B/../A``) printed differences of 0 with p = 1."""
    ids, labels, p = _toy(np.random.default_rng(0))
    a = _write_run(tmp_path / "a", ids, labels, p)
    b = _write_run(tmp_path / "b", ids, labels, p, model="m2")
    with pytest.raises(ComparisonError) as e:
        align([load_run(a), load_run(b), load_run(tmp_path / "b" / ".." / "a")])
    assert str(e.value) == (
        f"the same run folder is given twice ({a} and {tmp_path / 'b' / '..' / 'a'}): "
        "compare different runs"
    )


def test_a_run_folder_without_its_predictions_says_so(tmp_path: Path) -> None:
    """A run folder copied without predictions.csv was "not a medprobe run directory"."""
    ids, labels, p = _toy(np.random.default_rng(0))
    a = _write_run(tmp_path / "a", ids, labels, p)
    (a / "predictions.csv").unlink()
    with pytest.raises(ResultsError) as e:
        load_run(a)
    assert str(e.value) == (
        f"{a}: results.json without its predictions.csv (a run folder copied in part?); the "
        "paired comparisons need the run's predictions: copy the file back or leave the run out"
    )
    from medprobe.results import read_predictions

    with pytest.raises(ResultsError, match=r"no predictions.csv \(not a medprobe run directory"):
        read_predictions(tmp_path / "b", ["a", "b"], False)


def test_a_layer_all_folder_names_its_layer_folders(tmp_path: Path) -> None:
    """It said "results.json: no such file (not a medprobe run directory)"."""
    ids, labels, p = _toy(np.random.default_rng(0))
    job = tmp_path / "job"
    _write_run(job / "layer_1", ids, labels, p)
    (job / "layers.json").write_text("{}")
    with pytest.raises(ResultsError) as e:
        load_run(job)
    assert str(e.value) == (
        f"{job / 'results.json'}: no such file: {job} holds a layer=all job (layers.json); "
        f"name one of its layer folders ({job}/layer_<L>)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-boot", "-5"], "medprobe compare: --n-boot must be >= 2 (replicates), got -5"),
        (["--n-boot", "0"], "medprobe compare: --n-boot must be >= 2 (replicates), got 0"),
        (["--ci", "2"], "medprobe compare: --ci must be in (0, 1), e.g. 0.95, got 2.0"),
    ],
)
def test_bad_bootstrap_options_are_config_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """--n-boot -5 / --ci 2 were a ValueError traceback; --n-boot 0 silently meant run A's n."""
    from medprobe.compare import main
    from medprobe.errors import ConfigError
    from medprobe.report import main as report_main

    with pytest.raises(ConfigError) as e:
        main([str(tmp_path / "a"), str(tmp_path / "b"), *args])
    assert str(e.value) == message
    if args[0] == "--n-boot":
        with pytest.raises(ConfigError) as e:
            report_main([str(tmp_path), "--out", str(tmp_path / "r"), *args])
        assert str(e.value) == message.replace("compare", "report")


def test_cli_writes_json_and_csv_and_refuses_with_exit_2(tmp_path: Path) -> None:
    ids, labels, p = _toy(np.random.default_rng(0))
    _, _, p2 = _toy(np.random.default_rng(9))
    a = _write_run(tmp_path / "a", ids, labels, p)
    b = _write_run(tmp_path / "b", ids, labels, p2, model="m2")
    cmd = [
        sys.executable,
        "-m",
        "medprobe",
        "compare",
        str(a),
        str(b),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, env=isolated_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "auroc_macro" in proc.stdout and "DeLong p" in proc.stdout
    rows = json.loads((tmp_path / "o" / "comparison.json").read_text())
    with open(tmp_path / "o" / "comparison.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(rows) == len(csv_rows) == 6
    assert float(csv_rows[0]["diff"]) == pytest.approx(rows[0]["diff"])
    shutil.rmtree(b)
    _write_run(b, ids[1:], labels[1:], p2[1:])
    proc = subprocess.run(cmd, env=isolated_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("medprobe: error: runs are not")
    assert REPO.is_dir()


def test_binary_task_gets_delong_on_macro_auroc(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 80
    y = rng.random(n) < 0.4
    s1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    s2 = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    ids = [f"i{k}" for k in range(n)]
    runs = []
    for name, s in (("a", s1), ("b", s2)):
        d = tmp_path / name
        d.mkdir()
        write_results(d, make_results(task="bin", model=name, layer=0, classes=["neg", "pos"],
                                      bootstrap_n=100))  # fmt: skip
        with open(d / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "split", "label", "p_neg", "p_pos"])
            for i, yy, p in zip(ids, y, s, strict=True):
                w.writerow([i, "test", "pos" if yy else "neg", float(1 - p), float(p)])
        runs.append(load_run(d))
    rows = {r["metric"]: r for r in compare_runs(runs)}
    ref = delong(y, s1, s2)
    assert rows["auroc_macro"]["delong_z"] == pytest.approx(ref["z"])
    assert rows["auroc/pos"]["delong_p"] == pytest.approx(ref["p"])
    assert rows["auroc_macro"]["diff"] == pytest.approx(ref["diff"])


def test_ttest_constant_nonzero_difference() -> None:
    from medprobe.stats import ttest_on_replicates

    r = ttest_on_replicates(np.full(10, 0.8), np.full(10, 0.7))
    assert r["t"] == math.inf and r["p"] == 0.0


def test_labels_key_on_model_identity_and_bad_run_dirs_are_one_line(tmp_path: Path) -> None:
    """Two models over one extractor kind (CLIP, PLIP) get two labels; a folder that is not
    a run, a CSV without a class column or a repeated id is a ResultsError naming the file."""
    ids, labels, p = _toy(np.random.default_rng(0))
    a = _write_run(tmp_path / "a", ids, labels, p, model="clip")
    b = _write_run(tmp_path / "b", ids, labels, p, model="plip")
    write_results(b, make_results(task="toy", model="plip", model_kind="clip", layer=1,
                                  bootstrap_n=300))  # fmt: skip
    ra, rb = load_run(a), load_run(b)
    assert (ra.results.model_kind, rb.results.model_kind) == ("clip", "clip")
    assert (ra.label, rb.label) == ("clip L1 frac1 s0", "plip L1 frac1 s0")
    rows = compare_runs([ra, rb])
    assert {(r["run_a"], r["run_b"]) for r in rows} == {("clip L1 frac1 s0", "plip L1 frac1 s0")}

    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=r"empty/results.json: no such file"):
        load_run(tmp_path / "empty")
    text = (a / "predictions.csv").read_text().replace("p_c", "p_x")
    (a / "predictions.csv").write_text(text)
    with pytest.raises(ResultsError, match=r"predictions.csv: missing column\(s\) \['p_c'\]"):
        load_run(a)
    lines = (b / "predictions.csv").read_text().splitlines()
    (b / "predictions.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ResultsError, match=r"id 'id000' occurs more than once"):
        load_run(b)


def test_console_table_columns_never_run_together() -> None:
    """A 26-character run name ran into the metric: 'dinov2_base Lnorm frac1 s0auroc_macro'."""
    from medprobe.compare import format_comparison

    row = {"run_a": "clip L2 frac1 s0", "run_b": "dinov2_base Lnorm frac1 s0",
           "metric": "auroc_macro", "diff": -0.0844, "diff_ci_low": -0.1975,
           "diff_ci_high": 0.0524, "delong_p": None, "mcnemar_p": None, "p_adj": 0.35,
           "significant": False, "resampling_unit": "patient", "n_resampling_units": 20,
           "family": "holm over 1 auroc_macro test", "p_adjustment": "holm"}  # fmt: skip
    head, line = format_comparison([row]).splitlines()[:2]
    assert line.split("  ")[:3] == ["clip L2 frac1 s0", "", ""]
    assert "dinov2_base Lnorm frac1 s0  auroc_macro" in line
    assert head.index("metric") == line.index("auroc_macro") == 24 + 28
    short = format_comparison([{**row, "run_b": "m2"}]).splitlines()
    assert short[0].index("metric") == 48  # names up to 22 characters: the widths as before
