"""Complete :class:`medprobe.results.Results` objects for tests that need results files
without running a job (compare, report, tracking, console table)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from medprobe.results import (
    Bootstrap,
    CacheInfo,
    Counts,
    Metrics,
    MetricSummary,
    ProbeInfo,
    Results,
)


def metric(value: float, sd: float = 0.01, ci_low: float | None = None,
           ci_high: float | None = None, n: int = 1000) -> MetricSummary:  # fmt: skip
    """A summary with ``mean == value`` and CI ``value -+ 2 sd`` unless given."""
    lo = value - 2 * sd if ci_low is None else ci_low
    hi = value + 2 * sd if ci_high is None else ci_high
    return MetricSummary(value=value, mean=value, sd=sd, ci_low=lo, ci_high=hi, n_replicates=n)


def make_results(
    *,
    task: str = "toy",
    model: str = "m",
    layer: int | str = 1,
    train_fraction: float = 1.0,
    seed: int = 0,
    classes: Sequence[str] = ("a", "b", "c"),
    multilabel: bool = False,
    metrics: dict[str, MetricSummary] | None = None,
    absent_classes: Sequence[str] = (),
    bootstrap_n: int = 300,
    val_score: float = 0.9,
    **changes: Any,
) -> Results:
    """A complete version-2 results object; ``changes`` replace any other field.

    Kinds default to the identities; metrics default to ``auroc_macro``, ``f1_macro`` and
    ``accuracy`` of 0.8 (SD 0.01) and ``auroc/<class>`` of 0.8 for every class.
    """
    if metrics is None:
        metrics = {"auroc_macro": metric(0.8)}
        metrics |= {f"auroc/{c}": metric(0.8) for c in classes}
        metrics |= {"f1_macro": metric(0.8), "accuracy": metric(0.8)}
    res = Results(
        task=task,
        task_kind=task,
        model=model,
        model_kind=model,
        model_id=model,
        layer=layer,
        train_fraction=train_fraction,
        seed=seed,
        primary_metric="auroc_macro",
        metrics=Metrics(dict(metrics), list(absent_classes)),
        bootstrap=Bootstrap(n=bootstrap_n, ci=0.95, seeded_by=[task, "test", seed]),
        probe=ProbeInfo(
            name="logistic",
            backend="sklearn",
            C=0.01,
            val_score=val_score,
            selection_metric="auroc_macro",
            selection=[{"C": 0.01, "score": val_score}],
            converged=True,
            validation_rows="task val split",
        ),  # fmt: skip
        counts=Counts(
            fit=60,
            val=15,
            test=30,
            per_split={"test": {c: 10 for c in classes}},
            skipped_images=0,
            feature_dim=8,
            constant_features=False,
        ),  # fmt: skip
        classes=list(classes),
        multilabel=multilabel,
        task_info={},
        cache=CacheInfo(
            cache_key="0" * 64,
            cache_dir="/tmp/cache",
            cache_hit=True,
            skipped_images=[],
            extract_seconds=0.0,
        ),  # fmt: skip
        extractor={"extractor": model},
        extractor_load=None,
        prompt=None,
        config={"probe": {"name": "logistic"}},
        versions={"medprobe": "test"},
        output_dir="",
        overrides=[],
        notes=[],
        timings_s={},
    )
    return replace(res, **changes)
