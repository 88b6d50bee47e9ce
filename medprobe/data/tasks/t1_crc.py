"""T1: colorectal cancer tissue classes, NCT-CRC-HE-100K (train) + CRC-VAL-HE-7K (test).

Source: Kather, Halama, Marx, "100,000 histological images of human colorectal cancer and
healthy tissue", Zenodo 2018, doi:10.5281/zenodo.1214456 (CC BY 4.0); Kather et al., PLoS Med
2019. Both sets are 224x224 px H&E tiles (0.5 um/px), one folder per class, TIF files:
NCT-CRC-HE-100K = 100,000 tiles from 86 slides, CRC-VAL-HE-7K = 7,180 tiles from 50 patients.
The paper (Table 1; the authors' README: "107,180 histological images from 136 patients") trains
on the 100K set and tests on the separate 7K set, as PLIP does (``process_Kather_csv`` in
PathologyFoundation/plip, which the authors follow).

Rules:

* **Split**: the official one, never a random split of 100K: every tile under
  ``NCT-CRC-HE-100K/`` is ``train``, every tile under ``CRC-VAL-HE-7K/`` is ``test``. The probe
  carves its validation rows from train.
* **Label** = the class folder name (one of :data:`CLASSES`). No patient ids exist in either set
  (``groups`` is None, ``info["grouped"] = False``).
* Files whose suffix is not an image (``.DS_Store``, ``Thumbs.db``, text files) are ignored and
  counted; an unknown class folder is a bad row (``task.on_bad_row``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T1TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    IMAGE_SUFFIXES,
    BadRows,
    find_dir,
    make_manifest,
    task_root,
)

#: Class folders of both sets in the index order used by PathMNIST / MedMNIST.
CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
TRAIN_DIR = "NCT-CRC-HE-100K"
TEST_DIR = "CRC-VAL-HE-7K"


def _list_set(
    root: Path, set_dir: Path, split: str, bad: BadRows, ignored: list[str]
) -> list[tuple[str, Path, int, str]]:
    index = {c: k for k, c in enumerate(CLASSES)}
    out: list[tuple[str, Path, int, str]] = []
    for cls_dir in sorted(p for p in set_dir.iterdir() if not p.name.startswith(".")):
        if not cls_dir.is_dir():
            ignored.append(cls_dir.relative_to(root).as_posix())
            continue
        if cls_dir.name not in index:
            bad(
                cls_dir,
                None,
                f"unknown class folder {cls_dir.name!r}; known: {', '.join(CLASSES)}",
                "unknown_class_folder",
            )
            continue
        for f in sorted(cls_dir.iterdir()):
            rel = f.relative_to(root).as_posix()
            if f.name.startswith(".") or not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(rel)
                continue
            out.append((rel, f, index[cls_dir.name], split))
    return out


def build_manifest(task_cfg: T1TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T1 from ``<root>/NCT-CRC-HE-100K/<CLASS>/*`` and ``<root>/CRC-VAL-HE-7K/...``.

    Returns:
        Manifest with ``labels`` (n,) int64 indices into :data:`CLASSES`, split ``train`` (100K)
        / ``test`` (7K), ``groups`` None; ``info`` has the source, split rule, ignored files and
        per-split class counts.

    Raises:
        ManifestError: no root, either set folder missing, a set without any image, or an
            unknown class folder with ``task.on_bad_row=stop``.
    """
    root = task_root(task_cfg, data_root, "t1")
    bad = BadRows.from_config(task_cfg)
    sets = {}
    for name, split in ((TRAIN_DIR, "train"), (TEST_DIR, "test")):
        d = find_dir(root, [name])
        if d is None:
            raise ManifestError(
                f"task=t1: folder {name}/ not found under {root} (unzip {name}.zip there; "
                "see docs/tasks.md#t1)"
            )
        sets[split] = d
    ignored: list[str] = []
    rows: list[tuple[str, Path, int, str]] = []
    for split, d in sets.items():
        found = _list_set(root, d, split, bad, ignored)
        if not found:
            raise ManifestError(f"task=t1: no images under {d} (expected <CLASS>/*.tif)")
        rows.extend(found)
    info: dict[str, Any] = {
        "source": "NCT-CRC-HE-100K (train) + CRC-VAL-HE-7K (test), Kather et al. 2018, "
        "doi:10.5281/zenodo.1214456, CC BY 4.0",
        "split_source": f"official: {sets['train'].name}/ -> train, {sets['test'].name}/ -> "
        "test (paper Table 1; never a random split of 100K)",
        "grouped": False,
        "ignored_files": len(ignored),
        "ignored_examples": ignored[:5],
        **bad.info(),
    }
    return make_manifest(
        "t1",
        root,
        [(r[0], r[1]) for r in rows],
        np.array([r[2] for r in rows], dtype=np.int64),
        CLASSES,
        [r[3] for r in rows],
        None,
        info,
    )
