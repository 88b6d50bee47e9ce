"""The ``make bench`` suite: values and keys it returns and writes (never its timings).

Top level: it tests benchmarks/, which is not part of the medprobe package."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO, isolated_env

BENCH = REPO / "benchmarks"

#: The summary rows of issue 7 item 5, by the names run_all prints and writes.
ROW_NAMES = (
    "extraction batched vs batch of one",
    "layer sweep (4 layers) vs single layer",
    "extraction 2 processes (torchrun) vs 1",
    "bootstrap vectorised vs naive",
    "probe torch vs scikit-learn",
    "peak RSS vs dataset size (extraction, 4N / N images)",
    "peak RSS vs dataset size (cache writer, 4N / N rows)",
    "checksum-verified load vs plain load (layer in page cache)",
    "run after removing 2% of the images vs first extraction",
    "peak RSS loading a 13000^2 RGBA PNG vs its 1024-px result",
    "peak RSS of the image scan, 4 workers vs 1",
    "probe BLAS threads (1 thread vs library default)",
    "tiny IDEFICS batched vs batch of one",
    "tiny Qwen2.5-VL: all layers vs one layer (one forward pass)",
    "tiny LLaVA: all layers vs one layer (one forward pass)",
    "IDEFICS-80B bf16 GPU images/s, layer 32 (extrapolated)",
    "IDEFICS-9B bf16 GPU images/s, layer 13 (extrapolated)",
    "95% CI coverage, correlated images: image-level",
    "95% CI coverage, correlated images: patient-level",
    "AUROC 95% CI coverage, 5 positives: percentile",
    "AUROC 95% CI coverage, 5 positives: delong_logit",
)
GPU_ROWS = {n for n in ROW_NAMES if "GPU" in n}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gpu_bench() -> ModuleType:
    return _load("bench_idefics_gpu")


def test_idefics_gpu_cpu_smoke_builds_the_stack_and_measures(gpu_bench: ModuleType) -> None:
    out = gpu_bench.main(
        ["--cpu-smoke", "--layers", "8", "--batch-sizes", "1,3", "--warmup", "1", "--iters", "1"]
    )
    assert out["status"] == "ok"
    assert out["dtype"] == "float32" and out["batch_sizes"] == [1, 3]
    assert set(out["stacks"]) == {"80b", "9b"}
    for stack in out["stacks"].values():
        # counted on the built model: 8 decoder blocks, a cross-attention block every 4
        assert stack["decoder_blocks"] == 8
        assert stack["cross_blocks"] == 2
        assert stack["image_tokens"] == 64
        assert stack["finite"] is True
        assert stack["peak_gpu_gib"] is None  # CPU: no GPU memory to report
        assert set(stack["stack"]) == {1, 3}
        for m in stack["stack"].values():
            assert m["images_per_s"] > 0 and math.isfinite(m["images_per_s"])
    assert out["stacks"]["80b"]["hidden_size"] == 8192 // 128
    assert out["stacks"]["9b"]["hidden_size"] == 4096 // 128
    assert set(out["vision"]) == {1, 3}
    # 80B at layer 32 keeps 32 blocks = 4 x the 8-block stack; 9B at layer 13 keeps 16 = 2 x
    ex80, ex9 = out["extrapolated"]["80b"], out["extrapolated"]["9b"]
    assert (ex80["kept_blocks"], ex80["kept_cross_blocks"], ex80["scale"]) == (32, 8, 4.0)
    assert (ex9["kept_blocks"], ex9["kept_cross_blocks"], ex9["scale"]) == (16, 4, 2.0)
    stack3 = out["stacks"]["80b"]["stack"][3]["images_per_s"]
    assert ex80["per_batch"][3]["images_per_s"] == pytest.approx(stack3 / 4)
    assert 0 < ex80["per_batch"][3]["images_per_s_with_vision"] < stack3 / 4
    assert out["ratios"] == {
        "idefics80b_layer32_images_per_s": ex80["per_batch"][3]["images_per_s"],
        "idefics9b_layer13_images_per_s": ex9["per_batch"][3]["images_per_s"],
    }


def test_idefics_gpu_stack_uses_the_published_dimensions(gpu_bench: ModuleType) -> None:
    from medprobe.extractors.idefics import PUBLISHED_CONFIGS

    cfg = gpu_bench.stack_config("HuggingFaceM4/idefics-80b-instruct", 4)
    pub = PUBLISHED_CONFIGS["HuggingFaceM4/idefics-80b-instruct"]
    for k in ("hidden_size", "intermediate_size", "num_attention_heads", "cross_layer_interval"):
        assert cfg[k] == pub[k]
    assert cfg["num_hidden_layers"] == 4
    assert cfg["perceiver_config"]["resampler_n_latents"] == 64
    with pytest.raises(ValueError, match="multiple of 4"):
        gpu_bench.stack_config("HuggingFaceM4/idefics-80b-instruct", 6)
    with pytest.raises(SystemExit):
        gpu_bench.main(["--cpu-smoke", "--layers", "6"])


@pytest.mark.skipif(_cuda(), reason="a CUDA device is present")
def test_idefics_gpu_without_cuda_is_skipped(gpu_bench: ModuleType) -> None:
    assert gpu_bench.main([]) == {"status": "skipped: no CUDA device", "ratios": {}}


@pytest.mark.gpu
def test_idefics_gpu_bf16_on_cuda(gpu_bench: ModuleType) -> None:
    out = gpu_bench.main(["--batch-sizes", "1,8", "--warmup", "1", "--iters", "2"])
    assert out["status"] == "ok" and out["dtype"] == "bfloat16"
    s80 = out["stacks"]["80b"]
    assert (s80["decoder_blocks"], s80["cross_blocks"], s80["hidden_size"]) == (4, 1, 8192)
    assert s80["peak_gpu_gib"] > s80["block_weights_gib"] > 10
    assert all(v > 0 for v in out["ratios"].values())


def test_run_all_summary_rows_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary logic on stand-in benchmarks (fast; the real quick suite is a slow test)."""
    run_all = _load("run_all")
    fakes = {}
    for bench in run_all.BENCHES:
        keys = [r.key for r in run_all.ROWS if r.bench == bench.key]
        mod = ModuleType(f"fake_{bench.key}")
        if bench.key == "idefics_gpu":
            mod.main = lambda argv: {"status": "skipped: no CUDA device", "ratios": {}}
        elif bench.key == "bootstrap":
            mod.main = lambda argv: 1 / 0  # a failing benchmark
        else:
            mod.main = lambda argv, keys=keys: {"ratios": {k: 2.0 for k in keys}, "argv": argv}
        fakes[bench.key] = mod
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    benches = tuple(
        run_all.Bench(
            b.key,
            b.title,
            "bench_not_written_yet" if b.key == "probe_torch" else f"fake_{b.key}",
            b.argv,
            b.quick_argv,
            b.optional,
        )
        for b in run_all.BENCHES
    )
    monkeypatch.setattr(run_all, "BENCHES", benches)
    summary = run_all.main(["--quick", "--json", str(tmp_path / "s.json")])
    printed = capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["ratios"] == summary["ratios"]
    rows = {r["name"]: r for r in summary["rows"]}
    assert tuple(rows) == ROW_NAMES
    assert rows["probe torch vs scikit-learn"]["status"] == "not available"
    assert rows["bootstrap vectorised vs naive"]["status"].startswith("failed: ZeroDivisionError")
    for name in GPU_ROWS:
        assert rows[name]["status"] == "skipped: no CUDA device" and rows[name]["value"] is None
    ok = (
        set(ROW_NAMES) - GPU_ROWS - {"probe torch vs scikit-learn", "bootstrap vectorised vs naive"}
    )
    assert {n: rows[n]["value"] for n in ok} == dict.fromkeys(ok, 2.0)
    # 2.0 against each target: ">= 2" met, "<= 1.1" / "<= 1.2" missed, no target: None
    assert rows["extraction batched vs batch of one"]["target_met"] is True
    assert rows["layer sweep (4 layers) vs single layer"]["target_met"] is False
    assert rows["peak RSS vs dataset size (cache writer, 4N / N rows)"]["target_met"] is False
    assert rows["probe BLAS threads (1 thread vs library default)"]["target_met"] is None
    assert "MISSED" in printed
    assert {summary["ratios"][n] for n in ok} == {2.0}
    # --quick passed each benchmark its small sizes
    ext = summary["benchmarks"]["extraction"]["result"]
    assert ext["argv"] == list(run_all.BENCHES[1].quick_argv) and "--rss-n" in ext["argv"]
    assert "== every ratio from this run" in printed
    assert all(name in printed for name in ROW_NAMES)


def test_run_all_pick_falls_back_for_a_benchmark_owned_elsewhere() -> None:
    run_all = _load("run_all")
    ratios = {"other": 3.0, "x_speedup": 2.0}
    assert run_all._pick(ratios, "x_speedup") == ("x_speedup", 2.0)
    assert run_all._pick(ratios, "renamed") == (None, None)
    assert run_all._pick(ratios, "renamed", fallback=True) == ("x_speedup", 2.0)
    assert run_all._pick({}, None) == (None, None)


@pytest.mark.slow
def test_run_all_quick_writes_every_ratio(tmp_path: Path) -> None:
    """The whole suite at --quick sizes (about 25 s alone on 2 cores, 45-115 s while the
    cores are shared: hence slow)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--json", str(out)],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== every ratio from this run" in proc.stdout
    summary = json.loads(out.read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(ROW_NAMES) <= set(rows)
    assert summary["environment"]["quick"] is True
    probe_torch_exists = (BENCH / "bench_probe_torch.py").is_file()
    for name in ROW_NAMES:
        row = rows[name]
        assert row["name"] in proc.stdout  # printed in the table too
        if name == "probe torch vs scikit-learn" and not probe_torch_exists:
            assert row["status"] == "not available" and row["value"] is None
        elif name in GPU_ROWS and not _cuda():
            assert row["status"] == "skipped: no CUDA device" and row["value"] is None
        else:
            assert row["status"] == "ok", row
            assert isinstance(row["value"], float) and row["value"] > 0
            assert math.isfinite(row["value"])
            assert summary["ratios"][name] == row["value"]
    # each row's number is the one its benchmark returned
    for row in summary["rows"]:
        if row["status"] == "ok":
            bench = summary["benchmarks"][row["bench"]]["result"]
            assert bench["ratios"][row["ratio_key"]] == pytest.approx(row["value"])
    ext = summary["benchmarks"]["extraction"]["result"]
    assert ext["images"] == 16 and set(ext["rss_mib"]) == {"8", "32"}
