"""Offline report: run / sweep directories -> tables (CSV, Markdown) and figures (PNG).

``medprobe report DIR [DIR ...] --out REPORT_DIR`` reads every ``results.json`` below
the given directories (and the ``predictions.csv`` beside it for the paired comparisons); it
needs nothing but the files on disk (no W&B, no features, no models).

Written to ``REPORT_DIR``:

- ``summary.csv``: one row per run and metric (``auroc_macro``, ``f1_macro``, ``accuracy``,
  ``auroc/<class>``): task, task_kind, model, model_kind, layer, train_fraction, seed, metric,
  value, boot_mean, sd, ci_low, ci_high, ci_method, n_replicates, resampling_unit, run_dir.
  ``summary.md``: for each task's primary metric, one section per task: value, 95% CI and the
  bootstrap mean +- SD the paper plots (Fig. 3-6), so a side-by-side with the paper is one
  table.

Runs are grouped by identity (``results.task``, ``results.model``; :mod:`medprobe.results`),
never by the extractor or adapter kind: CLIP and PLIP are two bars and two curves, and
``task=csv`` runs on two data roots are two tasks. Every results file is read through
:mod:`medprobe.results`.
- ``comparison.csv`` / ``comparison.json``: paired comparisons (:mod:`medprobe.compare`) of the
  runs shown in the bar figures, per task, with p-values adjusted for multiplicity (Holm by
  default, ``--adjust bh``) within each family: per task, the per-class AUROC tests of all
  model pairs, and each summary metric over the model pairs (the ``family`` column says it).
- ``bars_<task>.png`` (paper Fig. 3-5 style): one bar per model with its bootstrap CI as error
  bar; brackets between models marked ``*`` when the row's test (DeLong for AUROC, McNemar for
  accuracy, else the paired bootstrap) is significant after the adjustment, else ``n.s.``. The run shown per model is the one at the largest training
  fraction and smallest seed whose layer has the best *validation* score (``probe.val_score``;
  the test set never picks the layer).
- ``per_class_<task>.png`` (Fig. 5 style, tasks with more than two classes): grouped bars of
  per-class AUROC per model (the bar runs) with CIs; with two models, ``*`` marks classes whose
  DeLong test is significant after the adjustment over the per-class family.
- ``layers_<task>.png`` (Fig. S5 style): metric vs integer layer per model (largest fraction,
  smallest seed), bootstrap CI as band; only when a model has two or more integer layers.
- ``layers_authors_order_<task>.png`` (Fig. S5 reproduction and its correction), for IDEFICS
  models whose depth is known (:func:`decoder_depth`): the same sweep twice, left in depth order
  (x = medprobe layer = ``hidden_states`` index), right in the authors' file order (x = their
  layer index ``i``, the value at ``hidden_states[authors_to_hidden_state(i, N)]``,
  :mod:`medprobe.paper.layers`). No second extraction: both panels read the same runs.
- ``fractions_<task>.png`` (Fig. 6 style): metric vs training fraction per model and layer:
  mean over seeds with a band of +-1 SD over seeds when there are several seeds, else the
  bootstrap CI of the single run; only when there are two or more fractions. The legend gives
  the share of the full-data score retained at 10% (:func:`retained_at`).
- ``retained.csv`` (when some model has runs at training fractions 0.1 and 1.0): the paper's
  Fig. 6 number, mean over seeds at 0.1 divided by the mean over seeds at 1.0, per model and
  layer (:data:`RETAINED_COLUMNS`).
- ``paper.csv`` (paper reproductions: runs made with ``experiment=fig*`` or ``fidelity=paper``,
  or every run with ``--paper always``): ours beside the paper's reported value
  (:mod:`medprobe.paper.reported`, with its source) for each bar run the paper reports; the
  figures draw the paper's value as a white diamond beside the bar (Fig. 3-5) and as a dotted
  line on the layer (Fig. S5) and fraction (Fig. 6) panels.
- ``index.html``: every table and figure above in one page (PNG inlined as base64 data URIs:
  one file, opens offline; :func:`write_html`).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.errors import ResultsError
from medprobe.results import Results, find_results

__all__ = [
    "bar_label",
    "authors_order_curve",
    "bar_runs",
    "decoder_depth",
    "few_positive_classes",
    "fraction_curves",
    "layer_curves",
    "load_results",
    "make_report",
    "paper_rows",
    "paper_runs",
    "plot_bars",
    "plot_fractions",
    "plot_layers",
    "plot_layers_authors_order",
    "plot_per_class",
    "retained_at",
    "summary_rows",
    "write_html",
    "write_summary",
]

SUMMARY_COLUMNS = [
    "task", "task_kind", "model", "model_kind", "layer", "train_fraction", "seed", "metric",
    "value", "boot_mean", "sd", "ci_low", "ci_high", "ci_method", "n_replicates",
    "resampling_unit", "run_dir",
]  # fmt: skip
_MAIN_METRICS = ("auroc_macro", "f1_macro", "accuracy")


def _layer_key(layer: Any) -> tuple[int, float, str]:
    """Sort integers numerically, then named layers alphabetically."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        return (0, float(layer), "")
    return (1, 0.0, str(layer))


def _run_key(r: Results) -> tuple[Any, ...]:
    return (r.task, r.model, _layer_key(r.layer), r.train_fraction, r.seed)


def _dir(r: Results) -> str:
    """The folder a run was read from (its recorded ``output_dir`` if built in memory)."""
    return str(r.run_dir) if r.run_dir is not None else r.output_dir


def bar_label(r: Results) -> str:
    """A bar's tick label: the model's identity and the layer shown (``plip\n(layer 2)``)."""
    return f"{r.model}\n(layer {r.layer})"


FEW_MARK = "\u2020"  # dagger: a CI from fewer than stats.FEW_POSITIVES test positives


def few_positive_classes(r: Results) -> list[str]:
    """Classes of ``r`` with 1 to ``stats.FEW_POSITIVES - 1`` (9) test positives, in class order.

    Read from ``results.counts.per_split["test"]`` (examples per class; positives per finding
    when multi-label). Their AUROC intervals, and so the macro metrics' intervals, are
    unreliable whatever the method (docs/statistics.md, "Small classes"); the figures mark
    them with :data:`FEW_MARK`.
    """
    from medprobe.stats import FEW_POSITIVES

    test = r.counts.per_split.get("test", {})
    return [c for c in r.classes if 0 < test.get(c, 0) < FEW_POSITIVES]


def _few_note(fig: Any, what: str) -> None:
    """The legend note under a figure that marks unreliable intervals (``what`` has them)."""
    from medprobe.stats import FEW_POSITIVES

    fig.text(0.01, 0.005, f"{FEW_MARK} {what} fewer than {FEW_POSITIVES} test positives: "
             "CI unreliable", fontsize=7, ha="left", va="bottom")  # fmt: skip


def load_results(dirs: Iterable[str | Path]) -> list[Results]:
    """Every ``results.json`` at or below ``dirs`` (:func:`medprobe.results.find_results`).

    Returns:
        :class:`~medprobe.results.Results` (``run_dir`` = the folder each was read from),
        sorted by (task, model, layer, train_fraction, seed).

    Raises:
        ResultsError: a directory does not exist or holds no ``results.json``, or a file that
            cannot be read as results.
    """
    return find_results(dirs)


def summary_rows(results: Sequence[Results]) -> list[dict[str, Any]]:
    """One row per run and metric (columns :data:`SUMMARY_COLUMNS`), values from results.json.

    ``task`` is the task's identity (one per data set: ``task=csv`` runs on two data roots are
    two tasks), ``model`` the model's; ``task_kind``/``model_kind`` the adapter/extractor.
    """
    rows = []
    for r in results:
        met = r.metrics
        keys = [k for k in _MAIN_METRICS if k in met] + sorted(
            k for k in met if k.startswith("auroc/")
        )
        for k in keys:
            v = met[k]
            rows.append(
                {
                    "task": r.task,
                    "task_kind": r.task_kind,
                    "model": r.model,
                    "model_kind": r.model_kind,
                    "layer": r.layer,
                    "train_fraction": r.train_fraction,
                    "seed": r.seed,
                    "metric": k,
                    "value": v.value,
                    "boot_mean": v.boot_mean,
                    "sd": v.sd,
                    "ci_low": v.ci_low,
                    "ci_high": v.ci_high,
                    "ci_method": v.ci_method,
                    "n_replicates": v.n_replicates,
                    "resampling_unit": met.resampling_unit,
                    "run_dir": _dir(r),
                }
            )
    return rows


def _f(v: Any, nd: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def write_summary(results: Sequence[Results], out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.csv`` (all metrics) and ``summary.md`` (each task's primary metric)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(results)
    pc, pm = out_dir / "summary.csv", out_dir / "summary.md"
    with open(pc, "w", newline="") as f:
        w = csv.DictWriter(f, SUMMARY_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    primary = {r.task: r.primary_metric for r in results}
    lines = []
    for task in sorted(primary):
        ci = next((int(round(100 * r.bootstrap.ci)) for r in results if r.task == task), 95)
        lines += [
            f"## {task}: {primary[task]}",
            "",
            f"| model | layer | train fraction | seed | {primary[task]} | {ci}% CI | CI method "
            "| bootstrap mean ± SD | resampling unit |",
            "|---|---:|---:|---:|---:|---|---|---|---|",
        ]
        for row in rows:
            if row["task"] == task and row["metric"] == primary[task]:
                lines.append(
                    f"| {row['model']} | {row['layer']} | {row['train_fraction']:g} | "
                    f"{row['seed']} | {_f(row['value'])} | "
                    f"[{_f(row['ci_low'])}, {_f(row['ci_high'])}] | {row['ci_method']} | "
                    f"{_f(row['boot_mean'])} ± {_f(row['sd'])} | {row['resampling_unit']} |"
                )
        lines.append("")
    pm.write_text("\n".join(lines))
    return pc, pm


# ----------------------------------------------------------------------------- selections


def bar_runs(results: Sequence[Results]) -> dict[str, list[Results]]:
    """Per task, one run per model for the bar figure (Fig. 3-5).

    Per (task, model): the runs at the largest ``train_fraction``, then the smallest ``seed``;
    among those the layer with the best validation score (``probe.val_score``; ties: the
    first layer in numeric order). The test set is never used to choose.

    Tasks and models are identities (``results.task``/``results.model``), never kinds: CLIP
    and PLIP (one extractor kind) are two bars, two ``task=csv`` data sets two tasks.

    Returns:
        task -> runs, ordered by model name.
    """
    by: dict[tuple[str, str], list[Results]] = defaultdict(list)
    for r in results:
        by[(r.task, r.model)].append(r)
    out: dict[str, list[Results]] = defaultdict(list)
    for (task, _model), runs in sorted(by.items()):
        frac = max(r.train_fraction for r in runs)
        runs = [r for r in runs if r.train_fraction == frac]
        seed = min(r.seed for r in runs)
        runs = sorted((r for r in runs if r.seed == seed), key=_run_key)
        best = max(range(len(runs)), key=lambda i: (runs[i].probe.val_score, -i))
        out[task].append(runs[best])
    return dict(out)


def same_setup_warnings(results: Sequence[Results]) -> list[str]:
    """One warning per group of runs with the same task, model, layer, training fraction and
    seed (a folder copied, one job run twice, or two datasets given one ``task.name``): the
    tables list each, but a figure cannot tell them apart, and seeds are what is averaged."""
    groups: dict[tuple[Any, ...], list[Results]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.model, str(r.layer), r.train_fraction, r.seed)].append(r)
    return [
        f"{task}: {len(runs)} runs of {model} L{layer} train_fraction {frac:g} seed {seed} "
        f"({', '.join(_dir(r) for r in runs)}): the same setup twice (a copied folder, a job "
        "run twice, or two datasets under one task.name?); the figures cannot tell them apart"
        for (task, model, layer, frac, seed), runs in groups.items()
        if len(runs) > 1
    ]


def layer_curves(
    results: Sequence[Results], task: str, metric: str
) -> dict[str, list[tuple[int, float, float, float]]]:
    """Model (identity) -> ``[(layer, value, ci_low, ci_high), ...]`` over integer layers
    (largest fraction, smallest seed); models with fewer than two integer layers are left
    out."""
    by: dict[str, list[Results]] = defaultdict(list)
    for r in results:
        if r.task == task and isinstance(r.layer, int) and metric in r.metrics:
            by[r.model].append(r)
    out = {}
    for model, runs in sorted(by.items()):
        frac = max(r.train_fraction for r in runs)
        runs = [r for r in runs if r.train_fraction == frac]
        seed = min(r.seed for r in runs)
        pts = sorted(
            (int(r.layer), r.metrics[metric].value, r.metrics[metric].ci_low,
             r.metrics[metric].ci_high)
            for r in runs
            if r.seed == seed
        )  # fmt: skip
        if len({p[0] for p in pts}) >= 2:  # two runs at one layer are no curve
            out[model] = pts
    return out


def fraction_curves(
    results: Sequence[Results], task: str, metric: str
) -> dict[str, list[tuple[float, float, float, float, int]]]:
    """``"<model> L<layer>"`` -> ``[(fraction, mean, low, high, n_seeds), ...]``.

    ``mean`` is the mean over seeds of the metric's value; the band is ``mean +- SD`` over
    seeds (``ddof=1``) with two or more seeds, else the single run's bootstrap CI. Curves with
    fewer than two fractions are left out. Only seeds are averaged: two models (identities,
    e.g. CLIP and PLIP over one extractor kind) are two curves.
    """
    by: dict[tuple[str, Any], dict[float, list[Results]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.task == task and metric in r.metrics:
            by[(r.model, r.layer)][r.train_fraction].append(r)
    out = {}
    for (model, layer), fr in sorted(by.items(), key=lambda kv: (kv[0][0], _layer_key(kv[0][1]))):
        pts = []
        for frac, runs in sorted(fr.items()):
            vals = np.array([r.metrics[metric].value for r in runs], dtype=float)
            m = float(vals.mean())
            if len(runs) > 1:
                sd = float(vals.std(ddof=1))
                lo, hi = m - sd, m + sd
            else:
                lo, hi = runs[0].metrics[metric].ci_low, runs[0].metrics[metric].ci_high
            pts.append((frac, m, lo, hi, len(runs)))
        if len(pts) >= 2:
            out[f"{model} L{layer}"] = pts
    return out


RETAINED_COLUMNS = [
    "task", "model", "layer", "metric", "fraction", "full_fraction", "value_at_fraction",
    "value_at_full", "n_seeds_at_fraction", "n_seeds_at_full", "retained",
]  # fmt: skip


def retained_at(
    results: Sequence[Results], task: str, metric: str, *, fraction: float = 0.1,
    full: float = 1.0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The share of the full-data score kept with less training data (the paper's Fig. 6
    "retained at 10%"), per model identity and layer of ``task``.

    ``retained = mean_seeds(metric at train_fraction == fraction) / mean_seeds(metric at
    train_fraction == full)``: the mean over seeds of each run's point estimate (results.json
    ``metrics[metric].value``) at each fraction, then their ratio (a float; 1.0 = nothing
    lost). Fractions are matched with ``math.isclose`` (rel 1e-9). Models and layers without
    runs at both fractions are left out.

    Returns:
        rows with the keys :data:`RETAINED_COLUMNS`, ordered by model, then layer.
    """
    by: dict[tuple[str, Any], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.task != task or metric not in r.metrics:
            continue
        for name, f in (("at", fraction), ("full", full)):
            if math.isclose(r.train_fraction, f, rel_tol=1e-9):
                by[(r.model, r.layer)][name].append(r.metrics[metric].value)
    rows = []
    for (model, layer), v in sorted(by.items(), key=lambda kv: (kv[0][0], _layer_key(kv[0][1]))):
        if not v["at"] or not v["full"]:
            continue
        at, base = float(np.mean(v["at"])), float(np.mean(v["full"]))
        rows.append(
            {
                "task": task, "model": model, "layer": layer, "metric": metric,
                "fraction": fraction, "full_fraction": full, "value_at_fraction": at,
                "value_at_full": base, "n_seeds_at_fraction": len(v["at"]),
                "n_seeds_at_full": len(v["full"]),
                "retained": at / base if base != 0 else float("nan"),
            }
        )  # fmt: skip
    return rows


PAPER_COLUMNS = [
    "figure", "task", "model", "layer", "train_fraction", "seed", "metric", "value", "ci_low",
    "ci_high", "paper_value", "diff", "paper_in_ci", "source", "run_dir",
]  # fmt: skip


def paper_runs(results: Sequence[Results], mode: str = "auto") -> list[Results]:
    """The runs whose numbers are set beside the paper's.

    Args:
        results: runs.
        mode: ``auto`` (runs whose command line made them a paper reproduction:
            ``experiment=fig*`` or ``fidelity=paper``, :func:`medprobe.paper.reported.
            is_paper_run`), ``always`` (every run: its task and model identities decide),
            ``never`` (none).

    Raises:
        ValueError: another ``mode``.
    """
    from medprobe.paper.reported import is_paper_run

    if mode == "never":
        return []
    if mode == "always":
        return list(results)
    if mode == "auto":
        return [r for r in results if is_paper_run(r.overrides)]
    raise ValueError(f"paper mode must be auto, always or never, not {mode!r}")


def paper_rows(bars: dict[str, list[Results]], runs: Sequence[Results]) -> list[dict[str, Any]]:
    """Our value beside the paper's (:data:`medprobe.paper.reported.REPORTED`) for each bar run
    (:func:`bar_runs`) that is among ``runs`` (:func:`paper_runs`) and whose task, model
    identity and metric the paper reports.

    Returns:
        rows with the keys :data:`PAPER_COLUMNS`: ``value``/``ci_low``/``ci_high`` ours (the
        task's paper metric), ``paper_value`` the paper's, ``diff = value - paper_value``,
        ``paper_in_ci`` whether the paper's value lies inside our CI; task, then model order.
    """
    from medprobe.paper.reported import paper_values

    chosen = {id(r) for r in runs}
    rows = []
    for task, sel in sorted(bars.items()):
        for r in sel:
            if id(r) not in chosen:
                continue
            for metric in dict.fromkeys(x.metric for x in _reported_for(task)):
                rep = paper_values(task, metric).get(r.model)
                if rep is None or metric not in r.metrics:
                    continue
                m = r.metrics[metric]
                rows.append(
                    {
                        "figure": rep.figure, "task": task, "model": r.model, "layer": r.layer,
                        "train_fraction": r.train_fraction, "seed": r.seed, "metric": metric,
                        "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                        "paper_value": rep.value, "diff": m.value - rep.value,
                        "paper_in_ci": bool(m.ci_low <= rep.value <= m.ci_high),
                        "source": rep.source, "run_dir": _dir(r),
                    }
                )  # fmt: skip
    return rows


def _reported_for(task: str) -> list[Any]:
    from medprobe.paper.reported import REPORTED

    return [x for x in REPORTED if x.task == task]


def _paper_lines(task: str, metric: str, models: Iterable[str]) -> dict[str, float]:
    """Model -> the paper's value of ``task``/``metric`` for the given models (reference lines)."""
    from medprobe.paper.reported import paper_values

    vals = paper_values(task, metric)
    return {m: vals[m].value for m in models if m in vals}


def _write_rows(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(columns), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(
    runs: Sequence[Results],
    comparisons: Sequence[dict[str, Any]],
    metric: str,
    path: Path,
    *,
    title: str = "",
    paper: dict[str, float] | None = None,
) -> Path:
    """Bars per model with CI error bars and pairwise significance brackets (Fig. 3-5).

    A bar whose run has a class with fewer than ``stats.FEW_POSITIVES`` test positives
    (:func:`few_positive_classes`) is hatched and its label carries :data:`FEW_MARK`, with a
    note under the figure: its interval is unreliable.

    Args:
        runs: one run per bar (see :func:`bar_runs`); labelled by model identity and layer
            (:func:`bar_label`).
        comparisons: rows of :func:`medprobe.compare.compare_runs` on those runs; the rows for
            ``metric`` give the brackets (``*``: ``significant``, the adjusted p-value of the
            row's test below alpha; ``n.s.`` otherwise).
        metric: results.json metric key.
        path: PNG to write.
        paper: model identity -> the paper's reported value of ``metric``
            (:mod:`medprobe.paper.reported`): drawn as a white diamond beside that model's
            bar, its value printed next to it (legend "paper's reported value").
    """
    plt = _plt()
    paper = paper or {}
    vals = [r.metrics[metric] for r in runs]
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(max(4.2, 1.6 + 1.4 * len(runs)), 4.2))  # title fits
    err = np.array([[v.value - v.ci_low for v in vals], [v.ci_high - v.value for v in vals]])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    few = [bool(few_positive_classes(r)) for r in runs]
    bars = ax.bar(x, [v.value for v in vals], yerr=err, capsize=5, width=0.6,
                  color=[colors[i % len(colors)] for i in range(len(runs))], edgecolor="black")  # fmt: skip
    for bar, f in zip(bars, few, strict=True):
        if f:
            bar.set_hatch("//")
    ax.set_xticks(
        x, [bar_label(r) + (f" {FEW_MARK}" if f else "") for r, f in zip(runs, few, strict=True)]
    )
    marks = [(i, paper[r.model]) for i, r in enumerate(runs) if r.model in paper]
    for k, (i, pv) in enumerate(marks):
        ax.plot([i + 0.38], [pv], marker="D", ms=7, mfc="white", mec="black", ls="none",
                label="paper's reported value" if k == 0 else None, zorder=5)  # fmt: skip
        ax.text(i + 0.46, pv, f"{pv:.3f}", fontsize=7, va="center", ha="left")
    lo = min([v.ci_low for v in vals] + [pv for _, pv in marks])
    top = max([v.ci_high for v in vals] + [pv for _, pv in marks])
    ymin = max(0.0, lo - 0.1 * max(top - lo, 0.05) - 0.05)
    step = 0.06 * max(top - ymin, 0.1)
    label_of = {_dir(r): i for i, r in enumerate(runs)}
    level = 0
    for c in comparisons:
        if c["metric"] != metric or c["dir_a"] not in label_of or c["dir_b"] not in label_of:
            continue
        i, j = sorted((label_of[c["dir_a"]], label_of[c["dir_b"]]))
        y = top + step * (1 + 1.6 * level)
        level += 1
        sig = bool(c.get("significant"))
        ax.plot([i, i, j, j], [y - step * 0.3, y, y, y - step * 0.3], color="black", lw=1)
        ax.text((i + j) / 2, y, "*" if sig else "n.s.", ha="center", va="bottom",
                fontsize=12 if sig else 9)  # fmt: skip
    ax.set_ylim(ymin, top + step * (2 + 1.6 * level))
    ax.set_xlim(-0.6, len(runs) - 0.4 + (0.35 if marks else 0.0))
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(axis="y", alpha=0.3)
    if marks:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if any(few):
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
        _few_note(fig, "a class with")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_class(
    runs: Sequence[Results],
    comparisons: Sequence[dict[str, Any]],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Grouped bars of per-class AUROC (``auroc/<class>``) per model with CIs (Fig. 5 style).

    With exactly two models, a class is marked ``*`` when its test (DeLong) is significant
    after the multiplicity adjustment over the per-class family (``significant`` of the rows
    of ``comparisons``); with more models no marks are drawn (see ``comparison.csv`` for every
    pair). A class with fewer than ``stats.FEW_POSITIVES`` test positives in some run
    (:func:`few_positive_classes`) carries :data:`FEW_MARK` in its label, with a note under
    the figure: its intervals are unreliable.
    """
    plt = _plt()
    classes = list(runs[0].metrics.per_class())
    few = {c for r in runs for c in few_positive_classes(r)}
    x = np.arange(len(classes))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(classes) + 2), 4.2))
    for i, r in enumerate(runs):
        per = r.metrics.per_class()
        vals = [per.get(c) for c in classes]
        v = np.array([m.value if m else np.nan for m in vals])
        lo = np.array([m.value - m.ci_low if m else 0.0 for m in vals])
        hi = np.array([m.ci_high - m.value if m else 0.0 for m in vals])
        ax.bar(x - 0.4 + width * (i + 0.5), v, width, yerr=[lo, hi], capsize=2,
               label=f"{r.model} (layer {r.layer})", edgecolor="black", lw=0.5)  # fmt: skip
    if len(runs) == 2:
        dirs = {_dir(runs[0]), _dir(runs[1])}
        for c in comparisons:
            if {c["dir_a"], c["dir_b"]} == dirs and c["metric"].startswith("auroc/"):
                name = c["metric"].split("/", 1)[1]
                if name in classes and c.get("significant"):
                    k = classes.index(name)
                    top = max(r.metrics[c["metric"]].ci_high for r in runs)
                    ax.text(k, top + 0.01, "*", ha="center", va="bottom", fontsize=12)
    ticks = [c + (f" {FEW_MARK}" if c in few else "") for c in classes]
    ax.set_xticks(x, ticks, rotation=45 if len(classes) > 6 else 0, ha="right"
                  if len(classes) > 6 else "center")  # fmt: skip
    ax.set_ylim(0.0, 1.22)  # room for the marks and a one-row legend above the bars
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("AUROC (one-vs-rest)")
    ax.set_title(title or "per-class AUROC")
    ax.legend(fontsize=8, loc="upper left", ncol=len(runs))
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if few:
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
        _few_note(fig, "class with")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_layers(
    curves: dict[str, list[tuple[int, float, float, float]]], metric: str, path: Path, *,
    title: str = "", paper: dict[str, float] | None = None, unreliable: bool = False,
) -> Path:  # fmt: skip
    """Metric vs layer per model, CI band (Fig. S5).

    ``paper``: model identity -> the paper's reported value (all training data, the authors'
    layer; :mod:`medprobe.paper.reported`), drawn as a dotted horizontal line in the model's
    colour. ``unreliable``: some run drawn has a class with fewer than
    ``stats.FEW_POSITIVES`` test positives (:func:`few_positive_classes`): the band's legend
    title carries :data:`FEW_MARK` and a note under the figure says its CIs are unreliable.
    """
    plt = _plt()
    paper = paper or {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, pts in curves.items():
        a = np.array(pts, dtype=float)
        (line,) = ax.plot(a[:, 0], a[:, 1], marker="o", label=model)
        ax.fill_between(a[:, 0], a[:, 2], a[:, 3], alpha=0.2, color=line.get_color())
        if model in paper:
            ax.axhline(paper[model], color=line.get_color(), ls=":", lw=1.2,
                       label=f"{model}: paper {paper[model]:.3f}")  # fmt: skip
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="band: the runs' CI" + (f" {FEW_MARK}" if unreliable else ""),
              title_fontsize=8)  # fmt: skip
    fig.tight_layout()
    if unreliable:
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
        _few_note(fig, "runs with a class with")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: Decoder blocks of the IDEFICS checkpoints the model presets name (model identity -> N).
IDEFICS_DEPTHS = {"idefics80b": 80, "idefics9b": 32}


def decoder_depth(r: Results) -> int | None:
    """Decoder blocks ``N`` of an IDEFICS run, else ``None`` (no authors' file order exists).

    From ``results.extractor_load["num_hidden_layers"]`` (recorded when the model was loaded),
    else from the model identity (``idefics80b``: 80, ``idefics9b``: 32). Other extractors
    (CLIP, EfficientNet) return ``None``.
    """
    if r.model_kind != "idefics":
        return None
    load = r.extractor_load or {}
    n = load.get("num_hidden_layers")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    return IDEFICS_DEPTHS.get(r.model)


def authors_order_curve(
    pts: Sequence[tuple[int, float, float, float]], n_blocks: int
) -> list[tuple[int, float, float, float]]:
    """A layer curve re-indexed as the authors' per-layer sweep read it.

    ``[(layer, value, lo, hi), ...]`` (medprobe layers = ``hidden_states`` indices) ->
    ``[(i, value, lo, hi), ...]`` sorted by the authors' index ``i``, where ``i =
    hidden_state_to_authors(layer, n_blocks)`` (:mod:`medprobe.paper.layers`); layer 0 and
    layers above ``n_blocks`` (never saved by the authors) are dropped.

    Raises:
        ValueError: ``n_blocks`` is not a positive int.
    """
    from medprobe.paper.layers import hidden_state_to_authors

    return sorted(
        (hidden_state_to_authors(int(layer), n_blocks), v, lo, hi)
        for layer, v, lo, hi in pts
        if 1 <= int(layer) <= n_blocks
    )


def plot_layers_authors_order(
    curves: dict[str, list[tuple[int, float, float, float]]],
    depths: dict[str, int],
    metric: str,
    path: Path,
    *,
    title: str = "",
) -> Path:
    """One layer sweep drawn twice, side by side (the paper's Fig. S5 and its correction).

    Left: x = medprobe layer (``hidden_states`` index, depth order). Right: x = the authors'
    layer index ``i`` (``sorted(glob("*.pt"))[i]``, :func:`medprobe.paper.layers.
    authors_to_hidden_state`), y = the value of the same run at ``hidden_states[
    authors_to_hidden_state(i, N)]``: what their per-layer plot shows. Layer 0 (never saved by
    the authors) and layers above ``N`` are left out of the right panel.

    Args:
        curves: model -> ``[(layer, value, ci_low, ci_high), ...]`` (:func:`layer_curves`).
        depths: model -> decoder blocks ``N`` (:func:`decoder_depth`; e.g. 80, 32, or the
            depth of a tiny test model); models without an entry are left out.
        metric: y-axis label.
        path: PNG written.

    Returns:
        ``path``.

    Raises:
        ValueError: a depth that is not a positive int.
    """
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), sharey=True)
    for model, pts in curves.items():
        if model not in depths:
            continue
        n = depths[model]
        a = np.array(pts, dtype=float)
        (line,) = left.plot(a[:, 0], a[:, 1], marker="o", label=f"{model} (N={n})")
        left.fill_between(a[:, 0], a[:, 2], a[:, 3], alpha=0.2, color=line.get_color())
        mapped = authors_order_curve(pts, n)
        if mapped:
            b = np.array(mapped, dtype=float)
            right.plot(b[:, 0], b[:, 1], marker="o", color=line.get_color(), label=model)
            right.fill_between(b[:, 0], b[:, 2], b[:, 3], alpha=0.2, color=line.get_color())
    left.set_xlabel("layer (hidden_states index, depth order)")
    right.set_xlabel("authors' layer index (sorted(glob('*.pt'))[i])")
    left.set_ylabel(metric)
    left.set_title("depth order (medprobe)")
    right.set_title("authors' file order (paper Fig. S5)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8, title="band: the runs' CI", title_fontsize=8)
    fig.suptitle(title or f"{metric} vs layer: depth order and the authors' file order")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fractions(
    curves: dict[str, list[tuple[float, float, float, float, int]]], metric: str, path: Path, *,
    title: str = "", paper: dict[str, float] | None = None,
    retained: dict[str, float] | None = None, unreliable: bool = False,
) -> Path:  # fmt: skip
    """Metric vs training fraction per model and layer, band over seeds (Fig. 6).

    Args:
        curves: ``"<model> L<layer>"`` -> points (:func:`fraction_curves`).
        metric: y-axis label.
        path: PNG written.
        paper: model identity -> the paper's reported value with all training data
            (:mod:`medprobe.paper.reported`): a dotted horizontal line in the curve's colour.
        retained: curve name -> the share of the full-data score kept at 10%
            (:func:`retained_at`), written into the curve's legend entry.
        unreliable: some run drawn has a class with fewer than ``stats.FEW_POSITIVES`` test
            positives: the legend title carries :data:`FEW_MARK`, with a note under the figure
            (the single-seed bands are those runs' CIs).
    """
    plt = _plt()
    paper, retained = paper or {}, retained or {}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fracs = sorted({p[0] for pts in curves.values() for p in pts})
    for name, pts in curves.items():
        a = np.array(pts, dtype=float)
        seeds = int(a[:, 4].max())
        label = f"{name} (mean of {seeds} seeds)" if seeds > 1 else name
        if name in retained:
            label += f"; 10%: {100 * retained[name]:.1f}% retained"
        (line,) = ax.plot(a[:, 0], a[:, 1], marker="o", label=label)
        ax.fill_between(a[:, 0], a[:, 2], a[:, 3], alpha=0.2, color=line.get_color())
        model = name.rsplit(" L", 1)[0]
        if model in paper:
            ax.axhline(paper[model], color=line.get_color(), ls=":", lw=1.2,
                       label=f"{model}: paper {paper[model]:.3f} (all data)")  # fmt: skip
            paper = {k: v for k, v in paper.items() if k != model}  # one line per model
    if fracs and fracs[0] < 0.1:
        ax.set_xscale("log")
    ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
    ax.set_xlabel("training fraction")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs training fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="band: ±1 SD over seeds (1 seed: the run's CI)"
              + (f" {FEW_MARK}" if unreliable else ""), title_fontsize=8)  # fmt: skip
    fig.tight_layout()
    if unreliable:
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.04)
        _few_note(fig, "runs with a class with")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report


def make_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    metric: str | None = None,
    n_boot: int | None = None,
    adjust: str = "holm",
    paper: str = "auto",
) -> dict[str, Any]:
    """Tables, comparisons, figures and ``index.html`` for every run below ``dirs`` (see the
    module docstring).

    Args:
        dirs: run or sweep directories.
        out_dir: created if needed.
        metric: metric for figures and comparisons' brackets (default: each task's
            ``primary_metric``).
        n_boot: replicates of the paired comparisons (default: each run's ``bootstrap.n``).
        adjust: multiplicity adjustment of the comparisons' p-values, ``holm`` or ``bh``
            (:func:`medprobe.compare.adjust_rows`; families per task).
        paper: which runs get the paper's reported values beside them (:func:`paper_runs`:
            ``auto``, the paper reproductions; ``always``; ``never``).

    Returns:
        ``{"files": [written paths], "comparisons": [rows], "results": [Results],
        "warnings": [str], "paper": [rows of paper.csv], "retained": [rows of retained.csv],
        "html": path of index.html}``; a task whose bar runs are not on the same test set
        gets bars without significance marks and a warning instead of comparisons.

    Raises:
        ResultsError: no results found (and no multiple-choice summaries), or a run folder
            that cannot be read.
        ValueError: ``paper`` is not ``auto``, ``always`` or ``never``.
    """
    from medprobe.compare import ComparisonError, compare_runs, load_run, write_comparison

    if paper not in ("auto", "always", "never"):
        raise ValueError(f"paper must be auto, always or never, not {paper!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcq_files = mcq_sections(dirs, out)
    try:
        results = load_results(dirs)
    except ResultsError:
        if not mcq_files:
            raise
        html = write_html(out, dirs=dirs, results=[], task_files={}, mcq_files=mcq_files)
        return {"files": [*mcq_files, html], "comparisons": [], "results": [], "warnings": [],
                "paper": [], "retained": [], "html": html}  # fmt: skip
    files: list[Path] = mcq_files + list(write_summary(results, out))
    comparisons: list[dict[str, Any]] = []
    warnings: list[str] = same_setup_warnings(results)
    bars = bar_runs(results)
    reproduced = paper_runs(results, paper)
    repro_models = {(r.task, r.model) for r in reproduced}
    p_rows = paper_rows(bars, reproduced)
    r_rows: list[dict[str, Any]] = []
    task_files: dict[str, list[Path]] = {}
    for task in sorted({r.task for r in results}):
        met = metric or next(r.primary_metric for r in results if r.task == task)
        lines = _paper_lines(task, met, {m for t, m in repro_models if t == task})
        few = any(few_positive_classes(r) for r in results if r.task == task)
        sel = bars.get(task, [])
        n_before = len(files)
        task_cmp: list[dict[str, Any]] = []
        if len(sel) >= 2:
            try:
                task_cmp = compare_runs(
                    [load_run(_dir(r)) for r in sel], n_boot=n_boot, adjust=adjust
                )
            except ComparisonError as e:  # e.g. models run on different test splits
                warnings.append(f"{task}: no paired comparison ({e})")
            comparisons += task_cmp
        if sel:
            files.append(plot_bars(sel, task_cmp, met, out / f"bars_{task}.png",
                                   title=f"{task}: {met} (95% CI)", paper=lines))  # fmt: skip
            if len(sel[0].metrics.per_class()) > 2:
                files.append(plot_per_class(sel, task_cmp, out / f"per_class_{task}.png",
                                            title=f"{task}: per-class AUROC (95% CI)"))  # fmt: skip
        lc = layer_curves(results, task, met)
        if lc:
            files.append(plot_layers(lc, met, out / f"layers_{task}.png",
                                     title=f"{task}: {met} vs layer", paper=lines,
                                     unreliable=few))  # fmt: skip
            depths = {r.model: d for r in results if r.task == task and r.model in lc
                      and (d := decoder_depth(r)) is not None}  # fmt: skip
            if depths:
                files.append(plot_layers_authors_order(
                    lc, depths, met, out / f"layers_authors_order_{task}.png",
                    title=f"{task}: {met} vs layer, depth order and the authors' file order"))  # fmt: skip
        fc = fraction_curves(results, task, met)
        kept = retained_at(results, task, met)
        r_rows += kept
        if fc:
            files.append(plot_fractions(
                fc, met, out / f"fractions_{task}.png",
                title=f"{task}: {met} vs training fraction", paper=lines, unreliable=few,
                retained={f"{k['model']} L{k['layer']}": k["retained"] for k in kept}))  # fmt: skip
        task_files[task] = files[n_before:]
    if comparisons:
        files += list(write_comparison(comparisons, out))
    if p_rows:
        files.append(_write_rows(out / "paper.csv", PAPER_COLUMNS, p_rows))
    if r_rows:
        files.append(_write_rows(out / "retained.csv", RETAINED_COLUMNS, r_rows))
    html = write_html(out, dirs=dirs, results=results, task_files=task_files,
                      mcq_files=mcq_files, bars=bars, comparisons=comparisons,
                      paper_table=p_rows, retained=r_rows, warnings=warnings,
                      show_reported=bool(reproduced))  # fmt: skip
    files.append(html)
    return {"files": files, "comparisons": comparisons, "results": results, "warnings": warnings,
            "paper": p_rows, "retained": r_rows, "html": html}  # fmt: skip


#: Records, once the page has loaded, how many ``<img>`` decoded (``naturalWidth > 0``) as
#: ``data-images-loaded`` / ``data-images-total`` on ``<body>`` (what a headless browser check
#: reads; tests/test_report_html.py).
_IMG_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", String(ok));
  document.body.setAttribute("data-images-total", String(imgs.length));
});
</script>"""

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}td.n{text-align:right;
font-variant-numeric:tabular-nums}th{background:#f3f3f3}figure{margin:1em 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
.note{font-size:.85em;color:#555}.warn{color:#a40}pre{background:#f7f7f7;padding:.6em;
overflow-x:auto;font-size:.8em}"""


def _esc(v: Any) -> str:
    import html

    return html.escape(str(v))


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; columns at ``numeric`` positions right-aligned."""
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = []
    for row in rows:
        tds = "".join(
            f'<td class="n">{_esc(v)}</td>' if i in numeric else f"<td>{_esc(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined as a base64 data URI (no file links:
    the page is one file that opens offline)."""
    import base64

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(path.name)}</figcaption></figure>")  # fmt: skip


def write_html(
    out: Path,
    *,
    dirs: Sequence[str | Path],
    results: Sequence[Results],
    task_files: dict[str, list[Path]],
    mcq_files: Sequence[Path] = (),
    bars: dict[str, list[Results]] | None = None,
    comparisons: Sequence[dict[str, Any]] = (),
    paper_table: Sequence[dict[str, Any]] = (),
    retained: Sequence[dict[str, Any]] = (),
    warnings: Sequence[str] = (),
    show_reported: bool = False,
) -> Path:
    """``<out>/index.html``: every figure (PNG inlined as base64 data URIs) and table of the
    report in one self-contained page that opens offline (no scripts or styles from elsewhere).

    Per task: the runs shown in the bars (primary metric, CI, CIs from fewer than 10 test
    positives marked), ours beside the paper's reported value (``paper_table``, rows of
    :func:`paper_rows`), the share retained at 10% of the training data (``retained``, rows of
    :func:`retained_at`), the valid paired tests (primary metric and per-class AUROC:
    DeLong / McNemar / paired bootstrap, adjusted p), then the task's figures. Then the
    multiple-choice sections and, when ``show_reported``, the paper's numbers with their
    sources (:data:`medprobe.paper.reported.REPORTED`). An inline script records how many
    images decoded as ``data-images-loaded`` on ``<body>``.

    Returns:
        the path written.
    """
    from medprobe import __version__
    from medprobe.stats import FEW_POSITIVES

    bars = bars or {}
    tasks = sorted(task_files)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>medprobe report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>medprobe report</h1>",
        f"<p>{len(results)} run(s) read from: "
        f"{', '.join(f'<code>{_esc(d)}</code>' for d in dirs)} (medprobe {_esc(__version__)}). "
        "Tables: <code>summary.csv</code>"
        f"{', <code>comparison.csv</code>' if comparisons else ''}"
        f"{', <code>paper.csv</code>' if paper_table else ''}"
        f"{', <code>retained.csv</code>' if retained else ''} beside this page.</p>",
    ]
    if warnings:
        parts.append("<ul>" + "".join(f'<li class="warn">{_esc(w)}</li>' for w in warnings)
                     + "</ul>")  # fmt: skip
    if tasks:
        parts.append("<p>Tasks: " + " · ".join(f'<a href="#task-{_esc(t)}">{_esc(t)}</a>'
                                               for t in tasks) + "</p>")  # fmt: skip
    for task in tasks:
        primary = next(r.primary_metric for r in results if r.task == task)
        parts.append(f'<h2 id="task-{_esc(task)}">{_esc(task)}: {_esc(primary)}</h2>')
        sel = bars.get(task, [])
        if sel:
            rows = []
            for r in sel:
                m = r.metrics[primary] if primary in r.metrics else None
                few = few_positive_classes(r)
                rows.append([
                    r.model, r.layer, f"{r.train_fraction:g}", r.seed,
                    _f(m.value) if m else "", f"[{_f(m.ci_low)}, {_f(m.ci_high)}]" if m else "",
                    m.ci_method if m else "",
                    f"{_f(m.boot_mean)} ± {_f(m.sd)}" if m else "", r.metrics.resampling_unit,
                    (f"{FEW_MARK} " + ", ".join(few)) if few else "",
                ])  # fmt: skip
            parts.append("<h3>Runs shown in the bars</h3>")
            parts.append(_table(["model", "layer", "train fraction", "seed", primary, "95% CI",
                                 "CI method", "bootstrap mean ± SD", "resampling unit",
                                 f"classes with < {FEW_POSITIVES} test positives (CI unreliable)"],
                                rows, numeric=(1, 2, 3, 4)))  # fmt: skip
        prow = [p for p in paper_table if p["task"] == task]
        if prow:
            parts.append("<h3>Ours beside the paper's reported value</h3>")
            parts.append(_table(
                ["model", "layer", "metric", "ours", "our 95% CI", "paper", "ours − paper",
                 "paper inside our CI", "figure", "source"],
                ([p["model"], p["layer"], p["metric"], _f(p["value"]),
                  f"[{_f(p['ci_low'])}, {_f(p['ci_high'])}]", f"{p['paper_value']:.3f}",
                  f"{p['diff']:+.4f}", "yes" if p["paper_in_ci"] else "no", p["figure"],
                  p["source"]] for p in prow),
                numeric=(1, 3, 5, 6)))  # fmt: skip
        krow = [k for k in retained if k["task"] == task]
        if krow:
            parts.append("<h3>Retained at 10% of the training data (Fig. 6)</h3>")
            parts.append(_table(
                ["model", "layer", "metric", "mean at 10%", "mean at 100%", "seeds (10% / 100%)",
                 "retained"],
                ([k["model"], k["layer"], k["metric"], _f(k["value_at_fraction"]),
                  _f(k["value_at_full"]), f"{k['n_seeds_at_fraction']} / {k['n_seeds_at_full']}",
                  f"{100 * k['retained']:.1f}%"] for k in krow),
                numeric=(1, 3, 4, 6)))  # fmt: skip
        crow = [c for c in comparisons if c.get("task") == task
                and (c["metric"] == primary or str(c["metric"]).startswith("auroc/"))]  # fmt: skip
        if crow:
            names = {"delong": "DeLong", "mcnemar": "McNemar", "bootstrap": "paired bootstrap"}
            parts.append("<h3>Paired comparisons (the valid tests)</h3>")
            parts.append(_table(
                ["A", "B", "metric", "A − B", "95% CI", "test", "p", "p adjusted", "", "family"],
                ([c["run_a"], c["run_b"], c["metric"], f"{c['diff']:+.4f}",
                  f"[{_f(c['diff_ci_low'])}, {_f(c['diff_ci_high'])}]",
                  names.get(str(c.get("test")), c.get("test")),
                  "" if c.get("p") is None else f"{c['p']:.3g}",
                  "" if c.get("p_adj") is None else f"{c['p_adj']:.3g}",
                  "*" if c.get("significant") else "", c.get("family", "")] for c in crow),
                numeric=(3, 6, 7)))  # fmt: skip
            parts.append('<p class="note">* adjusted p below alpha. The paper\'s t-test on '
                         "bootstrap replicates is in comparison.csv (paper_ttest_*) as a "
                         "reproduction only: its p falls without bound as the replicates "
                         "grow.</p>")  # fmt: skip
        parts += [_img(p) for p in task_files[task] if p.suffix == ".png"]
    if mcq_files:
        parts.append("<h2>Multiple-choice questions</h2>")
        for p in mcq_files:
            if p.suffix == ".png":
                parts.append(_img(p))
            else:
                parts.append(f"<pre>{_esc(p.read_text())}</pre>")
    if show_reported:
        from medprobe.paper.reported import REPORTED, SOURCE

        parts.append("<h2>The paper's reported numbers</h2>")
        parts.append(f'<p class="note">Source of every value: {_esc(SOURCE)}. Not found and '
                     "left out: Flamingo-9B's values, Fig. 5 per finding, Fig. S5 layer "
                     "values, Fig. 6 training-fraction values; values whose model the text "
                     "does not name are listed here only.</p>")  # fmt: skip
        parts.append(_table(
            ["figure", "task", "model", "metric", "value", "words it is read from"],
            ([x.figure, x.task, x.model or "(not named)", x.metric, f"{x.value:.3f}", x.quote]
             for x in REPORTED), numeric=(4,)))  # fmt: skip
    parts += [_IMG_CHECK, "</body></html>"]
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def mcq_sections(dirs: Sequence[str | Path], out: Path) -> list[Path]:
    """Multiple-choice results (``mcq_summary.json`` of ``medprobe mcq``) below
    ``dirs`` -> ``mcq_<folder>.md`` (accuracy with CI, by-difficulty table) and
    ``mcq_by_difficulty_<folder>.png`` (the paper's Fig. 1f layout) in ``out``."""
    from medprobe import mcq

    files: list[Path] = []
    for d in dirs:
        for p in sorted(Path(d).rglob("mcq_summary.json")):
            summary = json.loads(p.read_text())
            tag = p.parent.name
            png = mcq.plot_by_difficulty(
                list(summary["modes"].values()), out / f"mcq_by_difficulty_{tag}.png"
            )
            md = out / f"mcq_{tag}.md"
            text = mcq.report_markdown(summary).replace("(mcq_by_difficulty.png)", f"({png.name})")
            md.write_text(text)
            files += [md, png]
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe report DIR [...] --out OUT``: tables and figures; returns 0.

    Raises:
        ResultsError: no results under the folders, or one that cannot be read.
        ComparisonError: runs of one task that cannot be paired.
        ConfigError: bad arguments (``medprobe report --help``).
    """
    from medprobe.cli.common import ArgumentParser, folder
    from medprobe.compare import check_boot_args, format_comparison
    from medprobe.config import TaskMetric

    ap = ArgumentParser(
        prog="medprobe report",
        description="Tables and figures from medprobe run/sweep directories (offline).",
    )
    ap.add_argument("dirs", nargs="+", type=Path,
                    help="required: one or more run or sweep folders")  # fmt: skip
    ap.add_argument("--out", type=folder, required=True, help="required: the report folder")
    ap.add_argument("--metric", default=None, choices=[m.value for m in TaskMetric],
                    help="figure metric (default: each task's primary metric)")  # fmt: skip
    ap.add_argument("--n-boot", type=int, default=None, help="replicates of the comparisons")
    ap.add_argument("--adjust", choices=("holm", "bh"), default="holm",
                    help="multiplicity adjustment of the comparisons: holm (default) or bh")  # fmt: skip
    ap.add_argument("--paper", choices=("auto", "always", "never"), default="auto",
                    help="set the paper's reported values beside ours: auto (default: runs "
                         "made with experiment=fig* or fidelity=paper), always (every run of a "
                         "paper task and model), never")  # fmt: skip
    args = ap.parse_args(argv)
    check_boot_args("medprobe report", args.n_boot)
    rep = make_report(args.dirs, args.out, metric=args.metric, n_boot=args.n_boot,
                      adjust=args.adjust, paper=args.paper)  # fmt: skip
    print(f"{len(rep['results'])} run(s) read")
    for w in rep["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if rep["comparisons"]:
        print(format_comparison(rep["comparisons"]))
    for p in rep["paper"]:
        print(f"{p['task']} {p['model']} L{p['layer']} {p['metric']}: ours {p['value']:.4f} "
              f"[{p['ci_low']:.4f}, {p['ci_high']:.4f}], paper {p['paper_value']:.3f} "
              f"({p['figure']})")  # fmt: skip
    for k in rep["retained"]:
        print(f"{k['task']} {k['model']} L{k['layer']} {k['metric']}: "
              f"{100 * k['retained']:.1f}% retained at train_fraction {k['fraction']:g} "
              f"(mean {k['value_at_fraction']:.4f} / {k['value_at_full']:.4f})")  # fmt: skip
    for p in rep["files"]:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    from medprobe.cli import main as cli_main

    cli_main(["report", *sys.argv[1:]])
