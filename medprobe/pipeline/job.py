"""Build a probing job: typed config, manifest, extractor, layers, output folder.

Everything a job needs before any feature is computed, checked here so that a mistake costs
seconds, not an extraction: the config (types and ranges), the registry names, the task's
label files, the layers, the split's class coverage (on the manifest, before any model is
loaded), and whether the output folder can be written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from medprobe.config import (
    Config,
    CsvTaskConfig,
    PaperTaskConfig,
    T2TaskConfig,
    T8TaskConfig,
    to_typed,
)
from medprobe.data.manifest import Manifest
from medprobe.distributed import Dist
from medprobe.errors import ConfigError
from medprobe.extractors.base import Extractor, LayerId, resolve_layers
from medprobe.pipeline.features import join_process_group
from medprobe.pipeline.rows import bootstrap_groups, probe_rows
from medprobe.registry import EXTRACTORS, TASKS


@dataclass
class Job:
    """One probing job, ready to run.

    Attributes:
        cfg: the typed config (:class:`medprobe.config.Config`), the model node placed for
            this process in a data-parallel launch.
        manifest: the task's examples (ids, paths, labels, splits, patient groups).
        extractor: the model wrapper; loads its weights on first use.
        cached_layers: every layer written to the feature cache (``model.layers``).
        probe_layers: the layers probed: one, or every cached layer for ``layer=all``.
        out_dir: the job's output folder (per-layer subfolders ``layer_<L>`` for ``layer=all``).
        dist: this process in a data-parallel launch (world 1 otherwise).
        timings: seconds per stage, filled in as the job runs.
    """

    cfg: Config
    manifest: Manifest
    extractor: Extractor
    cached_layers: list[LayerId]
    probe_layers: list[LayerId]
    out_dir: Path
    dist: Dist
    key: str = ""
    claim: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the output folder (:func:`claim_output_dir`)."""
        if self.claim is not None:
            self.claim.release()
            self.claim = None

    @property
    def all_layers(self) -> bool:
        """``layer=all``: one results folder per layer plus the layer curve."""
        return str(self.cfg.layer) == "all"

    def layer_dir(self, layer: LayerId) -> Path:
        """Where ``layer``'s results.json and predictions.csv go."""
        return self.out_dir / f"layer_{layer}" if self.all_layers else self.out_dir


def default_output_dir(cfg: Config) -> Path:
    """``outputs/<task>/<model>/<time with microseconds>``: keyed on the task's and the model's
    identity (``cfg.task.name``, ``cfg.model.name``), never on their kind, so two models built
    by one extractor kind never share a folder."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S") + f"-{time.time_ns() // 1000 % 1_000_000:06d}"
    return Path("outputs") / cfg.task.name / cfg.model.name / stamp


def _writable(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output_dir {out_dir}: cannot write there ({e.strerror})") from None
    return out_dir


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


#: config keys that do not change what a job computes (where it writes, how it reports)
_NOT_THE_JOB = ("output_dir", "overrides", "sweep_group", "progress", "tracker", "cluster",
                "dist_timeout_min", "overwrite", "cache_dir", "cache")  # fmt: skip
CLAIM_FILE = ".medprobe.lock"


def job_key(cfg: Config) -> str:
    """sha256 of the settings that define a job's results (all of the config but where it
    writes and how it reports): two runs with one key compute the same thing."""
    import hashlib
    import json

    d = {k: v for k, v in config_dict(cfg).items() if k not in _NOT_THE_JOB}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def claim_output_dir(out_dir: Path, key: str, *, overwrite: bool = False) -> Any:
    """Make ``out_dir`` this job's: hold its lock, and refuse a folder with another job's
    results (issue 14.2: two jobs given one ``output_dir`` would leave ``results.json`` of one
    and ``predictions.csv`` of the other, and a comparison would report a difference that does
    not exist).

    A rerun of the same job (same :func:`job_key`) may overwrite its own results; another
    job's, or results without a key (older medprobe), only with ``overwrite=true``.

    Returns:
        the held :class:`filelock.FileLock` (release it when the job ends).

    Raises:
        ConfigError: another running job holds the folder, or it holds another job's results.
    """
    import json

    import filelock

    lock = filelock.FileLock(str(out_dir / CLAIM_FILE))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise ConfigError(
            f"output_dir {out_dir} is in use by another running job ({out_dir / CLAIM_FILE}); "
            "give each job its own output_dir"
        ) from None
    if not overwrite:
        for name in ("results.json", "layers.json"):
            try:
                old = json.loads((out_dir / name).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(old, dict) and old.get("job_key") != key:
                lock.release()
                what = f"{old.get('task', '?')} / {old.get('model', '?')} / layer {old.get('layer', '?')}"
                raise ConfigError(
                    f"output_dir {out_dir} holds {name} of another job ({what}); choose another "
                    "output_dir, or overwrite=true to replace it"
                )
    return lock


def _layers(cfg: Config, extractor: Extractor) -> tuple[list[LayerId], list[LayerId]]:
    available = extractor.layers()
    cached = resolve_layers(cfg.model.layers, available)
    if str(cfg.layer) == "all":
        return cached, list(cached)
    probed = resolve_layers(cfg.layer, available)
    if len(probed) != 1:
        raise ConfigError(f"layer must name one layer or all, got {cfg.layer!r}")
    if probed[0] not in cached:
        raise ConfigError(
            f"layer {probed[0]!r} is not among model.layers={list(cached)}; add it there"
        )
    return cached, probed


def build_job(config: DictConfig | Config) -> Job:
    """Check everything that can be checked without a model, and assemble the job.

    Args:
        config: the composed config (a Hydra ``DictConfig``, converted once with
            :func:`medprobe.config.to_typed`) or an already typed :class:`Config`.

    Raises:
        ConfigError, RegistryError: bad config values or names (before any work).
        medprobe.errors.ManifestError: bad task input (file and row named).
        ConfigError: a split on which the metrics would be made up (before extraction).
        medprobe.errors.ExtractorError: a layer the model does not have.
    """
    t0 = time.perf_counter()
    cfg = config if isinstance(config, Config) else to_typed(config)
    dist, cfg = join_process_group(cfg)
    manifest: Manifest = TASKS.get(cfg.task.kind)(cfg.task, cfg.data_root)
    # every check that needs only the manifest runs before any model is loaded
    manifest.info["outside_root"] = _outside_root(cfg, manifest)
    probe_rows(
        manifest,
        cfg.probe.val_fraction,
        cfg.train_fraction,
        cfg.seed,
        fraction_of=str(cfg.probe.fraction_of),
    )
    bootstrap_groups(manifest, str(cfg.bootstrap.unit))
    extractor: Extractor = EXTRACTORS.get(cfg.model.kind)(cfg.model, cfg.prompt.text)
    cached, probed = _layers(cfg, extractor)
    out_dir = Path(cfg.output_dir).expanduser() if cfg.output_dir else default_output_dir(cfg)
    key = job_key(cfg)
    claim = None
    if dist.is_main:  # the other processes of a data-parallel job write no results
        claim = claim_output_dir(_writable(out_dir), key, overwrite=cfg.overwrite)
    job = Job(cfg, manifest, extractor, cached, probed, out_dir, dist, key, claim)
    job.timings["setup"] = time.perf_counter() - t0
    return job


def config_dict(cfg: Config) -> dict[str, Any]:
    """The typed config as plain JSON data (enums as their values), for results.json and W&B."""
    import dataclasses
    import enum

    def plain(x: Any) -> Any:
        if isinstance(x, enum.Enum):
            return x.value
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x

    return plain(dataclasses.asdict(cfg))  # type: ignore[no-any-return]
