"""Cluster sweeps (``cluster=local|slurm``, hydra-submitit-launcher): config, checks, and a
real two-job ``submitit_local`` sweep sharing one feature-cache entry. No SLURM, no network.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import Compose, compose_config, isolated_env, run_medprobe
from omegaconf import OmegaConf

from medprobe.cache import FeatureCache
from medprobe.config import ConfigError, validate

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason='hydra-submitit-launcher not installed (pip install ".[dev]")',
)

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
WAITING = "waiting for another job extracting the same features"


# ----------------------------------------------------------------------------- config


def test_slurm_launcher_takes_the_cluster_keys(tmp_path: Path) -> None:
    """The command a user runs to see what would be submitted, resolved."""
    sweep = tmp_path / "sweep"
    p = run_medprobe(
        tmp_path,
        "cluster=slurm",
        "cluster.partition=gpu",
        "cluster.gpus_per_node=2",
        "cluster.timeout_min=90",
        f"output_dir={sweep}",
        "--cfg",
        "all",
        "-p",
        "hydra.launcher",
        "--resolve",
    )
    launcher = yaml.safe_load(p.stdout)
    assert launcher["_target_"] == SLURM_TARGET
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"]) == (
        "gpu",
        2,
        90,
    )
    # slurm.yaml defaults for the keys not given; the logs sit under the sweep dir
    assert launcher["cpus_per_task"] == 8 and launcher["mem_gb"] is None
    assert launcher["account"] is None and launcher["qos"] is None
    assert launcher["array_parallelism"] == 256
    assert launcher["tasks_per_node"] == 1  # one process per job unless data-parallel
    assert launcher["setup"] == [] and launcher["additional_parameters"] == {}
    assert launcher["name"] == "medprobe"
    assert launcher["submitit_folder"] == f"{sweep}/.submitit/%j"


def test_slurm_tasks_per_node_makes_each_job_data_parallel(compose: Compose) -> None:
    cfg = compose("cluster=slurm", "cluster.gpus_per_node=4", "cluster.tasks_per_node=4",
                  hydra=True)  # fmt: skip
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (4, 4)


def test_help_lists_the_cluster_group(tmp_path: Path) -> None:
    p = run_medprobe(tmp_path, "--help")
    assert "cluster: local, none, slurm" in p.stdout.splitlines()


def test_cluster_none_leaves_the_launcher_alone(compose: Compose) -> None:
    cfg = compose(hydra=True)
    assert cfg.cluster.name == "none"
    assert cfg.hydra.launcher._target_.endswith("core_plugins.basic_launcher.BasicLauncher")
    validate(cfg)  # the schema defaults pass


def test_local_launcher_takes_the_cluster_keys(compose: Compose, tmp_path: Path) -> None:
    cfg = compose(
        "cluster=local",
        "cluster.timeout_min=30",
        "cluster.gpus_per_node=0",
        f"output_dir={tmp_path / 'sw'}",
        hydra=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == LOCAL_TARGET
    assert (launcher["timeout_min"], launcher["gpus_per_node"]) == (30, 0)
    assert launcher["submitit_folder"] == f"{tmp_path / 'sw'}/.submitit/%j"
    assert cfg.cluster.name == "local"


def test_slurm_sweep_writes_the_expected_sbatch_array(
    compose: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SlurmLauncher and submitit, down to ``sbatch``: a fake one on PATH keeps the
    script it is given (no SLURM here), so the resources reach the job array as asked."""
    import submitit
    from hydra.utils import instantiate

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {bin_dir / "submitted.sh"}\necho "Submitted batch job 4242"\n'
    )
    for f in ("srun", "sbatch"):
        (bin_dir / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    sweep = tmp_path / "sweep"
    cfg = compose(
        "cluster=slurm",
        "cluster.partition=gpu",
        "cluster.gpus_per_node=2",
        "cluster.cpus_per_task=6",
        "cluster.mem_gb=32",
        "cluster.timeout_min=90",
        "cluster.account=proj1",
        "cluster.qos=high",
        "cluster.array_parallelism=1",
        "cluster.setup=[source /shared/venv/bin/activate]",
        "+cluster.additional_parameters.mail_type=END",
        f"output_dir={sweep}",
        hydra=True,
    )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg  # what Launcher.setup() stores; launch() reads only this

    submitted: list = []
    original = submitit.AutoExecutor.map_array

    def submit_only(self, fn, *iterables):  # submit for real, but do not wait on the jobs
        submitted.extend(original(self, fn, *iterables))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit_only)
    launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)

    assert [j.job_id for j in submitted] == ["4242_0", "4242_1"]
    lines = (bin_dir / "submitted.sh").read_text().splitlines()
    flags = {line for line in lines if line.startswith("#SBATCH ")}
    folder = f"{sweep}/.submitit/%A_%a"
    assert {
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=90",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "#SBATCH --array=0-1%1",  # two jobs, array_parallelism=1
        "#SBATCH --job-name=medprobe",
        "#SBATCH --mail-type=END",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={folder}/%A_%a_0_log.out",
        f"#SBATCH --error={folder}/%A_%a_0_log.err",
    } <= flags
    assert lines.index("source /shared/venv/bin/activate") < next(
        i for i, line in enumerate(lines) if line.startswith("srun ")
    )
    # the pickled jobs wait in the sweep dir, one folder per array task
    assert sorted(p.name for p in (sweep / ".submitit").glob("4242_*")) == ["4242_0", "4242_1"]


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.gpus_per_node=-1", "cluster.gpus_per_node must be null or >= 0, got -1"),
        ("cluster.cpus_per_task=0", "cluster.cpus_per_task must be null or >= 1, got 0"),
        ("cluster.mem_gb=0", "cluster.mem_gb must be null or >= 1, got 0"),
        ("cluster.timeout_min=0", "cluster.timeout_min must be >= 1 (minutes), got 0"),
        ("cluster.array_parallelism=0", "cluster.array_parallelism must be >= 1, got 0"),
        ("cluster.tasks_per_node=0", "cluster.tasks_per_node must be >= 1, got 0"),
        ("dist_timeout_min=0", "dist_timeout_min must be > 0 (minutes), got 0"),
        ("cluster.partition=''", "cluster.partition must be null or a name without spaces, got ''"),
        ("cluster.account='a b'", "cluster.account must be null or a name without spaces"),
    ],
)
def test_bad_cluster_values_are_one_line_config_errors(
    compose: Compose, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose("cluster=slurm", override))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "cluster=slurm", "cluster.gpus_per_node=-1"],
            "cluster.gpus_per_node must be null or >= 0, got -1",
        ),
        (
            ["-m", "cluster=slurm", "cluster.timeout_min=60,120"],
            "cluster.timeout_min=60,120: cluster settings size every job of the sweep and "
            "cannot be swept",
        ),
        (
            ["-m", "cluster=local,slurm"],
            "cluster=local,slurm: cluster settings size every job of the sweep",
        ),
        (["cluster=slurm"], "cluster=slurm submits the jobs of a sweep: add -m (--multirun)"),
    ],
)
def test_refused_before_anything_is_submitted(
    tmp_path: Path, args: list[str], message: str
) -> None:
    sweep = tmp_path / "sweep"
    p = run_medprobe(tmp_path, *args, f"output_dir={sweep}", check=False)
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("medprobe: error: ") and message in line
    assert not sweep.exists()  # no job folder, no submitit pickle


def test_slurm_sweeps_stop_every_task_of_a_job_when_one_fails(
    compose: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medprobe.cluster import ClusterCheck

    (tmp_path / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_KILL_BAD_EXIT", "")  # restored (removed) after the test
    monkeypatch.delenv("SLURM_KILL_BAD_EXIT")
    ClusterCheck().on_multirun_start(compose("cluster=local", hydra=True))
    assert "SLURM_KILL_BAD_EXIT" not in os.environ
    ClusterCheck().on_multirun_start(compose("cluster=slurm", "cluster.tasks_per_node=2",
                                             hydra=True))  # fmt: skip
    assert os.environ["SLURM_KILL_BAD_EXIT"] == "1"  # exported by sbatch to the job's srun


def test_slurm_without_sbatch_is_refused_in_one_line(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    env["PATH"] = str(Path(sys.executable).parent)  # python, but no SLURM commands
    sweep = tmp_path / "sweep"
    p = subprocess.run(
        [sys.executable, "-m", "medprobe", "-m", "cluster=slurm", "seed=0,1",
         f"output_dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "medprobe: error: cluster=slurm submits with SLURM's sbatch, which is not on PATH "
        "here; run it on a SLURM login node, or rehearse with cluster=local"
    ]
    assert not sweep.exists()


# ------------------------------------------------------------------ a real local sweep


class _Key(Exception):
    pass


def _entry_key(monkeypatch: pytest.MonkeyPatch, *overrides: str) -> str:
    """The cache key a job with these overrides uses, computed by the real pipeline up to the
    point where it takes the entry's lock (so nothing is extracted)."""
    from medprobe.pipeline.run import run

    def lock(self: FeatureCache, key: str, timeout: float = -1) -> None:
        raise _Key(key)

    with monkeypatch.context() as m:
        m.setattr(FeatureCache, "lock", lock)
        with pytest.raises(_Key) as e:
            run(compose_config(*overrides))
    return str(e.value)


def _logs(sweep: Path, suffix: str) -> list[str]:
    return [p.read_text() for p in sorted((sweep / ".submitit").glob(f"*/*_0_log.{suffix}"))]


def _n_waiting(sweep: Path) -> int:
    return sum(WAITING in t for t in _logs(sweep, "err"))


def test_local_sweep_two_jobs_one_extraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two concurrent submitit_local jobs need the same features: one extracts, one waits on
    the entry's lock and reuses it. The test holds that lock until both jobs are waiting on
    it, so the overlap is certain (no sleeps, no timing assumptions)."""
    cache_dir, sweep = tmp_path / "cache", tmp_path / "sweep"
    common = [
        "tracker=none",
        "bootstrap.n=50",
        "progress=false",
        "model.layers=[1]",  # stage 1 only: the extractor stops there
        "layer=1",
        "model.num_workers=0",
        f"cache_dir={cache_dir}",
    ]
    key = _entry_key(monkeypatch, *common, f"output_dir={tmp_path / 'probe'}")
    cache = FeatureCache(cache_dir)
    lock = cache.lock(key)
    lock.acquire(timeout=0)
    sweep_args = ["bootstrap.ci=0.9,0.95", f"output_dir={sweep}"]  # two jobs, one cache entry
    proc = subprocess.Popen(
        [sys.executable, "-m", "medprobe", "-m", "cluster=local", *common, *sweep_args],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: its submitit jobs end with it
    )
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and _n_waiting(sweep) < 2:
            time.sleep(0.2)
        waiting_at_release = _n_waiting(sweep)
        lock.release()
        out, _ = proc.communicate(timeout=300)
    except BaseException:
        if lock.is_locked:
            lock.release()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        raise
    assert proc.returncode == 0, out
    # both jobs ran at once and both blocked on the entry's lock (key computed above)
    assert waiting_at_release == 2, f"{waiting_at_release} job(s) waited on {key}\n{out}"

    # one folder per job, with its own override, next to the submitit logs
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", "0", "1", "multirun.yaml"]
    r90, r95 = (json.loads((sweep / n / "results.json").read_text()) for n in ("0", "1"))
    assert "bootstrap.ci=0.9" in r90["overrides"] and "bootstrap.ci=0.95" in r95["overrides"]
    assert "cluster=local" in r90["overrides"] and r90["config"]["cluster"]["name"] == "local"
    assert (r90["bootstrap"]["ci"], r95["bootstrap"]["ci"]) == (0.9, 0.95)

    # exactly one extraction, into exactly one complete entry; the other job reused it
    assert r90["cache"]["cache_key"] == r95["cache"]["cache_key"] == key
    assert sorted([r90["cache"]["cache_hit"], r95["cache"]["cache_hit"]]) == [False, True]
    assert cache.keys() == [key]
    assert sorted(p.name for p in cache_dir.iterdir() if p.is_dir()) == [key]  # no partial
    outs = _logs(sweep, "out")
    assert sum(f"features: extracted (key {key[:12]}" in t for t in outs) == 1
    assert sum(f"features: cache hit (key {key[:12]}" in t for t in outs) == 1
    assert all(f"{WAITING} ({cache.lock_path(key)})" in t for t in _logs(sweep, "err"))

    # the same features: the same probe and point estimate, nested bootstrap intervals
    n_rows = len(cache.ids(key))
    assert n_rows == r90["counts"]["fit"] + r90["counts"]["val"] + r90["counts"]["test"] == 718
    assert cache.load(key, 1).shape == (n_rows, r90["counts"]["feature_dim"])
    assert r90["probe"]["C"] == r95["probe"]["C"]
    a90, a95 = r90["metrics"]["auroc_macro"], r95["metrics"]["auroc_macro"]
    assert a90["value"] == a95["value"]
    assert a95["ci_low"] <= a90["ci_low"] <= a90["value"] <= a90["ci_high"] <= a95["ci_high"]
    assert (sweep / "0" / "predictions.csv").read_bytes() == (
        sweep / "1" / "predictions.csv"
    ).read_bytes()
