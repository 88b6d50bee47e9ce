"""``run(cfg)``: task -> images -> features (cached) -> probe -> metrics -> results on disk.

Each step is a plain function on plain data. The W&B sink consumes the finished results; a
tracker failure never loses what is on disk.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medprobe import tracking
from medprobe.config import ConfigError, validate
from medprobe.data.manifest import Manifest
from medprobe.errors import BadImagesError  # noqa: F401 (re-exported)
from medprobe.extractors.base import Extractor, resolve_layers
from medprobe.pipeline.features import _align, _placed_for_rank, features  # noqa: F401
from medprobe.registry import EXTRACTORS, PROBES, TASKS
from medprobe.results import (
    RESULTS_FILE,
    Bootstrap,
    CacheInfo,
    Counts,
    LayerCurve,
    Metrics,
    Predictions,
    ProbeInfo,
    Results,
    format_layer_curve,
    format_table,
    layer_curve,
    run_notes,
    write_layer_curve,
    write_predictions,
    write_results,
)

log = logging.getLogger("medprobe")


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def resolve_output_dir(cfg: DictConfig) -> Path:
    """Where results go.

    Inside the Hydra app: Hydra's job folder, which ``conf/config.yaml`` sets to ``output_dir``
    when given (``output_dir/<job number>`` under ``--multirun``, so sweep jobs never overwrite
    each other). Outside it (``run(cfg)`` from Python): ``cfg.output_dir``, else
    ``./outputs/<task>/<model>/<time with microseconds>``.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # HydraConfig not set: not inside a Hydra app
        pass
    if cfg.get("output_dir"):
        return Path(cfg.output_dir).expanduser()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S") + f"-{time.time_ns() // 1000 % 1_000_000:06d}"
    return Path("outputs") / cfg.task.name / cfg.model.name / stamp


def _probe_rows(cfg: DictConfig, m: Manifest) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(fit, val, test) row indices; val carved from train when the task has none."""
    from medprobe.data.splits import carve_validation, subsample_train

    train = np.flatnonzero(m.split == "train")
    test = np.flatnonzero(m.split == "test")
    val = np.flatnonzero(m.split == "val")
    if len(train) == 0 or len(test) == 0:
        raise ConfigError(f"task {m.task}: needs train and test rows (got {m.counts()})")
    if len(val):
        fit, source = train, "task val split"
    else:
        fit, val = carve_validation(
            m.labels, m.groups, train, float(cfg.probe.val_fraction), int(cfg.seed)
        )
        source = f"carved from train (probe.val_fraction={cfg.probe.val_fraction})"
    fraction = float(cfg.train_fraction)
    if fraction < 1.0:
        fit = subsample_train(m.labels, fit, fraction, int(cfg.seed))
    _check_class_coverage(m, fit, test)
    return np.sort(fit), np.sort(val), test, source


def _check_class_coverage(m: Manifest, fit: np.ndarray, test: np.ndarray) -> None:
    """Refuse splits on which the metrics would be made up (one line naming the classes).

    A class present in test but absent from the probe's training rows would get a constant
    score (AUROC 0.5 by construction), and a multiclass test set with a single class has no
    AUROC at all.
    """
    if m.multilabel:
        in_test = m.labels[test].sum(axis=0) > 0
        in_fit = m.labels[fit].sum(axis=0) > 0
    else:
        in_test = np.bincount(m.labels[test], minlength=len(m.classes)) > 0
        in_fit = np.bincount(m.labels[fit], minlength=len(m.classes)) > 0
        if in_test.sum() < 2:
            only = [c for c, t in zip(m.classes, in_test, strict=True) if t]
            raise ConfigError(
                f"task {m.task}: the test split holds a single class {only}; "
                "AUROC and F1 need at least two"
            )
    untrained = [c for c, t, f in zip(m.classes, in_test, in_fit, strict=True) if t and not f]
    if untrained:
        raise ConfigError(
            f"task {m.task}: {', '.join(map(repr, untrained))} occur in the test split but not in "
            "the probe's training rows, so the probe cannot score them; fix the split or the "
            "labels"
        )


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    from medprobe import __version__

    return {
        "medprobe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }


def run(cfg: DictConfig, out_dir: Path | None = None) -> Results | LayerCurve | dict[str, Any]:
    """Run one probing job; write ``results.json`` and ``predictions.csv``; return results.

    Returns:
        the job's :class:`~medprobe.results.Results` (as written to ``results.json``);
        ``layer=all``: the :class:`~medprobe.results.LayerCurve`; a data-parallel helper
        process (rank > 0): ``{"rank", "processes", "cache_key"}``.

    ``layer=all`` probes every cached layer in this one job (:func:`run_all_layers`).
    ``out_dir`` overrides :func:`resolve_output_dir` (used by :func:`run_all_layers`).

    Raises:
        medprobe.registry.RegistryError, ConfigError: bad config (before any work).
        medprobe.data.manifest.ManifestError: bad task input (file and row named).
        BadImagesError: unreadable images with ``data.on_error=stop``.
        medprobe.extractors.base.ExtractorError: bad layer or non-finite features.
    """
    if str(cfg.layer) == "all":
        return run_all_layers(cfg, out_dir)
    t_start = time.perf_counter()
    validate(cfg)
    from medprobe import distributed, stats

    dist = distributed.current(float(cfg.get("dist_timeout_min", 720.0)))
    if dist.world > 1:  # (a --multirun is refused before any job: medprobe.cluster)
        cfg = _placed_for_rank(cfg, dist)
    out_dir = Path(out_dir) if out_dir is not None else resolve_output_dir(cfg)
    if dist.is_main:  # the other processes of a data-parallel job write no results
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe_test = out_dir / ".write_test"
            probe_test.touch()
            probe_test.unlink()
        except OSError as e:
            raise ConfigError(f"output_dir {out_dir}: cannot write there ({e.strerror})") from None
    timings: dict[str, float] = {}

    t = time.perf_counter()
    manifest: Manifest = TASKS.get(cfg.task.kind)(cfg.task, cfg.data_root)
    extractor: Extractor = EXTRACTORS.get(cfg.model.kind)(cfg.model, str(cfg.prompt.text))
    available = extractor.layers()
    wanted = cfg.model.layers
    if OmegaConf.is_config(wanted):
        wanted = OmegaConf.to_object(wanted)
    cached_layers = resolve_layers(wanted, available)
    probe_layer = resolve_layers(cfg.layer, available)
    if len(probe_layer) != 1:
        raise ConfigError(f"layer must name one layer, got {cfg.layer!r}")
    layer = probe_layer[0]
    if layer not in cached_layers:
        raise ConfigError(
            f"layer {layer!r} is not among model.layers={list(cached_layers)}; add it there"
        )
    timings["setup"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        cache, key, cache_info = features(cfg, manifest, extractor, cached_layers, dist)
    finally:
        if dist.world > 1:
            distributed.finish()  # from here on the main process works alone
    if not dist.is_main:
        log.info("rank %d/%d: extraction done; rank 0 fits the probe", dist.rank, dist.world)
        return {"rank": dist.rank, "processes": dist.world, "cache_key": key}
    timings["features"] = time.perf_counter() - t
    m = _align(manifest, cache.ids(key))
    # float16 memmap: each split is read (and cast by the probe) on its own, so the host never
    # holds a float32 copy of the whole layer (100k x 8192 would be 3.3 GB per copy)
    X = cache.load(key, layer)

    t = time.perf_counter()
    fit, val, test, val_source = _probe_rows(cfg, m)
    probe = PROBES.get(cfg.probe.name)(
        cfg.probe, n_classes=len(m.classes), multilabel=m.multilabel, seed=int(cfg.seed)
    )
    probe.fit(X[fit], m.labels[fit], X[val], m.labels[val])
    proba = probe.predict_proba(X[test])
    timings["probe"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = stats.evaluate(
        m.labels[test],
        proba,
        m.classes,
        multilabel=m.multilabel,
        n_boot=int(cfg.bootstrap.n),
        seed=stats.bootstrap_seed(m.task, "test", int(cfg.seed)),
        ci=float(cfg.bootstrap.ci),
        progress=bool(cfg.progress),
    )
    timings["bootstrap"] = time.perf_counter() - t
    write_predictions(
        out_dir,
        Predictions([m.ids[r] for r in test], [str(m.split[r]) for r in test],
                    m.labels[test], proba, list(m.classes), m.multilabel),
    )  # fmt: skip

    spec = cache_info["spec"]
    res = Results(
        task=cfg.task.name,
        task_kind=cfg.task.kind,
        model=cfg.model.name,
        model_kind=cfg.model.kind,
        model_id=cfg.model.hf_id or cfg.model.name,
        layer=layer,
        train_fraction=float(cfg.train_fraction),
        seed=int(cfg.seed),
        primary_metric=cfg.task.metric,
        metrics=Metrics.from_json(metrics),
        bootstrap=Bootstrap(
            n=int(cfg.bootstrap.n),
            ci=float(cfg.bootstrap.ci),
            seeded_by=[m.task, "test", int(cfg.seed)],
        ),
        probe=ProbeInfo(
            name=cfg.probe.name,
            backend=str(cfg.probe.backend),
            C=probe.C_,
            val_score=probe.val_score_,
            selection_metric=cfg.probe.selection_metric,
            selection=probe.selection_,
            converged=probe.converged_,
            validation_rows=val_source,
        ),
        counts=Counts(
            fit=int(len(fit)),
            val=int(len(val)),
            test=int(len(test)),
            per_split=m.counts(),
            skipped_images=len(cache_info["skipped_images"]),
            feature_dim=int(X.shape[1]),
            constant_features=bool(np.ptp(X[fit], axis=0).max() == 0),
        ),
        classes=list(m.classes),
        multilabel=m.multilabel,
        task_info=m.info,
        cache=CacheInfo.from_json(cache_info),
        extractor=spec["extractor"],
        # optional hook: what the extractor loaded (IDEFICS: parameters, kept depth, devices)
        extractor_load=getattr(extractor, "load_info", lambda: None)(),
        # the prompt text; None for vision-only models, which ignore cfg.prompt (the exact
        # string a language model read is extractor.rendered_prompt)
        prompt=str(cfg.prompt.text) if "rendered_prompt" in spec["extractor"] else None,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),  # type: ignore[arg-type]
        versions=_versions(),
        output_dir=str(out_dir),
        overrides=_overrides(),
        notes=[],
        timings_s={},
    )
    timings["total"] = time.perf_counter() - t_start
    res = replace(res, notes=run_notes(res, m.labels[test]),
                  timings_s={k: round(v, 3) for k, v in timings.items()})  # fmt: skip
    write_results(out_dir, res)
    print(format_table(res), flush=True)
    print(
        f"features: {'cache hit' if res.cache.cache_hit else 'extracted'} "
        f"(key {res.cache.cache_key[:12]} in {res.cache.cache_dir})",
        flush=True,
    )
    print(f"results: {out_dir / RESULTS_FILE}", flush=True)
    tracked = tracking.log_run(cfg.tracker, res, out_dir)  # None: tracker=none (a no-op sink)
    if tracked is not None:
        res = replace(res, tracker=tracked)
        write_results(out_dir, res)
    return res


def _overrides() -> list[str]:
    """The job's command-line overrides (empty outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def run_all_layers(cfg: DictConfig, out_dir: Path | None = None) -> LayerCurve | dict[str, Any]:
    """``layer=all``: one extraction, then one probe per cached layer, in a single job.

    Every layer of ``model.layers`` (resolved once and pinned, so a ``model.layers: ${layer}``
    default does not change the cache key) is probed by :func:`run` with ``tracker=none``,
    writing ``<out>/layer_<L>/results.json`` and ``predictions.csv`` (what
    ``python -m medprobe.report <out>`` turns into the layer curve). The curve of the task's
    primary metric goes to ``<out>/layers.json`` (:func:`medprobe.results.write_layer_curve`)
    and the console, and, with a tracker, to one W&B run
    (:func:`medprobe.tracking.log_layer_curve`).

    Returns:
        the :class:`~medprobe.results.LayerCurve` (a data-parallel helper process: what
        :func:`run` returns there).

    Raises:
        as :func:`run`.
    """
    import copy

    validate(cfg)
    out = Path(out_dir) if out_dir is not None else resolve_output_dir(cfg)
    extractor: Extractor = EXTRACTORS.get(cfg.model.kind)(cfg.model, str(cfg.prompt.text))
    wanted = cfg.model.layers
    if OmegaConf.is_config(wanted):
        wanted = OmegaConf.to_object(wanted)
    layers = resolve_layers(wanted, extractor.layers())
    runs: list[Results] = []
    for layer in layers:
        sub = copy.deepcopy(cfg)
        OmegaConf.update(sub, "model.layers", list(layers), merge=False)
        OmegaConf.update(sub, "layer", layer)
        OmegaConf.update(sub, "tracker.name", "none")
        res = run(sub, out / f"layer_{layer}")
        if not isinstance(res, Results):  # a data-parallel helper process: extraction done
            return res
        runs.append(res)
    curve = layer_curve(runs, str(cfg.task.metric))
    write_layer_curve(out, curve)
    print(format_layer_curve(curve), flush=True)
    tracked = tracking.log_layer_curve(cfg.tracker, curve, out)  # None: tracker=none
    if tracked is not None:
        curve = replace(curve, tracker=tracked)
        write_layer_curve(out, curve)
    return curve
