"""The data stage of a job, before any model: manifest, image scan, split, every data check.

:func:`load_data` is what ``medprobe data`` runs and what :func:`medprobe.pipeline.job.build_job`
runs first, so a run and the data check see the same rows and fail on the same problems:

1. the task adapter's manifest (``TASKS[task.kind]``): bad label rows per ``task.on_bad_row``;
2. image paths outside the dataset root (refused unless ``data.allow_outside_root``);
3. the image scan (every file loaded as extraction loads it): in a run only under
   ``data.on_error=skip``, whose unreadable images are then left out *before* the split is
   made (:func:`medprobe.data.check.drop_images`), so the checks see the rows that are used;
   ``medprobe data`` always scans. A run with ``data.on_error=stop`` scans just before
   extraction (:mod:`medprobe.pipeline.features`) and stops on any unreadable file;
4. :func:`check_data`: no patient on two sides, train and test rows, the test split's classes,
   the probe's rows covering every tested class, findings with positives and negatives, the
   bootstrap unit — all on the manifest, in seconds, before a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprobe.config import Config, CsvTaskConfig, PaperTaskConfig, T2TaskConfig, T8TaskConfig
from medprobe.data.check import drop_images, summary
from medprobe.data.manifest import Manifest
from medprobe.distributed import Dist
from medprobe.errors import ManifestError
from medprobe.pipeline.rows import ProbeRows, bootstrap_groups, probe_rows
from medprobe.registry import TASKS


@dataclass
class Data:
    """What the data stage found.

    Attributes:
        manifest: the rows the job uses (unreadable images left out under
            ``data.on_error=skip``, split made after that).
        bad_images: ``[(path, reason), ...]`` from the image scan; None when not scanned.
        summary: :func:`medprobe.data.check.summary` (``results.json`` ``data``).
    """

    manifest: Manifest
    bad_images: list[tuple[str, str]] | None
    summary: dict[str, Any]


def _on_error(cfg: Config) -> str:
    return str(cfg.data.on_error)


def load_data(
    cfg: Config, dist: Dist | None = None, *, scan: bool | None = None, check: bool = True
) -> Data:
    """Manifest, scan, split and checks of ``cfg``'s task; no model is built or loaded.

    Args:
        cfg: the typed config.
        dist: this process in a data-parallel launch (the scan is sharded over processes).
        scan: load every image; None = only under ``data.on_error=skip`` (a run).
        check: run :func:`check_data` (``medprobe data`` prints the summary first).

    Raises:
        ManifestError: bad task files (every bad row named), no row left, a patient on two
            sides.
        medprobe.errors.DataError: image paths outside the root.
        ConfigError: a split on which the metrics would be made up (:func:`check_data`).
    """
    dist = dist or Dist()
    on_error = _on_error(cfg)
    manifest: Manifest = TASKS.get(cfg.task.kind)(cfg.task, cfg.data_root)
    manifest.info["outside_root"] = _outside_root(cfg, manifest)
    bad: list[tuple[str, str]] | None = None
    if scan if scan is not None else on_error == "skip":
        bad = scan_manifest(cfg, manifest, dist)
        if on_error == "skip" and bad:
            manifest = drop_images(manifest, bad)
    data = Data(manifest, bad, summary(manifest, bad, on_error=on_error))
    data.summary["task"] = cfg.task.name  # the identity (the manifest holds the kind)
    if check:
        check_data(cfg, manifest)
    return data


def scan_manifest(
    cfg: Config, manifest: Manifest, dist: Dist | None = None
) -> list[tuple[str, str]]:
    """Every unreadable image of the manifest (its image source's scan: files through
    :func:`medprobe.data.images.scan_images`, dataset rows through the dataset), the scan sharded
    over the processes of a data-parallel launch; every process gets the list."""
    dist = dist or Dist()
    paths = [str(p) for p in manifest.paths]
    lo, hi = dist.rank * len(paths) // dist.world, (dist.rank + 1) * len(paths) // dist.world
    bad = manifest.images.scan(
        paths[lo:hi],
        max_side=int(cfg.data.max_side),
        max_workers=int(cfg.data.scan_workers),
        progress=bool(cfg.progress) and dist.is_main,
    )
    if dist.world > 1:
        return [(str(p), str(r)) for p, r in dist.gather(bad)]
    return bad


def check_data(cfg: Config, m: Manifest) -> ProbeRows:
    """Every check that needs only the manifest (issue 16.8), before any model is loaded.

    * no patient in two splits;
    * train and test rows; the test split holds two classes or more (multiclass), or at least
      one finding with positives and negatives (multi-label);
    * the probe's rows (``train_fraction``, ``probe.val_fraction``, ``probe.fraction_of``)
      hold two classes or more and every class the test split holds
      (:func:`medprobe.pipeline.rows.check_class_coverage`);
    * ``bootstrap.unit`` fits the task (patient ids for ``unit=patient``).

    Returns:
        the probe's rows (:func:`medprobe.pipeline.rows.probe_rows`).

    Raises:
        ManifestError: a patient in two splits.
        ConfigError: naming the task and the classes.
    """
    from medprobe.data.splits import check_no_patient_overlap

    if m.groups is not None:
        try:
            check_no_patient_overlap(m.split, m.groups)
        except ValueError as e:
            raise ManifestError(f"task {m.task}: {e}") from None
    rows = probe_rows(m, cfg.probe.val_fraction, cfg.train_fraction, cfg.seed,
                      fraction_of=str(cfg.probe.fraction_of))  # fmt: skip
    bootstrap_groups(m, str(cfg.bootstrap.unit))
    return rows


def _outside_root(cfg: Config, manifest: Manifest) -> list[list[str]]:
    """Image paths that lead outside the dataset root (through a symlink or ``..``).

    The root is ``task.root`` (else ``data_root``); images a task derives (T2 patches, T8
    crops) may also live under its ``derived_dir``. Refused unless ``data.allow_outside_root``,
    which records them (``[path, resolved path]`` each) in results.json ``task_info``.

    Raises:
        medprobe.errors.DataError: such paths without ``data.allow_outside_root``, one line per
            file, all at once.
    """
    from medprobe.data.images import check_inside_root

    if manifest.source is not None:  # dataset rows (task=hf), not files under a root
        return []
    task = cfg.task
    root = task.root if isinstance(task, (CsvTaskConfig, PaperTaskConfig)) else None
    root = root or cfg.data_root
    if not root:  # the shipped demo set
        return []
    outside = check_inside_root(manifest.paths, Path(root).expanduser(), allow_outside=True)
    derived = task.derived_dir if isinstance(task, (T2TaskConfig, T8TaskConfig)) else None
    if derived:
        keep = {p for p, _ in check_inside_root([p for p, _ in outside], derived,
                                                allow_outside=True)}  # fmt: skip
        outside = [(p, r) for p, r in outside if p in keep]
    if outside and not cfg.data.allow_outside_root:
        check_inside_root(  # raises, listing all
            [p for p, _ in outside],
            Path(root).expanduser(),
            how_to_allow="unless data.allow_outside_root=true",
        )
    return [[p, r] for p, r in outside]
