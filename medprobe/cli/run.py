"""``medprobe run [overrides]`` (the default subcommand): the Hydra app around
:func:`medprobe.pipeline.run`.

Hydra composes the config (typed schema: :mod:`medprobe.config`); this module hands the job's
output folder and overrides to the pipeline through the config (``output_dir``,
``overrides``), so the pipeline never reads Hydra's globals. Hydra's own composition errors
(an unknown group option, a bad value for a typed key) become one ``medprobe: error:`` line
with exit status 2, like every other user mistake.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medprobe.config import conf_dir, register_configs
from medprobe.errors import ConfigError, MedprobeError, storage_error

_INTERRUPTED = (
    "medprobe: interrupted; finished extraction batches are kept in the cache, "
    "rerun the same command to resume"
)


def _job(cfg: Any) -> None:
    """Hydra's task function: one job of a run or of a ``--multirun`` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from medprobe.cli import rank, report_error
    from medprobe.pipeline.run import run

    hc = HydraConfig.get()
    with open_dict(cfg):  # what Hydra decided, passed on as plain config
        cfg.output_dir = hc.runtime.output_dir
        cfg.overrides = list(hc.overrides.task)
        cfg.sweep_group = Path(hc.sweep.dir).name if str(hc.mode) == "RunMode.MULTIRUN" else None
    try:
        run(cfg)
    except (MedprobeError, OSError) as e:  # a user mistake or an unwritable path: one line
        _drop_if_empty(Path(cfg.output_dir))
        report_error(str(e if isinstance(e, MedprobeError) else storage_error(e)))
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if rank() == 0:  # every process of a data-parallel job is interrupted: rank 0 says it
            print(_INTERRUPTED, file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _drop_if_empty(out_dir: Path) -> None:
    """Remove a job folder that a failed job leaves with nothing but Hydra's ``.hydra/`` (and
    medprobe's claim lock), so stopped runs do not litter ``outputs/``."""
    import shutil

    try:
        names = {p.name for p in out_dir.iterdir()}
    except OSError:
        return
    if names <= {".hydra", ".medprobe.lock"}:
        shutil.rmtree(out_dir, ignore_errors=True)


def helper_process_overrides(argv: Sequence[str]) -> list[str]:
    """Extra overrides for processes 1.. of a data-parallel launch (torchrun, accelerate).

    Only rank 0 writes results; the others must not create their own timestamped Hydra
    folders, so their job folder is the working directory and no ``.hydra/`` is written.
    """
    from medprobe.cli import rank

    if rank() == 0:
        return []
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    wanted = {"hydra.output_subdir": "null", "hydra.run.dir": "."}
    return [f"{k}={v}" for k, v in wanted.items() if k not in given]


def output_dir_problem(argv: Sequence[str]) -> str | None:
    """Why ``output_dir=...`` cannot be a folder here, or None.

    Hydra creates the job folder before medprobe runs, and a path through a file would end in
    its traceback; this says it in one line first.
    """
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


def _one_line(ex: BaseException) -> str:
    """Hydra's / OmegaConf's multi-line composition message as one line."""
    parts = [str(ex)]
    cause = ex.__cause__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    skip = ("provider=", "Config search path", "reference_type", "object_type", "full_key")
    texts = []
    for part in parts:
        lines = [ln.strip() for ln in part.splitlines()]
        texts.append(" ".join(ln for ln in lines if ln and not ln.startswith(skip)))
    text = ": ".join(t for t in texts if t)
    return text.replace(" Available options in", "; available options in")


@contextlib.contextmanager
def _compose_errors_as_config_errors() -> Iterator[None]:
    """Route Hydra's composition errors through medprobe's error path (one line, exit 2).

    Hydra prints them itself (``hydra._internal.utils.run_and_report``, hydra-core 1.3.8, the
    pinned version) with exit status 1; this wraps that function for the duration of the call.
    Errors raised by the job itself are handled in :func:`_job` and never reach it.
    """
    from hydra._internal import utils as hydra_utils
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    original: Callable[[Any], Any] = hydra_utils.run_and_report

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except (HydraException, OmegaConfBaseException) as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            raise ConfigError(_one_line(e)) from None
        except OSError as e:  # e.g. Hydra cannot create the job folder
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            raise storage_error(e) from None

    hydra_utils.run_and_report = run_and_report  # type: ignore[assignment]
    try:
        yield
    finally:
        hydra_utils.run_and_report = original  # type: ignore[assignment]


#: Hydra's flags that take a value (``--cfg job``); ``--info`` takes one optionally
_VALUED_FLAGS = frozenset({"--cfg", "-c", "--package", "-p", "--config-path", "-cp",
                           "--config-name", "-cn", "--config-dir", "-cd",
                           "--experimental-rerun"})  # fmt: skip
_INFO_TOPICS = frozenset({"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"})


def flags_first(argv: Sequence[str]) -> list[str]:
    """Hydra's flags (with their values) before the overrides, each in its order.

    ``medprobe task=csv -m layer=0,2`` or ``seed=3 --cfg job layer=2``: Hydra's argparse cannot
    take overrides on both sides of a flag (it printed its usage and "unrecognized arguments").
    An override never starts with ``-``, so every such token is a flag.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            rest.append(a)
        else:
            front.append(a)
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            takes = a in _VALUED_FLAGS or (a in ("--info", "-i") and nxt in _INFO_TOPICS)
            if takes and nxt is not None:
                front.append(nxt)
                i += 1
        i += 1
    return front + rest


def main(argv: Sequence[str]) -> int:
    """Run the Hydra app on ``argv`` (overrides, ``-m``, ``--help``, ``--cfg job`` ...).

    Raises:
        ConfigError: ``output_dir`` cannot be a folder, or Hydra cannot compose the config.
    """
    import hydra

    argv = list(argv)
    argv = flags_first(argv)
    problem = output_dir_problem(argv)
    if problem:
        raise ConfigError(problem)
    register_configs()
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_job)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "medprobe", *argv, *helper_process_overrides(argv)]
    try:
        with _compose_errors_as_config_errors():
            app()
    finally:
        sys.argv = saved
    return 0
