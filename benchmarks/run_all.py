"""``make bench``: every benchmark, each printing ratios measured in one run, then one summary.

Runs the benchmarks in this process, in order, and ends with the table "every ratio from this
run" (one row per ratio, its target, or why it is missing). Numbers are printed, never
asserted: these machines are shared and noisy, so only ratios from one run are meaningful.

    python benchmarks/run_all.py [--quick] [--json PATH]

``--quick`` passes small sizes to every benchmark (the whole suite in well under a minute; the
ratios are then rough); the default sizes are each benchmark's own. ``--json PATH`` also writes
the summary (rows, each benchmark's returned numbers, the environment) as JSON. A benchmark
that fails is reported in its rows and the exit status is 1; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NOT_AVAILABLE = "not available"


@dataclass(frozen=True)
class Bench:
    """One benchmark module: ``module.main(argv)`` returns ``{"ratios": {...}, ...}``."""

    key: str
    title: str
    module: str
    argv: tuple[str, ...] = ()
    quick_argv: tuple[str, ...] = ()
    optional: bool = False  # a missing module is "not available", not a failure


BENCHES = (
    Bench("bootstrap", "(a) bootstrap: vectorised vs naive scikit-learn loop", "bench_bootstrap",
          quick_argv=("--n", "3000", "--n-boot", "100")),
    Bench("extraction", "(b)-(d) extraction on the demo set", "bench_extraction",
          quick_argv=("--n", "16", "--batch-size", "8", "--workers", "0",
                      "--rss-n", "8", "--rss-batch", "8")),
    Bench("data_parallel", "data-parallel extraction: 1 process vs 2 (torchrun)",
          "bench_data_parallel", quick_argv=("--n", "32", "--batch-size", "8")),
    Bench("cache_memory", "cache writer memory (synthetic rows)", "bench_cache_memory",
          argv=("--no-naive",), quick_argv=("--no-naive", "--n", "250", "--dim", "256")),
    Bench("cache_verify", "cache integrity: verified load vs a plain load of one layer",
          "bench_cache_verify", quick_argv=("--n", "5000", "--dim", "1024", "--repeats", "3")),
    Bench("cache_reuse", "cache reuse: a run after the image list changed vs the first",
          "bench_cache_reuse", quick_argv=("--n", "50", "--batch-size", "8")),
    Bench("decode_memory", "decode memory: huge RGBA PNG, scan workers",
          "bench_decode_memory", quick_argv=("--side", "4000", "--no-plain",
                                             "--budget-mb", "60")),
    Bench("probe_threads", "probe: one BLAS thread vs the library default",
          "bench_probe_threads", quick_argv=("--n", "200", "--n-val", "40", "--dim", "128")),
    Bench("probe_torch", "probe: torch L-BFGS vs scikit-learn", "bench_probe_torch",
          quick_argv=("--n", "2000", "--dim", "128", "--n-heldout", "200", "--no-big"),
          optional=True),
    Bench("idefics", "IDEFICS (tiny random model): batched vs one, truncated loading",
          "bench_idefics", quick_argv=("--n", "4", "--batch", "2", "--layers", "8",
                                       "--width", "64")),
    Bench("vlm", "generic VLM (tiny Qwen2.5-VL, LLaVA): all layers vs one, one forward pass",
          "bench_vlm", quick_argv=("--n", "4", "--batch", "2", "--layers", "4")),
    Bench("idefics_gpu", "IDEFICS realistic-size block stack, bf16 on a GPU",
          "bench_idefics_gpu", quick_argv=("--batch-sizes", "1,8", "--warmup", "1",
                                           "--iters", "3")),
    Bench("cluster_coverage", "bootstrap CI coverage: image- vs patient-level resampling",
          "bench_cluster_coverage", argv=("--sims", "500"),
          quick_argv=("--sims", "40", "--n-boot", "200", "--patients", "40")),
    Bench("auroc_ci_coverage", "AUROC CI coverage with few positives, by method",
          "bench_auroc_ci_coverage", argv=("--sims", "500"),
          quick_argv=("--sims", "40", "--n-boot", "200")),
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    """A summary row: the ratio ``key`` of benchmark ``bench`` (``None``: see :func:`_pick`)."""

    name: str
    bench: str
    key: str | None
    unit: str
    target: str
    fallback: bool = False  # key missing: show the benchmark's main ratio (see _pick)


ROWS = (
    Row("extraction batched vs batch of one", "extraction", "extraction_batched_speedup",
        "x faster", ">= 2"),
    Row("layer sweep (4 layers) vs single layer", "extraction", "layer_sweep_cost",
        "x the time", "<= 1.1"),
    Row("extraction 2 processes (torchrun) vs 1", "data_parallel", "data_parallel_speedup",
        "x faster", ""),
    Row("bootstrap vectorised vs naive", "bootstrap", "bootstrap_speedup", "x faster", ">= 10"),
    Row("probe torch vs scikit-learn", "probe_torch", "probe_torch_cpu_speedup", "x faster",
        "", fallback=True),
    Row("peak RSS vs dataset size (extraction, 4N / N images)", "extraction",
        "extraction_rss_ratio", "x", "<= 1.2"),
    Row("peak RSS vs dataset size (cache writer, 4N / N rows)", "cache_memory",
        "cache_writer_rss_ratio", "x", "<= 1.2"),
    Row("checksum-verified load vs plain load (layer in page cache)", "cache_verify",
        "cache_verify_cost", "x the time", "<= 1.3"),
    Row("run after removing 2% of the images vs first extraction", "cache_reuse",
        "cache_reuse_removed_cost", "x the time", "<= 0.05"),
    Row("peak RSS loading a 13000^2 RGBA PNG vs its 1024-px result", "decode_memory",
        "decode_peak_rss_ratio", "x", "<= 10"),
    Row("peak RSS of the image scan, 4 workers vs 1", "decode_memory",
        "decode_scan_workers_ratio", "x", "<= 1.2"),
    Row("probe BLAS threads (1 thread vs library default)", "probe_threads",
        "probe_one_thread_speedup", "x faster", ""),
    Row("tiny IDEFICS batched vs batch of one", "idefics", "idefics_batched_speedup",
        "x faster", ">= 2"),
    Row("tiny Qwen2.5-VL: all layers vs one layer (one forward pass)", "vlm",
        "vlm_all_layers_cost_qwen2_5_vl", "x the time", "<= 1.1"),
    Row("tiny LLaVA: all layers vs one layer (one forward pass)", "vlm",
        "vlm_all_layers_cost_llava", "x the time", "<= 1.1"),
    Row("IDEFICS-80B bf16 GPU images/s, layer 32 (extrapolated)", "idefics_gpu",
        "idefics80b_layer32_images_per_s", "images/s", ""),
    Row("IDEFICS-9B bf16 GPU images/s, layer 13 (extrapolated)", "idefics_gpu",
        "idefics9b_layer13_images_per_s", "images/s", ""),
    Row("95% CI coverage, correlated images: image-level", "cluster_coverage",
        "cluster_coverage_image", "coverage", ""),
    Row("95% CI coverage, correlated images: patient-level", "cluster_coverage",
        "cluster_coverage_patient", "coverage", ">= 0.9"),
    Row("AUROC 95% CI coverage, 5 positives: percentile", "auroc_ci_coverage",
        "auroc_ci_coverage_5pos_percentile", "coverage", ""),
    Row("AUROC 95% CI coverage, 5 positives: delong_logit", "auroc_ci_coverage",
        "auroc_ci_coverage_5pos_delong_logit", "coverage", ">= 0.9"),
)  # fmt: skip


def _pick(
    ratios: dict[str, Any], key: str | None, fallback: bool = False
) -> tuple[str | None, Any]:
    """``(key, value)`` of the ratio a row shows; ``(None, None)`` if absent. ``key=None`` or
    ``fallback`` with ``key`` absent (a benchmark owned elsewhere, whose names may change): its
    only ratio, else the first whose name says speed-up / ratio, else the first."""
    if key is not None and (key in ratios or not fallback):
        return (key, ratios[key]) if key in ratios else (None, None)
    if not ratios:
        return None, None
    names = list(ratios)
    preferred = [n for n in names if "speedup" in n or "ratio" in n]
    name = (preferred or names)[0]
    return name, ratios[name]


def run_bench(bench: Bench, quick: bool) -> dict[str, Any]:
    """Import and run one benchmark; ``{"status": "ok" | "not available" | "failed: ...",
    "result": returned dict, "seconds": wall time}``. Never raises (a benchmark's error is
    printed with its traceback and recorded)."""
    try:
        mod = importlib.import_module(bench.module)
    except ModuleNotFoundError as exc:
        if bench.optional and exc.name == bench.module:
            print(f"{NOT_AVAILABLE}: benchmarks/{bench.module}.py does not exist", flush=True)
            return {"status": NOT_AVAILABLE, "result": None, "seconds": 0.0}
        traceback.print_exc()
        return {"status": f"failed: {exc!r}", "result": None, "seconds": 0.0}
    except Exception as exc:
        traceback.print_exc()
        return {"status": f"failed: {exc!r}", "result": None, "seconds": 0.0}
    argv = list(bench.quick_argv if quick else bench.argv)
    t = time.perf_counter()
    try:
        result = mod.main(argv)
    except (Exception, SystemExit) as exc:  # argparse exits on a bad flag
        traceback.print_exc()
        return {"status": f"failed: {exc!r}", "result": None, "seconds": time.perf_counter() - t}
    status = "ok"
    if isinstance(result, dict) and str(result.get("status", "ok")) != "ok":
        status = str(result["status"])
    elif not isinstance(result, dict):
        status = "returned no ratios"
    return {"status": status, "result": result, "seconds": time.perf_counter() - t}


def summary_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per :data:`ROWS` entry: ``name``, ``value`` (float or ``None``), ``unit``,
    ``target``, ``target_met`` (True / False / None: no target or no value), ``status`` ("ok" =
    the benchmark ran, "not available", "skipped: ...", "failed: ..."), ``bench``,
    ``ratio_key``."""
    rows = []
    for row in ROWS:
        run = runs.get(row.bench, {"status": "not run", "result": None})
        result = run["result"] if isinstance(run["result"], dict) else {}
        ratios = result.get("ratios") or {}
        key, value = _pick(ratios, row.key, row.fallback)
        status = run["status"]
        if status == "ok" and not isinstance(value, (int, float)):
            status, value = f"missing ratio {row.key or '(any)'}", None
        elif status != "ok":
            value = None
        else:
            value = float(value)
        rows.append(
            {
                "name": row.name,
                "value": value,
                "unit": row.unit,
                "target": row.target,
                "target_met": meets(row.target, value),
                "status": status,
                "bench": row.bench,
                "ratio_key": key,
            }
        )
    return rows


def meets(target: str, value: float | None) -> bool | None:
    """Whether ``value`` meets ``target`` (``">= 2"``, ``"<= 1.1"``); None without either."""
    if not target or value is None:
        return None
    op, bound = target.split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def _fmt_value(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"


def print_table(rows: list[dict[str, Any]], quick: bool) -> None:
    title = "every ratio from this run" + (" (--quick: small sizes, rough)" if quick else "")
    print(f"\n== {title} ==")
    w = max(len(r["name"]) for r in rows)
    print(f"{'':{w}}  {'value':>9}  {'unit':<10} {'target':<8} {'met?':<7}status")
    for r in rows:
        target = r["target"] or "-"
        met = {True: "met", False: "MISSED", None: "-"}[r["target_met"]]
        print(
            f"{r['name']:<{w}}  {_fmt_value(r['value']):>9}  {r['unit']:<10} {target:<8} "
            f"{met:<7}{r['status']}"
        )


def _environment(quick: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        "quick": quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every benchmark and print the summary; return it (as written by ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, < 1 min)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the summary")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    for i, bench in enumerate(BENCHES):
        print(("\n" if i else "") + f"== {bench.title} ==", flush=True)
        runs[bench.key] = run_bench(bench, args.quick)
        sys.stdout.flush()
    rows = summary_rows(runs)
    print_table(rows, args.quick)
    total = time.perf_counter() - t0
    print(f"(all benchmarks: {total:.0f} s wall)")
    summary = {
        "rows": rows,
        "ratios": {r["name"]: r["value"] if r["status"] == "ok" else r["status"] for r in rows},
        "benchmarks": {
            k: {"status": v["status"], "seconds": v["seconds"], "result": v["result"]}
            for k, v in runs.items()
        },
        "environment": _environment(args.quick),
        "wall_s": total,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
        print(f"summary written to {args.json}")
    return summary


def _jsonable(obj: Any) -> Any:
    """numpy scalars / arrays and anything else to JSON types (``str`` as the last resort)."""
    for attr in ("item", "tolist"):
        if hasattr(obj, attr):
            try:
                return getattr(obj, attr)()
            except (TypeError, ValueError):
                pass
    return str(obj)


if __name__ == "__main__":
    out = main()
    failed = [r["name"] for r in out["rows"] if r["status"].startswith(("failed", "missing"))]
    failed += [k for k, v in out["benchmarks"].items() if v["status"].startswith("failed")]
    sys.exit(1 if failed else 0)
