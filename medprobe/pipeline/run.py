"""``run(cfg)``: one probing job, top to bottom.

``python -m medprobe task=t5 model=idefics80b`` reaches :func:`run` through
:mod:`medprobe.cli.run` (Hydra composes the config and names the output folder). From there:

1. :func:`medprobe.pipeline.job.build_job` — the typed config, the task's manifest
   (``TASKS[task.kind]``), the extractor (``EXTRACTORS[model.kind]``), the cached and probed
   layers, the split checks and the output folder; nothing is loaded yet.
2. :func:`medprobe.pipeline.features.ensure_features` — the cache entry for these images and
   this extractor: reused, or extracted under its lock (scan, shard over data-parallel
   processes, write, finalise) in one forward pass for every cached layer.
3. :func:`medprobe.pipeline.probing.probe_layer` — per probed layer: fit on train, C on
   validation, test once, bootstrap SD and CI.
4. :mod:`medprobe.results` — ``results.json`` + ``predictions.csv`` per layer (``layer=all``:
   ``layer_<L>/`` each, and ``layers.json``), the console table.
5. :mod:`medprobe.tracking` — the W&B run (a no-op sink for ``tracker=none``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import DictConfig

from medprobe import tracking
from medprobe.config import Config
from medprobe.hashing import file_sha256
from medprobe.pipeline.features import Features, ensure_features
from medprobe.pipeline.job import Job, build_job
from medprobe.pipeline.probing import LayerOutcome, probe_layer
from medprobe.results import (
    RESULTS_FILE,
    CacheInfo,
    LayerCurve,
    Results,
    format_layer_curve,
    format_table,
    layer_curve,
    write_layer_curve,
    write_predictions,
    write_results,
)


@dataclass
class RunOutcome:
    """What :func:`run` returns, whatever was asked.

    Attributes:
        out_dir: the job's output folder.
        results: one :class:`~medprobe.results.Results` per probed layer (empty in processes
            1.. of a data-parallel launch, which only extract).
        curve: the layer curve of a ``layer=all`` job, else None.
    """

    out_dir: Path
    results: list[Results] = field(default_factory=list)
    curve: LayerCurve | None = None

    @property
    def result(self) -> Results:
        """The single result of a one-layer job."""
        if len(self.results) != 1:
            raise ValueError(f"this job has {len(self.results)} results, not one")
        return self.results[0]


def run(cfg: DictConfig | Config) -> RunOutcome:
    """Run one probing job: build it, ensure its features, probe, write, track.

    Args:
        cfg: the composed config (``conf/config.yaml``; typed once here) or a typed one.

    Raises:
        medprobe.errors.MedprobeError: every user mistake (bad config or task files, unreadable
            images, a layer the model lacks, a split without the needed classes, ...).
    """
    job = build_job(cfg)  # claims the output folder for this job (released at the end)
    with job:
        feats = ensure_features(job)
        if feats is None:  # processes 1.. of a data-parallel launch: their rows are written
            return RunOutcome(job.out_dir)
        write_splits(job, feats)
        outcomes = [probe_layer(job, feats, layer) for layer in job.probe_layers]
        outcome = write(job, outcomes)
        return track(job, outcome)


def write_splits(job: Job, feats: Features) -> None:
    """``splits.csv`` in the job's folder: each row's id, split, patient id and what the probe
    used it for (fit / val / test / unused); its digest is ``data.split_sha256`` in
    results.json (:func:`medprobe.data.check.split_digest`)."""
    from medprobe.data.check import SPLITS_FILE, write_splits_csv
    from medprobe.pipeline.rows import probe_rows

    cfg, m = job.cfg, feats.manifest
    rows = probe_rows(m, cfg.probe.val_fraction, cfg.train_fraction, cfg.seed,
                      fraction_of=str(cfg.probe.fraction_of))  # fmt: skip
    write_splits_csv(m, job.out_dir / SPLITS_FILE, {"fit": rows.fit, "val": rows.val,
                                                    "test": rows.test})  # fmt: skip


def write(job: Job, outcomes: list[LayerOutcome]) -> RunOutcome:
    """Write each layer's predictions.csv and results.json, print the table(s)."""
    results = []
    for o in outcomes:
        out = job.layer_dir(o.results.layer)
        digest = file_sha256(write_predictions(out, o.predictions))
        res = replace(o.results, predictions_sha256=digest, job_key=job.key)
        write_results(out, res)  # after the predictions: results.json names their digest
        results.append(res)
        if not job.all_layers:
            print(format_table(res), flush=True)
    curve = None
    if job.all_layers:
        curve = replace(layer_curve(results, str(job.cfg.task.metric)), job_key=job.key)
        write_layer_curve(job.out_dir, curve)
        print(format_layer_curve(curve), flush=True)
    print(features_line(results[0].cache), flush=True)
    where = job.out_dir / ("layers.json" if job.all_layers else RESULTS_FILE)
    print(f"results: {where}", flush=True)
    return RunOutcome(job.out_dir, results, curve)


def features_line(cache: CacheInfo) -> str:
    """``features: cache hit (key ... in ...)``, ``features: extracted (key ...)``, or with rows
    reused from other entries ``features: extracted 2 new, reused 98 from <key> (key ...)``."""
    where = f"(key {cache.cache_key[:12]} in {cache.cache_dir})"
    if cache.cache_hit:
        return f"features: cache hit {where}"
    if not cache.reused_rows or not cache.reused_from:
        return f"features: extracted {where}"
    src = cache.reused_from
    sources = (
        src[0]["key"][:12]
        if len(src) == 1
        else ", ".join(f"{s['key'][:12]} ({s['rows']})" for s in src)
    )
    return (
        f"features: extracted {cache.extracted_rows or 0} new, reused {cache.reused_rows} "
        f"from {sources} {where}"
    )


def track(job: Job, outcome: RunOutcome) -> RunOutcome:
    """Log the job to W&B: one run per job (``layer=all``: one run for the curve). The group
    is ``tracker.group``, else the sweep folder's name. A tracker failure never raises: it is
    recorded in results.json and the results on disk stand."""
    settings, sweep = job.cfg.tracker, job.cfg.sweep_group
    if outcome.curve is not None:
        info = tracking.log_layer_curve(settings, outcome.curve, job.out_dir, sweep)
        if info is not None:
            outcome.curve = replace(outcome.curve, tracker=info)
            write_layer_curve(job.out_dir, outcome.curve)
        return outcome
    res = outcome.result
    info = tracking.log_run(settings, res, job.out_dir, sweep)
    if info is not None and (info.note or info.error):
        print(f"note: {info.note or 'W&B logging failed: ' + str(info.error)}", flush=True)
    if info is not None:
        outcome.results = [replace(res, tracker=info)]
        write_results(job.out_dir, outcome.results[0])
    return outcome
