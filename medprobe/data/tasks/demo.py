"""The shipped demo task: real colorectal histology images, no download.

Images: the 718-image PathMNIST test subset (28x28 RGB) from ``../shared/data/T1_crc``, itself
10% of the official PathMNIST test split, which is CRC-VAL-HE-7K (Kather et al., PLoS Med 2019;
Yang et al., Sci Data 2023, MedMNIST v2). Licence CC BY 4.0; attribution in
``medprobe/demo_data/pathmnist/ATTRIBUTION.md``. Pixels are written losslessly as PNG, unchanged.

Split: fixed, stratified by class, seeded (70% train / 10% val / 20% test), stored in the
shipped ``labels.csv`` so every user and every model sees the same test set. The source has no
patient ids, so the split cannot be patient-level (stated in the results as ``grouped=False``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medprobe.config.schema import DemoTaskConfig
from medprobe.data.manifest import Manifest
from medprobe.data.tasks.csv_task import read_label_csv

#: Class index -> name, as in MedMNIST's PathMNIST info (index order of CRC-VAL-HE-7K folders).
PATHMNIST_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo_data" / "pathmnist"


def build_manifest(
    task_cfg: DemoTaskConfig | None = None, data_root: str | None = None
) -> Manifest:
    """Manifest of the shipped demo set (718 rows, 9 classes, split column from labels.csv).

    The config has nothing to set (``task_cfg`` and ``data_root`` are not read).

    Raises:
        FileNotFoundError: the demo files are missing from the install.
    """
    csv_path = DEMO_DIR / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"demo data missing: {csv_path} (reinstall medprobe)")
    return read_label_csv(
        csv_path,
        root=DEMO_DIR,
        task_name="demo",
        classes=PATHMNIST_CLASSES,
        label_sep=None,
    )


def write_demo_files(npz_path: str | Path, out_dir: str | Path, seed: int = 20240601) -> Path:
    """Write the demo PNGs and labels.csv from ``pathmnist_test_subset_718.npz``.

    Args:
        npz_path: the npz with ``test_images`` (718, 28, 28, 3) uint8 and ``test_labels``
            (718, 1) uint8 class indices.
        out_dir: destination; ``images/pathmnist_XXX.png`` and ``labels.csv`` are written.
        seed: seed of the stratified split.

    Returns:
        Path of the written ``labels.csv``.
    """
    from PIL import Image
    from sklearn.model_selection import train_test_split

    with np.load(npz_path, allow_pickle=False) as d:
        images, labels = d["test_images"], d["test_labels"].reshape(-1).astype(int)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=0.2, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=0.125, stratify=labels[rest], random_state=seed)
    split = np.empty(len(idx), dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    rows = []
    for i in idx:
        rel = f"images/pathmnist_{i:03d}.png"
        Image.fromarray(images[i]).save(out / rel, optimize=True)
        rows.append((rel, PATHMNIST_CLASSES[labels[i]], split[i]))
    csv_path = out / "labels.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return csv_path
