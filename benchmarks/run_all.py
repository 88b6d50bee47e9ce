"""``make bench``: every benchmark, each printing ratios measured in one run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_bootstrap  # noqa: E402
import bench_cache_memory  # noqa: E402
import bench_extraction  # noqa: E402
import bench_idefics  # noqa: E402
import bench_probe_threads  # noqa: E402


def main() -> None:
    print("== (a) bootstrap: vectorised vs naive scikit-learn loop ==", flush=True)
    bench_bootstrap.main([])
    print("\n== (b)-(d) extraction on the demo set ==", flush=True)
    bench_extraction.main([])
    print("\n== cache writer memory (synthetic rows) ==", flush=True)
    bench_cache_memory.main(["--no-naive"])
    print("\n== probe: one BLAS thread vs the library default ==", flush=True)
    bench_probe_threads.main([])
    print("\n== IDEFICS (tiny random model): batched vs one, truncated loading ==", flush=True)
    bench_idefics.main([])


if __name__ == "__main__":
    main()
