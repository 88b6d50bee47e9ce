"""Typed config schemas, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts from ``base_config`` (the :class:`Config` dataclass), so every group
file (``model/``, ``task/``, ``prompt/``, ``probe/``, ``tracker/``) is merged into a typed node:
a misspelled key or a wrong type fails at compose time, and an unknown group option fails with
Hydra's list of available options. Registry names (``model.kind``, ``task.kind``,
``probe.name``) are checked by :func:`validate` before any work, with did-you-mean suggestions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from medprobe.errors import ConfigError  # noqa: F401 (re-exported)


class OnError(str, Enum):
    """What to do with unreadable image files: stop before extraction, or leave them out."""

    stop = "stop"
    skip = "skip"


class OnBadRow(str, Enum):  # noqa: UP042 (same form as OnError)
    """What a task adapter does with a bad label row (malformed, unknown label, missing image):
    ``stop`` with one error naming the file and row, or ``skip`` it and count it in the results.
    """

    stop = "stop"
    skip = "skip"


class ImageFingerprint(str, Enum):
    """How images enter the cache key: every byte (safe) or size + mtime (instant, trusting)."""

    content = "content"
    stat = "stat"


class TrackerMode(str, Enum):
    """W&B mode. ``auto`` = online when an API key is configured, else offline."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ModelConfig:
    """Which model and weights. ``layers`` = layers written to the feature cache.

    ``name`` is the model's identity: the config choice (``clip``, ``plip``, ``idefics9b``, ...),
    the key every result, folder, W&B run and figure groups by. ``kind`` is the extractor
    registry key that builds it (``clip`` builds both CLIP and PLIP).
    """

    name: str = MISSING
    kind: str = MISSING
    hf_id: str | None = None
    revision: str | None = None
    dtype: DType = DType.float32
    device: str = "auto"
    pooling: str = "default"
    layers: Any = "all"
    batch_size: int = 32
    num_workers: int = 2
    # Large-model loading (IDEFICS, docs/idefics.md; ignored by effnet/clip): bitsandbytes
    # quantisation none|8bit|4bit, accelerate placement (device_map: auto|balanced|sequential|
    # cpu|cuda:0; null = from `device`), per-device limits e.g. {0: 70GiB, cpu: 200GiB}, and
    # loading only the decoder blocks the requested layers need.
    quantization: str = "none"
    device_map: str | None = None
    max_memory: Any = None
    truncate: bool = True


@dataclass
class TaskConfig:
    """Which dataset and how to read it (see ``medprobe.data.tasks``).

    ``name`` is the task's identity (``t1`` ... ``t8``, ``demo``; for ``task=csv`` the name the
    user gives, default the data root's folder name); results, folders and W&B key on it.
    ``kind`` is the adapter registry key that reads it.
    """

    name: str = MISSING
    kind: str = MISSING
    root: str | None = None
    csv: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str = "patient_id"
    split_column: str = "split"
    label_sep: str | None = None
    classes: list[str] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    metric: str = "auroc_macro"
    # Dataset adapters (T1-T8, medprobe/data/tasks/t*.py; docs/tasks.md). Defaults leave the
    # demo and csv tasks unchanged.
    on_bad_row: OnBadRow = OnBadRow.stop
    image_dir: str | None = None  # search images only under <root>/<image_dir> (T3, T4)
    derived_dir: str | None = None  # where T2 patches / T8 ROI crops are written as PNG
    min_test_positives: int = 50  # T7: findings kept need this many positives in test
    roi_boxes: str | None = None  # T8: CSV image,x0,y0,x1,y1 (pixels) -> crop before probing
    flip_left: bool = False  # T8: mirror left knees so every knee looks like a right knee
    options: dict[str, Any] = field(default_factory=dict)  # adapter-specific, see docs/tasks.md


@dataclass
class PromptConfig:
    """Text given to models that read a prompt (ignored by vision-only models)."""

    name: str = "none"
    text: str = ""


@dataclass
class ProbeConfig:
    """Linear probe; C is chosen on a validation split carved from train, never on test."""

    name: str = "logistic"
    C_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    class_weight: str | None = None
    max_iter: int = 1000
    val_fraction: float = 0.2
    selection_metric: str = "auroc_macro"
    # Solver of the same objective: sklearn (scipy L-BFGS-B) or torch (full-batch L-BFGS, for
    # 100k x 8192 features on a GPU); device (auto = cuda if available, else cpu) and dtype
    # (float32|float64) apply to torch only.
    backend: str = "sklearn"
    device: str = "auto"
    dtype: str = "float32"


@dataclass
class TrackerConfig:
    name: str = "wandb"
    mode: TrackerMode = TrackerMode.auto
    project: str = "medprobe"
    entity: str | None = None
    group: str | None = None
    name_prefix: str = ""
    tags: list[str] = field(default_factory=list)
    dir: str | None = None


@dataclass
class DataConfig:
    on_error: OnError = OnError.stop
    fingerprint: ImageFingerprint = ImageFingerprint.content
    max_side: int = 1024
    scan_workers: int = 4


@dataclass
class BootstrapConfig:
    n: int = 1000
    ci: float = 0.95


@dataclass
class ClusterConfig:
    """Resources of each job of a ``-m`` sweep run by ``cluster=local|slurm`` (conf/cluster/).

    ``hydra.launcher`` (hydra-submitit-launcher) interpolates these keys; ``cluster=none`` (the
    default) leaves Hydra's launcher alone and ignores them. null = the scheduler's default.
    """

    name: str = "none"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int = 240
    array_parallelism: int = 256  # SLURM: at most this many array tasks run at once
    # SLURM: processes per job; > 1 = data-parallel extraction inside each job, one process per
    # GPU (set it to gpus_per_node; medprobe.distributed, docs/scale.md)
    tasks_per_node: int = 1
    setup: list[str] = field(default_factory=list)  # SLURM: shell lines run before the job
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # SLURM: more sbatch flags


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    layer: Any = -1
    train_fraction: float = 1.0
    seed: int = 0
    data_root: str | None = None
    cache_dir: str = MISSING
    output_dir: str | None = None
    progress: bool = True
    # data-parallel launches (torchrun, accelerate launch, SLURM tasks): how long a process
    # waits for the others (minutes), e.g. while rank 0 hashes images or waits for the cache lock
    dist_timeout_min: float = 720.0


def _first_set(value: Any, default: Any) -> Any:
    return default if value in (None, "") else value


def _dataset_name(root: Any, default: str) -> str:
    """The folder name of ``root`` (``/data/knee_kl/`` -> ``knee_kl``), else ``default``."""
    if root in (None, ""):
        return default
    name = Path(str(root)).expanduser().name
    return name or default


def register_configs() -> None:
    """Register :class:`Config` as ``base_config`` and the ``mp_or`` resolver (idempotent).

    ``${mp_or:a,b}`` is ``a`` unless it is null or empty, else ``b``; ``conf/config.yaml`` uses
    it so that ``output_dir=...`` is also Hydra's run (or sweep) directory.
    """
    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("mp_or"):
        OmegaConf.register_new_resolver("mp_or", _first_set)
    if not OmegaConf.has_resolver("mp_dataset_name"):
        OmegaConf.register_new_resolver("mp_dataset_name", _dataset_name)


def conf_dir() -> Path:
    """Directory holding ``config.yaml``: the repo's ``conf/`` or the installed ``medprobe/conf``.

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError(f"medprobe configs not found next to {here} (broken install?)")


def validate(cfg: Any) -> None:
    """Check registry names and value ranges before any work.

    Raises:
        medprobe.registry.RegistryError: unknown model/task/probe name (with suggestions).
        ConfigError: out-of-range values (``train_fraction``, ``bootstrap.n``, ...).
    """
    from medprobe.registry import EXTRACTORS, PROBES, TASKS

    EXTRACTORS.check(cfg.model.kind)
    TASKS.check(cfg.task.kind)
    PROBES.check(cfg.probe.name)
    if not 0.0 < float(cfg.train_fraction) <= 1.0:
        raise ConfigError(f"train_fraction must be in (0, 1], got {cfg.train_fraction}")
    from medprobe.probe import SELECTION_METRICS

    def need(ok: bool, key: str, rule: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {rule}, got {value!r}")

    need(int(cfg.bootstrap.n) >= 2, "bootstrap.n", ">= 2 (1000 recommended)", cfg.bootstrap.n)
    need(0.0 < float(cfg.bootstrap.ci) < 1.0, "bootstrap.ci", "in (0, 1)", cfg.bootstrap.ci)
    need(int(cfg.seed) >= 0, "seed", ">= 0", cfg.seed)
    timeout = cfg.get("dist_timeout_min", 720.0)
    need(math.isfinite(float(timeout)) and float(timeout) > 0, "dist_timeout_min",
         "> 0 (minutes)", timeout)  # fmt: skip
    need(0.0 < float(cfg.probe.val_fraction) < 1.0, "probe.val_fraction", "in (0, 1)",
         cfg.probe.val_fraction)  # fmt: skip
    grid = list(cfg.probe.C_grid or [])
    need(bool(grid) and all(math.isfinite(float(c)) and float(c) > 0 for c in grid),
         "probe.C_grid", "a non-empty list of finite numbers > 0", grid)  # fmt: skip
    need(cfg.probe.class_weight in (None, "balanced"), "probe.class_weight", "null or balanced",
         cfg.probe.class_weight)  # fmt: skip
    need(cfg.probe.selection_metric in SELECTION_METRICS, "probe.selection_metric",
         f"one of {', '.join(SELECTION_METRICS)}", cfg.probe.selection_metric)  # fmt: skip
    need(int(cfg.probe.max_iter) >= 1, "probe.max_iter", ">= 1", cfg.probe.max_iter)
    backend = str(OmegaConf.select(cfg, "probe.backend", default="sklearn"))
    need(backend in ("sklearn", "torch"), "probe.backend", "sklearn or torch", backend)
    probe_device = str(OmegaConf.select(cfg, "probe.device", default="auto"))
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", probe_device) is not None, "probe.device",
         "auto, cpu, cuda or cuda:N", probe_device)  # fmt: skip
    probe_dtype = str(OmegaConf.select(cfg, "probe.dtype", default="float32"))
    need(probe_dtype in ("float32", "float64"), "probe.dtype", "float32 or float64", probe_dtype)
    if backend == "torch" and probe_device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"probe.device={probe_device} but no CUDA device is available here")
        index = int(probe_device.partition(":")[2] or 0)
        need(index < torch.cuda.device_count(), "probe.device",
             f"a present device (0..{torch.cuda.device_count() - 1})", probe_device)  # fmt: skip
    need(int(cfg.model.batch_size) >= 1, "model.batch_size", ">= 1", cfg.model.batch_size)
    need(int(cfg.model.num_workers) >= 0, "model.num_workers", ">= 0", cfg.model.num_workers)
    need(int(cfg.data.max_side) >= 32, "data.max_side", ">= 32 (pixels)", cfg.data.max_side)
    need(int(cfg.data.scan_workers) >= 1, "data.scan_workers", ">= 1", cfg.data.scan_workers)
    vf, tf = float(cfg.task.val_fraction), float(cfg.task.test_fraction)
    need(0.0 <= vf < 1.0, "task.val_fraction", "in [0, 1)", vf)
    need(0.0 <= tf < 1.0 and vf + tf < 1.0, "task.test_fraction", "in [0, 1) with "
         "task.val_fraction + task.test_fraction < 1", tf)  # fmt: skip
    for key in ("layer", "model.layers"):
        v = OmegaConf.select(cfg, key)
        need(v is not None and not isinstance(v, bool), key,
             "a layer id (int or name), a list of them, or all", v)  # fmt: skip
    device = str(cfg.model.device)
    need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device) is not None, "model.device",
         "auto, cpu, mps, cuda or cuda:N", device)  # fmt: skip
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={device} but no CUDA device is available here")
    validate_cluster(cfg)


def validate_cluster(cfg: Any) -> None:
    """Check the ``cluster`` node; also run before submission (``medprobe.cluster``).

    Raises:
        ConfigError: a resource value out of range or an empty name (the key named).
    """
    c = OmegaConf.select(cfg, "cluster")
    if c is None:  # a config from before the cluster group existed
        return

    def need(ok: bool, key: str, rule: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"cluster.{key} must be {rule}, got {value!r}")

    for key in ("partition", "account", "qos", "constraint"):
        v = c.get(key)
        need(v is None or re.fullmatch(r"[^\s]+", str(v)) is not None, key,
             "null or a name without spaces", v)  # fmt: skip
    for key, low in (("gpus_per_node", 0), ("cpus_per_task", 1), ("mem_gb", 1)):
        v = c.get(key)
        need(v is None or int(v) >= low, key, f"null or >= {low}", v)
    need(int(c.timeout_min) >= 1, "timeout_min", ">= 1 (minutes)", c.timeout_min)
    need(int(c.array_parallelism) >= 1, "array_parallelism", ">= 1", c.array_parallelism)
    need(int(c.tasks_per_node) >= 1, "tasks_per_node", ">= 1", c.tasks_per_node)
