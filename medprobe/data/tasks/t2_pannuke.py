"""T2: pan-cancer benign vs malignant H&E patches from PanNuke.

Source: Gamper et al., "PanNuke: an open pan-cancer histology dataset for nuclei instance
segmentation and classification", ECDP 2019 / arXiv:2003.10778 (CC BY-NC-SA 4.0),
https://warwick.ac.uk/fac/cross_fac/tia/data/pannuke. Three folds, each unzipped as::

    Fold 1/images/fold1/images.npy   (N, 256, 256, 3) float, RGB values 0-255
    Fold 1/images/fold1/types.npy    (N,) str, tissue type ("Breast", "Colon", ...; 19 types)
    Fold 1/masks/fold1/masks.npy     (N, 256, 256, 6) float, one channel per nucleus type:
                                     0 neoplastic, 1 inflammatory, 2 connective/soft tissue,
                                     3 dead, 4 epithelial, 5 background; in channels 0-4 each
                                     nucleus is one distinct non-zero instance id.

(The folder may be named ``Fold 1``, ``Fold1`` or ``fold_1/Fold 1``: folds are found by the
``images/fold<k>/images.npy`` pattern.) Fold sizes 2,656 / 2,523 / 2,722 = 7,901 patches.

Rules (paper, Methods: "following the PLIP repository" — Huang et al., Nat Med 2023,
``reproducibility/generate_validation_datasets/preprocess/preprocess_PanNuke.py``):

* Nuclei per type = number of distinct non-zero instance ids in that channel (0-4).
* A patch with no nucleus at all is dropped (PLIP: "purely background"). The authors' README
  counts 7,558 T2 images of the 7,901 patches, i.e. 343 empty ones (not verified here).
* **malignant**: at least 10 neoplastic nuclei and neoplastic > 30% of all nuclei.
* **benign**: no neoplastic nucleus. Everything else is dropped (counted in ``info``).
  The paper reports 2,866 malignant and 3,368 benign patches.
* **Split**: PLIP's ``process_PanNuke`` with ``train_ratio=0.7`` (``prepare_dataset_to_csv.py``):
  70% train / 30% test within every (tissue type, label) stratum; here with
  :func:`medprobe.data.splits.assign_splits` (seeded by ``task.split_seed``). PanNuke has no
  patient or slide ids, so the split cannot be patient-level (``grouped=False``).

``task.options.plip_counting=true`` reproduces PLIP's arithmetic exactly instead: masks cast to
uint8 (ids above 255 wrap), ``len(unique) - 1`` per channel for all six channels including the
background channel (which adds 1 to the total of almost every patch). The default is the rule
as stated above; the two can differ on patches near the 30% boundary (not verified on the real
data here, which was not available).

Patches: each kept patch is written once as ``<derived>/fold<k>/<index:04d>.png`` (8-bit RGB,
pixels rounded and clipped to 0-255), where ``<derived>`` is ``task.derived_dir`` or
``<root>/.medprobe/pannuke_png``; existing files are reused, so building the manifest again is
cheap and idempotent. Per-patch nucleus counts are cached next to them
(``fold<k>_counts.json``, invalidated when an ``.npy`` file's size or mtime changes). Arrays are
read with ``mmap_mode="r"``, one patch at a time: memory stays flat (a masks.npy is ~8 GB).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.config.schema import T2TaskConfig
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.common import (
    make_manifest,
    stratified_split,
    task_root,
    walk_dirs,
)

CLASSES = ["benign", "malignant"]
NUCLEUS_TYPES = ["neoplastic", "inflammatory", "connective", "dead", "epithelial"]
MIN_NEOPLASTIC = 10  # PLIP preprocess_PanNuke.py: n_tumor >= 10
MIN_NEOPLASTIC_SHARE = 0.3  # ... and n_tumor / total > 0.3
COUNTS_VERSION = 1
_FOLD_RE = re.compile(r"^fold\s*_?(\d+)$", re.IGNORECASE)


def nucleus_counts(mask: np.ndarray) -> np.ndarray:
    """Distinct non-zero instance ids per nucleus channel.

    Args:
        mask: (H, W, 6) instance mask of one patch (any numeric dtype; ids < 2**32).

    Returns:
        (5,) int64: neoplastic, inflammatory, connective, dead, epithelial nuclei.
    """
    m5 = np.asarray(mask[..., :5])
    nz = m5 != 0
    if not nz.any():
        return np.zeros(5, dtype=np.int64)
    channel = np.nonzero(nz)[2].astype(np.float64)
    keys = np.unique(channel * 2.0**32 + m5[nz].astype(np.float64))
    return np.bincount((keys // 2.0**32).astype(np.int64), minlength=5)[:5]


def plip_counts(mask: np.ndarray) -> np.ndarray:
    """PLIP's per-channel count: ``len(np.unique(uint8(channel))) - 1`` for all 6 channels.

    Returns:
        (6,) int64 (the sixth is the background channel, usually 1).
    """
    u8 = np.asarray(mask).astype(np.int64) & 0xFF  # PLIP: msks.astype(np.uint8)
    return np.array(
        [np.count_nonzero(np.bincount(u8[..., j].ravel(), minlength=256)) - 1 for j in range(6)],
        dtype=np.int64,
    )


def label_patch(counts: np.ndarray, *, plip: bool = False) -> str:
    """``"malignant"``, ``"benign"``, ``"empty"`` (no nucleus) or ``"ambiguous"`` (dropped).

    Args:
        counts: (5,) from :func:`nucleus_counts`, or (6,) from :func:`plip_counts` with
            ``plip=True`` (then the total includes the background channel, as in PLIP).
    """
    neo = int(counts[0])
    if plip:
        total = int(counts.sum())
        empty = int(counts[:5].sum()) == 0
    else:
        total = int(counts[:5].sum())
        empty = total == 0
    if empty:
        return "empty"
    if neo >= MIN_NEOPLASTIC and neo / total > MIN_NEOPLASTIC_SHARE:
        return "malignant"
    if neo == 0:
        return "benign"
    return "ambiguous"


def find_folds(root: Path) -> dict[int, dict[str, Path]]:
    """``{k: {"images", "masks", "types"}}`` for every ``images/fold<k>/images.npy`` under root.

    Raises:
        ManifestError: no fold, a fold found twice, or its masks.npy / types.npy missing.
    """
    folds: dict[int, dict[str, Path]] = {}
    for d, _, files in walk_dirs(root, 6):
        if "images.npy" not in files or d.parent.name.lower() != "images":
            continue
        mt = _FOLD_RE.match(d.name)
        if not mt:
            continue
        k = int(mt.group(1))
        fold_dir = d.parent.parent
        paths = {
            "images": d / "images.npy",
            "types": d / "types.npy",
            "masks": fold_dir / "masks" / d.name / "masks.npy",
        }
        for what, p in paths.items():
            if not p.is_file():
                raise ManifestError(f"task=t2: fold {k}: {what} file not found: {p}")
        if k in folds:
            raise ManifestError(
                f"task=t2: fold {k} found twice: {folds[k]['images']} and {paths['images']}"
            )
        folds[k] = paths
    if not folds:
        raise ManifestError(
            f"task=t2: no PanNuke fold (…/images/fold<k>/images.npy) under {root}; unzip "
            "fold_1.zip ... fold_3.zip there (docs/tasks.md#t2)"
        )
    return dict(sorted(folds.items()))


def _stamp(p: Path) -> list[int]:
    st = os.stat(p)
    return [int(st.st_size), int(st.st_mtime_ns)]


def _load_arrays(k: int, paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        images = np.load(paths["images"], mmap_mode="r", allow_pickle=False)
        masks = np.load(paths["masks"], mmap_mode="r", allow_pickle=False)
        types = np.load(paths["types"], allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ManifestError(f"task=t2: fold {k}: cannot read .npy ({e})") from e
    n = images.shape[0] if images.ndim else 0
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ManifestError(f"{paths['images']}: shape {images.shape}, expected (N, H, W, 3)")
    if masks.ndim != 4 or masks.shape[-1] != 6 or masks.shape[:3] != images.shape[:3]:
        raise ManifestError(
            f"{paths['masks']}: shape {masks.shape}, expected {(*images.shape[:3], 6)}"
        )
    if types.shape != (n,):
        raise ManifestError(f"{paths['types']}: shape {types.shape}, expected ({n},)")
    return images, masks, types


def _fold_counts(k: int, paths: dict[str, Path], out_dir: Path) -> tuple[dict[str, Any], bool]:
    """Per-patch tissue and nucleus counts of one fold and whether they were (re)computed.

    Read from ``fold<k>_counts.json`` when its recorded size / mtime of the three ``.npy``
    files still match; otherwise computed and the cache rewritten.
    """
    cache = out_dir / f"fold{k}_counts.json"
    source = {name: _stamp(p) for name, p in paths.items()}
    if cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("version") == COUNTS_VERSION and data.get("source") == source:
                return data, False
        except (OSError, ValueError):
            pass  # unreadable cache: recompute
    images, masks, types = _load_arrays(k, paths)
    stated, plip = [], []
    for i in range(images.shape[0]):
        m = np.asarray(masks[i])
        stated.append(nucleus_counts(m).tolist())
        plip.append(plip_counts(m).tolist())
    data = {
        "version": COUNTS_VERSION,
        "source": source,
        "tissue": [str(t) for t in types.tolist()],
        "stated": stated,
        "plip": plip,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, cache)
    return data, True


def _write_pngs(
    k: int, paths: dict[str, Path], indices: list[int], out_dir: Path, *, overwrite: bool
) -> None:
    """Write ``out_dir/fold<k>/<i:04d>.png`` for every index whose PNG does not exist yet
    (every index when ``overwrite``: the fold's arrays changed since the PNGs were written)."""
    from PIL import Image

    todo = [
        i for i in indices if overwrite or not (out_dir / f"fold{k}" / f"{i:04d}.png").is_file()
    ]
    if not todo:
        return
    images, _, _ = _load_arrays(k, paths)
    (out_dir / f"fold{k}").mkdir(parents=True, exist_ok=True)
    for i in todo:
        px = np.clip(np.rint(np.asarray(images[i], dtype=np.float64)), 0, 255).astype(np.uint8)
        dst = out_dir / f"fold{k}" / f"{i:04d}.png"
        tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
        Image.fromarray(px, mode="RGB").save(tmp, format="PNG")
        os.replace(tmp, dst)


def build_manifest(task_cfg: T2TaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of T2 from the PanNuke folds under the root (PNG patches written once).

    Returns:
        Manifest with ``labels`` (n,) int64 (0 benign, 1 malignant), split train/test by
        stratified 70/30 within tissue x label (``task.test_fraction``), ``groups`` None;
        ``info`` holds the counts of empty, ambiguous, benign and malignant patches per fold
        and overall, the counting rule and the derived folder.

    Raises:
        ManifestError: no root or fold, or unreadable / mis-shaped arrays.
    """
    root = task_root(task_cfg, data_root, "t2")
    plip = bool(task_cfg.options.plip_counting)
    derived = task_cfg.derived_dir
    out_dir = Path(str(derived)).expanduser() if derived else root / ".medprobe" / "pannuke_png"
    rows: list[tuple[str, Path]] = []
    labels: list[int] = []
    strata: list[str] = []
    tissues: list[str] = []
    per_fold: dict[str, dict[str, int]] = {}
    for k, paths in find_folds(root).items():
        data, fresh = _fold_counts(k, paths, out_dir)
        outcome = [
            label_patch(np.asarray(c), plip=plip)
            for c in (data["plip"] if plip else data["stated"])
        ]
        keep = [i for i, o in enumerate(outcome) if o in CLASSES]
        _write_pngs(k, paths, keep, out_dir, overwrite=fresh)
        per_fold[f"fold{k}"] = {
            o: outcome.count(o) for o in ("empty", "ambiguous", "benign", "malignant")
        } | {"patches": len(outcome)}
        for i in keep:
            rel = f"fold{k}/{i:04d}.png"
            rows.append((rel, out_dir / rel))
            labels.append(CLASSES.index(outcome[i]))
            tissues.append(data["tissue"][i])
            strata.append(f"{data['tissue'][i]}|{outcome[i]}")
    totals = {
        key: sum(f[key] for f in per_fold.values())
        for key in ("patches", "empty", "ambiguous", "benign", "malignant")
    }
    split, split_desc = stratified_split(strata, None, task_cfg)
    info: dict[str, Any] = {
        "source": "PanNuke folds (Gamper et al. 2019/2020), CC BY-NC-SA 4.0",
        "rule": (
            f"malignant: >= {MIN_NEOPLASTIC} neoplastic nuclei and > "
            f"{MIN_NEOPLASTIC_SHARE:.0%} of all nuclei; benign: none; else dropped; "
            "patches without nuclei dropped (PLIP preprocess_PanNuke.py)"
        ),
        "counting": "plip (uint8, 6 channels)" if plip else "distinct non-zero ids, channels 0-4",
        "paper_counts": {"malignant": 2866, "benign": 3368},
        "patches": totals,
        "per_fold": per_fold,
        "tissue_types": len(set(tissues)),
        "derived_dir": str(out_dir),
        "split_source": f"{split_desc}; strata = tissue x label (PLIP process_PanNuke, "
        "train_ratio 0.7)",
        "grouped": False,
    }
    return make_manifest(
        "t2", root, rows, np.array(labels, dtype=np.int64), CLASSES, split, None, info
    )
