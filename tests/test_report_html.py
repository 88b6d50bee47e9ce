"""``medprobe report`` in the paper's visual language (issue 17.5): the paper's reported numbers
(values and sources), the Fig. 6 "retained at 10%" number, and ``index.html`` rendered in
headless Chromium with every figure loaded."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_medprobe
from results_factory import make_results, metric

from medprobe.paper.reported import REPORTED, SOURCE, is_paper_run, paper_values
from medprobe.report import make_report, retained_at
from medprobe.results import Predictions, Results, write_predictions, write_results

CHROMIUM = Path("/usr/bin/chromium")

# ----------------------------------------------------------------------------- paper numbers


def test_the_paper_numbers_and_their_sources() -> None:
    """Every value as the abstract prints it, keyed on medprobe identities, with its source."""
    named = {(r.task, r.model): (r.metric, r.value) for r in REPORTED if r.model}
    assert named == {
        ("t1", "idefics80b"): ("f1_macro", 0.892),
        ("t1", "clip"): ("f1_macro", 0.764),
        ("t1", "plip"): ("f1_macro", 0.877),
        ("t2", "idefics80b"): ("f1_macro", 0.870),
        ("t2", "clip"): ("f1_macro", 0.797),
        ("t3", "idefics80b"): ("auroc_macro", 0.945),
        ("t4", "idefics80b"): ("auroc_macro", 0.885),
        ("t5", "idefics80b"): ("auroc_macro", 0.803),
        ("t6", "idefics80b"): ("auroc_macro", 0.868),
        ("t7", "idefics80b"): ("auroc_macro", 0.781),
        ("t8", "idefics80b"): ("auroc_macro", 0.810),
    }
    # the comparator of T3-T8 is not named in the text: kept, never placed beside a model
    unnamed = {r.task: r.value for r in REPORTED if r.model is None}
    assert unnamed == {"t3": 0.892, "t4": 0.834, "t5": 0.725, "t6": 0.716, "t7": 0.560,
                       "t8": 0.714}  # fmt: skip
    assert not [r for r in REPORTED if r.model == "idefics9b"]  # no 9B number was found
    assert {r.figure for r in REPORTED if r.task in ("t1", "t2", "t3", "t4")} == {"Fig. 3"}
    assert {r.figure for r in REPORTED if r.task in ("t5", "t6", "t7", "t8")} == {"Fig. 4"}
    for r in REPORTED:
        assert r.source == SOURCE
        assert f"{r.value:.3f}" in r.quote  # the number is in the words it is read from
    assert "2023.12.21.23300146" in SOURCE and "peterhan91/Multimodal-Probes" in SOURCE
    assert "0203182" in SOURCE
    assert set(paper_values("t1", "f1_macro")) == {"idefics80b", "clip", "plip"}
    assert paper_values("t1", "auroc_macro") == {}
    assert set(paper_values("t7", "auroc_macro")) == {"idefics80b"}


def test_which_runs_are_paper_reproductions() -> None:
    assert is_paper_run(["experiment=fig3", "model=clip", "task=t1"])
    assert is_paper_run(["experiment=figS5"])
    assert is_paper_run(["fidelity=paper", "model=idefics80b"])
    assert not is_paper_run(["experiment=demo_layer_sweep"])
    assert not is_paper_run(["model=clip", "task=t1", "fidelity=medprobe"])
    assert not is_paper_run([])


# ----------------------------------------------------------------------------- retained at 10%


@pytest.fixture(scope="module")
def fraction_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path) -> Path:
    """A tiny real sweep: demo task, tiny CLIP layer 1, train_fraction 0.1 and 1.0 x seeds 0, 1
    (one extraction, four probes)."""
    tmp = tmp_path_factory.mktemp("fracs")
    run_medprobe(tmp, "-m", "model=clip", f"model.hf_id={tiny_clip}", "layer=1",
                 "train_fraction=0.1,1.0", "seed=0,1", "tracker=none", "bootstrap.n=50",
                 "progress=false", f"output_dir={tmp / 'sweep'}")  # fmt: skip
    return tmp


def test_retained_at_10_percent_on_a_tiny_sweep(fraction_sweep: Path) -> None:
    files = sorted((fraction_sweep / "sweep").rglob("results.json"))
    rows = [json.loads(p.read_text()) for p in files]
    assert sorted((r["train_fraction"], r["seed"]) for r in rows) == [
        (0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]  # fmt: skip
    m = rows[0]["primary_metric"]
    at = [r["metrics"][m]["value"] for r in rows if r["train_fraction"] == 0.1]
    full = [r["metrics"][m]["value"] for r in rows if r["train_fraction"] == 1.0]
    expected = ((at[0] + at[1]) / 2) / ((full[0] + full[1]) / 2)

    out = fraction_sweep / "report"
    proc = run_medprobe(fraction_sweep, "report", str(fraction_sweep / "sweep"), "--out",
                        str(out))  # fmt: skip
    with open(out / "retained.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["task"], row["model"], row["layer"], row["metric"]) == ("demo", "clip", "1", m)
    assert (row["n_seeds_at_fraction"], row["n_seeds_at_full"]) == ("2", "2")
    assert float(row["retained"]) == pytest.approx(expected, rel=1e-12)
    assert float(row["value_at_fraction"]) == pytest.approx((at[0] + at[1]) / 2, rel=1e-12)
    assert f"demo clip L1 {m}: {100 * expected:.1f}% retained at train_fraction 0.1" in proc.stdout
    assert (out / "fractions_demo.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "paper.csv").exists()  # not a paper reproduction, demo is no paper task
    html = (out / "index.html").read_text()
    assert "Retained at 10% of the training data" in html and f"{100 * expected:.1f}%" in html


def test_retained_at_uses_the_mean_over_seeds_per_model_and_layer() -> None:
    def res(model: str, frac: float, seed: int, v: float, layer: int = 2) -> Results:
        return make_results(task="t", model=model, layer=layer, train_fraction=frac, seed=seed,
                            metrics={"auroc_macro": metric(v)})  # fmt: skip

    rs = [
        res("a", 0.1, 0, 0.70),
        res("a", 0.1, 1, 0.74),
        res("a", 0.1, 2, 0.78),
        res("a", 1.0, 0, 0.90),
        res("a", 1.0, 1, 0.92),
        res("a", 0.5, 0, 0.85),
        res("b", 0.1, 0, 0.60),
        res("b", 1.0, 0, 0.80),
        res("c", 1.0, 0, 0.80),
    ]  # fmt: skip  (c: no 10% run -> left out)
    rows = retained_at(rs, "t", "auroc_macro")
    assert [(r["model"], r["layer"]) for r in rows] == [("a", 2), ("b", 2)]
    assert rows[0]["retained"] == pytest.approx(0.74 / 0.91, rel=1e-12)
    assert (rows[0]["n_seeds_at_fraction"], rows[0]["n_seeds_at_full"]) == (3, 2)
    assert rows[1]["retained"] == pytest.approx(0.75, rel=1e-12)
    assert retained_at(rs, "other", "auroc_macro") == []


# ----------------------------------------------------------------------------- HTML page


def _write_run(root: Path, r: Results, rng: np.random.Generator, y: np.ndarray) -> None:
    """results.json + a predictions.csv on the shared 60 test ids (3 classes)."""
    d = root / f"{r.task}_{r.model}_L{r.layer}_f{r.train_fraction:g}_s{r.seed}"
    p = rng.dirichlet(np.ones(3), size=len(y))
    p[np.arange(len(y)), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    write_predictions(d, Predictions([f"img{i}" for i in range(len(y))], ["test"] * len(y), y,
                                     p, ["a", "b", "c"], False))  # fmt: skip
    write_results(d, r)


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fig. 3 / Fig. 6 / Fig. S5-shaped set of runs of task t1 (made with experiment=fig*),
    plus an unrelated demo run, and their report."""
    tmp = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)

    def run(model: str, layer: int = 2, frac: float = 1.0, seed: int = 0, v: float = 0.8,
            exp: str = "fig3", task: str = "t1") -> Results:  # fmt: skip
        ms = {"f1_macro": metric(v), "auroc_macro": metric(v + 0.05), "accuracy": metric(v)}
        ms |= {f"auroc/{c}": metric(v) for c in "abc"}
        return make_results(task=task, model=model, layer=layer, train_fraction=frac, seed=seed,
                            metrics=ms, primary_metric="f1_macro",
                            val_score=0.9 if layer == 2 else 0.5,
                            overrides=[f"experiment={exp}", f"model={model}", f"task={task}"])  # fmt: skip

    runs = [run("clip", v=0.77), run("plip", v=0.86), run("idefics80b", v=0.90)]
    runs += [run("clip", layer=3, frac=f, seed=s, v=0.6 + 0.17 * f + 0.01 * s, exp="fig6")
             for f in (0.1, 1.0) for s in (0, 1)]  # fmt: skip
    runs += [run("plip", layer=k, v=0.7 + 0.01 * k, exp="figS5") for k in (0, 4, 8)]
    runs += [run("clip", task="demo", exp="demo_layer_sweep")]
    for r in runs:
        _write_run(tmp / "runs", r, rng, y)
    make_report([tmp / "runs"], tmp / "report")
    return tmp / "report"


def test_paper_values_beside_ours(paper_report: Path) -> None:
    with open(paper_report / "paper.csv") as f:
        rows = list(csv.DictReader(f))
    got = {r["model"]: (float(r["value"]), float(r["paper_value"]), r["figure"]) for r in rows}
    assert got == {"clip": (0.77, 0.764, "Fig. 3"), "idefics80b": (0.90, 0.892, "Fig. 3"),
                   "plip": (0.86, 0.877, "Fig. 3")}  # fmt: skip
    for r in rows:
        assert r["task"] == "t1" and r["metric"] == "f1_macro" and r["layer"] == "2"
        assert r["source"] == SOURCE
        assert float(r["diff"]) == pytest.approx(float(r["value"]) - float(r["paper_value"]))
        assert r["paper_in_ci"] == str(float(r["ci_low"]) <= float(r["paper_value"])
                                       <= float(r["ci_high"]))  # fmt: skip
    # never: the same runs without the paper
    rep = make_report([paper_report.parent / "runs"], paper_report.parent / "never", paper="never")
    assert rep["paper"] == [] and not (paper_report.parent / "never" / "paper.csv").exists()


def _render(html: Path, tmp: Path) -> str:
    """``chromium --headless --dump-dom`` of ``html``: the DOM after the page's load event."""
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run", f"--user-data-dir={tmp / 'ud'}",
         "--virtual-time-budget=5000", "--dump-dom", html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="/usr/bin/chromium is missing (CI installs it): the headless render "
                           "check of index.html cannot run here")  # fmt: skip
def test_index_html_renders_every_figure_in_headless_chromium(
    paper_report: Path, tmp_path: Path
) -> None:
    pngs = sorted(p.name for p in paper_report.glob("*.png"))
    assert {"bars_t1.png", "per_class_t1.png", "layers_t1.png", "fractions_t1.png",
            "bars_demo.png"} <= set(pngs)  # fmt: skip
    html = paper_report / "index.html"
    text = html.read_text()
    # one file: every image is inline, nothing is fetched from elsewhere
    assert text.count("<img ") == len(pngs)
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert text.count('src="data:image/png;base64,') == len(pngs)

    dom = _render(html, tmp_path)
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    assert loaded and total, body.group(0)
    assert int(total.group(1)) == len(pngs)
    assert int(loaded.group(1)) == len(pngs)  # every figure decoded (naturalWidth > 0)
    # the tables: ours beside the paper, retained at 10%, the valid tests, the paper's numbers
    assert "Ours beside the paper's reported value" in dom
    for v in ("0.764", "0.877", "0.892"):
        assert f'<td class="n">{v}</td>' in dom
    assert "Retained at 10% of the training data" in dom
    assert "DeLong" in dom and "The paper's reported numbers" in dom


def test_a_broken_image_is_caught_by_the_render_check(paper_report: Path, tmp_path: Path) -> None:
    """The check itself: a page with one undecodable image reports one image fewer."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (CI installs it)")
    text = (paper_report / "index.html").read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AA',
                                   1))  # fmt: skip
    dom = _render(broken, tmp_path)
    n = text.count("<img ")
    assert f'data-images-loaded="{n - 1}"' in dom and f'data-images-total="{n}"' in dom


def test_cis_from_fewer_than_10_test_positives_are_marked_in_every_figure_and_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class ``a`` has 5 test positives (``c`` has none: no AUROC, nothing to mark): the bars,
    per-class, layer and fraction figures get the dagger note, the page names the class."""
    from dataclasses import replace

    from medprobe import report
    from medprobe.results import Counts

    def run(layer: int, frac: float) -> Results:
        r = make_results(task="t", model="m", layer=layer, train_fraction=frac)
        return replace(r, counts=Counts(fit=60, val=15, test=15, skipped_images=0,
                                        per_split={"test": {"a": 5, "b": 10, "c": 0}},
                                        feature_dim=8, constant_features=False))  # fmt: skip

    runs = [run(k, 1.0) for k in (1, 2)] + [run(1, 0.5)]
    assert report.few_positive_classes(runs[0]) == ["a"]
    for r in runs:
        write_results(tmp_path / "runs" / f"L{r.layer}_f{r.train_fraction:g}", r)
    notes: list[str] = []
    real = report._few_note
    monkeypatch.setattr(report, "_few_note",
                        lambda fig, what: (notes.append(what), real(fig, what))[1])  # fmt: skip
    rep = report.make_report([tmp_path / "runs"], tmp_path / "report")
    names = [p.name for p in rep["files"] if p.suffix == ".png"]
    assert names == ["bars_t.png", "per_class_t.png", "layers_t.png", "fractions_t.png"]
    assert notes == ["a class with", "class with", "runs with a class with",
                     "runs with a class with"]  # fmt: skip
    html = (tmp_path / "report" / "index.html").read_text()
    assert "classes with &lt; 10 test positives (CI unreliable)" in html
    assert "<td>\u2020 a</td>" in html
