"""Checks run by Hydra in the submitting process for ``cluster=local|slurm`` (conf/cluster/).

The launcher is built from the sweep's own config, before any job exists, so a bad
``cluster.*`` value must be caught here: inside a job it would be too late (SLURM has already
been asked for the resources). Registered as ``hydra.callbacks.medprobe_cluster`` in
conf/config.yaml, so a swept ``cluster=local,slurm`` (composed as ``cluster=none`` for the
sweep itself) is refused too.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _fail(message: str) -> NoReturn:
    if os.environ.get("RANK", "0") == "0":  # processes of a torchrun launch would all say it
        print(f"medprobe: error: {message}", file=sys.stderr, flush=True)
    else:  # let rank 0 say it before the launcher stops everyone on this exit
        time.sleep(2.0)
    sys.exit(2)


class ClusterCheck(Callback):
    """Refuse a single run (the launcher only acts on ``-m``), swept ``cluster.*`` keys (the
    launcher reads them once for the whole sweep) and out-of-range values (before submission).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        name = config.cluster.name
        if name == "none":
            return
        _fail(
            f"cluster={name} submits the jobs of a sweep: add -m (--multirun); "
            "a sweep of one job is fine"
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from medprobe.config import ConfigError, validate_cluster

        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            # every process of the launch would run (or submit) the whole sweep, and their jobs
            # would pair up at random into data-parallel groups. Registered for every run
            # (conf/config.yaml), so this covers the basic launcher too.
            _fail(
                "a data-parallel launch (torchrun / accelerate launch) runs one job; sweep with "
                "--multirun and a launcher instead (cluster=slurm), each job data-parallel or "
                "not (cluster.tasks_per_node)"
            )

        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = [
            o.input_line
            for o in parsed
            if (o.key_or_group == "cluster" or o.key_or_group.startswith("cluster."))
            and o.is_sweep_override()
        ]
        if swept:
            _fail(
                f"{', '.join(str(s) for s in swept)}: cluster settings size every job of the "
                "sweep and cannot be swept; run one sweep per setting"
            )
        try:
            validate_cluster(config)
        except ConfigError as e:
            _fail(str(e))
        name = config.cluster.name
        if name == "slurm" and shutil.which("sbatch") is None:
            _fail("cluster=slurm submits with SLURM's sbatch, which is not on PATH here; run it "
                  "on a SLURM login node, or rehearse with cluster=local")  # fmt: skip
        if name == "slurm":
            # sbatch passes this environment to the job, where srun reads it: when one task of
            # a data-parallel job (cluster.tasks_per_node > 1) fails, srun stops the others
            # instead of leaving them waiting for it until dist_timeout_min
            os.environ.setdefault("SLURM_KILL_BAD_EXIT", "1")
