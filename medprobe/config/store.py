"""Registration with Hydra: the schemas in the ConfigStore, medprobe's resolvers, conf_dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from medprobe.config.schema import TASK_SCHEMAS, Config

#: ConfigStore group of the per-task schemas; ``conf/task/<t>.yaml`` selects one with
#: ``- /schema/task@_here_: <kind>`` in its defaults list.
TASK_SCHEMA_GROUP = "schema/task"


def _first_set(value: Any, default: Any) -> Any:
    return default if value in (None, "") else value


def _dataset_name(root: Any, default: str) -> str:
    """The folder name of ``root`` (``/data/knee_kl/`` -> ``knee_kl``; ``.`` and ``..``: the
    folder they stand for, not ``..``, which is no task name), else ``default``."""
    if root in (None, ""):
        return default
    path = Path(str(root)).expanduser()
    name = path.name
    if name in ("", ".", ".."):  # task.path=. / .. : the folder it names
        name = path.resolve().name
    return name or default


def register_configs() -> None:
    """Register the schemas and medprobe's resolvers (idempotent; call before composing).

    * ``base_config``: :class:`~medprobe.config.schema.Config`, the head of conf/config.yaml.
    * ``schema/task/<kind>``: one task schema per adapter kind (:data:`TASK_SCHEMAS`).
    * ``${mp_or:a,b}``: ``a`` unless it is null or empty, else ``b`` (conf/config.yaml uses it
      so that ``output_dir=...`` is also Hydra's run or sweep directory).
    * ``${mp_dataset_name:root,default}``: the folder name of ``root`` (``task=csv``'s name).
    """
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for kind, node in TASK_SCHEMAS.items():
        cs.store(group=TASK_SCHEMA_GROUP, name=kind, node=node)
    if not OmegaConf.has_resolver("mp_or"):
        OmegaConf.register_new_resolver("mp_or", _first_set)
    if not OmegaConf.has_resolver("mp_dataset_name"):
        OmegaConf.register_new_resolver("mp_dataset_name", _dataset_name)


def conf_dir() -> Path:
    """Directory holding ``config.yaml``: the repo's ``conf/`` or the installed ``medprobe/conf``.

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    package = Path(__file__).resolve().parents[1]  # .../medprobe
    for cand in (package / "conf", package.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError(f"medprobe configs not found next to {package} (broken install?)")
