"""``run(cfg)``: task -> images -> features (cached) -> probe -> metrics -> results on disk.

Each step is a plain function on plain data. The W&B sink consumes the finished results; a
tracker failure never loses what is on disk.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medprobe import tracking
from medprobe.cache import CacheWriter, FeatureCache, cache_key
from medprobe.config import ConfigError, validate
from medprobe.data.manifest import Manifest
from medprobe.distributed import Dist, shard_ranges
from medprobe.errors import BadImagesError  # noqa: F401 (re-exported)
from medprobe.extractors.base import Extractor, LayerId, resolve_layers
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


class _ImageDataset:
    """Map-style dataset: index -> preprocessed image (runs in DataLoader workers)."""

    def __init__(self, paths: Sequence[Path], extractor: Extractor, max_side: int) -> None:
        self.paths = list(paths)
        self.extractor = extractor
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from medprobe.data.images import load_image

        return self.extractor.preprocess(load_image(self.paths[i], max_side=self.max_side))


def extract_to_cache(
    extractor: Extractor,
    paths: Sequence[Path],
    writer: CacheWriter,
    layers: Sequence[LayerId],
    *,
    batch_size: int,
    num_workers: int,
    max_side: int,
    progress: bool = True,
    desc: str = "extracting",
    position: int | None = None,
) -> int:
    """Stream features of the writer's pending rows of ``paths`` into ``writer``, batch by batch.

    ``paths[i]`` is the image of row ``i`` of the cache entry (``len(paths) == writer.n_total``);
    the rows still to write are ``writer.pending_rows()``: everything left by a killed run, or
    this process's shard in a data-parallel run. One forward pass per batch returns every layer
    in ``layers``. Returns the number of rows extracted now.
    """
    import torch
    from tqdm.auto import tqdm

    rows = writer.pending_rows()
    if not len(rows):
        return 0
    todo = [paths[i] for i in rows]
    loader = torch.utils.data.DataLoader(
        _ImageDataset(todo, extractor, max_side),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
    )
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress, position=position)
    with bar:
        try:
            for batch in loader:
                feats = extractor.extract(batch, layers)
                writer.write(feats)
                bar.update(len(next(iter(feats.values()))))
        except RuntimeError as e:  # a DataLoader worker re-raises ImageLoadError as RuntimeError
            if "ImageLoadError" not in str(e):
                raise
            raise BadImagesError(
                f"an image became unreadable during extraction ({str(e).splitlines()[-1]}); "
                f"{writer.n_done} rows are saved: fix the file and rerun to resume"
            ) from None
    return len(todo)


def _align(manifest: Manifest, ids: Sequence[str]) -> Manifest:
    pos = {i: k for k, i in enumerate(manifest.ids)}
    return manifest.subset(np.array([pos[i] for i in ids], dtype=np.int64))


def features(
    cfg: DictConfig,
    manifest: Manifest,
    extractor: Extractor,
    layers: Sequence[LayerId],
    dist: Dist | None = None,
) -> tuple[FeatureCache, str, dict[str, Any]]:
    """Make sure the cache holds ``layers`` for the manifest; return (cache, key, info).

    On a miss: every image is checked first (all bad files listed at once); then features are
    extracted under a file lock, so a second job on the same entry waits and reuses it.

    Data-parallel (``dist.world > 1``, see :mod:`medprobe.distributed`): the main process
    hashes the images, takes the lock and decides; the image check and the extraction are
    sharded over the processes (:func:`medprobe.distributed.shard_rows`), each writing its rows
    of one partial entry; the main process finalises it. The entry is the one a single
    process writes (same key, ids and rows). Every process returns once the entry is complete.

    Raises:
        BadImagesError: unreadable files and ``data.on_error=stop``.
    """
    from medprobe.data.images import loader_fingerprint

    dist = dist or Dist()
    max_side = int(cfg.data.max_side)
    spec = None
    if dist.is_main:  # hashing reads every image byte: once, not once per process
        spec = {
            "extractor": extractor.fingerprint(),
            "layers": [str(x) for x in layers],
            "images": manifest.image_fingerprint(
                _enum_value(cfg.data.fingerprint), workers=int(cfg.data.scan_workers)
            ),
            "n_images": len(manifest),
            "loader": loader_fingerprint(max_side),
        }
    spec = dist.broadcast(spec)
    if dist.world > 1:
        _check_same_job(dist, manifest, extractor, layers, max_side)
    key = cache_key(spec)
    cache = FeatureCache(Path(cfg.cache_dir).expanduser())
    on_error = _enum_value(cfg.data.on_error)
    info: dict[str, Any] = {"cache_key": key, "cache_dir": str(cache.root), "spec": spec}
    t0 = time.perf_counter()
    # A complete entry never changes again: read it without the lock (read-only shared caches).
    info["cache_hit"] = dist.broadcast(cache.is_complete(key))
    if not info["cache_hit"]:
        _extract_locked(cfg, manifest, extractor, layers, cache, key, spec, info, dist)
    skipped = cache.meta(key)["spec"].get("skipped", [])  # the writer's meta is stored as "spec"
    if skipped and on_error == "stop":
        raise BadImagesError(_bad_images_message([tuple(s) for s in skipped]))
    info["skipped_images"] = skipped
    info["extract_seconds"] = round(time.perf_counter() - t0, 3)
    if dist.world > 1:
        info["processes"] = dist.world
    return cache, key, info


def _check_same_job(
    dist: Dist, manifest: Manifest, extractor: Extractor, layers: Sequence[LayerId], max_side: int
) -> None:
    """Refuse processes of one data-parallel launch that would extract different features.

    Rank 0 names the cache entry; a process configured differently (another model, layer,
    prompt, preprocessing or image list) would write its rows into it. Every process compares
    a digest of what it would extract (all but the image bytes, which only rank 0 hashes).
    """
    import hashlib

    from medprobe.data.images import loader_fingerprint

    mine = cache_key(
        {
            "extractor": extractor.fingerprint(),
            "layers": [str(x) for x in layers],
            "loader": loader_fingerprint(max_side),
            "ids": hashlib.sha256("\n".join(manifest.ids).encode()).hexdigest(),
            "paths": hashlib.sha256("\n".join(map(str, manifest.paths)).encode()).hexdigest(),
        }
    )
    digests = dist.gather([mine])
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise ConfigError(
            f"the processes of this data-parallel launch are configured differently (ranks "
            f"{differ} differ from rank 0: model, layers, prompt, preprocessing or images); "
            "launch every process with the same overrides"
        )


def _extract_locked(
    cfg: DictConfig,
    manifest: Manifest,
    extractor: Extractor,
    layers: Sequence[LayerId],
    cache: FeatureCache,
    key: str,
    spec: dict[str, Any],
    info: dict[str, Any],
    dist: Dist,
) -> None:
    """Extract under the entry's file lock; a second job waits (and says so), then reuses it.

    Only the main process takes the lock; with several processes it covers all of them.
    """
    from filelock import Timeout

    from medprobe.cache import CacheError
    from medprobe.data.images import scan_images

    max_side = int(cfg.data.max_side)
    on_error = _enum_value(cfg.data.on_error)
    lock = None
    if dist.is_main:
        try:
            lock = cache.lock(key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                print(f"waiting for another job extracting the same features "
                      f"({cache.lock_path(key)})", file=sys.stderr, flush=True)  # fmt: skip
                lock.acquire()
        except OSError as e:
            raise CacheError(f"cache_dir {cache.root}: cannot write ({e.strerror})") from None
    try:
        info["cache_hit"] = dist.broadcast(cache.is_complete(key))
        if info["cache_hit"]:
            return
        paths = [str(p) for p in manifest.paths]
        lo, hi = dist.rank * len(paths) // dist.world, (dist.rank + 1) * len(paths) // dist.world
        bad = scan_images(
            paths[lo:hi],
            max_side=max_side,
            max_workers=int(cfg.data.scan_workers),
            progress=bool(cfg.progress) and dist.is_main,
        )
        bad = [tuple(x) for x in dist.gather(bad)]
        if bad and on_error == "stop":
            raise BadImagesError(_bad_images_message(bad))
        bad_set = {p for p, _ in bad}
        keep = [i for i, p in enumerate(paths) if p not in bad_set]
        if not keep:
            raise BadImagesError(
                f"all {len(paths)} images are unreadable, nothing to extract "
                f"(data.on_error=skip):\n" + "\n".join(f"  {p}: {r}" for p, r in bad[:20])
            )
        ids = [manifest.ids[i] for i in keep]
        writer = None
        ranges = None
        if dist.is_main:
            writer = cache.writer(
                key, ids, list(layers), meta={"key_spec": spec, "skipped": [list(x) for x in bad]}
            )
            info["resumed_from"] = writer.n_done
            # split what is left (everything, or the gaps of a killed run) in whole batches
            ranges = shard_ranges(writer.pending_rows(), int(cfg.model.batch_size), dist.world)
        if dist.world > 1:
            # the partial entry is ready once rank 0 says how the rows are shared
            info["resumed_from"], ranges = dist.broadcast((info.get("resumed_from"), ranges))
            assert ranges is not None
            part = cache.shard_writer(
                key, ids, list(layers), rows=ranges[dist.rank], shard=dist.rank
            )
            desc, position = f"extracting [{dist.rank + 1}/{dist.world}]", dist.rank
        else:
            part, desc, position = writer, "extracting", None
        assert part is not None
        extract_to_cache(
            extractor,
            [manifest.paths[i] for i in keep],
            part,
            layers,
            batch_size=int(cfg.model.batch_size),
            num_workers=int(cfg.model.num_workers),
            max_side=max_side,
            progress=bool(cfg.progress),
            desc=desc,
            position=position,
        )
        if part is not writer:
            part.close()
        dist.barrier()  # every shard is written
        if writer is not None:
            writer.finalize()
        dist.barrier()  # the entry is complete for everyone
    finally:
        if lock is not None:
            lock.release()


def _bad_images_message(bad: Sequence[Sequence[str]]) -> str:
    lines = "\n".join(f"  {p}: {r}" for p, r in bad)
    return (
        f"{len(bad)} unreadable image(s); fix or remove them, or run with "
        f"data.on_error=skip to leave them out:\n{lines}"
    )


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


def _placed_for_rank(cfg: DictConfig, dist: Dist) -> DictConfig:
    """A copy of ``cfg`` whose model sits on this process's GPU(s) (unchanged on CPU)."""
    import copy

    import torch

    from medprobe.distributed import rank_placement

    max_memory = cfg.model.get("max_memory")
    if OmegaConf.is_config(max_memory):
        max_memory = OmegaConf.to_container(max_memory)
    place = rank_placement(
        str(cfg.model.device),
        cfg.model.get("device_map"),
        max_memory,
        local_rank=dist.local_rank,
        local_world=dist.local_world,
        n_gpus=torch.cuda.device_count(),
    )
    out = copy.deepcopy(cfg)
    for k, v in place.items():
        if k in out.model:
            OmegaConf.update(out, f"model.{k}", v, merge=False)
    return out


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
