"""``run(cfg)``: task -> images -> features (cached) -> probe -> metrics -> results on disk.

Each step is a plain function on plain data. The W&B sink consumes the finished results; a
tracker failure never loses what is on disk.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medprobe.config import ConfigError, validate
from medprobe.data.manifest import Manifest
from medprobe.errors import BadImagesError  # noqa: F401 (re-exported)
from medprobe.extractors.base import Extractor, resolve_layers
from medprobe.pipeline.features import _align, _placed_for_rank, features  # noqa: F401
from medprobe.registry import EXTRACTORS, PROBES, TASKS

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


def _label_str(m: Manifest, i: int) -> str:
    if m.multilabel:
        return "|".join(c for c, v in zip(m.classes, m.labels[i], strict=True) if v)
    return m.classes[int(m.labels[i])]


def write_predictions(path: Path, m: Manifest, rows: np.ndarray, proba: np.ndarray) -> None:
    """CSV: id, split, label (names; ``|``-joined if multi-label), one ``p_<class>`` per class."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "split", "label", *[f"p_{c}" for c in m.classes]])
        for r, p in zip(rows, proba, strict=True):
            w.writerow([m.ids[r], m.split[r], _label_str(m, r), *[f"{v:.6g}" for v in p]])


def format_table(results: dict[str, Any]) -> str:
    """Readable console table: per-class AUROC then summary metrics, value [95% CI]."""
    met = results["metrics"]
    level = int(round(100 * results["bootstrap"]["ci"]))
    c = results["counts"]
    head = (
        f"{results['task']} | {results['model']} | layer {results['layer']} | "
        f"train_fraction {results['train_fraction']} | seed {results['seed']} | "
        f"rows: fit {c['fit']}, val {c['val']}, test {c['test']}"
    )
    lines = [
        head,
        f"{'metric':<28}{'value':>8}  {level}% CI (bootstrap n={results['bootstrap']['n']})",
    ]
    keys = [k for k in met if k.startswith("auroc/")] + [
        k for k in ("auroc_macro", "f1_macro", "accuracy") if k in met
    ]
    for k in keys:
        v = met[k]
        lines.append(f"{k:<28}{v['value']:>8.4f}  [{v['ci_low']:.4f}, {v['ci_high']:.4f}]")
    if met.get("absent_classes"):
        why = "no positives or no negatives" if results.get("multilabel") else "absent"
        lines.append(f"excluded, {why} in test: {', '.join(met['absent_classes'])}")
    lines += [f"note: {n}" for n in results.get("notes", [])]
    return "\n".join(lines)


def _notes(results: dict[str, Any], m: Manifest, test: np.ndarray) -> list[str]:
    """Warnings worth a line under the table (also kept in results.json)."""
    notes = []
    if results["counts"]["skipped_images"]:
        notes.append(f"{results['counts']['skipped_images']} unreadable image(s) left out "
                     "(data.on_error=skip; listed in results.json cache.skipped_images)")  # fmt: skip
    if not results["probe"]["converged"]:
        notes.append("the probe did not converge for some C (raise probe.max_iter)")
    pos = m.labels[test].sum(axis=0) if m.multilabel else np.bincount(
        m.labels[test], minlength=len(m.classes))  # fmt: skip
    few = [f"{c} ({int(k)})" for c, k in zip(m.classes, pos, strict=True) if 0 < k < 5]
    if few:
        notes.append("fewer than 5 test positives, CI unreliable: " + ", ".join(few))
    if results["counts"].get("constant_features"):
        notes.append("this layer's features are identical for every image (e.g. CLIP layer 0's "
                     "CLS token is the class embedding): the probe can only predict the prior")  # fmt: skip
    if results["bootstrap"]["n"] < 200:
        notes.append(f"only {results['bootstrap']['n']} bootstrap replicates; CI bounds are rough")
    return notes


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


def run(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """Run one probing job; write ``results.json`` and ``predictions.csv``; return results.

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
    write_predictions(out_dir / "predictions.csv", m, test, proba)

    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    results: dict[str, Any] = {
        "task": cfg.task.name,
        "task_kind": cfg.task.kind,
        "model": cfg.model.name,
        "model_kind": cfg.model.kind,
        "model_id": cfg.model.hf_id or cfg.model.name,
        "layer": layer,
        "train_fraction": float(cfg.train_fraction),
        "seed": int(cfg.seed),
        "primary_metric": cfg.task.metric,
        "metrics": metrics,
        "bootstrap": {
            "n": int(cfg.bootstrap.n),
            "ci": float(cfg.bootstrap.ci),
            "seeded_by": [m.task, "test", int(cfg.seed)],
        },
        "probe": {
            "name": cfg.probe.name,
            "backend": str(cfg.probe.get("backend", "sklearn")),
            "C": probe.C_,
            "val_score": probe.val_score_,
            "selection_metric": cfg.probe.selection_metric,
            "selection": probe.selection_,
            "converged": probe.converged_,
            "validation_rows": val_source,
        },
        "counts": {
            "fit": int(len(fit)),
            "val": int(len(val)),
            "test": int(len(test)),
            "per_split": m.counts(),
            "skipped_images": len(cache_info["skipped_images"]),
            "feature_dim": int(X.shape[1]),
            "constant_features": bool(np.ptp(X[fit], axis=0).max() == 0),
        },
        "classes": m.classes,
        "multilabel": m.multilabel,
        "task_info": m.info,
        "cache": {k: v for k, v in cache_info.items() if k != "spec"},
        "extractor": cache_info["spec"]["extractor"],
        # optional hook: what the extractor loaded (IDEFICS: parameters, kept depth, devices)
        "extractor_load": getattr(extractor, "load_info", lambda: None)(),
        # the prompt text; None for vision-only models, which ignore cfg.prompt (the exact
        # string a language model read is extractor.rendered_prompt)
        "prompt": str(cfg.prompt.text)
        if "rendered_prompt" in cache_info["spec"]["extractor"]
        else None,
        "config": resolved,
        "versions": _versions(),
        "output_dir": str(out_dir),
        "overrides": _overrides(),
    }
    results["notes"] = _notes(results, m, test)
    timings["total"] = time.perf_counter() - t_start
    results["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    _write_json(out_dir / "results.json", results)
    print(format_table(results), flush=True)
    hit = results["cache"]["cache_hit"]
    print(
        f"features: {'cache hit' if hit else 'extracted'} "
        f"(key {results['cache']['cache_key'][:12]} in {results['cache']['cache_dir']})",
        flush=True,
    )
    print(f"results: {out_dir / 'results.json'}", flush=True)

    tracker = str(cfg.tracker.name)
    if tracker != "none" and _enum_value(cfg.tracker.mode) != "disabled":
        from medprobe.tracking import log_run

        try:
            results["tracker"] = log_run(cfg, results, out_dir)
        except Exception as e:  # a tracker problem must not lose the results on disk
            log.warning("W&B logging failed (%s: %s); results are on disk", type(e).__name__, e)
            results["tracker"] = {"error": f"{type(e).__name__}: {e}"}
        _write_json(out_dir / "results.json", results)
    return results


def _overrides() -> list[str]:
    """The job's command-line overrides (empty outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    def clean(x: Any) -> Any:  # JSON has no NaN: write null
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(clean(obj), f, indent=2, default=_json_default)
    os.replace(tmp, path)


def run_all_layers(cfg: DictConfig, out_dir: Path | None = None) -> dict[str, Any]:
    """``layer=all``: one extraction, then one probe per cached layer, in a single job.

    Every layer of ``model.layers`` (resolved once and pinned, so a ``model.layers: ${layer}``
    default does not change the cache key) is probed by :func:`run` with ``tracker=none``,
    writing ``<out>/layer_<L>/results.json`` and ``predictions.csv`` (what
    ``python -m medprobe.report <out>`` turns into the layer curve). The curve of the task's
    primary metric goes to ``<out>/layers.json`` and the console, and, with a tracker, to one
    W&B run (:func:`medprobe.tracking.log_layer_curve`).

    Returns:
        ``{"task", "model", "metric", "layers": [{"layer", "value", "sd", "ci_low", "ci_high",
        "val_score", "dir"}, ...], "best_layer_by_validation"}``.

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
    rows = []
    metric = str(cfg.task.metric)
    for layer in layers:
        sub = copy.deepcopy(cfg)
        OmegaConf.update(sub, "model.layers", list(layers), merge=False)
        OmegaConf.update(sub, "layer", layer)
        OmegaConf.update(sub, "tracker.name", "none")
        res = run(sub, out / f"layer_{layer}")
        if "metrics" not in res:  # a data-parallel helper process: its extraction is done
            return res
        m = res["metrics"][metric]
        rows.append({"layer": layer, **{k: m[k] for k in ("value", "sd", "ci_low", "ci_high")},
                     "val_score": res["probe"]["val_score"], "dir": res["output_dir"]})  # fmt: skip
    best = max(rows, key=lambda r: r["val_score"])  # first maximum: validation, never test
    curve = {"task": res["task"], "model": res["model"], "metric": metric, "layers": rows,
             "best_layer_by_validation": best["layer"]}  # fmt: skip
    _write_json(out / "layers.json", curve)
    print(f"{metric} by layer ({res['task']} | {res['model']}):", flush=True)
    for r in rows:
        mark = "  <- best on validation" if r is best else ""
        print(f"  layer {r['layer']!s:>7}  {r['value']:.4f}  [{r['ci_low']:.4f}, "
              f"{r['ci_high']:.4f}]{mark}", flush=True)  # fmt: skip
    if str(cfg.tracker.name) != "none" and _enum_value(cfg.tracker.mode) != "disabled":
        from medprobe.tracking import log_layer_curve

        try:
            curve["tracker"] = log_layer_curve(cfg, curve, out)
        except Exception as e:  # a tracker problem must not lose the results on disk
            log.warning("W&B logging failed (%s: %s); results are on disk", type(e).__name__, e)
        _write_json(out / "layers.json", curve)
    return curve
