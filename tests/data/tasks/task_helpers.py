"""Helpers of the dataset adapter tests (tests/data/tasks/): a task's config as composed or
typed, building its manifest, and writing tiny datasets in each dataset's real on-disk format
(images, CSVs, symlinks to the real samples in ../shared/data); checks shared by them."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from helpers import REPO, compose_config
from omegaconf import OmegaConf
from PIL import Image

from medprobe.config import TASK_SCHEMAS, TaskConfig
from medprobe.data.manifest import Manifest
from medprobe.registry import TASKS

#: The nine NCT-CRC-HE tissue classes, as the data's folders name them (T1).
T1_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def cfg(task: str, root: Path, **over: Any) -> Any:
    """The task's shipped YAML over its kind's schema (a DictConfig, as composed), with
    ``root`` and overrides; an unknown key or option fails here, as at compose time."""
    raw = OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml")
    raw.pop("defaults", None)  # the schema and prompt choice (a Hydra defaults list)
    base = OmegaConf.merge(OmegaConf.structured(TASK_SCHEMAS[raw.kind]), raw)
    return OmegaConf.merge(base, {"root": str(root), **over})


def typed(task: str, root: Path, **over: Any) -> TaskConfig:
    """:func:`cfg` as the typed dataclass the pipeline passes after ``to_typed``."""
    out = OmegaConf.to_object(cfg(task, root, **over))
    assert isinstance(out, TASK_SCHEMAS[task])
    return out


def composed_prompt(task: str) -> str:
    """The prompt preset a task selects by default in the composed Hydra config."""
    return str(compose_config(f"task={task}").prompt.name)


def build(task: str, root: Path, **over: Any) -> Manifest:
    return TASKS.get(task)(typed(task, root, **over), None)


def image(path: Path, size: tuple[int, int] = (8, 8), value: int = 0, mode: str = "RGB") -> None:
    """A tiny real image file; the format follows the suffix (TIF, JPEG, PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = (
            np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 97 + value
        ) % 65535
        Image.fromarray(arr.astype(np.uint16)).save(path)
        return
    Image.new(mode, size, (value % 256,) * len(mode)).save(path)


def write_csv(
    path: Path, header: list[str], rows: list[list[Any]], *, delimiter: str = ","
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def per_split(m: Manifest) -> dict[str, int]:
    return {s: int((m.split == s).sum()) for s in ("train", "val", "test") if (m.split == s).any()}


def no_group_on_two_sides(m: Manifest) -> None:
    assert m.groups is not None
    side: dict[str, str] = {}
    for g, s in zip(m.groups, m.split, strict=True):
        if g:
            assert side.setdefault(g, s) == s, f"group {g} on two sides"


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def built_alike(task: str, root: Path, **over: Any) -> Manifest:
    """The manifest from the composed DictConfig, after checking that the typed dataclass
    (``medprobe.config.to_typed``) gives the same one: ids, splits, labels and info."""
    a = TASKS.get(task)(cfg(task, root, **over), None)
    b = TASKS.get(task)(typed(task, root, **over), None)
    assert a.ids == b.ids and a.split.tolist() == b.split.tolist()
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.info == b.info
    return a
