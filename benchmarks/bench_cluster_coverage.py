"""Coverage of image-level vs patient-level bootstrap CIs when images of a patient correlate.

Issue 13, item 1. Simulation: ``--patients`` patients, each with 1 to 4 images (drawn once),
one label per patient (positive with probability 0.4). Image score
``s = d * (label - 1/2) + u_patient + e_image`` with a patient random effect
``u ~ N(0, icc)`` and image noise ``e ~ N(0, 1 - icc)`` (total variance 1, intra-class
correlation ``icc``); the probe's probability is ``expit(s)``. Each image's score is
marginally normal with variance 1, so the estimands are known exactly:
``AUROC = Phi(d / sqrt(2))`` (positive-negative pairs always come from different patients)
and ``accuracy = Phi(d / 2)`` (threshold at ``s = 0``).

For ``--sims`` simulated test sets per scenario, every interval is computed on the same
stratified resample counts (drawn once per scenario: they do not depend on the scores):
image-level counts (:func:`medprobe.stats.bootstrap_counts` without ``groups``) and
patient-level counts (``groups`` = patient ids). Prints the coverage of the 95% percentile
intervals of AUROC and accuracy, the DeLong-logit AUROC interval with images vs patients as
units, and how much narrower the image-level intervals are. A scenario with ``icc = 0``
(independent images) is the control: there both units should cover about 95%.

Run: ``python benchmarks/bench_cluster_coverage.py [--sims 1000] [--patients 100]
[--n-boot 1000] [--icc 0.5]``. Prints, never asserts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special
from scipy import stats as sps

if __package__ in (None, ""):  # run as a script from anywhere: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medprobe.stats import (  # noqa: E402
    binary_auroc_interval,
    bootstrap_auroc,
    bootstrap_counts,
    bootstrap_seed,
)

UNITS = ("image", "patient")


def design(patients: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y, groups)``: one label per patient repeated over its 1-4 images."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=patients)
    labels = (rng.random(patients) < 0.4).astype(np.int64)
    labels[:2] = (0, 1)  # both classes present
    groups = np.repeat(np.arange(patients), sizes)
    return labels[groups], groups


def scenario(
    icc: float, *, d: float, patients: int, sims: int, n_boot: int, ci: float, seed: int
) -> dict[str, float]:
    """Coverage and mean width per unit and metric for one intra-class correlation."""
    y, groups = design(patients, seed)
    rng = np.random.default_rng(seed + 1)
    true_auc = float(sps.norm.cdf(d / math.sqrt(2.0)))
    true_acc = float(sps.norm.cdf(d / 2.0))
    boot_seed = bootstrap_seed("cluster-coverage", seed)
    counts = {
        "image": bootstrap_counts(y, n_boot, boot_seed, stratify=True),
        "patient": bootstrap_counts(y, n_boot, boot_seed, stratify=True, groups=groups),
    }
    totals = {u: c.sum(axis=1).astype(np.float64) for u, c in counts.items()}
    q = [100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0]
    acc_hits = dict.fromkeys(UNITS, 0)
    auc_hits = dict.fromkeys(UNITS, 0)
    dl_hits = dict.fromkeys(UNITS, 0)
    acc_w: dict[str, list[float]] = {u: [] for u in UNITS}
    auc_w: dict[str, list[float]] = {u: [] for u in UNITS}
    dl_w: dict[str, list[float]] = {u: [] for u in UNITS}
    for _ in range(sims):
        u = rng.normal(scale=math.sqrt(icc), size=patients)[groups]
        s = d * (y - 0.5) + u + rng.normal(scale=math.sqrt(1.0 - icc), size=y.size)
        proba = special.expit(s)
        correct = ((proba >= 0.5) == (y == 1)).astype(np.float64)
        for unit in UNITS:
            c = counts[unit]
            reps = bootstrap_auroc(y, proba, c)[:, 0]
            lo, hi = np.nanpercentile(reps, q)
            auc_hits[unit] += lo <= true_auc <= hi
            auc_w[unit].append(hi - lo)
            acc = (c @ correct) / totals[unit]
            lo, hi = np.percentile(acc, q)
            acc_hits[unit] += lo <= true_acc <= hi
            acc_w[unit].append(hi - lo)
            g = groups if unit == "patient" else None
            lo, hi, _ = binary_auroc_interval(
                y, proba, reps, method="delong_logit", ci=ci, groups=g
            )
            dl_hits[unit] += lo <= true_auc <= hi
            dl_w[unit].append(hi - lo)
    out: dict[str, float] = {"icc": icc, "true_auroc": true_auc, "true_accuracy": true_acc}
    for unit in UNITS:
        out[f"auroc_{unit}"] = auc_hits[unit] / sims
        out[f"accuracy_{unit}"] = acc_hits[unit] / sims
        out[f"delong_{unit}"] = dl_hits[unit] / sims
        out[f"auroc_width_{unit}"] = float(np.mean(auc_w[unit]))
        out[f"accuracy_width_{unit}"] = float(np.mean(acc_w[unit]))
        out[f"delong_width_{unit}"] = float(np.mean(dl_w[unit]))
    out["images"] = int(y.size)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run both scenarios and print the coverage table.

    Returns:
        ``{"ratios": {"cluster_coverage_image", "cluster_coverage_patient",
        "cluster_image_width_ratio"}, "scenarios": [...], ...}``: the coverages of the 95%
        percentile AUROC interval at ``--icc`` and the image / patient width ratio (below 1:
        image-level intervals are too narrow).
    """
    ap = argparse.ArgumentParser(description="Image- vs patient-level bootstrap CI coverage.")
    ap.add_argument("--sims", type=int, default=1000, help="simulated test sets per scenario")
    ap.add_argument("--patients", type=int, default=100, help="patients per test set")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--icc", type=float, default=0.5, help="intra-patient correlation")
    ap.add_argument("--d", type=float, default=1.5, help="class separation of the scores")
    ap.add_argument("--ci", type=float, default=0.95)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rows = [
        scenario(
            icc,
            d=args.d,
            patients=args.patients,
            sims=args.sims,
            n_boot=args.n_boot,
            ci=args.ci,
            seed=7 + i,
        )
        for i, icc in enumerate((0.0, args.icc))
    ]
    seconds = time.perf_counter() - t0
    mc_se = math.sqrt(args.ci * (1 - args.ci) / args.sims)
    print(
        f"{args.patients} patients with 1-4 images ({rows[-1]['images']} images), "
        f"{args.sims} simulations, n_boot={args.n_boot}; nominal {args.ci:.2f} "
        f"(Monte Carlo SE ~{mc_se:.3f})"
    )
    print(
        f"{'ICC':>5}  {'interval':<26}{'image-level':>12}{'patient-level':>15}{'width ratio':>13}"
    )
    for r in rows:
        for key, label in (
            ("auroc", "AUROC percentile"),
            ("accuracy", "accuracy percentile"),
            ("delong", "AUROC DeLong logit"),
        ):
            ratio = r[f"{key}_width_image"] / r[f"{key}_width_patient"]
            print(
                f"{r['icc']:>5.2f}  {label:<26}{r[f'{key}_image']:>12.3f}"
                f"{r[f'{key}_patient']:>15.3f}{ratio:>13.2f}"
            )
    print("width ratio = mean width image-level / patient-level (< 1: image-level too narrow)")
    print(f"({seconds:.0f} s)")
    clustered = rows[-1]
    return {
        "ratios": {
            "cluster_coverage_image": clustered["auroc_image"],
            "cluster_coverage_patient": clustered["auroc_patient"],
            "cluster_image_width_ratio": clustered["auroc_width_image"]
            / clustered["auroc_width_patient"],
        },
        "scenarios": rows,
        "sims": args.sims,
        "patients": args.patients,
        "n_boot": args.n_boot,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
