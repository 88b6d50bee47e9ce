"""Coverage of AUROC confidence intervals with few positives, by simulation (issue 13, item 3).

Binormal model with a known true AUROC: negatives ``N(0, 1)``, positives ``N(d, 1)`` with
``d = sqrt(2) * Phi^-1(AUROC)`` (so ``P(pos > neg) = AUROC`` exactly). For every cell of
positives (5, 10, 20, 50) x true AUROC (0.70, 0.85, 0.95), ``--sims`` test sets of
``positives + --negatives`` examples are drawn; each gets a 95% interval from every method of
:func:`medprobe.stats.binary_auroc_interval` (the per-class arithmetic of
``stats.evaluate(auroc_ci=...)``) on the same stratified bootstrap replicates. The table
prints the fraction of intervals that contain the true AUROC (nominal 0.95), and the mean
width; the Monte Carlo standard error of a coverage near 0.95 is about
``sqrt(0.95 * 0.05 / sims)`` (0.007 at 1000 simulations).

Run: ``python benchmarks/bench_auroc_ci_coverage.py [--sims 1000] [--n-boot 1000]
[--negatives 100]``. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

if __package__ in (None, ""):  # run as a script from anywhere: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe.auroc_ci import AUROC_CI_METHODS  # noqa: E402
from medprobe.stats import (  # noqa: E402
    binary_auroc_interval,
    bootstrap_auroc,
    bootstrap_counts,
    bootstrap_seed,
)

POSITIVES = (5, 10, 20, 50)
AUROCS = (0.70, 0.85, 0.95)


def simulate_cell(
    n_pos: int, auroc: float, *, n_neg: int, sims: int, n_boot: int, ci: float, seed: int
) -> dict[str, dict[str, float]]:
    """Coverage, mean width and the rate of degenerate ``[1, 1]`` intervals per method."""
    rng = np.random.default_rng(seed)
    d = math.sqrt(2.0) * float(sps.norm.ppf(auroc))
    y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
    hits = dict.fromkeys(AUROC_CI_METHODS, 0)
    widths: dict[str, list[float]] = {m: [] for m in AUROC_CI_METHODS}
    stuck = dict.fromkeys(AUROC_CI_METHODS, 0)
    # One set of stratified resample counts per cell, reused for every simulated test set:
    # the counts do not depend on the scores, and every test set is drawn afresh, so each
    # interval is the one evaluate() would give; drawing counts per set is 50x slower.
    counts = bootstrap_counts(y, n_boot, bootstrap_seed("coverage", n_pos, seed), stratify=True)
    for _ in range(sims):
        s = rng.normal(size=y.size) + d * y
        reps = bootstrap_auroc(y, s, counts)[:, 0]
        for m in AUROC_CI_METHODS:
            lo, hi, _ = binary_auroc_interval(y, s, reps, method=m, ci=ci)
            hits[m] += lo <= auroc <= hi
            widths[m].append(hi - lo)
            stuck[m] += hi - lo == 0.0
    return {
        m: {
            "coverage": hits[m] / sims,
            "width": float(np.mean(widths[m])),
            "degenerate": stuck[m] / sims,
        }
        for m in AUROC_CI_METHODS
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the simulation and print the coverage table.

    Returns:
        ``{"ratios": {...}, "table": [{"positives", "auroc", "<method>": {"coverage",
        "width", "degenerate"}}], "sims", "n_boot", "negatives", "seconds"}``. Ratios:
        ``auroc_ci_coverage_5pos_<method>`` (mean coverage over the three AUROCs at 5
        positives) and ``auroc_ci_worst_coverage_<method>`` (the worst cell).
    """
    ap = argparse.ArgumentParser(description="Coverage of AUROC CIs with few positives.")
    ap.add_argument("--sims", type=int, default=1000, help="simulated test sets per cell")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--negatives", type=int, default=100, help="negatives per test set")
    ap.add_argument("--ci", type=float, default=0.95)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    table = []
    for i, n_pos in enumerate(POSITIVES):
        for j, auc in enumerate(AUROCS):
            cell = simulate_cell(
                n_pos,
                auc,
                n_neg=args.negatives,
                sims=args.sims,
                n_boot=args.n_boot,
                ci=args.ci,
                seed=1000 * i + j,
            )
            table.append({"positives": n_pos, "auroc": auc, **cell})
    seconds = time.perf_counter() - t0

    mc_se = math.sqrt(args.ci * (1 - args.ci) / args.sims)
    print(
        f"binormal, {args.negatives} negatives, {args.sims} simulations per cell, "
        f"n_boot={args.n_boot}; nominal {args.ci:.2f} (Monte Carlo SE ~{mc_se:.3f})"
    )
    head = "".join(f"{m:>21}" for m in AUROC_CI_METHODS)
    print(f"{'positives':>9} {'AUROC':>6}   coverage{head}")
    for row in table:
        cov = "".join(f"{row[m]['coverage']:>21.3f}" for m in AUROC_CI_METHODS)
        print(f"{row['positives']:>9} {row['auroc']:>6.2f}           {cov}")
    print(f"{'':>9} {'':>6}   mean width{head}")
    for row in table:
        wid = "".join(f"{row[m]['width']:>21.3f}" for m in AUROC_CI_METHODS)
        print(f"{row['positives']:>9} {row['auroc']:>6.2f}           {wid}")
    print(f"{'':>9} {'':>6}   share of [A, A] intervals (zero width){head}")
    for row in table:
        deg = "".join(f"{row[m]['degenerate']:>21.3f}" for m in AUROC_CI_METHODS)
        print(f"{row['positives']:>9} {row['auroc']:>6.2f}           {deg}")
    print(f"({seconds:.0f} s)")

    ratios: dict[str, float] = {}
    for m in AUROC_CI_METHODS:
        five = [r[m]["coverage"] for r in table if r["positives"] == 5]
        ratios[f"auroc_ci_coverage_5pos_{m}"] = float(np.mean(five))
        ratios[f"auroc_ci_worst_coverage_{m}"] = float(min(r[m]["coverage"] for r in table))
    return {
        "ratios": ratios,
        "table": table,
        "sims": args.sims,
        "n_boot": args.n_boot,
        "negatives": args.negatives,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
