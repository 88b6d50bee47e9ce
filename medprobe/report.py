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
  bootstrap CI of the single run; only when there are two or more fractions.
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
    "fraction_curves",
    "layer_curves",
    "load_results",
    "make_report",
    "plot_bars",
    "plot_fractions",
    "plot_layers",
    "plot_layers_authors_order",
    "plot_per_class",
    "summary_rows",
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
        if len(pts) >= 2:
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
) -> Path:
    """Bars per model with CI error bars and pairwise significance brackets (Fig. 3-5).

    Args:
        runs: one run per bar (see :func:`bar_runs`); labelled by model identity and layer
            (:func:`bar_label`).
        comparisons: rows of :func:`medprobe.compare.compare_runs` on those runs; the rows for
            ``metric`` give the brackets (``*``: ``significant``, the adjusted p-value of the
            row's test below alpha; ``n.s.`` otherwise).
        metric: results.json metric key.
        path: PNG to write.
    """
    plt = _plt()
    vals = [r.metrics[metric] for r in runs]
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(runs), 4.2))
    err = np.array([[v.value - v.ci_low for v in vals], [v.ci_high - v.value for v in vals]])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax.bar(x, [v.value for v in vals], yerr=err, capsize=5, width=0.6,
           color=[colors[i % len(colors)] for i in range(len(runs))], edgecolor="black")  # fmt: skip
    ax.set_xticks(x, [bar_label(r) for r in runs])
    lo = min(v.ci_low for v in vals)
    top = max(v.ci_high for v in vals)
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
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
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
    pair).
    """
    plt = _plt()
    classes = list(runs[0].metrics.per_class())
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
    ax.set_xticks(x, classes, rotation=45 if len(classes) > 6 else 0, ha="right"
                  if len(classes) > 6 else "center")  # fmt: skip
    ax.set_ylim(0.0, 1.22)  # room for the marks and a one-row legend above the bars
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("AUROC (one-vs-rest)")
    ax.set_title(title or "per-class AUROC")
    ax.legend(fontsize=8, loc="upper left", ncol=len(runs))
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_layers(
    curves: dict[str, list[tuple[int, float, float, float]]], metric: str, path: Path, *,
    title: str = "",
) -> Path:  # fmt: skip
    """Metric vs layer per model, CI band (Fig. S5)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, pts in curves.items():
        a = np.array(pts, dtype=float)
        (line,) = ax.plot(a[:, 0], a[:, 1], marker="o", label=model)
        ax.fill_between(a[:, 0], a[:, 2], a[:, 3], alpha=0.2, color=line.get_color())
    ax.set_xlabel("layer")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="band: the runs' CI", title_fontsize=8)
    fig.tight_layout()
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
    title: str = "",
) -> Path:  # fmt: skip
    """Metric vs training fraction per model and layer, band over seeds (Fig. 6)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fracs = sorted({p[0] for pts in curves.values() for p in pts})
    for name, pts in curves.items():
        a = np.array(pts, dtype=float)
        seeds = int(a[:, 4].max())
        label = f"{name} (mean of {seeds} seeds)" if seeds > 1 else name
        (line,) = ax.plot(a[:, 0], a[:, 1], marker="o", label=label)
        ax.fill_between(a[:, 0], a[:, 2], a[:, 3], alpha=0.2, color=line.get_color())
    if fracs and fracs[0] < 0.1:
        ax.set_xscale("log")
    ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
    ax.set_xlabel("training fraction")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs training fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="band: ±1 SD over seeds (1 seed: the run's CI)",
              title_fontsize=8)  # fmt: skip
    fig.tight_layout()
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
) -> dict[str, Any]:
    """Tables, comparisons and figures for every run below ``dirs`` (see module docstring).

    Args:
        dirs: run or sweep directories.
        out_dir: created if needed.
        metric: metric for figures and comparisons' brackets (default: each task's
            ``primary_metric``).
        n_boot: replicates of the paired comparisons (default: each run's ``bootstrap.n``).
        adjust: multiplicity adjustment of the comparisons' p-values, ``holm`` or ``bh``
            (:func:`medprobe.compare.adjust_rows`; families per task).

    Returns:
        ``{"files": [written paths], "comparisons": [rows], "results": [Results],
        "warnings": [str]}``; a task whose bar runs are not on the same test set gets bars
        without significance marks and a warning instead of comparisons.

    Raises:
        ResultsError: no results found (and no multiple-choice summaries), or a run folder
            that cannot be read.
    """
    from medprobe.compare import ComparisonError, compare_runs, load_run, write_comparison

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcq_files = mcq_sections(dirs, out)
    try:
        results = load_results(dirs)
    except ResultsError:
        if not mcq_files:
            raise
        return {"files": mcq_files, "comparisons": [], "results": [], "warnings": []}
    files: list[Path] = mcq_files + list(write_summary(results, out))
    comparisons: list[dict[str, Any]] = []
    warnings: list[str] = []
    bars = bar_runs(results)
    for task in sorted({r.task for r in results}):
        met = metric or next(r.primary_metric for r in results if r.task == task)
        sel = bars.get(task, [])
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
                                   title=f"{task}: {met} (95% CI)"))  # fmt: skip
            if len(sel[0].metrics.per_class()) > 2:
                files.append(plot_per_class(sel, task_cmp, out / f"per_class_{task}.png",
                                            title=f"{task}: per-class AUROC (95% CI)"))  # fmt: skip
        lc = layer_curves(results, task, met)
        if lc:
            files.append(plot_layers(lc, met, out / f"layers_{task}.png",
                                     title=f"{task}: {met} vs layer"))  # fmt: skip
            depths = {r.model: d for r in results if r.task == task and r.model in lc
                      and (d := decoder_depth(r)) is not None}  # fmt: skip
            if depths:
                files.append(plot_layers_authors_order(
                    lc, depths, met, out / f"layers_authors_order_{task}.png",
                    title=f"{task}: {met} vs layer, depth order and the authors' file order"))  # fmt: skip
        fc = fraction_curves(results, task, met)
        if fc:
            files.append(plot_fractions(fc, met, out / f"fractions_{task}.png",
                                        title=f"{task}: {met} vs training fraction"))  # fmt: skip
    if comparisons:
        files += list(write_comparison(comparisons, out))
    return {"files": files, "comparisons": comparisons, "results": results, "warnings": warnings}


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
    from medprobe.cli.common import ArgumentParser
    from medprobe.compare import check_boot_args, format_comparison
    from medprobe.config import TaskMetric

    ap = ArgumentParser(
        prog="medprobe report",
        description="Tables and figures from medprobe run/sweep directories (offline).",
    )
    ap.add_argument("dirs", nargs="+", type=Path,
                    help="required: one or more run or sweep folders")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True, help="required: the report folder")
    ap.add_argument("--metric", default=None, choices=[m.value for m in TaskMetric],
                    help="figure metric (default: each task's primary metric)")  # fmt: skip
    ap.add_argument("--n-boot", type=int, default=None, help="replicates of the comparisons")
    ap.add_argument("--adjust", choices=("holm", "bh"), default="holm",
                    help="multiplicity adjustment of the comparisons: holm (default) or bh")  # fmt: skip
    args = ap.parse_args(argv)
    check_boot_args("medprobe report", args.n_boot)
    rep = make_report(args.dirs, args.out, metric=args.metric, n_boot=args.n_boot,
                      adjust=args.adjust)  # fmt: skip
    print(f"{len(rep['results'])} run(s) read")
    for w in rep["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if rep["comparisons"]:
        print(format_comparison(rep["comparisons"]))
    for p in rep["files"]:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    from medprobe.cli import main as cli_main

    cli_main(["report", *sys.argv[1:]])
