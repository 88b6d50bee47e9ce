"""After compose: the one conversion to typed objects, and the rules a type cannot express.

Types, closed sets and unknown keys are checked by OmegaConf while Hydra composes
(:mod:`medprobe.config.schema`). What is left is checked here, before any work: value ranges
(``train_fraction`` in (0, 1], ...), patterns of open sets (``cuda:N``), rules across keys (the
pooling a model kind has, the schema a task kind needs) and registry names (with did-you-mean
suggestions).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from medprobe.config.schema import (
    TASK_SCHEMAS,
    ClusterConfig,
    Config,
    CsvTaskConfig,
    Pooling,
    ProbeBackend,
    RandomSplit,
    T7TaskConfig,
)
from medprobe.errors import ConfigError

__all__ = ["POOLINGS", "to_typed", "validate", "validate_cluster"]

#: Extractor kind -> the poolings it implements (``default`` = the kind's own; the extractors'
#: ``POOLINGS`` in medprobe/extractors/clip.py and idefics.py). Kinds not listed take any.
POOLINGS: dict[str, tuple[Pooling, ...]] = {
    "effnet_lite0": (Pooling.default,),
    "clip": (Pooling.default, Pooling.cls, Pooling.mean),
    "idefics": (Pooling.default, Pooling.last, Pooling.mean_after_image, Pooling.image_latents),
    # vision encoders (medprobe/extractors/vision.py, timm_models.py, openclip.py)
    "vision": (Pooling.default, Pooling.cls, Pooling.mean_patch, Pooling.cls_mean_patch),
    "timm": (Pooling.default, Pooling.cls, Pooling.mean_patch, Pooling.cls_mean_patch),
    "open_clip": (Pooling.default, Pooling.cls, Pooling.mean_patch, Pooling.cls_mean_patch),
    "vlm": (Pooling.default, Pooling.last, Pooling.mean_image, Pooling.mean_after_image),
}


def to_typed(cfg: DictConfig) -> Config:
    """The composed config as dataclasses, checked: call once after compose, pass it on.

    Interpolations are resolved; every closed set is an Enum member, lists and dicts are plain
    ``list`` / ``dict``; ``cfg.task`` is the task kind's schema (``T5TaskConfig``, ...).

    Raises:
        ConfigError: an interpolation that does not resolve (an unset environment variable),
            a mandatory value left unset, a key added with ``+`` that the schema does not have
            (the valid keys named), or any rule of :func:`validate`.
        medprobe.errors.RegistryError: an unknown model, task or probe kind.
    """
    typed = _to_object(cfg)
    validate(typed)
    return typed


def _to_object(cfg: DictConfig) -> Config:
    if "hydra" in cfg:  # composed with return_hydra_config (tests, Hydra callbacks): not ours
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(getattr(e, "msg", None) or e).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from e
    if not isinstance(obj, Config):
        raise ConfigError(f"not a medprobe config (got {type(obj).__name__}); compose conf/config")
    _refuse_added_keys(obj, "")
    return obj


def _refuse_added_keys(obj: Any, path: str) -> None:
    """A key forced in with ``+key=`` / ``++key=`` that the schema does not have: OmegaConf
    lets it through (``to_object`` sets it as a plain attribute); refuse it, naming the keys."""
    known = [f.name for f in fields(obj)]
    extra = sorted(set(vars(obj)) - set(known))
    if extra:
        where = path.rstrip(".") or "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(path + k for k in extra)}: {where} has {', '.join(known)}"
        )
    for name in known:
        value = getattr(obj, name)
        if is_dataclass(value) and not isinstance(value, type):
            _refuse_added_keys(value, f"{path}{name}.")


def _need(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def validate(cfg: Config | DictConfig) -> None:
    """Check registry names, value ranges and cross-key rules before any work.

    Args:
        cfg: the typed config, or the composed DictConfig (converted first, as
            :func:`to_typed` does).

    Raises:
        medprobe.errors.RegistryError: unknown model/task/probe kind (with suggestions).
        ConfigError: the key, the rule and the value that breaks it.
    """
    if isinstance(cfg, DictConfig):
        cfg = _to_object(cfg)
    from medprobe.registry import EXTRACTORS, PROBES, TASKS

    EXTRACTORS.check(cfg.model.kind)
    TASKS.check(cfg.task.kind)
    PROBES.check(cfg.probe.name)
    for key, name in (("task.name", cfg.task.name), ("model.name", cfg.model.name)):
        # identities become folder and file names (outputs/<task>/..., report's bars_<task>.png)
        _need(str(name).strip() not in ("", ".", "..") and not re.search(r"[/\\]", str(name)),
              key, "a name usable as one folder name (not empty, '.' or '..'; no '/' or '\\')",
              name)  # fmt: skip
    _validate_task(cfg)

    _need(0.0 < cfg.train_fraction <= 1.0, "train_fraction", "in (0, 1]", cfg.train_fraction)
    _need(cfg.bootstrap.n >= 2, "bootstrap.n", ">= 2 (1000 recommended)", cfg.bootstrap.n)
    _need(0.0 < cfg.bootstrap.ci < 1.0, "bootstrap.ci", "in (0, 1)", cfg.bootstrap.ci)
    _need(cfg.seed >= 0, "seed", ">= 0", cfg.seed)
    timeout = cfg.dist_timeout_min
    _need(math.isfinite(timeout) and timeout > 0, "dist_timeout_min", "> 0 (minutes)", timeout)

    probe = cfg.probe
    _need(0.0 < probe.val_fraction < 1.0, "probe.val_fraction", "in (0, 1)", probe.val_fraction)
    grid = list(probe.C_grid)
    _need(bool(grid) and all(math.isfinite(c) and c > 0 for c in grid), "probe.C_grid",
          "a non-empty list of finite numbers > 0", grid)  # fmt: skip
    _need(probe.max_iter >= 1, "probe.max_iter", ">= 1", probe.max_iter)
    _need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", probe.device) is not None, "probe.device",
          "auto, cpu, cuda or cuda:N", probe.device)  # fmt: skip
    if probe.backend == ProbeBackend.torch and probe.device.startswith("cuda"):
        _need_cuda("probe.device", probe.device)

    model = cfg.model
    _need(model.batch_size >= 1, "model.batch_size", ">= 1", model.batch_size)
    _need(model.num_workers >= 0, "model.num_workers", ">= 0", model.num_workers)
    valid = POOLINGS.get(model.kind)
    if valid is not None and model.pooling not in valid:
        raise ConfigError(
            f"model.pooling={model.pooling} does not apply to model.kind={model.kind}; "
            f"valid: {', '.join(valid)}"
        )
    for key, v in (("layer", cfg.layer), ("model.layers", model.layers)):
        _need(_is_layer_ids(v), key, "a layer id (int or name), a list of them, or all", v)
    _need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", model.device) is not None, "model.device",
          "auto, cpu, mps, cuda or cuda:N", model.device)  # fmt: skip
    if model.device.startswith("cuda"):
        _need_cuda("model.device", model.device, check_index=False)

    # '' (cache_dir='' or an empty $MEDPROBE_CACHE_DIR) wrote the cache into the working folder
    _need(str(cfg.cache_dir).strip() != "", "cache_dir", "a folder (unset $MEDPROBE_CACHE_DIR "
          "if it is empty; the default is ~/.cache/medprobe)", cfg.cache_dir)  # fmt: skip
    _need(cfg.data.max_side >= 32, "data.max_side", ">= 32 (pixels)", cfg.data.max_side)
    _need(cfg.data.scan_workers >= 1, "data.scan_workers", ">= 1", cfg.data.scan_workers)
    validate_cluster(cfg)


def _is_layer_ids(v: Any) -> bool:
    """One layer id (an int or a name, not a bool or a float such as 3.5) or a non-empty list
    of them."""

    def one(x: Any) -> bool:
        return isinstance(x, (int, str)) and not isinstance(x, bool)

    if isinstance(v, (str, int)):
        return one(v)
    if isinstance(v, (Mapping, DictConfig)):
        return False
    try:
        items = list(v)
    except TypeError:
        return False
    return bool(items) and all(one(x) for x in items)


def _validate_task(cfg: Config) -> None:
    task = cfg.task
    schema = TASK_SCHEMAS.get(task.kind)
    if schema is not None and not isinstance(task, schema):
        raise ConfigError(
            f"task.kind={task.kind} reads its settings from the {schema.__qualname__} schema: "
            f"add '- /schema/task@_here_: {task.kind}' to the defaults list of the task's YAML "
            "(as conf/task/*.yaml do)"
        )
    if isinstance(task, RandomSplit):
        vf, tf = task.val_fraction, task.test_fraction
        _need(0.0 <= vf < 1.0, "task.val_fraction", "in [0, 1)", vf)
        _need(0.0 <= tf < 1.0 and vf + tf < 1.0, "task.test_fraction", "in [0, 1) with "
              "task.val_fraction + task.test_fraction < 1", tf)  # fmt: skip
        _need(task.split_seed >= 0, "task.split_seed", ">= 0", task.split_seed)
    if isinstance(task, CsvTaskConfig):
        # "" made the task multi-label (one binary probe per class) while reading one label
        _need(task.label_sep != "", "task.label_sep",
              "a separator such as '|', or null for one label per image", task.label_sep)  # fmt: skip
    if isinstance(task, T7TaskConfig):
        _need(task.min_test_positives >= 1, "task.min_test_positives", ">= 1",
              task.min_test_positives)  # fmt: skip
        share = task.max_bad_image_share
        _need(0.0 <= share <= 1.0, "task.max_bad_image_share", "in [0, 1] (a share of the "
              "images: 0.01 = 1%)", share)  # fmt: skip


def _need_cuda(key: str, device: str, *, check_index: bool = True) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{key}={device} but no CUDA device is available here")
    if check_index:
        index = int(device.partition(":")[2] or 0)
        _need(index < torch.cuda.device_count(), key,
              f"a present device (0..{torch.cuda.device_count() - 1})", device)  # fmt: skip


def validate_cluster(cfg: Config | DictConfig) -> None:
    """Check the ``cluster`` node; also run before submission (``medprobe.cluster``).

    Args:
        cfg: the typed config or a DictConfig with a ``cluster`` node (Hydra's callbacks pass
            the composed config, ``hydra`` node included).

    Raises:
        ConfigError: a resource value out of range or an empty name (the key named).
    """
    c: ClusterConfig | DictConfig = cfg.cluster

    def need(ok: bool, key: str, rule: str, value: Any) -> None:
        _need(ok, f"cluster.{key}", rule, value)

    for key in ("partition", "account", "qos", "constraint"):
        v = getattr(c, key)
        need(v is None or re.fullmatch(r"[^\s]+", str(v)) is not None, key,
             "null or a name without spaces", v)  # fmt: skip
    for key, low in (("gpus_per_node", 0), ("cpus_per_task", 1), ("mem_gb", 1)):
        v = getattr(c, key)
        need(v is None or int(v) >= low, key, f"null or >= {low}", v)
    need(int(c.timeout_min) >= 1, "timeout_min", ">= 1 (minutes)", c.timeout_min)
    need(int(c.array_parallelism) >= 1, "array_parallelism", ">= 1", c.array_parallelism)
    need(int(c.tasks_per_node) >= 1, "tasks_per_node", ">= 1", c.tasks_per_node)
