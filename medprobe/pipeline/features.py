"""The features stage: make sure the cache holds the requested layers for a manifest.

Lock, scan, shard, write, finalise — everything between "these images, this extractor" and
"a complete cache entry". Data-parallel launches (torchrun, accelerate launch, SLURM tasks;
:mod:`medprobe.distributed`) are handled here and nowhere else: the main process hashes the
images, takes the entry's lock and decides; every process checks and extracts its share of
the rows into one partial entry; the main process finalises it.

A changed image list (a few bad files skipped, new images added) is a new entry, but the rows
other complete entries of the same extractor fingerprint hold for images of the same content
are copied into it first (verified), so only the new images are checked and extracted
(docs/reliability.md, "Adding or removing images never recomputes the others").
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.cache import CacheWriter, FeatureCache, cache_key
from medprobe.data.manifest import Manifest
from medprobe.data.sources import ImageSource
from medprobe.distributed import Dist, shard_ranges
from medprobe.errors import (
    BadImagesError,
    ConfigError,
    ExtractorError,
    ImageLoadError,
    NonFiniteFeaturesError,
)
from medprobe.extractors.base import Extractor, LayerId

if TYPE_CHECKING:
    from medprobe.config import Config
    from medprobe.pipeline.job import Job

log = logging.getLogger("medprobe")


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


class _ImageDataset:
    """Map-style dataset: index -> preprocessed image (runs in DataLoader workers): loaded by
    the manifest's image source (files, or dataset rows: :mod:`medprobe.data.sources`), made
    square as ``model.resize`` says (:func:`medprobe.data.images.to_square`), then the
    extractor's own preprocessing."""

    def __init__(
        self,
        paths: Sequence[Path],
        extractor: Extractor,
        max_side: int,
        resize: str = "crop",
        source: ImageSource | None = None,
    ) -> None:
        self.paths = list(paths)
        self.extractor = extractor
        self.max_side = max_side
        self.resize = str(resize)
        self.source = source

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from medprobe.data.images import load_image, to_square

        if self.source is None:
            image = load_image(self.paths[i], max_side=self.max_side)
        else:
            image = self.source.load(str(self.paths[i]), self.max_side)
        return self.extractor.preprocess(to_square(image, self.resize))


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
    resize: str = "crop",
    source: ImageSource | None = None,
) -> int:
    """Stream features of the writer's pending rows of ``paths`` into ``writer``, batch by batch.

    ``paths[i]`` is the image of row ``i`` of the cache entry (``len(paths) == writer.n_total``);
    the rows still to write are ``writer.pending_rows()``: everything left by a killed run, or
    this process's shard in a data-parallel run. One forward pass per batch returns every layer
    in ``layers``. ``resize`` (``model.resize``) makes each image square first
    (:func:`medprobe.data.images.to_square`). ``source`` reads ``paths`` when they are not
    files (a manifest's :attr:`~medprobe.data.manifest.Manifest.source`). Returns the number
    of rows extracted now.
    """
    import torch
    from tqdm.auto import tqdm

    rows = writer.pending_rows()
    if not len(rows):
        return 0
    todo = [paths[i] for i in rows]
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        _ImageDataset(todo, extractor, max_side, resize, source),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        # an extractor that batches with its own processor (chat-template VLMs: left padding,
        # per-batch image tokens) says how; None = torch's default collate
        collate_fn=getattr(extractor, "collate", None),
    )
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress, position=position)
    with bar:
        try:
            done = 0
            for batch in loader:
                try:
                    feats = extractor.extract(batch, layers)
                except NonFiniteFeaturesError as e:  # name the images, not batch rows
                    names = [str(todo[done + r]) for r in e.rows]
                    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
                    raise ExtractorError(
                        f"{e}: {', '.join(names[:5])}{more}; {writer.n_done} rows are saved"
                    ) from None
                writer.write(feats)
                n = len(next(iter(feats.values())))
                done += n
                bar.update(n)
        except ImageLoadError as e:  # in this process, or re-raised from a DataLoader worker
            raise BadImagesError(
                f"an image became unreadable during extraction ({str(e).splitlines()[-1]}); "
                f"{writer.n_done} rows are saved: fix the file and rerun to resume"
            ) from None
    return len(todo)


def _align(manifest: Manifest, ids: Sequence[str]) -> Manifest:
    pos = {i: k for k, i in enumerate(manifest.ids)}
    return manifest.subset(np.array([pos[i] for i in ids], dtype=np.int64))


def features(
    cfg: Config,
    manifest: Manifest,
    extractor: Extractor,
    layers: Sequence[LayerId],
    dist: Dist | None = None,
    scanned: Sequence[Sequence[str]] | None = None,
) -> tuple[FeatureCache, str, dict[str, Any]]:
    """Make sure the cache holds ``layers`` for the manifest; return (cache, key, info).

    On a miss: under a file lock (a second job on the same entry waits and reuses it), rows
    already computed for images of the same content by entries of the same extractor
    fingerprint are copied into the new entry (:func:`_plan_reuse`; ``info["reused_rows"]``,
    ``info["reused_from"]``); every other image is checked (all bad files listed at once) and
    extracted (``info["extracted_rows"]``).

    Data-parallel (``dist.world > 1``, see :mod:`medprobe.distributed`): the main process
    hashes the images, takes the lock and decides; the image check and the extraction are
    sharded over the processes (:func:`medprobe.distributed.shard_rows`), each writing its rows
    of one partial entry; the main process finalises it. The entry is the one a single
    process writes (same key, ids and rows). Every process returns once the entry is complete.

    ``scanned``: the unreadable images the job already found and left out of ``manifest``
    before its split (``data.on_error=skip``: :func:`medprobe.pipeline.data.load_data`); the
    images are then not scanned again, and the list is recorded as the entry's skipped files.

    Raises:
        BadImagesError: unreadable files and ``data.on_error=stop``.
    """
    from medprobe.data.images import loader_fingerprint

    dist = dist or Dist()
    max_side = int(cfg.data.max_side)
    resize = str(cfg.model.resize)
    spec = None
    row_keys: list[str] = []
    if dist.is_main:  # hashing reads every image byte: once, not once per process
        mode = str(_enum_value(cfg.data.fingerprint))
        digests = manifest.image_digests(mode, workers=int(cfg.data.scan_workers))
        row_keys = _row_keys(manifest, mode, digests)
        spec = {
            "extractor": extractor.fingerprint(),
            "layers": [str(x) for x in layers],
            "images": manifest.image_fingerprint(mode, digests=digests),
            "n_images": len(manifest),
            "loader": loader_fingerprint(max_side),
        }
        if resize != "crop":  # only then: every key written before model.resize stays valid
            spec["resize"] = resize
    spec = dist.broadcast(spec)
    if dist.world > 1:
        _check_same_job(dist, manifest, extractor, layers, max_side, resize)
    key = cache_key(spec)
    cache = FeatureCache(Path(cfg.cache_dir).expanduser(), verify=cfg.cache.verify)
    on_error = _enum_value(cfg.data.on_error)
    info: dict[str, Any] = {"cache_key": key, "cache_dir": str(cache.root), "spec": spec}
    if dist.is_main:  # header reads only (about 0.1 ms per file): cheap enough on every run
        info["far_from_square"] = manifest.images.far_from_square_share(
            [str(p) for p in manifest.paths]
        )
    t0 = time.perf_counter()
    # A complete entry never changes again: read it without the lock (read-only shared caches).
    info["cache_hit"] = dist.broadcast(cache.is_complete(key))
    if not info["cache_hit"]:
        _extract_locked(cfg, manifest, extractor, layers, cache, key, spec, info, dist, row_keys,
                        scanned)  # fmt: skip
    skipped = cache.meta(key)["spec"].get("skipped", [])  # the writer's meta is stored as "spec"
    if skipped and on_error == "stop":
        raise BadImagesError(_bad_images_message([tuple(s) for s in skipped]))
    info["skipped_images"] = skipped
    if dist.is_main:
        cache.mark_used(key)
    info["extract_seconds"] = round(time.perf_counter() - t0, 3)
    if dist.world > 1:
        info["processes"] = dist.world
    return cache, key, info


def _check_same_job(
    dist: Dist,
    manifest: Manifest,
    extractor: Extractor,
    layers: Sequence[LayerId],
    max_side: int,
    resize: str = "crop",
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
            "resize": resize,
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
    cfg: Config,
    manifest: Manifest,
    extractor: Extractor,
    layers: Sequence[LayerId],
    cache: FeatureCache,
    key: str,
    spec: dict[str, Any],
    info: dict[str, Any],
    dist: Dist,
    row_keys: Sequence[str] = (),
    scanned: Sequence[Sequence[str]] | None = None,
) -> None:
    """Extract under the entry's file lock; a second job waits (and says so), then reuses it.

    Only the main process takes the lock; with several processes it covers all of them.
    Before anything is extracted, the main process copies the rows other complete entries of
    the same extractor fingerprint hold for images of the same content (:func:`_plan_reuse`,
    ``row_keys``: :func:`_row_keys` of the manifest); only the other images are checked and
    extracted (sharded over the processes).
    """
    from filelock import Timeout

    from medprobe.cache import CacheError

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
            if cache.root.exists() and not cache.root.is_dir():  # was "cannot write (File exists)"
                raise CacheError(f"cache_dir {cache.root} is a file, not a folder") from None
            raise CacheError(f"cache_dir {cache.root}: cannot write ({e.strerror})") from None
    try:
        info["cache_hit"] = dist.broadcast(cache.is_complete(key))
        if info["cache_hit"]:
            return
        paths = [str(p) for p in manifest.paths]
        plan = None
        to_scan: list[int] | None = None
        if dist.is_main:
            plan = _plan_reuse(cache, key, spec, row_keys, layers)
            for note in plan.notes:
                print(f"note: {note}", file=sys.stderr, flush=True)
            to_scan = [i for i in range(len(paths)) if i not in plan.rows]
        bad: list[tuple[str, ...]]
        if scanned is not None:  # scanned before the split; the bad ones are not in manifest
            bad = [tuple(x) for x in scanned]
            on_error = "skip"  # recorded below as the entry's skipped files
        else:
            # images whose rows are reused were read whole when they were extracted: not again
            to_scan = dist.broadcast(to_scan)
            assert to_scan is not None
            m = len(to_scan)
            lo, hi = dist.rank * m // dist.world, (dist.rank + 1) * m // dist.world
            mine = manifest.images.scan(
                [paths[i] for i in to_scan[lo:hi]],
                max_side=max_side,
                max_workers=int(cfg.data.scan_workers),
                progress=bool(cfg.progress) and dist.is_main,
            )
            bad = [tuple(x) for x in dist.gather(mine)]
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
            assert plan is not None
            writer = cache.writer(
                key,
                ids,
                list(layers),
                meta={
                    "key_spec": spec,
                    "skipped": [list(x) for x in bad],
                    # who wrote it (medprobe cache list); not part of the key
                    "written_by": {"model": cfg.model.name, "task": cfg.task.name},
                },
                digests=[row_keys[i] for i in keep],
            )
            info["resumed_from"] = writer.n_done
            _copy_reused(writer, plan, keep, info)
            info["extracted_rows"] = writer.n_remaining
            # split what is left (everything, or the gaps of a killed run) in whole batches
            ranges = shard_ranges(
                writer.pending_rows().tolist(), int(cfg.model.batch_size), dist.world
            )
        if dist.world > 1:
            # the partial entry is ready once rank 0 says how the rows are shared
            info["resumed_from"], ranges = dist.broadcast((info.get("resumed_from"), ranges))
            assert ranges is not None
            part: CacheWriter | None = cache.shard_writer(
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
            resize=str(cfg.model.resize),
            source=manifest.source,
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


#: Per-image digests that name no content (the image scan reports these files).
_NO_CONTENT = ("missing", "unreadable")
#: The parts of the key spec that depend on the image list; everything else is the extractor
#: fingerprint under which rows of one image are the same in every entry.
_IMAGE_LIST_KEYS = ("images", "n_images")


def _row_keys(manifest: Manifest, mode: str, digests: Sequence[str]) -> list[str]:
    """What a row is reused by: the image's content digest, per manifest row.

    ``data.fingerprint=content``: the sha256 of the file (any id, any path: a moved or copied
    image is found). ``stat``: ``"stat:"`` + sha256 of (id, size, mtime), as much as that mode's
    cache key trusts. The markers ``"missing"`` / ``"unreadable"`` stay as they are and are
    never reused.
    """
    import hashlib

    if mode == "content":
        return [str(d) for d in digests]
    out = []
    for i, d in zip(manifest.ids, digests, strict=True):
        if d in _NO_CONTENT:
            out.append(str(d))
        else:
            out.append("stat:" + hashlib.sha256(f"{i}\0{d}".encode()).hexdigest())
    return out


def reuse_fingerprint(spec: Any) -> str | None:
    """The key of ``spec`` without its image-list parts: entries with equal fingerprints hold
    equal rows for equal images (same extractor, weights, dtype, layers, prompt, loader and
    resize). None for a spec that is not a dict."""
    if not isinstance(spec, dict):
        return None
    return cache_key({k: v for k, v in spec.items() if k not in _IMAGE_LIST_KEYS})


@dataclass
class _ReusePlan:
    """Which manifest rows come from which complete entry (and row), and why others did not."""

    rows: dict[int, tuple[str, int]] = dataclasses.field(default_factory=dict)
    sources: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def _plan_reuse(
    cache: FeatureCache,
    key: str,
    spec: dict[str, Any],
    row_keys: Sequence[str],
    layers: Sequence[LayerId],
) -> _ReusePlan:
    """Find rows already computed for these images under the same extractor fingerprint.

    Candidates are the complete entries whose key spec equals ``spec`` but for the image list
    (:func:`reuse_fingerprint`) and that recorded row digests (entries written since issue
    14.11). The one holding most of the wanted images is used first, then the next for what is
    still missing, and so on. Every entry used is verified whole first (ids, digests, every
    layer, against its checksums); one that fails is set aside by the verification and not
    used, with a note.
    """
    plan = _ReusePlan()
    fingerprint = reuse_fingerprint(spec)
    want: dict[str, list[int]] = {}
    for i, k in enumerate(row_keys):
        if k not in _NO_CONTENT:
            want.setdefault(k, []).append(i)
    if not want:
        return plan
    from medprobe.errors import CacheError

    candidates = []
    try:
        keys = cache.keys()
    except OSError as e:  # an unlistable cache directory: nothing to reuse, extract
        plan.notes.append(f"no rows are reused: cannot list {cache.root} ({e.strerror or e})")
        return plan
    for other in keys:
        if other == key:
            continue
        try:
            meta = cache.meta(other)
            stored = meta.get("spec")
            if not isinstance(stored, dict):
                continue
            if reuse_fingerprint(stored.get("key_spec")) != fingerprint:
                continue
            digests = cache.row_digests(other)
        except CacheError as e:
            plan.notes.append(f"cache entry {other} is not reused: {e}")
            continue
        if digests is None:
            continue
        index: dict[str, int] = {}
        for r, d in enumerate(digests):
            if d not in _NO_CONTENT:
                index.setdefault(d, r)
        overlap = sum(len(v) for k, v in want.items() if k in index)
        if overlap:
            candidates.append((overlap, str(meta.get("created", "")), other, index))
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    for _, _, other, index in candidates:
        take = {i: (other, index[k]) for k, idx in want.items() if k in index for i in idx
                if i not in plan.rows}  # fmt: skip
        if not take:
            continue
        try:
            if not cache.verify(other, layers)["verified"]:
                continue
        except CacheError as e:
            plan.notes.append(f"cache entry {other} is not reused: {e}")
            continue
        plan.rows.update(take)
        plan.sources.append(other)
        if len(plan.rows) == sum(len(v) for v in want.values()):
            break
    return plan


def _copy_reused(
    writer: CacheWriter, plan: _ReusePlan, keep: Sequence[int], info: dict[str, Any]
) -> None:
    """Copy the planned rows into the new entry (rows a resumed writer has are skipped) and
    record ``reused_rows`` / ``reused_from`` in ``info``. A source that fails now (removed or
    changed since it was verified) is left out with a note: its rows are extracted."""
    from medprobe.errors import CacheError

    if not plan.rows:
        return
    row_of = {m: r for r, m in enumerate(keep)}
    used = []
    for src in plan.sources:
        pairs = [(row_of[m], sr) for m, (k, sr) in plan.rows.items() if k == src and m in row_of]
        if not pairs:
            continue
        dst_rows, src_rows = zip(*pairs, strict=True)
        try:
            writer.copy_rows(src, dst_rows, src_rows)
        except CacheError as e:
            if writer.closed:  # the new entry could not be written: nothing to fall back to
                raise
            note = f"cache entry {src} is not reused: {e}"
            print(f"note: {note}", file=sys.stderr, flush=True)
            continue
        used.append({"key": src, "rows": len(pairs)})
    if used:
        info["reused_rows"] = sum(u["rows"] for u in used)
        info["reused_from"] = used


def _bad_images_message(bad: Sequence[Sequence[str]]) -> str:
    lines = "\n".join(f"  {p}: {r}" for p, r in bad)
    return (
        f"{len(bad)} unreadable image(s); fix or remove them, or run with "
        f"data.on_error=skip to leave them out:\n{lines}"
    )


def join_process_group(cfg: Config) -> tuple[Dist, Config]:
    """This process in a data-parallel launch, and ``cfg`` with the model placed on its GPUs.

    Outside a launch (one process) ``cfg`` is returned unchanged with a world-1 :class:`Dist`.
    In a launch the first call creates the process group (:func:`medprobe.distributed.current`)
    and each process gets its own GPUs (:func:`medprobe.distributed.rank_placement`).
    """
    from medprobe import distributed

    dist = distributed.current(float(cfg.dist_timeout_min))
    if dist.world == 1:
        return dist, cfg
    import torch

    place = distributed.rank_placement(
        str(cfg.model.device),
        cfg.model.device_map,
        cfg.model.max_memory,
        local_rank=dist.local_rank,
        local_world=dist.local_world,
        n_gpus=torch.cuda.device_count(),
    )
    known = {f.name for f in dataclasses.fields(cfg.model)}
    model = dataclasses.replace(cfg.model, **{k: v for k, v in place.items() if k in known})
    return dist, dataclasses.replace(cfg, model=model)


@dataclass
class Features:
    """A complete cache entry for a job, and the job's manifest aligned to its rows.

    Attributes:
        cache: the feature cache holding the entry.
        key: the entry's key.
        manifest: the job's manifest restricted and ordered to the entry's ids (images left
            out by ``data.on_error=skip`` are gone).
        info: cache_key, cache_dir, cache_hit, skipped_images, extract_seconds, spec, ...
    """

    cache: FeatureCache
    key: str
    manifest: Manifest
    info: dict[str, Any]

    def layer(self, layer: LayerId) -> np.ndarray:
        """(rows, dim) float16 memmap of one cached layer (each split is read on its own, so
        the host never holds a float32 copy of the whole layer)."""
        return self.cache.load(self.key, layer)


def ensure_features(job: Job) -> Features | None:
    """The features stage of :func:`medprobe.pipeline.run`: lock, scan, shard, write, finalise.

    Returns:
        the complete entry; ``None`` in processes 1.. of a data-parallel launch, whose share of
        the rows is written (process 0 probes).

    Raises:
        medprobe.errors.BadImagesError: unreadable images and ``data.on_error=stop``.
        medprobe.errors.CacheError, DistributedError: see :func:`features`.
    """
    from medprobe import distributed

    dist = job.dist
    t0 = time.perf_counter()
    try:
        cache, key, info = features(
            job.cfg, job.manifest, job.extractor, job.cached_layers, dist, job.scanned
        )
    finally:
        if dist.world > 1:
            distributed.finish()  # from here on the main process works alone
    job.timings["features"] = time.perf_counter() - t0
    if not dist.is_main:
        log.info("rank %d/%d: extraction done; rank 0 fits the probe", dist.rank, dist.world)
        return None
    return Features(cache, key, _align(job.manifest, cache.ids(key)), info)
