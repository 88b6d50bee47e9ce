"""Data-parallel extraction: one process vs P processes (torchrun) on the same images.

Prints, from one run (never asserted; these machines are noisy), the feature-step time of
``python -m medprobe`` and of ``torchrun --nproc_per_node P -m medprobe`` on the same demo
images with fresh caches (after one discarded warm-up run), and their ratio. On a CPU machine the P processes share the same
cores (torchrun gives each one thread; the single process uses them all), so expect about 1x
there: the point of the launch is one GPU per process, where the ratio approaches P. The
entries are checked to be the same cache key.

Run: ``python benchmarks/bench_data_parallel.py [--n 256] [--procs 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "medprobe" / "demo_data" / "pathmnist"


def _subset(path: Path, n: int) -> Path:
    lines = (DEMO / "labels.csv").read_text().splitlines()
    path.write_text("\n".join(lines[: n + 1]) + "\n")
    return path


def _run(launcher: list[str], tmp: Path, name: str, csv: Path, batch_size: int) -> dict:
    env = dict(os.environ, MEDPROBE_CACHE_DIR=str(tmp / f"cache_{name}"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = [
        "task=csv", f"task.root={DEMO}", f"task.csv={csv}", f"model.batch_size={batch_size}",
        "tracker=none", "bootstrap.n=100", "progress=false", f"output_dir={tmp / name}",
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run([*launcher, *args], cwd=tmp, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    res = json.loads((tmp / name / "results.json").read_text())
    return {
        "wall": wall,
        "features": res["timings_s"]["features"],
        "key": res["cache"]["cache_key"],
    }


def main(argv: list[str] | None = None) -> dict:
    """Measure and print; returns ``{"ratios": {"data_parallel_speedup": ...}, ...}``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="demo images (train/val/test as shipped)")
    ap.add_argument("--procs", type=int, default=2, help="torchrun processes")
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        csv = _subset(tmp / "subset.csv", a.n)
        # warm-up (discarded): imports, weights and images in the page cache for both runs
        _run([sys.executable, "-m", "medprobe"], tmp, "warmup", csv, a.batch_size)
        one = _run([sys.executable, "-m", "medprobe"], tmp, "one", csv, a.batch_size)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={a.procs}", "-m", "medprobe"]  # fmt: skip
        many = _run(torchrun, tmp, "many", csv, a.batch_size)
    assert one["key"] == many["key"], "the two runs wrote different cache entries"
    speedup = one["features"] / many["features"]
    print(f"EfficientNet-Lite0, {a.n} demo images, batch {a.batch_size}, {os.cpu_count()} CPU "
          f"cores: feature step 1 process {one['features']:6.2f} s | {a.procs} processes "
          f"(torchrun) {many['features']:6.2f} s | speedup {speedup:5.2f}x "
          f"(wall incl. start-up {one['wall']:.1f} s vs {many['wall']:.1f} s)")  # fmt: skip
    return {
        "ratios": {"data_parallel_speedup": speedup},
        "seconds": {
            "one_process": one["features"],
            f"{a.procs}_processes": many["features"],
            "one_process_wall": one["wall"],
            f"{a.procs}_processes_wall": many["wall"],
        },
        "images": a.n,
        "processes": a.procs,
    }


if __name__ == "__main__":
    main()
