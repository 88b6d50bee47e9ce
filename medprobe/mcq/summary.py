"""Metrics of one mode's records, the by-difficulty figure and the markdown report.

Accuracy with a percentile bootstrap CI, accuracy by difficulty (readers' share correct in
five equal-width bins) against chance, unparsed rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.mcq.protocol import DIFFICULTY_EDGES, N_OPTIONS, SAMPLING
from medprobe.stats import bootstrap_counts, bootstrap_seed


def difficulty_bin(share: float | None) -> int | None:
    """Readers' share correct -> bin 0 (0-20 %, hardest) .. 4 (80-100 %); ``None`` stays."""
    if share is None:
        return None
    return min(int(share * 5), 4)


def chance_level(mode: str) -> float:
    """Accuracy of uniform guessing: 0.2 for one answer of five; for ``sample`` (correct if
    any of three independent uniform guesses is right) ``1 - 0.8 ** 3`` = 0.488."""
    return 1.0 - (1.0 - 1.0 / N_OPTIONS) ** SAMPLING["num_samples"] if mode == "sample" else 0.2


def _acc_ci(correct: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    n = int(correct.size)
    if n == 0:
        return {"n": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    counts = bootstrap_counts(correct, n_boot, seed, stratify=False)
    reps = counts @ correct.astype(np.float64) / n
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {
        "n": n,
        "n_correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def summarize(
    records: Sequence[dict[str, Any]], mode: str, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """One mode's records -> metrics.

    Returns:
        ``mode``, ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high`` (95 % percentile
        bootstrap over cases, ``n_boot`` replicates; Efron & Tibshirani 1993 ch. 13; the
        replicates depend on the case ids and ``seed``, never on the model, so two models on
        the same cases are paired), ``chance`` (:func:`chance_level`), ``unparsed_rate``
        (share of cases with no parsed answer) and ``unparsed_output_rate`` (share of
        generated outputs unparsed), ``n_no_difficulty`` (cases without ``readers_correct``)
        and ``by_difficulty``: five rows ``bin``, ``label`` (``"0-20%"`` ...), ``low``,
        ``high``, ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high``, ``p_vs_chance``
        (one-sided exact binomial test of accuracy > chance; ``None`` for an empty bin).
        For ``loglik`` records that carry ``logliks`` (every record): ``loglik_norm`` (the
        norm that decided ``pred``, ``"sum"`` when the records do not say) and
        ``by_loglik_norm``: ``{"sum": ..., "mean": ...}``, each ``n``, ``n_correct``,
        ``accuracy``, ``ci_low``, ``ci_high`` of the argmax of that norm (same bootstrap
        replicates as the main accuracy, so the two are paired).
    """
    from scipy.stats import binomtest

    recs = sorted(records, key=lambda r: r["id"])
    ids = ",".join(r["id"] for r in recs)
    correct = np.array([bool(r["correct"]) for r in recs], dtype=bool)
    s = bootstrap_seed("mcq", hashlib.sha256(ids.encode()).hexdigest(), seed)
    out: dict[str, Any] = {"mode": mode, **_acc_ci(correct, n_boot, s)}
    chance = chance_level(mode)
    out["chance"] = chance
    out["unparsed_rate"] = float(np.mean([r["unparsed"] for r in recs])) if recs else None
    outputs = [p for r in recs for p in r.get("parsed", [])]
    out["unparsed_output_rate"] = (
        float(np.mean([p is None for p in outputs])) if outputs else (0.0 if recs else None)
    )
    if mode == "loglik" and recs and all("logliks" in r for r in recs):
        out["loglik_norm"] = recs[0].get("loglik_norm", "sum")
        out["by_loglik_norm"] = {}
        for norm in ("sum", "mean"):
            ok = np.array(
                [
                    int(np.argmax([x[norm] for x in r["logliks"]])) == r["answer"]  # ties: lowest
                    for r in recs
                ],
                dtype=bool,
            )
            out["by_loglik_norm"][norm] = _acc_ci(ok, n_boot, s)
    bins = [difficulty_bin(r["readers_correct"]) for r in recs]
    out["n_no_difficulty"] = sum(b is None for b in bins)
    rows = []
    for b in range(len(DIFFICULTY_EDGES) - 1):
        lo, hi = DIFFICULTY_EDGES[b], DIFFICULTY_EDGES[b + 1]
        sel = np.array([x == b for x in bins], dtype=bool)
        row = {
            "bin": b,
            "label": f"{round(lo * 100)}-{round(hi * 100)}%",
            "low": lo,
            "high": hi,
            **_acc_ci(correct[sel], n_boot, bootstrap_seed("mcq-bin", s, b)),
        }
        row["p_vs_chance"] = (
            float(binomtest(row["n_correct"], row["n"], chance, alternative="greater").pvalue)
            if row["n"]
            else None
        )
        rows.append(row)
    out["by_difficulty"] = rows
    return out


def plot_by_difficulty(summaries: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bar chart of accuracy by difficulty bin per mode, 95 % CI whiskers, chance lines (the
    paper's Fig. 1f layout: x = readers' share correct, hardest left). Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_modes = max(1, len(summaries))
    width = 0.8 / n_modes
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    labels = [r["label"] for r in summaries[0]["by_difficulty"]] if summaries else []
    x = np.arange(len(labels))
    for k, s in enumerate(summaries):
        rows = s["by_difficulty"]
        acc = np.array([np.nan if r["accuracy"] is None else r["accuracy"] for r in rows])
        lo = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows])
        hi = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows])
        pos = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, np.nan_to_num(acc), width, label=f"{s['mode']} (n={s['n']})")
        err = np.vstack([np.nan_to_num(acc - lo), np.nan_to_num(hi - acc)])
        ax.errorbar(pos, np.nan_to_num(acc), yerr=err, fmt="none", ecolor="black", capsize=2)
        for p, r in zip(pos, rows, strict=True):
            ax.text(p, 0.01, f"{r['n']}", ha="center", va="bottom", fontsize=7)
        ax.axhline(s["chance"], color=bars.patches[0].get_facecolor(), ls="--", lw=1)
    ax.set_xticks(x, labels)
    ax.set_xlabel("readers answering correctly (difficulty; hardest left)")
    ax.set_ylabel("model accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy by difficulty (dashed: chance; numbers: cases per bin)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def report_markdown(summary: dict[str, Any]) -> str:
    """The offline report (``mcq_report.md``): accuracy table and by-difficulty tables."""
    lines = [
        "# Multiple-choice evaluation",
        "",
        f"cases: `{summary['cases']}` ({summary['n_cases']} cases, "
        f"exemplars {summary['exemplars']}); model: `{summary['model']}`",
        "",
        "| mode | n | accuracy | 95% CI | chance | unparsed |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary["modes"].values():
        lines.append(
            f"| {s['mode']} | {s['n']} | {_fmt(s['accuracy'])} | "
            f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] | {_fmt(s['chance'])} | "
            f"{_fmt(s['unparsed_rate'])} |"
        )
    for s in summary["modes"].values():
        if "by_loglik_norm" in s:
            lines += ["", f"loglik decided by the `{s['loglik_norm']}` log-likelihood; both:", ""]
            lines += ["| loglik norm | accuracy | 95% CI |", "|---|---|---|"]
            for norm, a in s["by_loglik_norm"].items():
                lines.append(
                    f"| {norm} | {_fmt(a['accuracy'])} | [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}] |"
                )
    for s in summary["modes"].values():
        lines += [
            "",
            f"## {s['mode']}: accuracy by difficulty (readers' share correct)",
            "",
            "| readers correct | n | accuracy | 95% CI | p (> chance) |",
            "|---|---|---|---|---|",
        ]
        for r in s["by_difficulty"]:
            lines.append(
                f"| {r['label']} | {r['n']} | {_fmt(r['accuracy'])} | "
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {_fmt(r['p_vs_chance'], 4)} |"
            )
    lines += ["", "![accuracy by difficulty](mcq_by_difficulty.png)", ""]
    return "\n".join(lines)
