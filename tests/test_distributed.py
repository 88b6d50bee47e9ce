"""Data-parallel extraction (medprobe.distributed + medprobe.pipeline.features): shards,
placement, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, isolated_env

from medprobe.cli.run import helper_process_overrides as _helper_process_overrides
from medprobe.distributed import rank_placement, shard_ranges, shard_rows

DEMO = REPO / "medprobe" / "demo_data" / "pathmnist"


# ------------------------------------------------------------------------------- shards


@pytest.mark.parametrize(
    "n, bs, world", [(101, 8, 2), (101, 8, 3), (16, 8, 2), (5, 8, 4), (0, 4, 2)]
)
def test_shards_are_contiguous_whole_batches_covering_every_row(n, bs, world):
    shards = [shard_rows(n, bs, r, world) for r in range(world)]
    assert shards[0][0] == 0 and shards[-1][1] == n
    for (_, a1), (b0, _) in zip(shards, shards[1:], strict=False):
        assert a1 == b0  # contiguous, no overlap
    for a, b in shards:
        assert a % bs == 0 and (b % bs == 0 or b == n)  # the single run's batch boundaries


def test_shard_sizes_of_an_uneven_split():
    # 101 rows, batch 8 -> 13 batches -> 6 + 7 batches
    assert [shard_rows(101, 8, r, 2) for r in range(2)] == [(0, 48), (48, 101)]
    assert [shard_rows(5, 8, r, 4) for r in range(4)] == [(0, 0), (0, 0), (0, 0), (0, 5)]
    with pytest.raises(ValueError, match="bad shard"):
        shard_rows(10, 0, 0, 1)
    with pytest.raises(ValueError, match="bad shard"):
        shard_rows(10, 4, 2, 2)


def test_shard_ranges_of_a_fresh_run_are_shard_rows():
    assert shard_ranges(range(101), 8, 2) == [shard_rows(101, 8, r, 2) for r in range(2)]
    assert shard_ranges(range(5), 8, 4) == [(0, 0), (0, 0), (0, 0), (0, 5)]
    assert shard_ranges([], 8, 2) == [(0, 0), (0, 0)]


def test_shard_ranges_share_the_gaps_of_a_killed_run():
    # 718 rows, batch 8: a single process was killed after 650 rows (81 batches + 2 rows)
    pending = list(range(648, 718))  # batch-aligned: the finished rows are whole batches
    ranges = shard_ranges(pending, 8, 4)
    assert ranges == [(648, 664), (664, 680), (680, 696), (696, 718)]  # 2, 2, 2, 3 batches
    # gaps left by two shards of an earlier 2-process run: rows 0-31 and 400-447 missing
    pending = [*range(0, 32), *range(400, 448)]
    ranges = shard_ranges(pending, 8, 2)
    assert ranges == [(0, 408), (408, 448)]  # 5 batches each; done rows inside are skipped
    counts = [sum(a <= x < b for x in pending) for a, b in ranges]
    assert counts == [40, 40]


# ---------------------------------------------------------------------------- placement


def test_placement_without_gpus_changes_nothing():
    got = rank_placement("auto", "auto", None, local_rank=1, local_world=2, n_gpus=0)
    assert got == {"device": "auto", "device_map": "auto", "max_memory": None}
    got = rank_placement("cpu", None, None, local_rank=1, local_world=2, n_gpus=4)
    assert got == {"device": "cpu", "device_map": None, "max_memory": None}


def test_placement_one_gpu_per_process():
    got = rank_placement("auto", None, None, local_rank=3, local_world=4, n_gpus=4)
    assert got == {"device": "cuda:3", "device_map": None, "max_memory": None}
    got = rank_placement("cuda", "cuda:0", None, local_rank=1, local_world=2, n_gpus=2)
    assert got["device"] == "cuda:1" and got["device_map"] == "cuda:1"
    # more processes than GPUs: they share
    got = rank_placement("auto", None, None, local_rank=2, local_world=3, n_gpus=2)
    assert got["device"] == "cuda:0"


def test_placement_spreads_a_large_model_over_the_process_own_gpus():
    mem = {0: "70GiB", 1: "70GiB", 2: "70GiB", 3: "70GiB", "cpu": "200GiB"}
    got = rank_placement("auto", "auto", mem, local_rank=1, local_world=2, n_gpus=4)
    assert got == {
        "device": "cuda:2",
        "device_map": "auto",
        "max_memory": {2: "70GiB", 3: "70GiB", "cpu": "200GiB"},
    }
    got = rank_placement("auto", "cpu", None, local_rank=1, local_world=2, n_gpus=4)
    assert got["device_map"] == "cpu"


# ------------------------------------------------------------------------- SLURM tasks

_SLURM_TASK = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_ID": "777",
    "SLURM_JOB_NODELIST": "node[1-2]",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
}
_TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def slurm_task(monkeypatch):
    """Task 3 of 4 of a submitit SLURM job on two nodes; no torch.distributed variables yet."""
    for k in _TORCH_VARS:  # setenv first: monkeypatch then removes what export() sets
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    for k, v in _SLURM_TASK.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_a_submitit_slurm_task_becomes_a_torch_distributed_process(slurm_task):
    """cluster.tasks_per_node > 1: each SLURM task of a submitit job is one process."""
    from medprobe.distributed import launched_world_size

    assert launched_world_size() == 4
    got = {k: os.environ[k] for k in _TORCH_VARS if k != "MASTER_PORT"}
    assert got == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "node1"}  # fmt: skip
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000  # submitit: from the job id


def test_plain_slurm_tasks_without_submitit_are_left_to_torchrun(slurm_task):
    from medprobe.distributed import launched_world_size

    slurm_task.delenv("SUBMITIT_EXECUTOR")
    assert launched_world_size() == 1 and "RANK" not in os.environ


# ---------------------------------------------------------------------- error reporting


def test_every_rank_reports_a_user_error_tagged_with_its_rank(monkeypatch, capsys):
    from medprobe import cli

    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    monkeypatch.setenv("RANK", "0")
    cli.report_error("images/x.png: truncated")
    monkeypatch.setenv("RANK", "2")
    cli.report_error("images/x.png: truncated")
    cli.report_error("rank 2/3: another process of this data-parallel job stopped")
    assert capsys.readouterr().err.splitlines() == [
        "medprobe: error: images/x.png: truncated",
        "medprobe: error: [rank 2] images/x.png: truncated",
        "medprobe: error: rank 2/3: another process of this data-parallel job stopped",
    ]


def test_failed_collectives_become_one_line_errors(monkeypatch):
    from medprobe import distributed
    from medprobe.distributed import Dist, DistributedError

    monkeypatch.setattr(distributed, "_timeout_min", 0.5)
    d = Dist(rank=1, world=2)
    with pytest.raises(DistributedError) as e, d._collective("receive rank 0's decision"):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer")
    assert str(e.value) == (
        "rank 1/2: another process of this data-parallel job stopped while this one tried to "
        "receive rank 0's decision; its error is above"
    )
    with pytest.raises(DistributedError) as e, d._collective("wait for the other processes"):
        raise RuntimeError("Timed out waiting 30000ms for recv operation to complete")
    assert str(e.value).startswith(
        "rank 1/2: timed out (dist_timeout_min=0.5) trying to wait for the other processes; "
    )


# --------------------------------------------------------------------- helper processes


def test_only_rank_zero_writes_hydra_folders(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert _helper_process_overrides(["task=demo"]) == []
    monkeypatch.setenv("RANK", "1")
    assert _helper_process_overrides(["task=demo"]) == [
        "hydra.output_subdir=null",
        "hydra.run.dir=.",
    ]
    assert _helper_process_overrides(["hydra.run.dir=/x"]) == ["hydra.output_subdir=null"]


# ---------------------------------------------------------------- two processes, for real


def _subset_csv(path: Path) -> Path:
    """101 demo images (60 train, 15 val, 26 test): 13 batches of 8, so the shards are uneven."""
    lines = (DEMO / "labels.csv").read_text().splitlines()
    rows = {s: [r for r in lines[1:] if r.endswith("," + s)] for s in ("train", "val", "test")}
    keep = rows["train"][:60] + rows["val"][:15] + rows["test"][:26]
    path.write_text("\n".join([lines[0], *keep]) + "\n")
    return path


def _job_args(tmp: Path, out: str) -> list[str]:
    return [
        "task=csv",
        f"task.root={DEMO}",
        f"task.csv={_subset_csv(tmp / 'subset.csv')}",
        "model.batch_size=8",
        "model.num_workers=0",
        "tracker=none",
        "bootstrap.n=200",
        "progress=false",
        f"output_dir={tmp / out}",
    ]


def _launch(
    tmp: Path, launcher: list[str], args: list[str], cache: str
) -> subprocess.CompletedProcess:
    env = isolated_env(tmp)
    env["MEDPROBE_CACHE_DIR"] = str(tmp / cache)
    # torchrun gives each of its processes one thread; so does the reference run, because
    # EfficientNet's convolutions round differently with 1 and 2 threads (1 float16 ulp)
    env["OMP_NUM_THREADS"] = "1"
    work = tmp / f"cwd_{cache}"
    work.mkdir()
    proc = subprocess.run(
        [*launcher, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def _entry(root: Path) -> Path:
    entries = [p for p in root.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    return entries[0]


def test_two_process_extraction_equals_one_process(tmp_path):
    single = _launch(
        tmp_path, [sys.executable, "-m", "medprobe"], _job_args(tmp_path, "one"), "cache_one"
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "medprobe"]  # fmt: skip
    dp = _launch(tmp_path, torchrun, _job_args(tmp_path, "two"), "cache_two")

    one, two = _entry(tmp_path / "cache_one"), _entry(tmp_path / "cache_two")
    assert one.name == two.name  # the same cache key
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    for f in sorted(one.iterdir()):
        if f.name != "meta.json":
            assert f.read_bytes() == two.joinpath(f.name).read_bytes(), f.name
    m1, m2 = (json.loads((d / "meta.json").read_text()) for d in (one, two))
    assert m1.pop("created") and m2.pop("created")
    assert m1 == m2 and m1["n"] == 101 and len(m1["layers"]) == 9
    assert not list((tmp_path / "cache_two").glob(".partial-*"))

    r1, r2 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert r2["metrics"] == r1["metrics"] and r2["probe"]["C"] == r1["probe"]["C"]
    assert r2["cache"]["processes"] == 2 and "processes" not in r1["cache"]
    assert r1["cache"]["cache_hit"] is False and r2["cache"]["cache_hit"] is False
    # one set of results, from rank 0 only; rank 1 wrote nothing where it ran
    assert dp.stdout.count("results: ") == 1 and single.stdout.count("results: ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    assert list((tmp_path / "cwd_cache_two").iterdir()) == []
    np.testing.assert_array_equal(
        np.load(one / "layer_008.npy"), np.load(two / "layer_008.npy")
    )  # and the memmap readers agree


REFUSED_SWEEP = (
    "medprobe: error: a data-parallel launch (torchrun / accelerate launch) runs one job; "
    "sweep with --multirun and a launcher instead (cluster=slurm), each job data-parallel "
    "or not (cluster.tasks_per_node)"
)


@pytest.mark.parametrize("launcher", [[], ["cluster=local"]])
def test_data_parallel_launch_refuses_a_multirun_before_anything_starts(tmp_path, launcher):
    """torchrun + a sweep would run (or submit) the sweep once per process; with submitit the
    processes' jobs would pair up at random into data-parallel groups (wrong features)."""
    env = isolated_env(tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "medprobe", "--multirun", "seed=0,1",
                *launcher, "tracker=none", f"output_dir={tmp_path / 'mr'}"]  # fmt: skip
    proc = subprocess.run(
        torchrun, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if x.startswith("medprobe: error:")]
    assert errors == [REFUSED_SWEEP]  # once, from rank 0
    assert not (tmp_path / "mr").exists()  # refused before the sweep folder is made
    assert not list((tmp_path / "cache").glob("*/meta.json"))


def test_a_two_task_submitit_job_is_data_parallel_and_equals_one_process(tmp_path):
    """cluster.tasks_per_node=2: each task of the job is one process (the SLURM path, run
    here by submitit_local)."""
    _launch(tmp_path, [sys.executable, "-m", "medprobe"], _job_args(tmp_path, "one"), "c1")
    args = [a for a in _job_args(tmp_path, "sweep") if not a.startswith("output_dir=")]
    sweep = [sys.executable, "-m", "medprobe", "-m", "cluster=local", "cluster.tasks_per_node=2"]
    _launch(tmp_path, sweep, [*args, f"output_dir={tmp_path / 'sweep'}"], "c2")
    r = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    assert r["cache"]["processes"] == 2 and r["cache"]["cache_hit"] is False
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    assert r["metrics"] == r1["metrics"]
    one, two = _entry(tmp_path / "c1"), _entry(tmp_path / "c2")
    assert one.name == two.name
    for f in sorted(one.glob("*.npy")):
        assert f.read_bytes() == two.joinpath(f.name).read_bytes(), f.name


@pytest.mark.slow
def test_accelerate_launch_gives_the_same_entry(tmp_path):
    _launch(tmp_path, [sys.executable, "-m", "medprobe"], _job_args(tmp_path, "one"), "c1")
    # --multi_gpu: without it accelerate starts one process on a machine without two GPUs
    acc = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "-m", "medprobe"]  # fmt: skip
    _launch(tmp_path, acc, _job_args(tmp_path, "two"), "c2")
    assert json.loads((tmp_path / "two" / "results.json").read_text())["cache"]["processes"] == 2
    one, two = _entry(tmp_path / "c1"), _entry(tmp_path / "c2")
    for f in sorted(one.glob("*.npy")):
        assert f.read_bytes() == two.joinpath(f.name).read_bytes(), f.name
