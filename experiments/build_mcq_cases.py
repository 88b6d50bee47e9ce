"""Build a multiple-choice case file (docs/mcq.md format) from the real labelled images.

Sources (``../shared/data``, see its README for provenance and licences; the images are only
referenced by path, never copied):

* ``T8_knee_kl``: "What is the Kellgren-Lawrence grade ...?"; the options are the five KL
  grades in order (the dataset has exactly five classes).
* ``T3_ham10000``: "Which type of skin lesion ...?"; the answer plus four of the other six
  HAM10000 classes, in a random order (HAM10000 is CC BY-NC 4.0: do not ship the file).
* ``T1_crc`` (the full-size tiles): "Which tissue type ...?"; the answer plus four of the
  other CRC-VAL-HE-7K classes, in a random order.

Deterministic for a given ``--seed``: images are drawn without replacement, round-robin over
the tasks, and get consecutive weekly dates from 2020-01-01 (the two earliest cases become the
exemplars). ``readers_correct`` is **synthetic**: case ``i`` falls in difficulty bin
``i % 5`` (0-20 %, ..., 80-100 %), uniform within the bin's inner 0.02-0.18 (seeded). These
images have no reader statistics; the share only exercises the by-difficulty analysis. The case
ids say so (``synthetic-...``).

    python experiments/build_mcq_cases.py --data ../shared/data --out outputs/mcq/cases.jsonl \
        --n 8
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np

KL_OPTIONS = [f"Kellgren-Lawrence grade {g}" for g in range(5)]
HAM = {
    "akiec": "Actinic keratosis or intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
CRC = {
    "ADI": "Adipose tissue",
    "BACK": "Background",
    "DEB": "Debris",
    "LYM": "Lymphocytes",
    "MUC": "Mucus",
    "MUS": "Smooth muscle",
    "NORM": "Normal colon mucosa",
    "STR": "Cancer-associated stroma",
    "TUM": "Colorectal adenocarcinoma epithelium",
}
#: task folder -> (vignette, question, class names or None for the KL grades)
TASKS = {
    "T8_knee_kl": (
        "A knee radiograph from the Osteoarthritis Initiative (crop of the joint).",
        "What is the Kellgren-Lawrence grade of this knee?",
        None,
    ),
    "T3_ham10000": (
        "A dermatoscopic image of a skin lesion.",
        "Which type of skin lesion is this?",
        HAM,
    ),
    "T1_crc": (
        "A tile of an H&E-stained colorectal cancer resection.",
        "Which tissue type does this tile show?",
        CRC,
    ),
}


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if folder.name == "T1_crc":
        rows = [r for r in rows if r["path"].startswith("tiles/")]
    return sorted(rows, key=lambda r: r["path"])


def build_cases(data: Path, out: Path, n: int, seed: int = 0, tasks: list[str] | None = None):
    """Write ``n`` cases to ``out`` (JSONL) and return them as dicts.

    Image paths are written relative to ``out``'s folder when possible (else absolute).

    Raises:
        FileNotFoundError: a task folder or its ``labels.csv`` is missing.
        ValueError: ``n`` < 3 or more cases than images.
    """
    if n < 3:
        raise ValueError(f"need at least 3 cases (2 exemplars + 1 test), got {n}")
    tasks = tasks or list(TASKS)
    rng = np.random.default_rng(seed)
    pools = {}
    for t in tasks:
        rows = _rows(data / t)
        pools[t] = [rows[i] for i in rng.permutation(len(rows))]
    if n > sum(map(len, pools.values())):
        raise ValueError(f"{n} cases requested, only {sum(map(len, pools.values()))} images")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = dt.date(2020, 1, 1)
    cases = []
    k = 0
    while len(cases) < n:
        t = tasks[k % len(tasks)]
        k += 1
        if not pools[t]:
            continue
        row = pools[t].pop(0)
        vignette, question, names = TASKS[t]
        if names is None:
            options, answer = list(KL_OPTIONS), int(row["label"])
        else:
            others = [c for c in sorted(names) if c != row["label"]]
            picked = [others[i] for i in sorted(rng.choice(len(others), 4, replace=False))]
            classes = [row["label"], *picked]
            classes = [classes[i] for i in rng.permutation(5)]
            options, answer = [names[c] for c in classes], classes.index(row["label"])
        image = (data / t / row["path"]).resolve()
        try:
            rel = os.path.relpath(image, out.parent.resolve())
        except ValueError:  # another drive (Windows)
            rel = str(image)
        i = len(cases)
        cases.append(
            {
                "id": f"synthetic-{i:03d}-{t}",
                "date": (start + dt.timedelta(weeks=i)).isoformat(),
                "images": [rel],
                "vignette": vignette,
                "question": question,
                "options": options,
                "answer": answer,
                # synthetic; bin i % 5 (hardest first), uniform inside the bin
                "readers_correct": round(0.2 * (i % 5) + float(rng.uniform(0.02, 0.18)), 3),
            }
        )
    with open(out, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    return cases


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = ap.parse_args(argv)
    cases = build_cases(Path(args.data), Path(args.out), args.n, args.seed, args.tasks)
    print(f"wrote {len(cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
