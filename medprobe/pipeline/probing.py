"""Probe one cached layer: fit on train, choose C on validation, score test, bootstrap."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace

import numpy as np

from medprobe.config.schema import Config, ProbeConfig, SelectionMetric
from medprobe.extractors.base import LayerId
from medprobe.pipeline.features import Features
from medprobe.pipeline.job import Job, config_dict
from medprobe.pipeline.rows import bootstrap_groups, probe_rows
from medprobe.registry import PROBES
from medprobe.results import (
    Bootstrap,
    CacheInfo,
    Counts,
    Metrics,
    Predictions,
    ProbeInfo,
    Results,
    run_notes,
)


@dataclass
class LayerOutcome:
    """What probing one layer produced: the results and the test predictions behind them."""

    results: Results
    predictions: Predictions


def probe_layer(job: Job, feats: Features, layer: LayerId) -> LayerOutcome:
    """Fit the probe on ``layer``'s features and evaluate it on the test rows.

    The probe (``probe.*``; :mod:`medprobe.probe`) is fitted on the fit rows, C chosen on the
    validation rows by ``probe.selection_metric`` (null: the task's primary metric,
    ``task.metric``; the resolved one is recorded); the test rows are scored once. The rows
    follow the label budget (``train_fraction`` of the labelled pool or of the fit rows,
    ``probe.fraction_of``; :func:`medprobe.pipeline.rows.probe_rows`). Metrics with bootstrap
    SD and CI come from :func:`medprobe.stats.evaluate`, replicates seeded by (task, "test",
    seed) so that two models on the same test set are paired; the resampling unit is
    ``bootstrap.unit`` (auto: patients where the task has patient ids), the AUROC interval
    ``bootstrap.auroc_ci``.

    Raises:
        medprobe.errors.ConfigError: a split on which the metrics would be made up.
        medprobe.errors.CacheError: the layer's cached rows hold NaN/inf (layer and ids named).
        medprobe.errors.ProbeError: the probe cannot be fitted on these rows.
    """
    from medprobe import stats

    cfg, m = job.cfg, feats.manifest
    t0 = time.perf_counter()
    fraction_of = str(cfg.probe.fraction_of)
    rows = probe_rows(m, cfg.probe.val_fraction, cfg.train_fraction, cfg.seed,
                      fraction_of=fraction_of)  # fmt: skip
    groups = bootstrap_groups(m, str(cfg.bootstrap.unit))
    feats.cache.check_finite(feats.key, layer, np.concatenate([rows.fit, rows.val, rows.test]))
    X = feats.layer(layer)
    probe_cfg = resolved_probe_config(cfg)
    probe = PROBES.get(cfg.probe.name)(
        probe_cfg, n_classes=len(m.classes), multilabel=m.multilabel, seed=cfg.seed,
        progress=cfg.progress,
    )  # fmt: skip
    probe.fit(X[rows.fit], m.labels[rows.fit], X[rows.val], m.labels[rows.val])
    proba = probe.predict_proba(X[rows.test])
    t_probe = time.perf_counter() - t0

    t0 = time.perf_counter()
    seeded_by: list[str | int] = [m.task, "test", cfg.seed]
    metrics = stats.evaluate(
        m.labels[rows.test],
        proba,
        m.classes,
        multilabel=m.multilabel,
        n_boot=cfg.bootstrap.n,
        seed=stats.bootstrap_seed(*seeded_by),
        ci=cfg.bootstrap.ci,
        progress=cfg.progress,
        groups=None if groups is None else groups[rows.test],
        auroc_ci=str(cfg.bootstrap.auroc_ci),
    )
    t_boot = time.perf_counter() - t0

    test = rows.test
    predictions = Predictions([m.ids[r] for r in test], [str(m.split[r]) for r in test],
                              m.labels[test], proba, list(m.classes), m.multilabel,
                              None if groups is None else [str(g) for g in groups[test]])  # fmt: skip
    spec = feats.info["spec"]
    config = config_dict(cfg)
    config["layer"] = layer  # resolved: what this result probed (-1 and all are not layers)
    config["probe"]["selection_metric"] = str(probe_cfg.selection_metric)  # resolved
    res = Results(
        task=cfg.task.name,
        task_kind=cfg.task.kind,
        model=cfg.model.name,
        model_kind=cfg.model.kind,
        model_id=cfg.model.hf_id or cfg.model.name,
        layer=layer,
        train_fraction=cfg.train_fraction,
        seed=cfg.seed,
        primary_metric=str(cfg.task.metric),
        metrics=Metrics.from_json(metrics),
        bootstrap=Bootstrap(n=cfg.bootstrap.n, ci=cfg.bootstrap.ci, seeded_by=seeded_by),
        probe=ProbeInfo(
            name=cfg.probe.name,
            backend=str(cfg.probe.backend),
            C=probe.C_,
            val_score=probe.val_score_,
            selection_metric=str(probe_cfg.selection_metric),
            selection=probe.selection_,
            converged=probe.converged_,
            validation_rows=rows.val_source,
        ),
        counts=Counts(
            fit=len(rows.fit),
            val=len(rows.val),
            test=len(test),
            per_split=m.counts(),
            skipped_images=len(feats.info["skipped_images"]),
            feature_dim=int(X.shape[1]),
            constant_features=bool(np.ptp(X[rows.fit], axis=0).max() == 0),
            labelled=len(rows.fit) + len(rows.val),
            fraction_of=fraction_of,
        ),
        classes=list(m.classes),
        multilabel=m.multilabel,
        task_info=m.info,
        cache=CacheInfo.from_json(feats.info),
        extractor=spec["extractor"],
        # optional hook: what the extractor loaded (IDEFICS: parameters, kept depth, devices)
        extractor_load=job.extractor.load_info() if hasattr(job.extractor, "load_info") else None,
        # the prompt text; None for vision-only models, which ignore cfg.prompt (the exact
        # string a language model read is in the extractor fingerprint: rendered_prompt)
        prompt=cfg.prompt.text if "rendered_prompt" in spec["extractor"] else None,
        config=config,
        versions=versions(),
        output_dir=str(job.layer_dir(layer)),
        overrides=list(cfg.overrides),
        notes=[],
        timings_s={},
        data=data_section(job, feats),
    )
    timings = {**job.timings, "probe": t_probe, "bootstrap": t_boot,
               "total": time.perf_counter() - job.started}  # fmt: skip
    res = replace(res, notes=run_notes(res, m.labels[test]),
                  timings_s={k: round(v, 3) for k, v in timings.items()})  # fmt: skip
    return LayerOutcome(res, predictions)


def data_section(job: Job, feats: Features) -> dict[str, object]:
    """results.json ``data``: the job's data check (:func:`medprobe.data.check.summary`), its
    image part completed by the features stage: the images were loaded then (or when the
    cache entry was written), and the unreadable ones left out under ``data.on_error=skip``."""
    data = dict(job.data)
    skipped = [[str(p), str(r)] for p, r in feats.info["skipped_images"]]
    data["bad_images"] = {**data["bad_images"], "scanned": True, "n": len(skipped),
                          "files": skipped}  # fmt: skip
    data["splits_file"] = "splits.csv"
    return data


def resolved_probe_config(cfg: Config) -> ProbeConfig:
    """``cfg.probe`` with ``selection_metric`` resolved: null means the task's primary metric
    (``task.metric``: macro F1 for T1/T2, macro AUROC elsewhere), so C is chosen by the
    metric the task reports (issue 13, item 5)."""
    chosen = cfg.probe.selection_metric
    if chosen is None:
        chosen = SelectionMetric(str(cfg.task.metric))
    return replace(cfg.probe, selection_metric=chosen)


#: Installed packages whose version results.json records (``None`` when not installed).
RECORDED_PACKAGES = ("transformers", "tokenizers", "accelerate", "bitsandbytes")


def versions() -> dict[str, str | None]:
    """Versions of what computed the numbers (results.json ``versions``): medprobe, python,
    torch, scikit-learn, numpy and :data:`RECORDED_PACKAGES` (installed distribution versions,
    read from package metadata without importing them; ``None`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    import sklearn
    import torch

    from medprobe import __version__

    out: dict[str, str | None] = {
        "medprobe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
    for pkg in RECORDED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
