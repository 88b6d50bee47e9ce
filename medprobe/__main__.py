"""``python -m medprobe [overrides]``: the Hydra entry point; all work happens in ``run(cfg)``."""

from __future__ import annotations

import logging
import os
import sys
import time

import hydra
from omegaconf import DictConfig

from medprobe.config import conf_dir, register_configs

register_configs()
log = logging.getLogger("medprobe")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from medprobe.errors import MedprobeError
    from medprobe.runner import run

    try:
        run(cfg)
    except MedprobeError as e:  # a user mistake: one clear message, no traceback
        _report(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        if _rank() > 0:  # every process of a data-parallel job is interrupted: rank 0 says it
            sys.exit(130)
        print(
            "medprobe: interrupted; finished extraction batches are kept in the cache, "
            "rerun the same command to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


def _report(message: str) -> None:
    """Print a user error. In a data-parallel job every process prints (the error may be
    only its own, e.g. an image in its shard), tagged with its rank; the others wait a moment
    so that rank 0's line is not lost when the launcher stops it."""
    rank = _rank()
    if rank == 0:
        print(f"medprobe: error: {message}", file=sys.stderr, flush=True)
        return
    if not message.startswith(f"rank {rank}/"):
        message = f"[rank {rank}] {message}"
    print(f"medprobe: error: {message}", file=sys.stderr, flush=True)
    time.sleep(1.0)


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _helper_process_overrides(argv: list[str]) -> list[str]:
    """Extra overrides for processes 1.. of a data-parallel launch (torchrun, accelerate).

    Only rank 0 writes results; the others must not create their own timestamped Hydra
    folders, so their job folder is the working directory and no ``.hydra/`` is written.
    """
    if _rank() == 0:
        return []
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    wanted = {"hydra.output_subdir": "null", "hydra.run.dir": "."}
    return [f"{k}={v}" for k, v in wanted.items() if k not in given]


def _output_dir_problem(argv: list[str]) -> str | None:
    """Why ``output_dir=...`` cannot be a folder here, or None.

    Hydra creates the job folder before medprobe runs, and a path through a file would end in
    its traceback; this says it in one line first.
    """
    from pathlib import Path

    given = [a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")]
    if not given or given[-1] in ("", "null") or "," in given[-1]:
        return None
    path = Path(given[-1]).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                return f"output_dir={given[-1]}: {p} is a file, not a folder"
            if p != path and not os.access(p, os.W_OK | os.X_OK):
                return f"output_dir={given[-1]}: cannot create folders in {p} (permission denied)"
            return None
    return None


if __name__ == "__main__":
    problem = _output_dir_problem(sys.argv[1:])
    if problem:
        _report(problem)
        sys.exit(2)
    sys.argv += _helper_process_overrides(sys.argv[1:])
    main()
